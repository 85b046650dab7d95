// Parent locator paths: Windows forms mapped to POSIX candidates in the
// documented order, and the locator written for a new child resolving back
// to its parent.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "format/constants.h"
#include "format/metadata.h"
#include "parent_paths.h"
#include "support/test_util.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

using Candidates = std::vector<std::pair<std::string, std::string>>;  // path, source

format::ParentLocator Locator(std::vector<std::pair<std::string, std::string>> paths) {
  format::ParentLocator l;
  l.locator_type = format::kVhdxParentLocatorType;
  l.entries.emplace_back("parent_linkage", "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}");
  for (auto& e : paths) l.entries.push_back(std::move(e));
  return l;
}

Candidates Find(const std::string& child, const format::ParentLocator& locator,
                const std::string& explicit_parent = "",
                const std::vector<std::string>& dirs = {}) {
  Candidates out;
  for (const auto& c : ParentCandidates(child, locator, explicit_parent, dirs))
    out.emplace_back(c.path, c.source);
  return out;
}

// A fresh directory under the scratch dir.
std::string MakeDir(const std::string& leaf) {
  std::string dir = ScratchPath(leaf);
  fs::create_directories(dir);
  return dir;
}

void Touch(const std::string& path) { std::ofstream(path) << "x"; }

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

// ---- ParentCandidates ----------------------------------------------------

TEST(ParentPathsTest, RelativePathSameDirectory) {
  auto loc = Locator({{"relative_path", ".\\parent.vhdx"}});
  EXPECT_EQ(Find("/v/disks/child.avhdx", loc),
            (Candidates{{"/v/disks/parent.vhdx", "relative_path"}}));
  // A child given without a directory: the working directory.
  EXPECT_EQ(Find("child.avhdx", loc), (Candidates{{"parent.vhdx", "relative_path"}}));
  EXPECT_EQ(Find("sub/child.avhdx", loc), (Candidates{{"sub/parent.vhdx", "relative_path"}}));
}

TEST(ParentPathsTest, RelativePathUpAndNested) {
  EXPECT_EQ(Find("/v/a/b/c.avhdx", Locator({{"relative_path", "..\\..\\path2\\sub3\\parent.vhdx"}}))[0],
            (std::pair<std::string, std::string>{"/v/path2/sub3/parent.vhdx", "relative_path"}));
  EXPECT_EQ(Find("/v/a/c.avhdx", Locator({{"relative_path", "sub\\deeper\\p.vhdx"}}))[0].first,
            "/v/a/sub/deeper/p.vhdx");
  // Forward slashes and mixed separators are read too; ".." above "/" stays at "/".
  EXPECT_EQ(Find("/v/a/c.avhdx", Locator({{"relative_path", "..\\x/p.vhdx"}}))[0].first, "/v/x/p.vhdx");
  EXPECT_EQ(Find("/v/c.avhdx", Locator({{"relative_path", "..\\..\\..\\p.vhdx"}}))[0].first, "/p.vhdx");
  // A relative child path keeps its leading "..".
  EXPECT_EQ(Find("../c.avhdx", Locator({{"relative_path", "..\\p.vhdx"}}))[0].first, "../../p.vhdx");
}

TEST(ParentPathsTest, ChildPathIsNormalisedLexically) {
  auto loc = Locator({{"relative_path", ".\\p.vhdx"}});
  EXPECT_EQ(Find("/v/./a//b/./c.avhdx", loc)[0].first, "/v/a/b/p.vhdx");
  EXPECT_EQ(Find("./c.avhdx", loc)[0].first, "p.vhdx");
}

TEST(ParentPathsTest, RootedOrDriveRelativePathIsNotRelative) {
  // Only the file-name fallback in the child's directory remains.
  EXPECT_EQ(Find("/v/c.avhdx", Locator({{"relative_path", "\\abs\\p.vhdx"}})),
            (Candidates{{"/v/p.vhdx", "child's directory"}}));
  EXPECT_EQ(Find("/v/c.avhdx", Locator({{"relative_path", "D:\\p.vhdx"}})),
            (Candidates{{"/v/p.vhdx", "child's directory"}}));
}

