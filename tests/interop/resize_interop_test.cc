// `vhdx resize` on images qemu-img made and qemu-io wrote: afterwards
// qemu-img info shows the new size, qemu-img check passes, qemu-io reads the
// old content and zeros past the old end, qemu-io writes past the old end
// and we read them, and libvhdi reads the resized disk as we do.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "disk_checks.h"
#include "support/test_util.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kMiB = 1ull << 20, kGiB = 1ull << 30;

struct ResizeScenario {
  const char* name;
  const char* qemu_options;  // qemu-img create -o
  uint64_t size;
  const char* resize_args;   // vhdx resize ... IMAGE SIZE: the part after IMAGE
  uint64_t new_size;
  bool bat_moves;
};

void PrintTo(const ResizeScenario& s, std::ostream* os) { *os << s.name; }

CommandResult Sh(const std::string& command) { return vhdx::test::Run(command); }
CommandResult Vhdx(const std::string& args) { return Sh(ShellQuote(CliPath()) + " " + args); }
CommandResult QemuIo(const std::string& path, const std::string& commands) {
  return Sh(fmt::format("qemu-io -f vhdx {} {}", commands, ShellQuote(path)));
}

class ResizeInteropTest : public ::testing::TestWithParam<ResizeScenario> {
 protected:
  void SetUp() override { VHDX_REQUIRE(MissingTools({"qemu-img", "qemu-io"})); }
};

