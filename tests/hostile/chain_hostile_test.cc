// Broken and hostile differencing chains: missing parents, linkage
// mismatches, sector-size mismatches, loops, over-deep chains, hostile
// parent locators, PARTIALLY_PRESENT blocks without a usable sector bitmap,
// parents that are not VHDX files; and rebase / commit refusing what they
// must refuse. Each case must fail with a clear error (code and the words
// that name the problem), never crash, and leave every file byte-identical,
// whether opened read-only or read-write.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "format/bat.h"
#include "format/constants.h"
#include "format/metadata.h"
#include "support/image_builder.h"
#include "support/test_util.h"
#include "vhdx/chain.h"
#include "vhdx/create.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;
using format::KiB;
using format::MiB;
using Bytes = std::vector<uint8_t>;

// Options built by assignment: designated initializers would have to name
// every member without a default initializer (-Wmissing-field-initializers).
OpenOptions Opts(bool read_only) {
  OpenOptions o;
  o.read_only = read_only;
  return o;
}

// The GUID text the builder's images carry as DataWriteGuid (every byte
// 0x22) and that its default locator names as parent_linkage.
constexpr const char* kBuilderLinkage = "22222222-2222-2222-2222-222222222222";

std::string FreshDir(const std::string& name) {
  static int counter = 0;
  std::string dir = ScratchPath(fmt::format("hostile-{}-{}", name, ++counter));
  fs::create_directories(dir);
  return dir;
}