TEST(ParentPathsTest, AbsoluteWin32PathForms) {
  auto abs = [](const std::string& value) {
    return Find("/v/c.avhdx", Locator({{"absolute_win32_path", value}}));
  };
  // The digest's example (extended-length, lowercase drive) and Hyper-V's plain form.
  EXPECT_EQ(abs("\\\\?\\d:\\path2\\sub3\\parent.vhdx"),
            (Candidates{{"/mnt/d/path2/sub3/parent.vhdx", "absolute_win32_path"},
                        {"/v/parent.vhdx", "child's directory"}}));
  EXPECT_EQ(abs("C:\\Users\\me\\Hyper-V\\x.avhdx")[0].first, "/mnt/c/Users/me/Hyper-V/x.avhdx");
  EXPECT_EQ(abs("\\??\\E:\\p.vhdx")[0].first, "/mnt/e/p.vhdx");
  // Drive-less: our own form for a parent outside /mnt/<x>.
  EXPECT_EQ(abs("\\home\\u\\p.vhdx")[0],
            (std::pair<std::string, std::string>{"/home/u/p.vhdx", "absolute_win32_path"}));
  // UNC shares are not mapped: only the file-name fallback.
  EXPECT_EQ(abs("\\\\?\\UNC\\server\\share\\dir\\p.vhdx"),
            (Candidates{{"/v/p.vhdx", "child's directory"}}));
  EXPECT_EQ(abs("\\\\server\\share\\p.vhdx"), (Candidates{{"/v/p.vhdx", "child's directory"}}));
  // Drive-relative "C:p.vhdx" is meaningless here.
  EXPECT_EQ(abs("C:p.vhdx"), (Candidates{}));
}

TEST(ParentPathsTest, OrderOfAllSources) {
  auto loc = Locator({{"absolute_win32_path", "\\\\?\\D:\\vms\\base.vhdx"},
                      {"relative_path", "..\\base\\base.vhdx"},
                      {"volume_path", "\\\\?\\Volume{26A21BDA-A627-11D7-9931-806E6F6E6963}\\vms\\base.vhdx"},
                      {"parent_linkage2", "{00000000-0000-0000-0000-000000000000}"}});
  // Windows' volume GUID matches no mount here: no volume_path candidate.
  EXPECT_EQ(Find("/v/kids/child.avhdx", loc, "/explicit/p.vhdx", {"/d1", "/d2/"}),
            (Candidates{{"/explicit/p.vhdx", "--parent"},
                        {"/d1/base.vhdx", "parent dir /d1"},
                        {"/d2/base.vhdx", "parent dir /d2/"},
                        {"/v/base/base.vhdx", "relative_path"},
                        {"/mnt/d/vms/base.vhdx", "absolute_win32_path"},
                        {"/v/kids/base.vhdx", "child's directory"}}));
}

TEST(ParentPathsTest, FileNameComesFromTheFirstPathKeyPresent) {
  // relative_path first, even when listed after the others.
  auto loc = Locator({{"absolute_win32_path", "C:\\a\\from-abs.vhdx"}, {"relative_path", "rel.vhdx"}});
  EXPECT_EQ(Find("/v/c.avhdx", loc, "", {"/d"})[0].first, "/d/rel.vhdx");
  loc = Locator({{"absolute_win32_path", "\\\\?\\UNC\\srv\\share\\from-abs.vhdx"}});
  EXPECT_EQ(Find("/v/c.avhdx", loc, "", {"/d"}),
            (Candidates{{"/d/from-abs.vhdx", "parent dir /d"}, {"/v/from-abs.vhdx", "child's directory"}}));
  loc = Locator({{"volume_path", "\\\\?\\Volume{26A21BDA-A627-11D7-9931-806E6F6E6963}\\x\\vol.vhdx"}});
  EXPECT_EQ(Find("/v/c.avhdx", loc, "", {"/d"}),
            (Candidates{{"/d/vol.vhdx", "parent dir /d"}, {"/v/vol.vhdx", "child's directory"}}));
}

TEST(ParentPathsTest, DuplicatesAreDropped) {
  // relative_path ".\" and the file-name fallback are the same path.
  EXPECT_EQ(Find("/v/c.avhdx", Locator({{"relative_path", ".\\p.vhdx"}})),
            (Candidates{{"/v/p.vhdx", "relative_path"}}));
  // The explicit parent wins over the same path found later.
  EXPECT_EQ(Find("/v/c.avhdx", Locator({{"relative_path", ".\\p.vhdx"}}), "/v/./p.vhdx"),
            (Candidates{{"/v/p.vhdx", "--parent"}}));
  // The same existing file by two names (relative and absolute spelling).
  std::string dir = MakeDir("dedupe");
  Touch(dir + "/p.vhdx");
  std::string real = fs::canonical(dir).string();
  std::string win32 = real;
  std::replace(win32.begin(), win32.end(), '/', '\\');
  auto loc = Locator({{"relative_path", ".\\p.vhdx"}, {"absolute_win32_path", win32 + "\\p.vhdx"}});
  EXPECT_EQ(Find(dir + "/c.avhdx", loc), (Candidates{{dir + "/p.vhdx", "relative_path"}}));
  // ...but a missing file's spellings are all kept (nothing tells them apart).
  loc = Locator({{"relative_path", ".\\missing.vhdx"}, {"absolute_win32_path", win32 + "\\missing.vhdx"}});
  EXPECT_EQ(Find(dir + "/c.avhdx", loc).size(), real == dir ? 1u : 2u);
}

