// The nbdkit filter (tools/nbdkit/vhdx_filter.cc) decoding VHDX images that
// nbdkit's own plugins serve: every corpus image through the file plugin
// must copy (nbdcopy) to the manifest's content and report the block status
// `vhdx map` gives, and the dirty-log image must be served as replayed
// without a byte of its file changing. Every nbdkit here is captive
// (`--run`), under a timeout.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <string>

#include "corpus/manifest.h"
#include "interop/nbd_util.h"
#include "support/test_util.h"

namespace vhdx::test {

namespace {

namespace fs = std::filesystem;

// Runs nbdkit with the filter over `plugin_and_params` for one `client`
// command, in which $uri names the export.
CommandResult ServeFiltered(const std::string& plugin_and_params, const std::string& client) {
  const SanitizerPrefixes& p = NbdkitSanitizerPrefixes();
  return test::Run(p.server + "timeout -k 5 300 nbdkit -r -U - --filter=" + ShellQuote(NbdkitFilterPath()) + " " +
                   plugin_and_params + " --run " + ShellQuote(p.client + client));
}

std::string MissingFilter() { return MissingNbdkitFilter({"nbdkit", "nbdinfo", "nbdcopy"}); }

std::string TestName(const ::testing::TestParamInfo<CorpusImage>& info) { return CorpusStem(info.param); }

class FilterCorpusTest : public ::testing::TestWithParam<CorpusImage> {};

TEST_P(FilterCorpusTest, OverTheFilePluginCopiesAndMapsAsConvertAndMap) {
  VHDX_REQUIRE(MissingCorpus());
  VHDX_REQUIRE(MissingFilter());
  const CorpusImage& m = GetParam();
  const std::string dir = ScratchPath("filter-" + CorpusStem(m));
  fs::remove_all(dir);
  fs::create_directories(dir);
  // A private copy: the decompressed corpus image is shared by this process.
  const std::string image = dir + "/image.vhdx";
  fs::copy_file(DecompressCorpusImage(m.file), image);
  const std::string before = Sha256OfFile(image);

  const std::string copy = dir + "/copy.raw", map = dir + "/map.json";
  CommandResult r = ServeFiltered("file " + ShellQuote(image),
                                  fmt::format("nbdcopy \"$uri\" {} && nbdinfo --map --json \"$uri\" > {}",
                                              ShellQuote(copy), ShellQuote(map)));
  if (m.type == "differencing") {
    // Its parent is not reachable through the plugin: a clear error.
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("parent"), std::string::npos) << r.output;
    return;
  }
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fs::file_size(copy), m.virtual_size);
  EXPECT_EQ(SparseSha256(copy), m.content_sha256) << "nbdcopy through the filter";

  const auto ours = test::Run("{ " + CliPath() + " map --output=json " + ShellQuote(image) + " 2>/dev/null; }");
  ASSERT_EQ(ours.exit_code, 0) << ours.output;
  const std::vector<NbdExtent> want = ExtentsOfVhdxMap(ParseJson(ours.output));
  const std::vector<uint8_t> map_text = ReadWholeFile(map);
  const std::vector<NbdExtent> served = ExtentsOfNbdinfoMap(ParseJson(std::string(map_text.begin(), map_text.end())));
  EXPECT_EQ(served, want);
  EXPECT_FALSE(served.empty());
  // Served read-only: not a byte of the container changed (a dirty log too
  // is replayed in memory only).
  EXPECT_EQ(Sha256OfFile(image), before);
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Manifest, FilterCorpusTest, ::testing::ValuesIn(CorpusImagesOrPlaceholder()), TestName);

// What is not a VHDX image, or is a damaged one, fails the client's
// connection with the library's one-line reason in nbdkit's log.
TEST(FilterErrors, NotAVhdxImageFailsWithTheReason) {
  VHDX_REQUIRE(MissingFilter());
  const std::string dir = ScratchPath("filter-errors");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string junk = dir + "/junk.img";
  WriteWholeFile(junk, std::vector<uint8_t>(3 << 20, 0x5a));
  CommandResult r = ServeFiltered("file " + ShellQuote(junk), "nbdinfo \"$uri\"");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("vhdx: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("vhdxfile"), std::string::npos) << "the reason: " << r.output;

  // Truncated inside its BAT: the open fails, it never hangs.
  const std::string image = dir + "/cut.vhdx";
  ASSERT_EQ(test::Run(CliPath() + " create --block-size 1M " + ShellQuote(image) + " 64M").exit_code, 0);
  ASSERT_EQ(::truncate(image.c_str(), 3 << 20), 0);
  r = ServeFiltered("file " + ShellQuote(image), "nbdcopy \"$uri\" /dev/null");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("vhdx: "), std::string::npos) << r.output;
  fs::remove_all(dir);
}

// A differencing image whose parent is not where its locator says: found
// with vhdx-parent=PATH, and checked (a different image is refused by its
// DataWriteGuid); without it, the open fails naming the parent.
TEST(FilterDifferencing, ParentGivenByVhdxParent) {
  VHDX_REQUIRE(MissingFilter());
  const std::string dir = ScratchPath("filter-differencing");
  fs::remove_all(dir);
  fs::create_directories(dir + "/child");
  const std::string base = dir + "/base.vhdx", child = dir + "/child/child.vhdx", other = dir + "/other.vhdx";
  auto vhdx = [](const std::string& args) { return test::Run(CliPath() + " " + args).exit_code; };
  ASSERT_EQ(vhdx("create --block-size 1M " + ShellQuote(base) + " 64M"), 0);
  ASSERT_EQ(vhdx("io -c 'write -P 0x11 0 8M' " + ShellQuote(base)), 0);
  ASSERT_EQ(vhdx("create -b " + ShellQuote(base) + " " + ShellQuote(child)), 0);
  ASSERT_EQ(vhdx("io -c 'write -P 0x22 4M 1M' " + ShellQuote(child)), 0);
  ASSERT_EQ(vhdx("create --block-size 1M " + ShellQuote(other) + " 64M"), 0);
  const std::string want = dir + "/want.raw";
  ASSERT_EQ(vhdx("convert -O raw " + ShellQuote(child) + " " + ShellQuote(want)), 0);
  // Moved where the locator's paths do not lead.
  const std::string moved = dir + "/moved-base.vhdx";
  fs::rename(base, moved);

  const std::string copy = dir + "/copy.raw";
  CommandResult r = ServeFiltered("file " + ShellQuote(child) + " vhdx-parent=" + ShellQuote(moved),
                                  "nbdcopy \"$uri\" " + ShellQuote(copy));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Sha256OfFile(copy), Sha256OfFile(want));

  r = ServeFiltered("file " + ShellQuote(child), "nbdinfo --size \"$uri\"");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("parent"), std::string::npos) << r.output;
  r = ServeFiltered("file " + ShellQuote(child) + " vhdx-parent=" + ShellQuote(other), "nbdinfo --size \"$uri\"");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("DataWriteGuid"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace vhdx::test