TEST_P(ResizeInteropTest, QemuSeesTheNewSizeTheOldContentAndZerosBeyond) {
  const ResizeScenario& s = GetParam();
  const std::string path = ScratchPath(std::string("resize-") + s.name + ".vhdx");
  fs::remove(path);
  CommandResult r = Sh(fmt::format("qemu-img create -q -f vhdx -o {} {} {}", s.qemu_options, ShellQuote(path), s.size));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Data at the start, in the middle, and in the last 8 KiB of the old disk.
  const uint64_t mid = s.size / 2, tail = s.size - 8192;
  r = QemuIo(path, fmt::format("-c 'write -P 0x11 0 1M' -c 'write -P 0x22 {} 64k' -c 'write -P 0x33 {} 8k'", mid, tail));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  r = Vhdx(fmt::format("resize --output=json {} {}", ShellQuote(path), s.resize_args));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["old-virtual-size"], s.size);
  EXPECT_EQ(j["virtual-size"], s.new_size);
  EXPECT_EQ(j["bat-relocated"], s.bat_moves);

  r = Sh("qemu-img info --output=json -f vhdx " + ShellQuote(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["virtual-size"], s.new_size) << r.output;
  r = Sh("qemu-img check -f vhdx " + ShellQuote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("No errors were found"), std::string::npos) << r.output;

  // The old content below the smaller size; zeros past the old end.
  std::string reads = "-c 'read -P 0x11 0 1M'";
  if (mid + 65536 <= s.new_size) reads += fmt::format(" -c 'read -P 0x22 {} 64k'", mid);
  if (s.new_size > s.size) {
    reads += fmt::format(" -c 'read -P 0x33 {} 8k' -c 'read -P 0 {} 1M' -c 'read -P 0 {} 1M'", tail, s.size,
                         s.new_size - kMiB);
  }
  r = QemuIo(path, "-r " + reads);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("Pattern verification failed"), std::string::npos) << r.output;

  // qemu-io writes past the old end (or at the new one); we read it back.
  const uint64_t at = s.new_size - 64 * 1024;
  r = QemuIo(path, fmt::format("-c 'write -P 0x5a {} 64k'", at));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Vhdx(fmt::format("io -r -c 'read -P 0x5a {} 64k' {}", at, ShellQuote(path)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("Pattern verification failed"), std::string::npos) << r.output;
  r = Vhdx("check " + ShellQuote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = Sh("qemu-img check -f vhdx " + ShellQuote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;

  // libvhdi: the size, and (for disks small enough to hash) the bytes.
  if (RunPart("vhdiinfo part", MissingTools({"vhdiinfo"}))) {
    r = Sh("vhdiinfo " + ShellQuote(path));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(fmt::format("({} bytes)", s.new_size)), std::string::npos) << r.output;
  }
  if (s.new_size <= 256 * kMiB && RunPart("vhdimount part", MissingTools({"vhdimount"}) + MissingFuse())) {
    auto image = Image::Open(path);
    ASSERT_TRUE(image.ok()) << image.status().message();
    const std::string sha = Sha256OfImage(**image);
    image->reset();
    RunPart("vhdimount part", ExpectLibvhdiReads(path, s.new_size, 512, sha));
  }
  fs::remove(path);
}

INSTANTIATE_TEST_SUITE_P(
    Qemu, ResizeInteropTest,
    ::testing::Values(
        ResizeScenario{"Grow1M", "block_size=1M", 64 * kMiB, "100M", 100 * kMiB, false},
        ResizeScenario{"GrowRelative32M", "block_size=32M", 96 * kMiB, "+1G", 96 * kMiB + kGiB, false},
        // 1 MiB blocks: the BAT region (1 MiB) holds 128 GiB of entries.
        ResizeScenario{"GrowMovesTheBat", "block_size=1M", 1 * kGiB, "200G", 200 * kGiB, true},
        ResizeScenario{"FixedGrow", "subformat=fixed,block_size=1M", 16 * kMiB, "40M", 40 * kMiB, false},
        ResizeScenario{"Shrink", "block_size=1M", 64 * kMiB, "--shrink 24M", 24 * kMiB, false},
        ResizeScenario{"ShrinkRelative", "block_size=8M", 64 * kMiB, "--shrink -- -8M", 56 * kMiB, false}),
    [](const ::testing::TestParamInfo<ResizeScenario>& p) { return std::string(p.param.name); });

// Refusals leave the file as it was, with one line naming it: a smaller
// size without --shrink (a usage error, naming the current size), sizes
// that are not sector multiples, zero, past 64 TiB, and an image qemu holds.
TEST(ResizeInterop, RefusalsChangeNothing) {
  VHDX_REQUIRE(MissingTools({"qemu-img", "qemu-nbd"}));
  const std::string path = ScratchPath("resize-refused.vhdx");
  fs::remove(path);
  ASSERT_EQ(Sh(fmt::format("qemu-img create -q -f vhdx {} 64M", ShellQuote(path))).exit_code, 0);
  ASSERT_EQ(QemuIo(path, "-c 'write -P 0x44 0 2M'").exit_code, 0);
  const std::string before = Sha256OfFile(path);
  struct Refusal {
    std::string args;
    int exit_code;
    std::string words;
  };
  const Refusal refusals[] = {
      {"32M", 2, "smaller than the current 67108864 bytes"},
      {"-- -8M", 2, "use --shrink"},
      {"64M1", 2, "invalid size"},
      {"100000001", 1, "multiple of the logical sector size"},
      {"--shrink 0", 1, "0 bytes"},
      {"65T", 1, "64 TiB"},
      {"--shrink -- -64M", 1, "only 67108864 bytes"},
  };
  for (const Refusal& refusal : refusals) {
    CommandResult r = Vhdx(fmt::format("resize {} {}", ShellQuote(path), refusal.args));
    EXPECT_EQ(r.exit_code, refusal.exit_code) << refusal.args << ": " << r.output;
    EXPECT_NE(r.output.find(refusal.words), std::string::npos) << refusal.args << ": " << r.output;
    EXPECT_TRUE(r.output.starts_with("vhdx: " + path + ": ")) << r.output;
    EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << "one line: " << r.output;
  }
  EXPECT_EQ(Sha256OfFile(path), before);
  {
    QemuNbdServer qemu(path, /*read_only=*/true);
    ASSERT_EQ(qemu.started().exit_code, 0) << qemu.started().output;
    CommandResult r = Vhdx(fmt::format("resize {} 128M", ShellQuote(path)));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("in use"), std::string::npos) << r.output;
  }
  EXPECT_EQ(Sha256OfFile(path), before);
  // A file that cannot be written (mode 0444; root ignores that, so also
  // the immutable attribute, which stops root too): refused in one line.
  fs::permissions(path, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  const bool immutable = ::access(path.c_str(), W_OK) == 0 && Sh("chattr +i " + ShellQuote(path)).exit_code == 0;
  if (RunPart("read-only file part",
              ::access(path.c_str(), W_OK) != 0 || immutable ? "" : "cannot make the file unwritable here")) {
    CommandResult r = Vhdx(fmt::format("resize {} 128M", ShellQuote(path)));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(r.output.starts_with("vhdx: " + path + ": ")) << r.output;
    EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << "one line: " << r.output;
  }
  if (immutable) Sh("chattr -i " + ShellQuote(path));
  EXPECT_EQ(Sha256OfFile(path), before);
}

}  // namespace
}  // namespace vhdx::test