TEST(ParentPathsTest, DotDotAfterASymlinkIsLeftToTheKernel) {
  // base/real/x holds the child; base/link -> real/x; the parent is base/p.vhdx.
  std::string base = MakeDir("symlinked");
  fs::create_directories(base + "/real/x");
  fs::create_symlink("real/x", base + "/link");
  Touch(base + "/p.vhdx");
  auto loc = Locator({{"relative_path", "..\\..\\p.vhdx"}});
  auto found = Find(base + "/link/c.avhdx", loc);
  ASSERT_FALSE(found.empty());
  EXPECT_EQ(found[0], (std::pair<std::string, std::string>{base + "/link/../../p.vhdx", "relative_path"}));
  EXPECT_TRUE(SameFile(found[0].first, base + "/p.vhdx"));
}

// ---- volume_path ---------------------------------------------------------

TEST(ParentPathsTest, VolumePathRoundTripsOnTheScratchMount) {
  std::string dir = MakeDir("volume");
  Touch(dir + "/p.vhdx");
  auto made = MakeParentLocator(dir + "/p.vhdx", dir + "/c.avhdx", Guid::Random());
  const std::string* volume = made.Get("volume_path");
  ASSERT_NE(volume, nullptr) << "no mount holds " << dir;
  ASSERT_TRUE(volume->starts_with("\\\\?\\Volume{")) << *volume;
  EXPECT_TRUE(volume->ends_with("\\volume\\p.vhdx")) << *volume;
  EXPECT_EQ(volume->find('/'), std::string::npos) << *volume;
  // Windows prints volume GUIDs in uppercase; version 8, RFC variant.
  std::string guid_text = volume->substr(10, 38);
  EXPECT_EQ(guid_text.front(), '{');
  EXPECT_EQ(guid_text.back(), '}');
  auto guid = Guid::Parse(guid_text);
  ASSERT_TRUE(guid.has_value()) << guid_text;
  std::string upper = guid->ToString();
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(guid_text, fmt::format("{{{}}}", upper));
  EXPECT_EQ(guid_text[15], '8') << "version nibble";
  EXPECT_TRUE(std::string("89AB").find(guid_text[20]) != std::string::npos) << "variant";

  // Maps back to the same file, whatever the GUID's case.
  for (std::string value : {*volume, [&] {
         std::string lower = *volume;
         for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
         return lower;
       }()}) {
    auto found = Find("/nowhere/c.avhdx", Locator({{"volume_path", value}}));
    if (value != *volume) {
      // The lowercased path below the mount names a different (missing) file,
      // unless the mount is case-insensitive; the GUID still matched.
      ASSERT_FALSE(found.empty());
      EXPECT_EQ(found[0].second, "volume_path") << value;
      continue;
    }
    ASSERT_FALSE(found.empty());
    EXPECT_EQ(found[0].second, "volume_path");
    EXPECT_TRUE(SameFile(found[0].first, dir + "/p.vhdx")) << found[0].first;
  }
  // Another GUID with the same path matches no mount.
  std::string other = *volume;
  other[11] = other[11] == '0' ? '1' : '0';
  EXPECT_EQ(Find("/nowhere/c.avhdx", Locator({{"volume_path", other}})),
            (Candidates{{"/nowhere/p.vhdx", "child's directory"}}));
  // A malformed GUID or an empty rest gives no candidate.
  EXPECT_EQ(Find("/n/c.avhdx", Locator({{"volume_path", "\\\\?\\Volume{zz}\\p.vhdx"}})).size(), 1u);
  EXPECT_EQ(Find("/n/c.avhdx", Locator({{"volume_path", volume->substr(0, 49)},
                                        {"relative_path", "r.vhdx"}})),
            (Candidates{{"/n/r.vhdx", "relative_path"}}));
}

// ---- MakeParentLocator ---------------------------------------------------

