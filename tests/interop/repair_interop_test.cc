// `vhdx check -r leaks|all` on images written by qemu-img / qemu-io and
// then damaged at known offsets: exit statuses and JSON as qemu-img check,
// and afterwards qemu-img check is clean and QEMU reads the same disk as
// before the damage (damaged blocks as zeros).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "format/constants.h"
#include "support/test_util.h"
#include "util/coding.h"

namespace vhdx::test {
namespace {

using format::MiB;
using json = nlohmann::json;

CommandResult Vhdx(const std::string& args) { return vhdx::test::Run(CliPath() + " " + args); }

json CheckJson(const std::string& path, const std::string& extra, int* exit_code) {
  // Stdout only: the one-line verdict goes to stderr.
  CommandResult r =
      vhdx::test::Run("{ " + CliPath() + " check --output=json " + extra + " " + ShellQuote(path) + " 2>/dev/null; }");
  *exit_code = r.exit_code;
  json j = json::parse(r.output, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.output;
  return j;
}

void PatchFile(const std::string& path, uint64_t offset, const std::vector<uint8_t>& bytes) {
  auto data = ReadWholeFile(path);
  if (data.size() < offset + bytes.size()) data.resize(offset + bytes.size());
  std::copy(bytes.begin(), bytes.end(), data.begin() + offset);
  WriteWholeFile(path, data);
}

class RepairInteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    VHDX_REQUIRE(MissingTools({"qemu-img", "qemu-io"}));
    image_ = ScratchPath("repair-interop.vhdx");
    raw_ = ScratchPath("repair-interop.raw");
    std::filesystem::remove(image_);
    ASSERT_EQ(vhdx::test::Run("qemu-img create -q -f vhdx -o block_size=1M " + ShellQuote(image_) + " 16M").exit_code, 0);
    for (int b = 0; b < 6; ++b)
      ASSERT_EQ(vhdx::test::Run(fmt::format("qemu-io -f vhdx -c 'write -P {} {}M 1M' {} >/dev/null", 0x21 + b, b,
                                ShellQuote(image_)))
                    .exit_code,
                0);
    CommandResult info = vhdx::test::Run(CliPath() + " info --output=json " + ShellQuote(image_));
    ASSERT_EQ(info.exit_code, 0) << info.output;
    json j = json::parse(info.output);
    bat_offset_ = j["bat"]["offset"].get<uint64_t>();
    ExpectQemuClean();
  }

  void ExpectQemuClean() {
    CommandResult q = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(image_));
    EXPECT_EQ(q.exit_code, 0) << q.output;
  }
  // The raw disk as QEMU reads it now, as the reference.
  void SaveReference() {
    ASSERT_EQ(vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw {} {}", ShellQuote(image_), ShellQuote(raw_)))
                  .exit_code,
              0);
  }
  void ZeroReferenceBlock(uint64_t block) { PatchFile(raw_, block * MiB, std::vector<uint8_t>(MiB, 0)); }
  void ExpectQemuReadsReference() {
    CommandResult q =
        vhdx::test::Run(fmt::format("qemu-img compare -f vhdx -F raw {} {}", ShellQuote(image_), ShellQuote(raw_)));
    EXPECT_EQ(q.exit_code, 0) << q.output;
  }
  uint64_t BatEntryOffset(uint64_t block) const { return bat_offset_ + 8 * block; }  // blocks < chunk ratio
  uint64_t BlockOffset(uint64_t block) const {
    auto data = ReadWholeFile(image_);
    return DecodeFixed64(data.data() + BatEntryOffset(block)) & ~uint64_t{0xFFFFF};
  }
  void SetBatEntry(uint64_t block, uint64_t value) {
    std::vector<uint8_t> raw(8);
    EncodeFixed64(raw.data(), value);
    PatchFile(image_, BatEntryOffset(block), raw);
  }

  std::string image_, raw_;
  uint64_t bat_offset_ = 0;
};

