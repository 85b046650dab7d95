// CreateImage with a parent: the differencing child inherits the parent's
// size, sector sizes and disk ID, carries a Hyper-V style parent locator
// and an empty BAT, checks clean, and is read by libvhdi as a child of the
// parent. Bad parents and sizes are refused without leaving a file behind.
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core_test_util.h"
#include "format/constants.h"
#include "support/test_util.h"
#include "util/coding.h"
#include "vhdx/create.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kParentSize = 64 * MiB;

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// A dynamic parent with 4096-byte logical and 512-byte physical sectors
// (neither is the CLI's default, so a child that took the defaults shows).
std::string MakeParent(const std::string& dir, DiskType type = DiskType::kDynamic) {
  fs::create_directories(ScratchPath(dir));
  std::string path = ScratchPath(dir + "/parent.vhdx");
  CreateOptions o{type, kParentSize, 32 * MiB, 4096, 512};
  Status st = CreateImage(path, o);
  EXPECT_TRUE(st.ok()) << st.message();
  return path;
}

CreateOptions ChildOptions(const std::string& parent) {
  CreateOptions o;  // sector sizes left at 512/4096: ignored for a child
  o.parent_path = parent;
  o.block_size = 2 * MiB;
  return o;
}

std::unique_ptr<Image> OpenAlone(const std::string& path) {
  OpenOptions oo;
  oo.skip_parent = true;
  auto image = Image::Open(path, oo);
  EXPECT_TRUE(image.ok()) << image.status().message();
  if (!image.ok()) return nullptr;
  return std::move(image).value();
}

void ExpectCheckClean(const std::string& path) {
  auto report = Check(path);
  ASSERT_TRUE(report.ok()) << report.status().message();
  for (const auto& f : report->findings)
    ADD_FAILURE() << path << ": " << f.structure << ": " << f.message;
}

TEST(CreateDiffTest, ChildOfDynamicParent) {
  std::string parent = MakeParent("diff-basic");
  std::string child = ScratchPath("diff-basic/child.avhdx");
  Status st = CreateImage(child, ChildOptions(parent));
  ASSERT_TRUE(st.ok()) << st.message();
  ExpectCheckClean(child);

  auto p = OpenAlone(parent);
  auto c = OpenAlone(child);
  ASSERT_TRUE(p && c);
  const ImageInfo& pi = p->info();
  const ImageInfo& ci = c->info();
  EXPECT_EQ(ci.type, DiskType::kDifferencing);
  EXPECT_EQ(ci.virtual_size, kParentSize);
  EXPECT_EQ(ci.block_size, 2 * MiB);
  EXPECT_EQ(ci.logical_sector_size, 4096u);
  EXPECT_EQ(ci.physical_sector_size, 512u);
  EXPECT_EQ(ci.virtual_disk_id, pi.virtual_disk_id);
  EXPECT_NE(ci.headers[ci.current_header].data_write_guid, pi.headers[pi.current_header].data_write_guid);

  // Items in Hyper-V's order, the locator last with flags 0x4.
  std::vector<std::string> names;
  for (const auto& m : ci.metadata_items) names.push_back(m.name);
  EXPECT_EQ(names, (std::vector<std::string>{"file_parameters", "virtual_disk_size", "logical_sector_size",
                                             "physical_sector_size", "virtual_disk_id", "parent_locator"}));
  const MetadataItemInfo& loc_item = ci.metadata_items.back();
  EXPECT_EQ(loc_item.offset, 0x10000u + 40);
  EXPECT_TRUE(loc_item.is_required);
  EXPECT_FALSE(loc_item.is_virtual_disk);
  EXPECT_FALSE(loc_item.is_user);

  // The locator: linkage = the parent's current DataWriteGuid.
  ASSERT_TRUE(ci.parent.has_value());
  std::vector<std::string> keys;
  for (const auto& [k, v] : ci.parent->entries) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"parent_linkage", "absolute_win32_path", "relative_path",
                                            "volume_path", "parent_linkage2"}));
  EXPECT_EQ(ci.parent->Get("parent_linkage"),
            "{" + pi.headers[pi.current_header].data_write_guid.ToString() + "}");
  EXPECT_EQ(ci.parent->Get("parent_linkage2"), "{00000000-0000-0000-0000-000000000000}");
  EXPECT_EQ(ci.parent->Get("relative_path"), ".\\parent.vhdx");
  std::string win32 = fs::canonical(parent).string();
  std::replace(win32.begin(), win32.end(), '/', '\\');
  if (!win32.starts_with("\\mnt\\")) {
    EXPECT_EQ(ci.parent->Get("absolute_win32_path"), win32);
  }
  EXPECT_EQ(ci.parent->Get("volume_path")->rfind("\\\\?\\Volume{", 0), 0u);

  // Differencing geometry: chunk ratio 2^23 * 4096 / 2 MiB = 16384, one
  // sector-bitmap entry after the 32 payload entries; every entry zero.
  EXPECT_EQ(ci.chunk_ratio, 16384u);
  EXPECT_EQ(ci.bat_entries, 16385u);
  std::vector<uint8_t> bytes = ReadWholeFile(child);
  ASSERT_EQ(bytes.size(), 4 * MiB);  // header, log, metadata, BAT: no payload yet
  EXPECT_TRUE(std::all_of(bytes.begin() + 3 * MiB, bytes.end(), [](uint8_t b) { return b == 0; }));
  // File Parameters as stored: block size, then HasParent (bit 1) only.
  const uint8_t* fp = bytes.data() + 2 * MiB + 0x10000;
  EXPECT_EQ(DecodeFixed32(fp), 2 * MiB);
  EXPECT_EQ(DecodeFixed32(fp + 4), 2u);
}