Bytes Pattern(size_t n, uint64_t seed) {
  Bytes out(n);
  std::mt19937_64 rng(seed);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

// Size, modification and change times (ns) and inode: any write or
// truncate through any name changes them.
std::string StatFingerprint(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "missing";
  return fmt::format("ino {} size {} mtime {}.{} ctime {}.{}", st.st_ino, st.st_size,
                     st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
}

// SHA-256 of every file (and its stat fingerprint), to prove nothing was
// written. Files in `stat_only` (the far end of a 300-image chain, which
// the library must never open) get only the fingerprint: hashing hundreds
// of 4 MiB files per open attempt costs seconds.
class FileHashes {
 public:
  explicit FileHashes(std::vector<std::string> paths, std::vector<std::string> stat_only = {})
      : paths_(std::move(paths)), stat_only_(std::move(stat_only)) {
    for (const auto& p : paths_) before_[p] = Sha256OfFile(p) + " " + StatFingerprint(p);
    for (const auto& p : stat_only_) before_[p] = StatFingerprint(p);
  }
  void ExpectUnchanged(const std::string& when) const {
    for (const auto& p : paths_)
      EXPECT_EQ(Sha256OfFile(p) + " " + StatFingerprint(p), before_.at(p)) << p << " changed " << when;
    for (const auto& p : stat_only_)
      EXPECT_EQ(StatFingerprint(p), before_.at(p)) << p << " changed " << when;
  }

 private:
  std::vector<std::string> paths_, stat_only_;
  std::map<std::string, std::string> before_;
};

// Opens `path` read-only and read-write; both must fail with `code` and a
// message containing every one of `words`. Returns the read-only message.
std::string ExpectOpenFails(const std::string& path, Errc code, const std::vector<std::string>& words,
                            const std::vector<std::string>& files, OpenOptions options = {},
                            const std::vector<std::string>& stat_only = {}) {
  FileHashes hashes(files, stat_only);
  std::string message;
  for (bool read_only : {true, false}) {
    SCOPED_TRACE(read_only ? "read-only open" : "read-write open");
    options.read_only = read_only;
    auto image = Image::Open(path, options);
    EXPECT_FALSE(image.ok()) << path << " opened";
    if (image.ok()) continue;
    const Status& st = image.status();
    EXPECT_EQ(st.code(), code) << ErrcName(st.code()) << ": " << st.message();
    EXPECT_EQ(st.message().find('\n'), std::string::npos) << "not one line: " << st.message();
    for (const auto& w : words)
      EXPECT_NE(st.message().find(w), std::string::npos)
          << "message does not name '" << w << "': " << st.message();
    if (read_only) message = st.message();
    hashes.ExpectUnchanged(read_only ? "by a read-only open" : "by a read-write open");
  }
  return message;
}

// A plain dynamic parent with data in its first blocks, written to
// `dir/name`. Its DataWriteGuid is the builder's (kBuilderLinkage).
std::string WriteParent(const std::string& dir, const std::string& name, ImageSpec spec = {},
                        const Bytes& data = Pattern(3 * MiB, 1)) {
  ImageBuilder b(spec);
  b.WriteVirtual(0, data);
  std::string path = dir + "/" + name;
  b.WriteTo(path);
  return path;
}

ImageSpec ChildSpec(const std::string& relative_path, const std::string& linkage = kBuilderLinkage,
                    uint32_t sector = 512) {
  ImageSpec spec;
  spec.type = DiskType::kDifferencing;
  spec.logical_sector_size = sector;
  spec.parent_locator = {{"parent_linkage", "{" + linkage + "}"},
                         {"relative_path", relative_path},
                         {"absolute_win32_path", "C:\\nowhere\\at\\all\\" + relative_path.substr(2)}};
  return spec;
}

std::string WriteChild(const std::string& dir, const std::string& name, const ImageSpec& spec) {
  ImageBuilder b(spec);
  std::string path = dir + "/" + name;
  b.WriteTo(path);
  return path;
}

// ---- Finding the parent -------------------------------------------------

TEST(ChainHostileTest, MissingParentNamesThePathsLookedFor) {
  const std::string dir = FreshDir("missing");
  const std::string elsewhere = FreshDir("missing-elsewhere");
  const std::string child = WriteChild(dir, "child.avhdx", ChildSpec(".\\gone.vhdx"));
  OpenOptions options;
  options.parent_dirs = {elsewhere};
  ExpectOpenFails(child, Errc::kNotFound, {dir + "/gone.vhdx", elsewhere + "/gone.vhdx"}, {child},
                  options);
  // skip_parent opens the child alone: its locator is visible, its data is not.
  FileHashes hashes({child});
  OpenOptions skip = Opts(true);
  skip.skip_parent = true;
  auto alone = Image::Open(child, skip);
  ASSERT_TRUE(alone.ok()) << alone.status().message();
  EXPECT_EQ((*alone)->parent(), nullptr);
  ASSERT_TRUE((*alone)->info().parent.has_value());
  EXPECT_EQ((*alone)->info().parent->Get("relative_path"), ".\\gone.vhdx");
  Bytes buf(4096);
  EXPECT_FALSE((*alone)->Read(0, buf.data(), buf.size()).ok())
      << "a differencing image opened without its parent must not read";
  alone->reset();
  hashes.ExpectUnchanged("by a skip_parent open");
}

TEST(ChainHostileTest, ParentThatIsNotAVhdxFile) {
  const std::string dir = FreshDir("notvhdx");
  const std::string parent = dir + "/parent.vhdx";
  WriteWholeFile(parent, Pattern(3 * MiB, 9));
  const std::string child = WriteChild(dir, "child.avhdx", ChildSpec(".\\parent.vhdx"));
  ExpectOpenFails(child, Errc::kCorrupt, {parent}, {child, parent});
}

TEST(ChainHostileTest, EmptyParentFile) {
  const std::string dir = FreshDir("emptyparent");
  const std::string parent = dir + "/parent.vhdx";
  WriteWholeFile(parent, {});
  const std::string child = WriteChild(dir, "child.avhdx", ChildSpec(".\\parent.vhdx"));
  ExpectOpenFails(child, Errc::kCorrupt, {parent}, {child, parent});
}

TEST(ChainHostileTest, LinkageMismatchNamesBothGuidsAndCanBeOverridden) {
  const std::string dir = FreshDir("linkage");
  const Bytes data = Pattern(3 * MiB, 2);
  ImageBuilder pb;
  pb.WriteVirtual(0, data);
  format::Header h = pb.header(1);
  h.data_write_guid.bytes.fill(0x55);  // the parent changed after the child was made
  pb.SetHeader(1, h);
  h = pb.header(0);
  h.data_write_guid.bytes.fill(0x55);
  pb.SetHeader(0, h);
  const std::string parent = dir + "/parent.vhdx";
  pb.WriteTo(parent);
  const std::string child = WriteChild(dir, "child.avhdx", ChildSpec(".\\parent.vhdx"));

  ExpectOpenFails(child, Errc::kCorrupt, {kBuilderLinkage, "55555555-5555-5555-5555-555555555555"},
                  {child, parent});

  FileHashes hashes({child, parent});
  OpenOptions ignore = Opts(true);
  ignore.ignore_parent_linkage = true;
  auto forced = Image::Open(child, ignore);
  ASSERT_TRUE(forced.ok()) << forced.status().message();
  ASSERT_NE((*forced)->parent(), nullptr);
  Bytes got(data.size());
  ASSERT_TRUE((*forced)->Read(0, got.data(), got.size()).ok());
  EXPECT_EQ(got, data) << "ignore_parent_linkage reads through the parent";
  forced->reset();
  hashes.ExpectUnchanged("by an ignore_parent_linkage open");
}

TEST(ChainHostileTest, ParentLinkage2AloneMatches) {
  // The state a commit leaves the child in between recording the parent's
  // new DataWriteGuid and the parent's header update: linkage2 matches.
  const std::string dir = FreshDir("linkage2");
  const Bytes data = Pattern(3 * MiB, 3);
  const std::string parent = WriteParent(dir, "parent.vhdx", {}, data);
  ImageSpec spec;
  spec.type = DiskType::kDifferencing;
  spec.parent_locator = {{"parent_linkage", "{77777777-7777-7777-7777-777777777777}"},
                         {"parent_linkage2", std::string("{") + kBuilderLinkage + "}"},
                         {"relative_path", ".\\parent.vhdx"}};
  const std::string child = WriteChild(dir, "child.avhdx", spec);
  auto image = Image::Open(child);
  ASSERT_TRUE(image.ok()) << image.status().message();
  Bytes got(data.size());
  ASSERT_TRUE((*image)->Read(0, got.data(), got.size()).ok());
  EXPECT_EQ(got, data);
}

TEST(ChainHostileTest, ParentWithAnotherLogicalSectorSize) {
  const std::string dir = FreshDir("sectors");
  ImageSpec ps;
  ps.logical_sector_size = 4096;
  const std::string parent = WriteParent(dir, "parent.vhdx", ps);
  const std::string child = WriteChild(dir, "child.avhdx", ChildSpec(".\\parent.vhdx"));
  ExpectOpenFails(child, Errc::kCorrupt, {"logical sectors", "512", "4096", "parent.vhdx"}, {child, parent});
}

TEST(ChainHostileTest, TwoImagesThatAreEachOthersParent) {
  const std::string dir = FreshDir("loop");
  const std::string a = WriteChild(dir, "A.vhdx", ChildSpec(".\\B.vhdx"));
  const std::string b = WriteChild(dir, "B.vhdx", ChildSpec(".\\A.vhdx"));
  ExpectOpenFails(a, Errc::kCorrupt, {"loop", "A.vhdx"}, {a, b});
  ExpectOpenFails(b, Errc::kCorrupt, {"loop", "B.vhdx"}, {a, b});
}

TEST(ChainHostileTest, ImageThatIsItsOwnParent) {
  const std::string dir = FreshDir("self");
  const std::string a = WriteChild(dir, "self.vhdx", ChildSpec(".\\self.vhdx"));
  ExpectOpenFails(a, Errc::kCorrupt, {"loop", "self.vhdx"}, {a});
}

// A three-image loop reached through a non-looping child: C -> A -> B -> D -> A.
TEST(ChainHostileTest, LoopFurtherUpTheChain) {
  const std::string dir = FreshDir("loop3");
  const std::string c = WriteChild(dir, "C.vhdx", ChildSpec(".\\A.vhdx"));
  const std::string a = WriteChild(dir, "A.vhdx", ChildSpec(".\\B.vhdx"));
  const std::string b = WriteChild(dir, "B.vhdx", ChildSpec(".\\D.vhdx"));
  const std::string d = WriteChild(dir, "D.vhdx", ChildSpec(".\\A.vhdx"));
  ExpectOpenFails(c, Errc::kCorrupt, {"loop"}, {a, b, c, d});
}

// Level i of a synthetic chain is "c<i>.vhdx", whose parent is c<i+1>; the
// last one's parent is a plain image with data.
std::vector<std::string> WriteLongChain(const std::string& dir, int depth, const Bytes& data) {
  std::vector<std::string> files;
  for (int i = 0; i < depth; ++i) {
    std::string parent = i + 1 == depth ? "base.vhdx" : fmt::format("c{}.vhdx", i + 1);
    files.push_back(WriteChild(dir, fmt::format("c{}.vhdx", i), ChildSpec(".\\" + parent)));
  }
  files.push_back(WriteParent(dir, "base.vhdx", {}, data));
  return files;
}

// The most images a chain may have, the top included (src/image_open_chain.cc:
// kMaxChainDepth): deeper chains are refused before more files are opened.
constexpr int kMaxChainDepth = 64;

TEST(ChainHostileTest, ChainAtTheDepthCapOpensAndOneDeeperFailsCleanly) {
  const Bytes data = Pattern(1 * MiB, 4);
  {
    // kMaxChainDepth images in all: the top plus kMaxChainDepth - 1 parents.
    const std::string dir = FreshDir("deep-ok");
    auto files = WriteLongChain(dir, kMaxChainDepth - 1, data);
    FileHashes hashes(files);
    auto image = Image::Open(files[0]);
    ASSERT_TRUE(image.ok()) << image.status().message();
    int length = 0;
    for (const Image* i = image->get(); i != nullptr; i = i->parent()) ++length;
    EXPECT_EQ(length, kMaxChainDepth);
    Bytes got(data.size());
    ASSERT_TRUE((*image)->Read(0, got.data(), got.size()).ok());
    EXPECT_EQ(got, data);
    image->reset();
    hashes.ExpectUnchanged("by opening a deep chain");
  }
  {
    const std::string dir = FreshDir("deep-too");
    auto files = WriteLongChain(dir, kMaxChainDepth, data);
    ExpectOpenFails(files[0], Errc::kUnsupported, {"deeper than", fmt::format("{}", kMaxChainDepth)},
                    files);
  }
}

TEST(ChainHostileTest, ThreeHundredDeepChainFailsCleanly) {
  const std::string dir = FreshDir("deep300");
  auto files = WriteLongChain(dir, 300, Pattern(1 * MiB, 5));
  // The library may open the first kMaxChainDepth files; the rest it must
  // not even reach.
  const std::vector<std::string> near(files.begin(), files.begin() + kMaxChainDepth + 1);
  const std::vector<std::string> far(files.begin() + kMaxChainDepth + 1, files.end());
  ExpectOpenFails(files[0], Errc::kUnsupported, {"deeper than", fmt::format("{}", kMaxChainDepth)},
                  near, {}, far);
}

// ---- Hostile parent locators --------------------------------------------

// A child whose locator item is rewritten in place by `edit` (the item keeps
// its length; offsets inside it are from the item start). The default
// locator is valid and its parent exists, so only the edit can fail it.
class LocatorEditor {
 public:
  explicit LocatorEditor(const std::string& name) : dir_(FreshDir(name)) {
    parent_ = WriteParent(dir_, "parent.vhdx");
    ImageSpec spec = ChildSpec(".\\parent.vhdx");
    spec.parent_locator.push_back({"volume_path", "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\parent.vhdx"});
    builder_ = std::make_unique<ImageBuilder>(spec);
    format::MetadataTable table;
    Bytes raw = builder_->ReadFile(builder_->metadata_offset(), 64 * KiB);
    Status st = format::ParseMetadataTable(raw.data(), builder_->metadata_offset(), MiB, &table);
    EXPECT_TRUE(st.ok()) << st.message();
    const format::MetadataEntry* e = table.FindSystem(format::kParentLocatorGuid);
    EXPECT_NE(e, nullptr);
    if (e) {
      item_offset_ = builder_->metadata_offset() + e->offset;
      item_ = builder_->ReadFile(item_offset_, e->length);
    }
  }

  Bytes& item() { return item_; }
  uint16_t Get16(size_t at) const { return static_cast<uint16_t>(item_[at] | item_[at + 1] << 8); }
  uint32_t Get32(size_t at) const {
    return item_[at] | item_[at + 1] << 8 | item_[at + 2] << 16 | static_cast<uint32_t>(item_[at + 3]) << 24;
  }
  void Put16(size_t at, uint16_t v) {
    item_[at] = static_cast<uint8_t>(v);
    item_[at + 1] = static_cast<uint8_t>(v >> 8);
  }
  void Put32(size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) item_[at + i] = static_cast<uint8_t>(v >> (8 * i));
  }
  // Entry k's fields.
  static size_t Entry(int k) { return 20 + 12 * static_cast<size_t>(k); }
  int FindKey(const std::string& key) const {
    for (int k = 0; k < Get16(18); ++k) {
      const uint32_t ko = Get32(Entry(k));
      const uint16_t kl = Get16(Entry(k) + 8);
      std::string ascii;
      for (size_t i = 0; i < kl; i += 2) ascii += static_cast<char>(item_[ko + i]);
      if (ascii == key) return k;
    }
    ADD_FAILURE() << "no key " << key;
    return 0;
  }

  // Writes the child with the edited item; returns its path.
  std::string Write() {
    builder_->WriteFile(item_offset_, item_);
    std::string path = dir_ + "/child.avhdx";
    builder_->WriteTo(path);
    return path;
  }
  const std::string& parent() const { return parent_; }

 private:
  std::string dir_, parent_;
  std::unique_ptr<ImageBuilder> builder_;
  uint64_t item_offset_ = 0;
  Bytes item_;
};

TEST(ChainHostileTest, UneditedLocatorOpens) {
  LocatorEditor ed("loc-control");
  const std::string child = ed.Write();
  auto image = Image::Open(child);
  ASSERT_TRUE(image.ok()) << image.status().message();
  EXPECT_NE((*image)->parent(), nullptr);
}

struct LocatorCase {
  const char* name;
  std::function<void(LocatorEditor&)> edit;
  Errc code;
  std::vector<std::string> words;
};

class LocatorTest : public ::testing::TestWithParam<LocatorCase> {};

TEST_P(LocatorTest, FailsCleanlyAndWritesNothing) {
  const LocatorCase& c = GetParam();
  LocatorEditor ed(fmt::format("loc-{}", c.name));
  c.edit(ed);
  const std::string child = ed.Write();
  ExpectOpenFails(child, c.code, c.words, {child, ed.parent()});
}

const LocatorCase kLocatorCases[] = {
    {"HugeKeyValueCount", [](LocatorEditor& e) { e.Put16(18, 0xFFFF); }, Errc::kCorrupt,
     {"parent locator", "65535"}},
    {"ZeroKeyValueCount", [](LocatorEditor& e) { e.Put16(18, 0); }, Errc::kCorrupt,
     {"parent locator", "parent_linkage"}},
    {"KeyOffsetPastTheItem",
     [](LocatorEditor& e) { e.Put32(LocatorEditor::Entry(1), static_cast<uint32_t>(e.item().size())); },
     Errc::kCorrupt, {"parent locator", "entry 1"}},
    {"ValueOffsetOverflows",
     [](LocatorEditor& e) { e.Put32(LocatorEditor::Entry(0) + 4, 0xFFFFFFF0u); }, Errc::kCorrupt,
     {"parent locator", "entry 0"}},
    {"ValueRunsPastTheItem",
     [](LocatorEditor& e) {
       const int k = e.FindKey("relative_path");
       e.Put16(LocatorEditor::Entry(k) + 10, 0xFFFE);
     },
     Errc::kCorrupt, {"parent locator"}},
    {"ZeroKeyOffset", [](LocatorEditor& e) { e.Put32(LocatorEditor::Entry(0), 0); }, Errc::kCorrupt,
     {"parent locator", "entry 0"}},
    {"OddKeyLength",
     [](LocatorEditor& e) { e.Put16(LocatorEditor::Entry(0) + 8, static_cast<uint16_t>(e.Get16(LocatorEditor::Entry(0) + 8) - 1)); },
     Errc::kCorrupt, {"parent locator", "entry 0"}},
    {"EmptyValue",
     [](LocatorEditor& e) { e.Put16(LocatorEditor::Entry(e.FindKey("relative_path")) + 10, 0); },
     Errc::kCorrupt, {"parent locator"}},
    {"LoneHighSurrogate",
     [](LocatorEditor& e) {
       const int k = e.FindKey("relative_path");
       e.Put16(e.Get32(LocatorEditor::Entry(k) + 4) + 2, 0xD800);
     },
     Errc::kCorrupt, {"parent locator", "UTF-16"}},
    {"LoneLowSurrogate",
     [](LocatorEditor& e) {
       const int k = e.FindKey("parent_linkage");
       e.Put16(e.Get32(LocatorEditor::Entry(k) + 4), 0xDC00);
     },
     Errc::kCorrupt, {"parent locator", "UTF-16"}},
    {"NulInsideAValue",
     [](LocatorEditor& e) {
       const int k = e.FindKey("relative_path");
       e.Put16(e.Get32(LocatorEditor::Entry(k) + 4) + 4, 0);
     },
     Errc::kCorrupt, {"parent locator", "UTF-16"}},
    {"NoParentLinkage",
     [](LocatorEditor& e) {
       // Rename the key: "parent_linkage" -> "parent_linkagf".
       const int k = e.FindKey("parent_linkage");
       const size_t last = e.Get32(LocatorEditor::Entry(k)) + e.Get16(LocatorEditor::Entry(k) + 8) - 2;
       e.Put16(last, 'f');
     },
     Errc::kCorrupt, {"parent locator", "parent_linkage"}},
    {"DuplicateKey",
     [](LocatorEditor& e) {
       // Point entry 1's key at entry 0's key.
       e.Put32(LocatorEditor::Entry(1), e.Get32(LocatorEditor::Entry(0)));
       e.Put16(LocatorEditor::Entry(1) + 8, e.Get16(LocatorEditor::Entry(0) + 8));
     },
     Errc::kCorrupt, {"parent locator", "twice"}},
    {"UnknownLocatorType", [](LocatorEditor& e) { e.item()[0] ^= 0xFF; }, Errc::kUnsupported,
     {"parent locator", "locator type"}},
    {"LinkageNotAGuid",
     [](LocatorEditor& e) {
       const int k = e.FindKey("parent_linkage");
       e.Put16(e.Get32(LocatorEditor::Entry(k) + 4) + 6, 'z');
     },
     Errc::kCorrupt, {"parent_linkage"}},
};

INSTANTIATE_TEST_SUITE_P(Cases, LocatorTest, ::testing::ValuesIn(kLocatorCases),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

// ---- Hostile BAT states ----------------------------------------------------

// Reads `n` bytes at `offset` of the image at `path` opened read-only (and
// read-write); both the open or the read must fail with kCorrupt naming
// `word`; nothing is written.
void ExpectReadFails(const std::string& path, uint64_t offset, size_t n,
                     const std::vector<std::string>& words, const std::vector<std::string>& files) {
  FileHashes hashes(files);
  for (bool read_only : {true, false}) {
    SCOPED_TRACE(read_only ? "read-only" : "read-write");
    auto image = Image::Open(path, Opts(read_only));
    Status st = image.ok() ? Status::Ok() : image.status();
    if (image.ok()) {
      Bytes buf(n);
      st = (*image)->Read(offset, buf.data(), n);
      EXPECT_FALSE(st.ok()) << "read of " << n << " at " << offset << " succeeded";
      if (!read_only) {
        Status closed = (*image)->Close();
        (void)closed;  // a close may fail too; what matters is no byte written
      }
    }
    if (st.ok()) continue;
    EXPECT_EQ(st.code(), Errc::kCorrupt) << ErrcName(st.code()) << ": " << st.message();
    for (const auto& word : words)
      EXPECT_NE(st.message().find(word), std::string::npos) << "no '" << word << "' in " << st.message();
    EXPECT_EQ(st.message().find('\n'), std::string::npos) << st.message();
  }
  hashes.ExpectUnchanged("by open and read");
}

TEST(ChainHostileTest, PartiallyPresentBlockWithoutASectorBitmap) {
  const std::string dir = FreshDir("nobitmap");
  const std::string parent = WriteParent(dir, "parent.vhdx");
  ImageBuilder b(ChildSpec(".\\parent.vhdx"));
  const uint64_t payload = b.AppendSpace(MiB);
  b.WriteFile(payload, Pattern(MiB, 6));
  b.SetBlock(1, format::kPayloadPartiallyPresent, payload);  // its chunk's SB entry stays NOT_PRESENT
  const std::string child = dir + "/child.avhdx";
  b.WriteTo(child);
  // The message names the sector bitmap's BAT entry and the block that needs it.
  const uint64_t index = b.geometry().BitmapIndex(0);
  ExpectReadFails(child, 1 * MiB + 4096, 8192,
                  {fmt::format("BAT entry {}", index), "PARTIALLY_PRESENT", "payload block 1"}, {child, parent});

  // The blocks around it still read through to the parent when the open is
  // lenient about the bad block.
  auto image = Image::Open(child);
  if (image.ok()) {
    const Bytes parent_data = Pattern(3 * MiB, 1);
    Bytes got(4096);
    ASSERT_TRUE((*image)->Read(0, got.data(), got.size()).ok());
    EXPECT_EQ(got, Bytes(parent_data.begin(), parent_data.begin() + 4096));
  }
}

TEST(ChainHostileTest, SectorBitmapPastTheEndOfTheFile) {
  const std::string dir = FreshDir("bitmap-eof");
  const std::string parent = WriteParent(dir, "parent.vhdx");
  ImageBuilder b(ChildSpec(".\\parent.vhdx"));
  const uint64_t payload = b.AppendSpace(MiB);
  b.WriteFile(payload, Pattern(MiB, 7));
  b.SetBlock(1, format::kPayloadPartiallyPresent, payload);
  const uint64_t past = (b.file_size() + 64 * MiB) / MiB * MiB;
  b.SetBatEntry(b.geometry().BitmapIndex(0), format::kSectorBitmapPresent, past);
  const std::string child = dir + "/child.avhdx";
  b.WriteTo(child);
  ExpectReadFails(child, 1 * MiB, 4096, {"sector bitmap", fmt::format("BAT entry {}", b.geometry().BitmapIndex(0))},
                  {child, parent});
}

TEST(ChainHostileTest, PartiallyPresentInADynamicImage) {
  const std::string dir = FreshDir("pp-dynamic");
  ImageBuilder b;
  const uint64_t payload = b.AppendSpace(MiB);
  b.SetBlock(1, format::kPayloadPartiallyPresent, payload);
  const std::string path = dir + "/dynamic.vhdx";
  b.WriteTo(path);
  ExpectReadFails(path, 1 * MiB, 4096, {"PARTIALLY_PRESENT", "BAT entry 1"}, {path});
}

// ---- Rebase and commit refusing -------------------------------------------

// A real two-level chain made by CreateImage: base (with data) and child.
struct RealChain {
  std::string dir, base, child;
};

RealChain MakeRealChain(const std::string& name, uint32_t sector = 512, uint64_t size = 8 * MiB) {
  RealChain c;
  c.dir = FreshDir(name);
  c.base = c.dir + "/base.vhdx";
  c.child = c.dir + "/child.avhdx";
  CreateOptions o;
  o.virtual_size = size;
  o.block_size = 1 * MiB;
  o.logical_sector_size = sector;
  Status st = CreateImage(c.base, o);
  EXPECT_TRUE(st.ok()) << st.message();
  {
    auto image = Image::Open(c.base, Opts(false));
    EXPECT_TRUE(image.ok()) << image.status().message();
    if (image.ok()) {
      Bytes data = Pattern(2 * MiB, 8);
      EXPECT_TRUE((*image)->Write(0, data.data(), data.size()).ok());
      EXPECT_TRUE((*image)->Close().ok());
    }
  }
  CreateOptions co;
  co.parent_path = c.base;
  st = CreateImage(c.child, co);
  EXPECT_TRUE(st.ok()) << st.message();
  auto image = Image::Open(c.child, Opts(false));
  EXPECT_TRUE(image.ok()) << image.status().message();
  if (image.ok()) {
    Bytes data = Pattern(300 * KiB, 9);
    EXPECT_TRUE((*image)->Write(1 * MiB - 1000, data.data(), data.size()).ok());
    EXPECT_TRUE((*image)->Close().ok());
  }
  return c;
}

TEST(ChainHostileTest, RebaseOntoAnUnrelatedParentNeedsForce) {
  RealChain c = MakeRealChain("rebase");
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::string other = c.dir + "/other.vhdx";
  CreateOptions o;
  o.virtual_size = 8 * MiB;
  o.block_size = 2 * MiB;
  ASSERT_TRUE(CreateImage(other, o).ok());
  auto other_guid = [&] {
    auto image = Image::Open(other);
    EXPECT_TRUE(image.ok());
    const ImageInfo& info = (*image)->info();
    return info.headers[info.current_header].data_write_guid.ToString();
  }();
  {
    FileHashes hashes({c.base, c.child, other});
    Status st = RebaseImage(c.child, other);
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(st.code(), Errc::kCorrupt) << ErrcName(st.code()) << ": " << st.message();
    EXPECT_NE(st.message().find(other_guid), std::string::npos) << st.message();
    hashes.ExpectUnchanged("by a refused rebase");
  }
  // With force the child follows the new parent: it reads the other
  // image's (empty) disk where it has no data of its own.
  FileHashes hashes({c.base, other});
  Status st = RebaseImage(c.child, other, {.parent_dirs = {}, .force = true});
  ASSERT_TRUE(st.ok()) << st.message();
  hashes.ExpectUnchanged("by a forced rebase (only the child may change)");
  auto image = Image::Open(c.child);
  ASSERT_TRUE(image.ok()) << image.status().message();
  std::error_code ec;
  EXPECT_TRUE(fs::equivalent((*image)->info().parent_filename, other, ec));
  Bytes got(4096);
  ASSERT_TRUE((*image)->Read(0, got.data(), got.size()).ok());
  EXPECT_EQ(got, Bytes(4096, 0));
  ASSERT_TRUE((*image)->Read(1 * MiB, got.data(), got.size()).ok());
  Bytes data = Pattern(300 * KiB, 9);
  EXPECT_EQ(got, Bytes(data.begin() + 1000, data.begin() + 1000 + 4096)) << "the child's own data";
}

TEST(ChainHostileTest, RebaseOntoAnotherSectorSizeOrASmallerChildFailsEvenWithForce) {
  RealChain c = MakeRealChain("rebase-geometry");
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::string sector4k = c.dir + "/sector4k.vhdx";
  const std::string larger = c.dir + "/larger.vhdx";
  CreateOptions o;
  o.virtual_size = 8 * MiB;
  o.logical_sector_size = 4096;
  ASSERT_TRUE(CreateImage(sector4k, o).ok());
  o.virtual_size = 16 * MiB;
  o.logical_sector_size = 512;
  ASSERT_TRUE(CreateImage(larger, o).ok());
  FileHashes hashes({c.base, c.child, sector4k, larger});
  Status st = RebaseImage(c.child, sector4k, {.parent_dirs = {}, .force = true});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("logical sectors"), std::string::npos) << st.message();
  st = RebaseImage(c.child, larger, {.parent_dirs = {}, .force = true});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("larger than the child"), std::string::npos) << st.message();
  st = RebaseImage(c.child, c.dir + "/absent.vhdx");
  EXPECT_EQ(st.code(), Errc::kNotFound) << st.message();
  hashes.ExpectUnchanged("by refused rebases");
}

