// Images made by `vhdx create` are accepted by the peers: qemu-img checks
// and describes them, qemu-io writes into them and both tools then read
// the same bytes, libvhdi opens them (4096-byte sectors too, which QEMU
// cannot). Bad arguments never touch an existing file.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "disk_checks.h"
#include "support/test_util.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {


struct CreateScenario {
  const char* name;
  const char* args;  // vhdx create options
  uint64_t size;
  uint32_t block_size;
  bool fixed;
  uint32_t logical;
};

class CreateInteropTest : public ::testing::TestWithParam<CreateScenario> {
 protected:
  void SetUp() override {
    VHDX_REQUIRE(MissingTools({"qemu-img", "qemu-io"}));
  }
};

TEST_P(CreateInteropTest, QemuAcceptsWritesAndReadsLikeUs) {
  const CreateScenario& s = GetParam();
  std::string path = ScratchPath(std::string("created-") + s.name + ".vhdx");
  std::filesystem::remove(path);
  CommandResult r = vhdx::test::Run(fmt::format("{} create {} {} {}", CliPath(), s.args, ShellQuote(path), s.size));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  r = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = vhdx::test::Run("qemu-img info --output=json -f vhdx " + ShellQuote(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto info = nlohmann::json::parse(r.output);
  EXPECT_EQ(info["virtual-size"], s.size);
  EXPECT_EQ(info["cluster-size"], s.block_size);
  if (s.fixed) {
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    // Fully allocated on the host, not sparse (Windows rejects sparse fixed files).
    EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, static_cast<uint64_t>(st.st_size));
  }

  // QEMU writes into our image (allocating blocks of a dynamic one); then
  // QEMU's reading, ours and the CLI's raw output agree byte for byte.
  uint64_t last = s.size - 4096;
  r = vhdx::test::Run(fmt::format("qemu-io -f vhdx -c 'write -P 0x5c 0 64k' -c 'write -P 0xc5 {} 4k' "
                      "-c 'write -P 0x77 {} 12k' {}",
                      last, s.block_size - 4096, ShellQuote(path)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::string qemu_raw = ScratchPath(std::string("created-") + s.name + "-qemu.raw");
  std::string our_raw = ScratchPath(std::string("created-") + s.name + "-ours.raw");
  ASSERT_EQ(vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw {} {}", ShellQuote(path), ShellQuote(qemu_raw))).exit_code, 0);
  ASSERT_EQ(vhdx::test::Run(fmt::format("{} convert -O raw {} {}", CliPath(), ShellQuote(path), ShellQuote(our_raw))).exit_code, 0);
  EXPECT_EQ(vhdx::test::Run(fmt::format("cmp {} {}", ShellQuote(qemu_raw), ShellQuote(our_raw))).exit_code, 0);
  auto image = Image::Open(path);
  ASSERT_TRUE(image.ok()) << image.status().message();
  EXPECT_EQ(CompareRawFile(qemu_raw, s.size, ImageReader(**image)), "");
  uint8_t b = 0;
  ASSERT_TRUE((*image)->Read(last, &b, 1).ok());
  EXPECT_EQ(b, 0xc5);
  r = vhdx::test::Run(fmt::format("{} check {}", CliPath(), ShellQuote(path)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::filesystem::remove(qemu_raw);
  std::filesystem::remove(our_raw);
}

INSTANTIATE_TEST_SUITE_P(
    Created, CreateInteropTest,
    ::testing::Values(CreateScenario{"Dynamic1M", "--block-size 1M", 40ull << 20, 1u << 20, false, 512},
                      CreateScenario{"Dynamic8M", "--block-size 8M", (24ull << 20) + 512, 8u << 20, false, 512},
                      CreateScenario{"Dynamic32MDefault", "", 256ull << 20, 32u << 20, false, 512},
                      CreateScenario{"Dynamic256M", "--block-size 256M", 600ull << 20, 256u << 20, false, 512},
                      CreateScenario{"Fixed2M", "--type fixed --block-size 2M", 20ull << 20, 2u << 20, true, 512},
                      CreateScenario{"Fixed8M", "--type fixed --block-size 8M --physical-sector-size 512",
                                     (16ull << 20) + 512, 8u << 20, true, 512}),
    [](const ::testing::TestParamInfo<CreateScenario>& i) { return std::string(i.param.name); });

// 4096-byte logical sectors: QEMU refuses them; libvhdi reads them.
TEST(CreateInterop, FourKSectorImagesOpenInLibvhdi) {
  VHDX_REQUIRE(MissingTools({"vhdiinfo"}));
  for (const char* type : {"dynamic", "fixed"}) {
    std::string path = ScratchPath(fmt::format("created-4k-{}.vhdx", type));
    std::filesystem::remove(path);
    CommandResult r = vhdx::test::Run(fmt::format("{} create --type {} --logical-sector-size 4096 {} 64M", CliPath(), type,
                                      ShellQuote(path)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = vhdx::test::Run("vhdiinfo " + ShellQuote(path));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("Bytes per sector\t: 4096 bytes"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("(67108864 bytes)"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(std::string("Disk type\t\t: ") + (type[0] == 'd' ? "Dynamic" : "Fixed")),
              std::string::npos)
        << r.output;
  }
}

TEST(CreateInterop, BadArgumentsFailCleanlyAndNeverOverwrite) {
  std::string path = ScratchPath("created-existing.vhdx");
  std::filesystem::remove(path);
  ASSERT_EQ(vhdx::test::Run(fmt::format("{} create {} 16M", CliPath(), ShellQuote(path))).exit_code, 0);
  std::string before = Sha256OfFile(path);
  struct Case {
    std::string args;
    int exit_code;
    std::string words;
  };
  std::string fresh = ScratchPath("created-never.vhdx");
  for (const Case& c : std::vector<Case>{
           {ShellQuote(path) + " 16M", 1, "already exists"},
           {ShellQuote(fresh) + " 1000", 1, "multiple of the logical sector size"},
           {ShellQuote(fresh) + " 65T", 1, "64 TiB"},
           {"--block-size 3M " + ShellQuote(fresh) + " 1G", 1, "block size"},
           {ShellQuote(fresh) + " lots", 1, "invalid size"},
           {"--logical-sector-size 1024 " + ShellQuote(fresh) + " 1G", 2, ""},
           {"--type differencing " + ShellQuote(fresh) + " 1G", 2, ""},
           {ShellQuote(fresh), 2, ""},
       }) {
    CommandResult r = vhdx::test::Run(fmt::format("{} create {}", CliPath(), c.args));
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << ": " << r.output;
    if (c.exit_code == 1) {
      EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
      EXPECT_EQ(r.output.rfind("vhdx: ", 0), 0u) << r.output;
      EXPECT_NE(r.output.find(c.words), std::string::npos) << r.output;
    }
    EXPECT_FALSE(std::filesystem::exists(fresh)) << c.args;
  }
  EXPECT_EQ(Sha256OfFile(path), before);
}

}  // namespace
}  // namespace vhdx::test