TEST(CreateDiffTest, ChildReadsAsItsParentAndLeavesItUntouched) {
  std::string parent = MakeParent("diff-read");
  std::vector<uint8_t> data = PatternBytes(3 * MiB, 7);
  {
    OpenOptions rw;
    rw.read_only = false;
    auto p = Image::Open(parent, rw);
    ASSERT_TRUE(p.ok()) << p.status().message();
    ASSERT_TRUE((*p)->Write(5 * MiB + 4096, data.data(), data.size()).ok());
    ASSERT_TRUE((*p)->Close().ok());
  }
  std::string parent_hash = Sha256OfFile(parent);
  std::string child = ScratchPath("diff-read/child.avhdx");
  ASSERT_TRUE(CreateImage(child, ChildOptions(parent)).ok());
  EXPECT_EQ(Sha256OfFile(parent), parent_hash);

  auto c = Image::Open(child);
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_NE((*c)->parent(), nullptr);
  EXPECT_EQ((*c)->info().parent_filename, parent);
  auto p = OpenAlone(parent);
  ASSERT_TRUE(p);
  EXPECT_EQ(Sha256OfImage(**c), Sha256OfImage(*p));
  EXPECT_EQ(ReadImage(**c, 5 * MiB + 4096, data.size()), data);
}

TEST(CreateDiffTest, GrandchildOfADifferencingParent) {
  std::string base = MakeParent("diff-grand");
  std::string mid = ScratchPath("diff-grand/mid.avhdx");
  std::string top = ScratchPath("diff-grand/top.avhdx");
  ASSERT_TRUE(CreateImage(mid, ChildOptions(base)).ok());
  CreateOptions o = ChildOptions(mid);
  o.block_size = 1 * MiB;
  Status st = CreateImage(top, o);
  ASSERT_TRUE(st.ok()) << st.message();
  ExpectCheckClean(top);
  auto b = OpenAlone(base);
  auto m = OpenAlone(mid);
  auto t = OpenAlone(top);
  ASSERT_TRUE(b && m && t);
  EXPECT_EQ(t->info().virtual_disk_id, b->info().virtual_disk_id);
  EXPECT_EQ(t->info().logical_sector_size, 4096u);
  EXPECT_EQ(t->info().parent->Get("parent_linkage"),
            "{" + m->info().headers[m->info().current_header].data_write_guid.ToString() + "}");
  EXPECT_EQ(t->info().parent->Get("relative_path"), ".\\mid.avhdx");
  auto chain = Image::Open(top);
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  ASSERT_NE((*chain)->parent(), nullptr);
  ASSERT_NE((*chain)->parent()->parent(), nullptr);
  EXPECT_EQ((*chain)->parent()->parent()->info().virtual_disk_id, b->info().virtual_disk_id);
}

TEST(CreateDiffTest, ChildOfFixedParentInAnotherDirectory) {
  std::string parent = MakeParent("diff-fixed/base", DiskType::kFixed);
  fs::create_directories(ScratchPath("diff-fixed/kids"));
  std::string child = ScratchPath("diff-fixed/kids/child.avhdx");
  CreateOptions o = ChildOptions(parent);
  o.type = DiskType::kFixed;  // ignored: a child is always differencing
  ASSERT_TRUE(CreateImage(child, o).ok());
  ExpectCheckClean(child);
  auto c = OpenAlone(child);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->info().type, DiskType::kDifferencing);
  EXPECT_EQ(c->info().parent->Get("relative_path"), "..\\base\\parent.vhdx");
  EXPECT_EQ(ReadWholeFile(child).size(), 4 * MiB);  // not preallocated
}

TEST(CreateDiffTest, ChildInMemoryFileUsesTheFileNameForPaths) {
  std::string parent = MakeParent("diff-mem");
  SparseMemoryFile file(ScratchPath("diff-mem/sub/child.avhdx"), true);
  Status st = CreateImage(file, ChildOptions(parent));
  ASSERT_TRUE(st.ok()) << st.message();
  OpenOptions oo;
  oo.skip_parent = true;
  auto c = Image::Open(std::make_unique<SparseMemoryFile>(file), oo);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ((*c)->info().parent->Get("relative_path"), "..\\parent.vhdx");
}