TEST(ChainHostileTest, CommitIntoASmallerParentFails) {
  RealChain c = MakeRealChain("commit-smaller");
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::string big = c.dir + "/big.avhdx";
  CreateOptions co;
  co.parent_path = c.base;
  co.virtual_size = 12 * MiB;
  ASSERT_TRUE(CreateImage(big, co).ok());
  FileHashes hashes({c.base, c.child, big});
  auto result = CommitImage(big);
  EXPECT_FALSE(result.ok());
  hashes.ExpectUnchanged("by a refused commit");
}

TEST(ChainHostileTest, CommitOfANonDifferencingImageFails) {
  RealChain c = MakeRealChain("commit-base");
  ASSERT_FALSE(::testing::Test::HasFailure());
  FileHashes hashes({c.base, c.child});
  auto result = CommitImage(c.base);
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Errc::kInvalidArgument) << result.status().message();
  hashes.ExpectUnchanged("by a refused commit");
}

// Makes a file unwritable even for root (FS_IMMUTABLE_FL), undone on scope
// exit. ok() false when the file system or capabilities do not allow it.
class ImmutableFile {
 public:
  explicit ImmutableFile(const std::string& path) : path_(path) { ok_ = SetFlag(true); }
  ~ImmutableFile() {
    if (ok_) SetFlag(false);
  }
  bool ok() const { return ok_; }

