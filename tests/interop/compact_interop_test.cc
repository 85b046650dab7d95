// `vhdx compact` on images QEMU made and wrote: afterwards qemu-img compare
// finds them identical to a copy taken before, qemu-img check passes, the
// file is smaller, and libvhdi reads the same bytes; a dry run and every
// refusal leave the file as it was.
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

CommandResult Sh(const std::string& command) { return vhdx::test::Run(command); }
CommandResult Vhdx(const std::string& args) { return Sh(ShellQuote(CliPath()) + " " + args); }

// A QEMU image of 64 MiB, 1 MiB blocks: data in 16 blocks, of which QEMU
// then overwrites 6 with zeros (FULLY_PRESENT, all zero) and the last one
// stays data, so blocks must move down.
std::string MakeQemuImage(const std::string& leaf) {
  const std::string path = ScratchPath(leaf);
  fs::remove(path);
  EXPECT_EQ(Sh(fmt::format("qemu-img create -q -f vhdx -o block_size=1M {} 64M", ShellQuote(path))).exit_code, 0);
  std::string commands;
  for (int b = 0; b < 64; b += 4) commands += fmt::format(" -c 'write -P {} {}M 1M'", 1 + b, b);
  for (int b = 4; b < 60; b += 8) commands += fmt::format(" -c 'write -P 0 {}M 1M'", b);
  CommandResult r = Sh(fmt::format("qemu-io -f vhdx {} {}", commands, ShellQuote(path)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return path;
}

TEST(CompactInterop, QemuFindsTheCompactedImageIdenticalAndClean) {
  VHDX_REQUIRE(MissingTools({"qemu-img", "qemu-io"}));
  const std::string path = MakeQemuImage("compact-qemu.vhdx");
  const std::string copy = path + ".before";
  fs::copy_file(path, copy, fs::copy_options::overwrite_existing);
  const uint64_t size_before = fs::file_size(path);

  CommandResult dry = Vhdx("compact -n --output=json " + ShellQuote(path));
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_EQ(Sha256OfFile(path), Sha256OfFile(copy)) << "a dry run wrote";
  CommandResult r = Vhdx("compact --output=json " + ShellQuote(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output, nullptr, false);
  auto d = nlohmann::json::parse(dry.output, nullptr, false);
  ASSERT_TRUE(j.is_object() && d.is_object()) << r.output << dry.output;
  EXPECT_EQ(j["blocks-freed-zero"], 7) << r.output;  // blocks 4, 12, ..., 52: QEMU wrote zeros over them
  EXPECT_GT(j["blocks-moved"].get<int>(), 0) << r.output;
  EXPECT_EQ(d["file-size-after"], j["file-size-after"]) << "the dry run predicted the size";
  EXPECT_EQ(j["file-size-after"].get<uint64_t>(), fs::file_size(path));
  EXPECT_LT(fs::file_size(path), size_before);

  r = Sh(fmt::format("qemu-img compare -f vhdx -F vhdx {} {}", ShellQuote(copy), ShellQuote(path)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Images are identical"), std::string::npos) << r.output;
  r = Sh("qemu-img check -f vhdx " + ShellQuote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("No errors were found"), std::string::npos) << r.output;
  // QEMU writes into the compacted image; we read it.
  r = Sh(fmt::format("qemu-io -f vhdx -c 'write -P 0x77 5M 2M' {}", ShellQuote(path)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Vhdx(fmt::format("io -r -c 'read -P 0x77 5M 2M' -c 'read -P 1 0 1M' {}", ShellQuote(path)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("Pattern verification failed"), std::string::npos) << r.output;

  if (RunPart("libvhdi part", MissingTools({"vhdiinfo", "vhdimount"}) + MissingFuse())) {
    auto image = Image::Open(path);
    ASSERT_TRUE(image.ok()) << image.status().message();
    const std::string sha = Sha256OfImage(**image);
    image->reset();
    RunPart("vhdimount part", ExpectLibvhdiReads(path, 64ull << 20, 512, sha));
  }
}

TEST(CompactInterop, RefusalsChangeNothing) {
  VHDX_REQUIRE(MissingTools({"qemu-img", "qemu-io", "qemu-nbd"}));
  const std::string fixed = ScratchPath("compact-fixed.vhdx");
  fs::remove(fixed);
  ASSERT_EQ(Sh(fmt::format("qemu-img create -q -f vhdx -o subformat=fixed,block_size=1M {} 8M", ShellQuote(fixed))).exit_code, 0);
  const std::string fixed_sha = Sha256OfFile(fixed);
  CommandResult r = Vhdx("compact " + ShellQuote(fixed));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(r.output.starts_with("vhdx: " + fixed + ": ")) << r.output;
  EXPECT_NE(r.output.find("fixed image"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << "one line: " << r.output;
  EXPECT_EQ(Sha256OfFile(fixed), fixed_sha);

  const std::string path = MakeQemuImage("compact-held.vhdx");
  const std::string sha = Sha256OfFile(path);
  {
    QemuNbdServer qemu(path, /*read_only=*/true);
    ASSERT_EQ(qemu.started().exit_code, 0) << qemu.started().output;
    r = Vhdx("compact " + ShellQuote(path));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("in use"), std::string::npos) << r.output;
  }
  EXPECT_EQ(Sha256OfFile(path), sha);
  r = Vhdx("compact " + ShellQuote(path + ".missing"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  r = Vhdx("compact --bogus " + ShellQuote(path));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(Sha256OfFile(path), sha);
}

}  // namespace
}  // namespace vhdx::test