TEST(CreateDiffTest, LargerSizeIsAllowed) {
  std::string parent = MakeParent("diff-larger");
  std::string child = ScratchPath("diff-larger/child.avhdx");
  CreateOptions o = ChildOptions(parent);
  o.virtual_size = 2 * kParentSize;
  ASSERT_TRUE(CreateImage(child, o).ok());
  ExpectCheckClean(child);
  auto c = OpenAlone(child);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->info().virtual_size, 2 * kParentSize);
}

TEST(CreateDiffTest, SmallerSizeIsRefusedAndNoFileLeft) {
  std::string parent = MakeParent("diff-smaller");
  std::string child = ScratchPath("diff-smaller/child.avhdx");
  CreateOptions o = ChildOptions(parent);
  o.virtual_size = kParentSize / 2;
  Status st = CreateImage(child, o);
  EXPECT_EQ(st.code(), Errc::kInvalidArgument);
  EXPECT_NE(st.message().find(std::to_string(kParentSize / 2)), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(std::to_string(kParentSize)), std::string::npos) << st.message();
  EXPECT_FALSE(Exists(child));
  // Not a multiple of the parent's 4096-byte sectors either.
  o.virtual_size = kParentSize + 512;
  st = CreateImage(child, o);
  EXPECT_EQ(st.code(), Errc::kInvalidArgument);
  EXPECT_NE(st.message().find("4096"), std::string::npos) << st.message();
  EXPECT_FALSE(Exists(child));
}

TEST(CreateDiffTest, MissingParentIsNamedAndNoFileLeft) {
  fs::create_directories(ScratchPath("diff-missing"));
  std::string missing = ScratchPath("diff-missing/no-such-parent.vhdx");
  std::string child = ScratchPath("diff-missing/child.avhdx");
  Status st = CreateImage(child, ChildOptions(missing));
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.message().rfind("parent " + missing + ": ", 0), 0u) << st.message();
  EXPECT_FALSE(Exists(child));
  // A parent that is not a VHDX file.
  std::string junk = ScratchPath("diff-missing/junk.vhdx");
  WriteWholeFile(junk, std::vector<uint8_t>(2 * MiB, 0x5A));
  st = CreateImage(child, ChildOptions(junk));
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.message().rfind("parent " + junk + ": ", 0), 0u) << st.message();
  EXPECT_FALSE(Exists(child));
}

TEST(CreateDiffTest, DifferencingTypeNeedsAParent) {
  CreateOptions o{DiskType::kDifferencing, 64 * MiB, 32 * MiB, 512, 4096};
  Status st = ValidateCreateOptions(o);
  EXPECT_EQ(st.code(), Errc::kInvalidArgument);
  EXPECT_NE(st.message().find("parent"), std::string::npos) << st.message();
  // With a parent, the type and sector sizes do not matter, the block size does.
  o.parent_path = "p.vhdx";
  o.logical_sector_size = 1234;
  EXPECT_TRUE(ValidateCreateOptions(o).ok());
  o.block_size = 3 * MiB;
  EXPECT_EQ(ValidateCreateOptions(o).code(), Errc::kInvalidArgument);
}

TEST(CreateDiffTest, VhdiinfoReadsTheChild) {
  VHDX_REQUIRE(MissingTools({"vhdiinfo"}));
  std::string parent = MakeParent("diff-vhdi");
  std::string child = ScratchPath("diff-vhdi/child.avhdx");
  ASSERT_TRUE(CreateImage(child, ChildOptions(parent)).ok());
  auto p = OpenAlone(parent);
  ASSERT_TRUE(p);
  const HeaderInfo& ph = p->info().headers[p->info().current_header];
  CommandResult r = vhdx::test::Run(fmt::format("vhdiinfo '{}'", child));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // "\tKey\t\t: value" lines.
  std::map<std::string, std::string> fields;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    size_t colon = line.find(" : ");
    if (colon == std::string::npos) colon = line.find("\t: ");
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), value = line.substr(line.find(": ", colon) + 2);
    key.erase(0, key.find_first_not_of(" \t"));
    key.erase(key.find_last_not_of(" \t") + 1);
    fields[key] = value;
  }
  EXPECT_EQ(fields["Disk type"], "Differential") << r.output;
  EXPECT_EQ(fields["Media size"], "64 MiB (67108864 bytes)") << r.output;
  EXPECT_EQ(fields["Bytes per sector"], "4096 bytes") << r.output;
  // libvhdi shows parent_linkage as the parent's identifier, and
  // absolute_win32_path as its file name.
  EXPECT_EQ(fields["Parent identifier"], ph.data_write_guid.ToString()) << r.output;
  std::string win32 = fs::canonical(parent).string();
  std::replace(win32.begin(), win32.end(), '/', '\\');
  if (win32.starts_with("\\mnt\\")) {
    EXPECT_TRUE(fields["Parent filename"].ends_with("\\parent.vhdx")) << r.output;
  } else {
    EXPECT_EQ(fields["Parent filename"], win32) << r.output;
  }
}

}  // namespace
}  // namespace vhdx::test