TEST_F(RepairInteropTest, LeaksAreReportedWithExitThreeAndReclaimed) {
  // Interior: block 1's entry dropped (its space stays, unreferenced).
  // Tail: 1 MiB of data appended that nothing references.
  SetBatEntry(1, 0);
  const uint64_t size = std::filesystem::file_size(image_);
  PatchFile(image_, size, std::vector<uint8_t>(MiB, 0x5A));
  SaveReference();
  ExpectQemuClean();  // QEMU does not look for leaks in VHDX files

  int rc = 0;
  json j = CheckJson(image_, "", &rc);
  EXPECT_EQ(rc, 3) << j.dump();
  EXPECT_EQ(j["corruptions"], 0) << j.dump();
  EXPECT_EQ(j["leaks"], 2) << j.dump();
  EXPECT_EQ(j["image-end-offset"], size) << j.dump();
  CommandResult text = Vhdx("check " + ShellQuote(image_));
  EXPECT_EQ(text.exit_code, 3);
  EXPECT_NE(text.output.find("2 leaked 1 MiB units were found on the image."), std::string::npos) << text.output;

  j = CheckJson(image_, "-r leaks", &rc);
  EXPECT_EQ(rc, 0) << j.dump(2);
  EXPECT_EQ(j["leaks"], 0);
  EXPECT_EQ(j["leaks-fixed"], 2) << j.dump(2);
  EXPECT_EQ(j["repairs"].size(), 2u) << j.dump(2);
  EXPECT_EQ(std::filesystem::file_size(image_), size);
  EXPECT_EQ(Vhdx("check " + ShellQuote(image_)).exit_code, 0);
  ExpectQemuClean();
  ExpectQemuReadsReference();
}

TEST_F(RepairInteropTest, DamagedHeaderIsRepaired) {
  SaveReference();
  PatchFile(image_, format::kHeader1Offset + 200, {0xFF, 0xEE});
  CommandResult r = Vhdx("check " + ShellQuote(image_));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = Vhdx("check -r all " + ShellQuote(image_));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Repaired: header 1 (offset 0x10000): rewritten from header 2"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("Double checking the fixed image now..."), std::string::npos) << r.output;
  ExpectQemuClean();
  ExpectQemuReadsReference();
}

// QEMU reads only region table copy 1: it cannot open the image until the
// copy is rewritten from copy 2.
TEST_F(RepairInteropTest, DamagedFirstRegionTableIsRepairedForQemu) {
  SaveReference();
  PatchFile(image_, format::kRegionTable1Offset + 100, {0xAB});
  EXPECT_NE(vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(image_)).exit_code, 0);
  int rc = 0;
  json j = CheckJson(image_, "-r all", &rc);
  EXPECT_EQ(rc, 0) << j.dump(2);
  EXPECT_EQ(j["corruptions-fixed"], 1) << j.dump(2);
  ASSERT_EQ(j["repairs"].size(), 1u) << j.dump(2);
  EXPECT_EQ(j["repairs"][0]["structure"], "region table 1");
  ExpectQemuClean();
  ExpectQemuReadsReference();
}

TEST_F(RepairInteropTest, BadBatEntriesReadZerosAfterRepair) {
  SaveReference();
  // Block 3 points past the end of the file; block 4 onto block 2's space.
  SetBatEntry(3, (uint64_t{1} << 40) | 6);
  SetBatEntry(4, BlockOffset(2) | 6);
  ZeroReferenceBlock(2);
  ZeroReferenceBlock(3);
  ZeroReferenceBlock(4);
  int rc = 0;
  json j = CheckJson(image_, "", &rc);
  EXPECT_EQ(rc, 2) << j.dump(2);
  EXPECT_EQ(j["corruptions"], 2) << j.dump(2);
  // Without -r nothing is written.
  const std::string damaged = Sha256OfFile(image_);
  EXPECT_EQ(Vhdx("check " + ShellQuote(image_)).exit_code, 2);
  EXPECT_EQ(Sha256OfFile(image_), damaged);
  // -r leaks leaves corruptions alone.
  j = CheckJson(image_, "-r leaks", &rc);
  EXPECT_EQ(rc, 2) << j.dump(2);
  EXPECT_EQ(Sha256OfFile(image_), damaged);

  j = CheckJson(image_, "-r all", &rc);
  EXPECT_EQ(rc, 0) << j.dump(2);
  EXPECT_EQ(j["corruptions"], 0);
  EXPECT_EQ(j["corruptions-fixed"], 2) << j.dump(2);
  int lost = 0;
  for (const auto& a : j["repairs"]) lost += a["data-lost"].get<bool>();
  EXPECT_EQ(lost, 3) << j.dump(2);  // blocks 2, 3, 4
  // Block 2's space, now unreferenced, was reclaimed too.
  EXPECT_GE(j["leaks-fixed"].get<int>(), 1) << j.dump(2);
  ExpectQemuClean();
  ExpectQemuReadsReference();
}

TEST_F(RepairInteropTest, CheckThatCannotRunExitsOne) {
  EXPECT_EQ(Vhdx("check " + ShellQuote(image_ + ".missing")).exit_code, 1);
  CommandResult r = Vhdx("check -r all -U " + ShellQuote(image_));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  // A repair needs the image to itself: QEMU holding it refuses it.
  QemuNbdServer server(image_, /*read_only=*/true);
  if (server.started().exit_code == 0) {
    r = Vhdx("check -r leaks " + ShellQuote(image_));
    EXPECT_EQ(r.exit_code, 1) << r.output;
  }
}

}  // namespace
}  // namespace vhdx::test