TEST(ParentPathsTest, MakeParentLocatorKeysValuesAndRoundTrip) {
  std::string dir = MakeDir("make");
  Touch(dir + "/p.vhdx");
  Guid dwg = *Guid::Parse("{83ED0EC3-24C8-49A6-A959-5E4BF1288BFB}");
  auto loc = MakeParentLocator(dir + "/p.vhdx", dir + "/c.avhdx", dwg);
  EXPECT_EQ(loc.locator_type, format::kVhdxParentLocatorType);
  std::vector<std::string> keys;
  for (const auto& [k, v] : loc.entries) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"parent_linkage", "absolute_win32_path", "relative_path",
                                            "volume_path", "parent_linkage2"}));
  EXPECT_EQ(*loc.Get("parent_linkage"), "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}");
  EXPECT_EQ(*loc.Get("parent_linkage2"), "{00000000-0000-0000-0000-000000000000}");
  EXPECT_EQ(*loc.Get("relative_path"), ".\\p.vhdx");
  std::string real = fs::canonical(dir).string();
  std::string win32 = real + "/p.vhdx";
  std::replace(win32.begin(), win32.end(), '/', '\\');
  if (real.starts_with("/mnt/") && real.size() > 6 && real[6] == '/')
    EXPECT_TRUE(loc.Get("absolute_win32_path")->starts_with("\\\\?\\"));
  else
    EXPECT_EQ(*loc.Get("absolute_win32_path"), win32);

  std::vector<uint8_t> bytes = format::SerializeParentLocator(loc);
  format::ParentLocator parsed;
  Status st = format::ParseParentLocator(bytes.data(), bytes.size(), 0, &parsed);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(parsed.entries, loc.entries);
  // Hyper-V's packing: the first key right after the 5 entries (20 + 5 * 12).
  EXPECT_EQ(bytes[20] | bytes[21] << 8, 80);
}

TEST(ParentPathsTest, MakeParentLocatorMapsWslDrives) {
  // /mnt/<x>/... need not exist: the directory is made absolute lexically.
  auto loc = MakeParentLocator("/mnt/d/vms/base/./p.vhdx", "/mnt/d/vms/kids/c.avhdx", Guid());
  EXPECT_EQ(*loc.Get("absolute_win32_path"), "\\\\?\\D:\\vms\\base\\p.vhdx");
  EXPECT_EQ(*loc.Get("relative_path"), "..\\base\\p.vhdx");
  // And reading it maps the drive back.
  EXPECT_EQ(Find("/elsewhere/c.avhdx", Locator({{"absolute_win32_path", *loc.Get("absolute_win32_path")}}))[0]
                .first,
            "/mnt/d/vms/base/p.vhdx");
}

struct Layout {
  const char* name;
  const char* parent;  // under the layout's scratch dir
  const char* child;
  const char* relative_path;
};

class ParentLocatorLayoutTest : public ::testing::TestWithParam<Layout> {};

TEST_P(ParentLocatorLayoutTest, ChildFindsItsParentByRelativePath) {
  const Layout& l = GetParam();
  std::string base = MakeDir(std::string("layout-") + l.name);
  std::string parent = base + "/" + l.parent, child = base + "/" + l.child;
  fs::create_directories(fs::path(parent).parent_path());
  fs::create_directories(fs::path(child).parent_path());
  Touch(parent);
  Guid dwg = Guid::Random();
  auto loc = MakeParentLocator(parent, child, dwg);
  EXPECT_EQ(*loc.Get("relative_path"), l.relative_path);
  auto found = ParentCandidates(child, loc, "", {});
  ASSERT_FALSE(found.empty());
  EXPECT_EQ(found[0].path, parent);
  EXPECT_EQ(found[0].source, "relative_path");
  // Through the bytes as well.
  std::vector<uint8_t> bytes = format::SerializeParentLocator(loc);
  format::ParentLocator parsed;
  ASSERT_TRUE(format::ParseParentLocator(bytes.data(), bytes.size(), 0, &parsed).ok());
  EXPECT_EQ(ParentCandidates(child, parsed, "", {})[0].path, parent);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, ParentLocatorLayoutTest,
    ::testing::Values(Layout{"same", "p.vhdx", "c.avhdx", ".\\p.vhdx"},
                      Layout{"sibling", "base/p.vhdx", "kids/c.avhdx", "..\\base\\p.vhdx"},
                      Layout{"parentdir", "p.vhdx", "kids/c.avhdx", "..\\p.vhdx"},
                      Layout{"deep", "a/b/p.vhdx", "x/y/z/c.avhdx", "..\\..\\..\\a\\b\\p.vhdx"},
                      Layout{"below", "sub/p.vhdx", "c.avhdx", ".\\sub\\p.vhdx"}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace vhdx::test