 private:
  bool SetFlag(bool on) {
    int fd = open(path_.c_str(), O_RDONLY);
    if (fd < 0) return false;
    int flags = 0;
    bool done = ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
    if (done) {
      flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
      done = ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
    }
    close(fd);
    return done;
  }
  std::string path_;
  bool ok_ = false;
};

bool CanOpenForWriting(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR);
  if (fd < 0) return false;
  close(fd);
  return true;
}

TEST(ChainHostileTest, CommitIntoAParentThatCannotBeWritten) {
  RealChain c = MakeRealChain("commit-readonly");
  ASSERT_FALSE(::testing::Test::HasFailure());
  ASSERT_EQ(chmod(c.base.c_str(), 0444), 0);
  std::unique_ptr<ImmutableFile> immutable;
  if (CanOpenForWriting(c.base)) {
    // Root ignores file modes; the immutable attribute stops root too.
    immutable = std::make_unique<ImmutableFile>(c.base);
    if (!immutable->ok() || CanOpenForWriting(c.base)) {
      immutable.reset();
      chmod(c.base.c_str(), 0644);
      GTEST_SKIP() << "cannot make " << c.base << " unwritable here (root without FS_IMMUTABLE_FL)";
    }
  }
  std::string chain_before;
  {
    auto image = Image::Open(c.child);
    ASSERT_TRUE(image.ok()) << image.status().message();
    chain_before = Sha256OfImage(**image);
  }
  {
    FileHashes hashes({c.base, c.child});
    auto result = CommitImage(c.child);
    EXPECT_FALSE(result.ok()) << "commit into an unwritable parent succeeded";
    if (!result.ok()) {
      EXPECT_NE(result.status().message().find(c.base), std::string::npos) << result.status().message();
      EXPECT_TRUE(result.status().code() == Errc::kIoError || result.status().code() == Errc::kReadOnly)
          << ErrcName(result.status().code()) << ": " << result.status().message();
    }
    hashes.ExpectUnchanged("by a commit that could not write the parent");
  }
  immutable.reset();
  chmod(c.base.c_str(), 0644);
  auto image = Image::Open(c.child);
  ASSERT_TRUE(image.ok()) << image.status().message();
  EXPECT_EQ(Sha256OfImage(**image), chain_before);
}

}  // namespace
}  // namespace vhdx::test
