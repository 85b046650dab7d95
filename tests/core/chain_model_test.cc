// Model-based tests of differencing chains on real files: chains of depth 1
// to 4 made with CreateImage (parents found through the locators the
// children were given), mixed block sizes, 512- and 4096-byte sectors, a
// child larger than its parent. Every level gets seeded random writes,
// discards and write-zeroes; a byte vector per level holds what that
// level's chain must read, checked after every step, after reopening
// read-write and read-only (whole disk by SHA-256), and by vhdx::Check. The
// parents' files must not change by a single byte while their children are
// written. Deterministic cases cover discard in a child (zeros, never the
// parent's data), promotion to FULLY_PRESENT, Map depth, commit and flatten.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>

#include "core_test_util.h"
#include "format/bat.h"
#include "support/test_util.h"
#include "vhdx/chain.h"
#include "vhdx/convert.h"
#include "vhdx/create.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

using Bytes = std::vector<uint8_t>;

// A fresh directory under the scratch dir (a test may run twice with
// --gtest_repeat: the name gets a counter).
std::string FreshDir(const std::string& name) {
  static int counter = 0;
  std::string dir = ScratchPath(fmt::format("{}-{}", name, ++counter));
  fs::create_directories(dir);
  return dir;
}

std::string Difference(const Bytes& model, uint64_t offset, const Bytes& got) {
  if (std::equal(got.begin(), got.end(), model.begin() + static_cast<ptrdiff_t>(offset))) return {};
  size_t i = 0;
  while (got[i] == model[offset + i]) ++i;
  size_t n = 0;
  for (size_t k = i; k < got.size(); ++k) n += got[k] != model[offset + k];
  return fmt::format(
      "first wrong byte at virtual offset {:#x}: read {:#04x}, model {:#04x} ({} bytes differ in "
      "the {} read at {:#x})",
      offset + i, got[i], model[offset + i], n, got.size(), offset);
}

// Every finding of vhdx::Check on the file at `path`, one line each; empty
// when there is none.
std::string CheckFindings(const std::string& path) {
  auto report = Check(path);
  if (!report.ok()) return "check failed: " + report.status().message();
  std::string out;
  for (const auto& f : report->findings)
    out += fmt::format("{}{} at {:#x}: {}; ",
                       f.severity == CheckFinding::Severity::kError ? "error " : "warning ",
                       f.structure, f.offset, f.message);
  return out;
}

std::unique_ptr<Image> OpenPath(const std::string& path, bool read_only) {
  OpenOptions options;
  options.read_only = read_only;
  auto image = Image::Open(path, options);
  EXPECT_TRUE(image.ok()) << "open " << path << (read_only ? " read-only" : " read-write") << ": "
                          << image.status().message();
  if (!image.ok()) return nullptr;
  return std::move(image).value();
}

// Number of images in the chain of `image` (itself included).
int ChainLength(const Image& image) {
  int n = 0;
  for (const Image* i = &image; i != nullptr; i = i->parent()) ++n;
  return n;
}

// One image of a chain: where it lives and its geometry.
struct LevelSpec {
  std::string subdir;     // directory (under the chain's dir) holding the file
  uint32_t block_size = 1 * MiB;
  uint64_t virtual_size = 0;  // 0 for a child: the parent's
  DiskType base_type = DiskType::kDynamic;  // level 0 only
};

struct ChainSpec {
  std::string name;
  uint32_t logical_sector_size = 512;
  std::vector<LevelSpec> levels;  // [0] is the base, [i] the child of [i - 1]
  int steps_per_level = 30;
  uint64_t seed = 1;

  std::string Describe() const {
    std::string s = fmt::format("{}: {}-byte sectors;", name, logical_sector_size);
    for (size_t i = 0; i < levels.size(); ++i)
      s += fmt::format(" [{}] {} {} MiB blocks {}", i,
                       i == 0 ? DiskTypeName(levels[i].base_type) : "differencing",
                       levels[i].block_size / MiB,
                       levels[i].virtual_size ? fmt::format("{} bytes", levels[i].virtual_size)
                                              : std::string("parent's size"));
    return s;
  }
};

// Creates level `level` of a chain at `path` (its parent at `parent_path`).
Status CreateLevel(const std::string& path, const std::string& parent_path, const LevelSpec& spec,
                   uint32_t logical_sector_size) {
  CreateOptions o;
  o.block_size = spec.block_size;
  o.logical_sector_size = logical_sector_size;
  o.virtual_size = spec.virtual_size;
  if (parent_path.empty()) {
    o.type = spec.base_type;
  } else {
    o.parent_path = parent_path;
  }
  return CreateImage(path, o);
}

// A random run over a whole chain, level by level.
class ChainRun {
 public:
  explicit ChainRun(ChainSpec spec) : s_(std::move(spec)), rng_(s_.seed) {
    dir_ = FreshDir(s_.name);
  }

  void Run() {
    for (size_t level = 0; level < s_.levels.size() && ok(); ++level) RunLevel(level);
  }

  bool ok() const { return !::testing::Test::HasFailure(); }
  const std::vector<std::string>& paths() const { return paths_; }

 private:
  void Fail(const std::string& what) {
    std::string recent;
    const size_t from = history_.size() > 12 ? history_.size() - 12 : 0;
    for (size_t i = from; i < history_.size(); ++i) recent += "\n    " + history_[i];
    ADD_FAILURE() << s_.Describe() << " seed " << s_.seed << ", level " << level_ << ", step "
                  << step_ << ": " << what << "\n  last operations:" << recent;
    image_.reset();
  }

  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  const LevelSpec& spec() const { return s_.levels[level_]; }
  Bytes& model() { return models_[level_]; }
  uint64_t size() const { return models_[level_].size(); }

  void RunLevel(size_t level) {
    level_ = level;
    step_ = 0;
    history_.clear();
    const LevelSpec& ls = s_.levels[level];
    fs::create_directories(dir_ + "/" + ls.subdir);
    const std::string path = fmt::format("{}/{}/level{}.{}", dir_, ls.subdir, level,
                                         level == 0 ? "vhdx" : "avhdx");
    const std::string parent_path = level == 0 ? "" : paths_.back();
    Status st = CreateLevel(path, parent_path, ls, s_.logical_sector_size);
    if (!st.ok()) return Fail("create failed: " + st.message());
    paths_.push_back(path);

    // What the new level reads: its parent's disk, zero-extended.
    Bytes m = level == 0 ? Bytes() : models_.back();
    const uint64_t vsize = ls.virtual_size != 0 ? ls.virtual_size : m.size();
    m.resize(vsize, 0);
    models_.push_back(std::move(m));

    // The files below must stay byte-identical while this level is written.
    std::vector<std::string> below;
    for (size_t i = 0; i < level; ++i) below.push_back(Sha256OfFile(paths_[i]));

    image_ = OpenPath(path, /*read_only=*/false);
    if (!image_) return Fail("read-write open failed");
    if (!ExpectShape(*image_)) return;
    Expect(0, size(), "the new level before any write");
    for (step_ = 0; step_ < s_.steps_per_level && ok() && image_; ++step_) Step();
    if (!ok() || !image_) return;
    FinishLevel();
    for (size_t i = 0; i < level && ok(); ++i)
      if (Sha256OfFile(paths_[i]) != below[i])
        Fail(fmt::format("level {} ({}) changed while its descendant level {} was written", i,
                         paths_[i], level));
  }

  bool ExpectShape(const Image& image) {
    const ImageInfo& info = image.info();
    if (info.virtual_size != size())
      return Fail(fmt::format("virtual size {} (expected {})", info.virtual_size, size())), false;
    if (info.logical_sector_size != s_.logical_sector_size)
      return Fail(fmt::format("logical sector size {}", info.logical_sector_size)), false;
    if (info.block_size != spec().block_size)
      return Fail(fmt::format("block size {}", info.block_size)), false;
    const int length = ChainLength(image);
    if (length != static_cast<int>(level_) + 1)
      return Fail(fmt::format("chain of {} images (expected {})", length, level_ + 1)), false;
    if (level_ == 0) {
      if (info.type == DiskType::kDifferencing || image.parent() != nullptr)
        return Fail("the base is differencing"), false;
      return true;
    }
    if (info.type != DiskType::kDifferencing) return Fail("the child is not differencing"), false;
    std::error_code ec;
    if (info.parent_filename.empty() || !fs::equivalent(info.parent_filename, paths_[level_ - 1], ec))
      return Fail(fmt::format("parent_filename '{}', expected {}", info.parent_filename,
                              paths_[level_ - 1])),
             false;
    return true;
  }

  // A random range: a few bytes, up to 256 KiB, up to 2.5 blocks (at most
  // 6 MiB), or whole blocks; sometimes rounded to the logical sector.
  std::pair<uint64_t, uint64_t> RandomRange() {
    const uint64_t vsize = size(), bs = spec().block_size;
    const uint64_t shape = Below(20);
    if (shape >= 16) {
      const uint64_t blocks = (vsize + bs - 1) / bs;
      const uint64_t first = Below(blocks);
      const uint64_t off = first * bs;
      const uint64_t count = bs >= 32 * MiB ? 1 : 1 + Below(2);
      return {off, std::min(vsize, (first + count) * bs) - off};
    }
    uint64_t len = 1 + (shape < 6    ? Below(4096)
                        : shape < 11 ? Below(256 * KiB)
                                     : Below(std::min<uint64_t>(bs * 5 / 2, 6 * MiB)));
    len = std::min(len, vsize);
    uint64_t off = Below(vsize - len + 1);
    if (Below(10) < 3) {
      const uint64_t sec = s_.logical_sector_size;
      off = off / sec * sec;
      len = std::min(std::max<uint64_t>(sec, (len + sec - 1) / sec * sec), vsize - off);
    }
    return {off, len};
  }

  void Expect(uint64_t off, uint64_t len, const std::string& what) {
    if (len == 0 || !image_) return;
    Bytes got(len, 0xEE);
    Status st = image_->Read(off, got.data(), len);
    if (!st.ok())
      return Fail(fmt::format("{}: read of {} bytes at {:#x} failed: {}", what, len, off,
                              st.message()));
    std::string diff = Difference(model(), off, got);
    if (!diff.empty()) Fail(what + ": " + diff);
  }

  void Step() {
    const uint64_t pick = Below(100);
    auto [off, len] = RandomRange();
    Status st = Status::Ok();
    std::string op;
    // 50% writes (some all-zero: they must still hide the parent), 16%
    // write-zeroes, 16% discards, 12% flushes, 6% close and reopen.
    if (pick < 50) {
      const bool zeros = Below(100) < 12;
      Bytes data = zeros ? Bytes(len, 0) : PatternBytes(len, rng_());
      op = fmt::format("write {:#x}+{:#x}{}", off, len, zeros ? " (zeros)" : "");
      st = image_->Write(off, data.data(), len);
      std::memcpy(model().data() + off, data.data(), len);
    } else if (pick < 66) {
      const bool unmap = Below(2) == 0;
      op = fmt::format("write_zeroes {:#x}+{:#x} may_unmap={}", off, len, unmap);
      st = image_->WriteZeroes(off, len, unmap);
      std::memset(model().data() + off, 0, len);
    } else if (pick < 82) {
      op = fmt::format("discard {:#x}+{:#x}", off, len);
      st = image_->Discard(off, len);
      std::memset(model().data() + off, 0, len);
    } else if (pick < 94) {
      op = "flush";
      off = len = 0;
      st = image_->Flush();
    } else {
      history_.push_back("close and reopen read-write");
      st = image_->Close();
      if (!st.ok()) return Fail("close failed: " + st.message());
      image_ = OpenPath(paths_.back(), /*read_only=*/false);
      if (!image_) return Fail("reopen failed");
      ExpectShape(*image_);
      Expect(0, size(), "whole disk after reopen");
      return;
    }
    history_.push_back(op);
    if (!st.ok()) return Fail(op + " failed: " + st.message());
    Expect(off, len, "the range just changed");
    auto [r_off, r_len] = RandomRange();
    Expect(r_off, std::min<uint64_t>(r_len, 1 * MiB), "a random range");
  }

  // Flush, close, reopen read-write and read-only: the whole disk by hash,
  // Check finds nothing.
  void FinishLevel() {
    const std::string want = Sha256Hex(model().data(), model().size());
    Status st = image_->Flush();
    if (!st.ok()) return Fail("flush: " + st.message());
    st = image_->Close();
    if (!st.ok()) return Fail("close: " + st.message());
    image_.reset();
    for (bool read_only : {false, true}) {
      auto image = OpenPath(paths_.back(), read_only);
      if (!image) return Fail("reopen failed");
      if (!ExpectShape(*image)) return;
      std::string got = Sha256OfImage(*image);
      if (got != want) {
        image_ = std::move(image);
        Expect(0, size(), fmt::format("whole disk after reopen (read_only={})", read_only));
        if (ok()) Fail("hash differs but bytes compare equal?");
        return;
      }
      if (!read_only) {
        st = image->Close();
        if (!st.ok()) return Fail("close after read-write reopen: " + st.message());
      }
    }
    std::string findings = CheckFindings(paths_.back());
    if (!findings.empty()) Fail("check: " + findings);
  }

  ChainSpec s_;
  std::mt19937_64 rng_;
  std::string dir_;
  std::vector<std::string> paths_;
  std::vector<Bytes> models_;
  std::unique_ptr<Image> image_;
  std::vector<std::string> history_;
  size_t level_ = 0;
  int step_ = 0;
};

TEST(ChainModelTest, Depth1Dynamic512Sectors) {
  ChainSpec c{.name = "d1-512", .logical_sector_size = 512, .levels = {}, .steps_per_level = 60, .seed = 11};
  c.levels = {{"base", 1 * MiB, 16 * MiB + 12 * KiB}, {"base", 2 * MiB}};
  ChainRun(c).Run();
}

TEST(ChainModelTest, Depth2With4096SectorsAndALargerGrandchild) {
  // The child lives in another directory than its parent: relative_path
  // with "..".
  ChainSpec c{.name = "d2-4k", .logical_sector_size = 4096, .levels = {}, .steps_per_level = 40, .seed = 22};
  c.levels = {{"a", 32 * MiB, 64 * MiB}, {"b", 1 * MiB}, {"b/c", 2 * MiB, 80 * MiB + 4 * KiB}};
  ChainRun(c).Run();
}

TEST(ChainModelTest, Depth3OnAFixedBase) {
  ChainSpec c{.name = "d3-fixed", .logical_sector_size = 512, .levels = {}, .steps_per_level = 35, .seed = 33};
  c.levels = {{"x", 2 * MiB, 24 * MiB, DiskType::kFixed},
              {"x", 1 * MiB, 32 * MiB + 512},
              {"y", 32 * MiB},
              {"x", 2 * MiB}};
  ChainRun(c).Run();
}

TEST(ChainModelTest, Depth4MixedBlocks4096Sectors) {
  ChainSpec c{.name = "d4-4k", .logical_sector_size = 4096, .levels = {}, .steps_per_level = 30, .seed = 44};
  c.levels = {{"p", 1 * MiB, 20 * MiB}, {"p", 2 * MiB}, {"q", 1 * MiB, 24 * MiB},
              {"p", 32 * MiB},          {"r", 1 * MiB}};
  ChainRun(c).Run();
}

// ---- Deterministic cases ----------------------------------------------------

// Builds a chain in a fresh dir, level by level: each level is created,
// then `fill(level, path)` writes it, before its child is created (writing
// a parent after that would break the child's linkage). Returns the paths;
// empty on failure.
using FillLevel = std::function<void(size_t level, const std::string& path)>;
std::vector<std::string> MakeChain(const std::string& name, uint32_t sector,
                                   const std::vector<LevelSpec>& levels, const FillLevel& fill) {
  const std::string dir = FreshDir(name);
  std::vector<std::string> paths;
  for (size_t i = 0; i < levels.size(); ++i) {
    std::string path = fmt::format("{}/{}{}.vhdx", dir, name, i);
    Status st = CreateLevel(path, i == 0 ? "" : paths.back(), levels[i], sector);
    EXPECT_TRUE(st.ok()) << "create " << path << ": " << st.message();
    if (!st.ok()) return {};
    paths.push_back(path);
    fill(i, path);
    if (::testing::Test::HasFailure()) return {};
  }
  return paths;
}

// Opens `path` read-write, writes `data` at `off`, closes.
void WriteAt(const std::string& path, uint64_t off, const Bytes& data) {
  auto image = OpenPath(path, false);
  ASSERT_TRUE(image);
  Status st = image->Write(off, data.data(), data.size());
  ASSERT_TRUE(st.ok()) << st.message();
  st = image->Close();
  ASSERT_TRUE(st.ok()) << st.message();
}

std::string HashOfImageAt(const std::string& path) {
  auto image = OpenPath(path, true);
  return image ? Sha256OfImage(*image) : "(open failed)";
}

TEST(ChainModelTest, DiscardAndWriteZeroesInAChildReadZerosNotTheParent) {
  const Bytes base = PatternBytes(8 * MiB, 7);
  auto paths = MakeChain("zeros", 512, {{"", 1 * MiB, 8 * MiB}, {"", 1 * MiB}},
                         [&](size_t level, const std::string& path) {
                           if (level == 0) WriteAt(path, 0, base);
                         });
  ASSERT_EQ(paths.size(), 2u);
  const std::string base_file = Sha256OfFile(paths[0]);

  Bytes model = base;
  auto zero = [&](uint64_t off, uint64_t len) { std::memset(model.data() + off, 0, len); };
  {
    auto child = OpenPath(paths[1], false);
    ASSERT_TRUE(child);
    EXPECT_EQ(ReadImage(*child, 0, 8 * MiB), base) << "a fresh child reads like its parent";
    ASSERT_TRUE(child->Discard(2 * MiB, 1 * MiB).ok());  // whole block
    zero(2 * MiB, 1 * MiB);
    ASSERT_TRUE(child->Discard(3 * MiB + 1000, 5000).ok());  // unaligned, partial
    zero(3 * MiB + 1000, 5000);
    ASSERT_TRUE(child->WriteZeroes(4 * MiB, 1 * MiB, /*may_unmap=*/true).ok());
    zero(4 * MiB, 1 * MiB);
    ASSERT_TRUE(child->WriteZeroes(5 * MiB - 3, 70001, /*may_unmap=*/false).ok());
    zero(5 * MiB - 3, 70001);
    const Bytes zeros(300000, 0);  // all-zero data into a block the child lacks
    ASSERT_TRUE(child->Write(6 * MiB + 77, zeros.data(), zeros.size()).ok());
    zero(6 * MiB + 77, zeros.size());
    ASSERT_TRUE(child->Discard(7 * MiB, 1 * MiB).ok());  // the last block, then rewrite part
    zero(7 * MiB, 1 * MiB);
    const Bytes some = PatternBytes(4096, 8);
    ASSERT_TRUE(child->Write(7 * MiB + 8192, some.data(), some.size()).ok());
    std::memcpy(model.data() + 7 * MiB + 8192, some.data(), some.size());
    EXPECT_EQ(Difference(model, 0, ReadImage(*child, 0, 8 * MiB)), "");
    ASSERT_TRUE(child->Close().ok());
  }
  EXPECT_EQ(Sha256OfFile(paths[0]), base_file) << "the parent file changed";
  auto reopened = OpenPath(paths[1], true);
  ASSERT_TRUE(reopened);
  EXPECT_EQ(Difference(model, 0, ReadImage(*reopened, 0, 8 * MiB)), "");
  auto parent_alone = OpenPath(paths[0], true);
  ASSERT_TRUE(parent_alone);
  EXPECT_EQ(ReadImage(*parent_alone, 0, 8 * MiB), base);
  EXPECT_EQ(CheckFindings(paths[1]), "");
}

class PromotionTest : public ::testing::TestWithParam<uint32_t> {};

// A child block written completely, 4 KiB at a time, becomes
// FULLY_PRESENT (no bitmap or parent consulted afterwards).
TEST_P(PromotionTest, WholeBlockWrittenInPiecesBecomesFullyPresent) {
  const uint32_t sector = GetParam();
  Bytes model = PatternBytes(6 * MiB, 70 + sector);
  auto paths = MakeChain(fmt::format("promote{}", sector), sector,
                         {{"", 1 * MiB, 6 * MiB}, {"", 1 * MiB}},
                         [&](size_t level, const std::string& path) {
                           if (level == 0) WriteAt(path, 0, model);
                         });
  ASSERT_EQ(paths.size(), 2u);

  auto child = OpenPath(paths[1], false);
  ASSERT_TRUE(child);
  const Bytes block = PatternBytes(1 * MiB, 71);
  const uint64_t at = 2 * MiB;
  for (uint64_t piece = 0; piece < 1 * MiB; piece += 4 * KiB) {
    ASSERT_TRUE(child->Write(at + piece, block.data() + piece, 4 * KiB).ok());
    if (piece == 0) {
      auto counts = child->CountAllocation();
      ASSERT_TRUE(counts.ok()) << counts.status().message();
      EXPECT_EQ(counts->payload[format::kPayloadPartiallyPresent], 1u)
          << "after the first 4 KiB the block is partially present";
      EXPECT_EQ(counts->payload[format::kPayloadFullyPresent], 0u);
    }
  }
  // A second block partly written stays PARTIALLY_PRESENT.
  ASSERT_TRUE(child->Write(4 * MiB + 512 * KiB, block.data(), 4 * KiB).ok());
  std::memcpy(model.data() + at, block.data(), block.size());
  std::memcpy(model.data() + 4 * MiB + 512 * KiB, block.data(), 4 * KiB);
  ASSERT_TRUE(child->Flush().ok());
  for (int pass = 0; pass < 2; ++pass) {
    SCOPED_TRACE(pass == 0 ? "after flush" : "after reopen");
    auto counts = child->CountAllocation();
    ASSERT_TRUE(counts.ok()) << counts.status().message();
    EXPECT_EQ(counts->payload[format::kPayloadFullyPresent], 1u);
    EXPECT_EQ(counts->payload[format::kPayloadPartiallyPresent], 1u);
    // (NOT_PRESENT also counts the BAT's payload slots past the disk end:
    // a differencing BAT covers whole chunks.)
    EXPECT_EQ(counts->payload[format::kPayloadZero] + counts->payload[format::kPayloadUnmapped], 0u);
    EXPECT_EQ(Difference(model, 0, ReadImage(*child, 0, 6 * MiB)), "");
    // The promoted block maps to file data of depth 0 in one extent.
    auto extents = MapRange(*child, at, 1 * MiB);
    ASSERT_EQ(extents.size(), 1u);
    EXPECT_EQ(extents[0].depth, 0);
    EXPECT_TRUE(extents[0].data);
    ASSERT_TRUE(child->Close().ok());
    child = OpenPath(paths[1], pass == 0);
    ASSERT_TRUE(child);
  }
  EXPECT_EQ(CheckFindings(paths[1]), "");
}

INSTANTIATE_TEST_SUITE_P(SectorSizes, PromotionTest, ::testing::Values(512u, 4096u));

// Map over a three-image chain: each range's depth is 0 for the top, 1 for
// its parent, 2 for the base, by which level last wrote (or discarded) it.
TEST(ChainModelTest, MapDepthNamesTheLevelThatLastWroteEachRange) {
  const uint64_t vsize = 8 * MiB;
  const uint64_t sector = 512;
  // Per sector: the level that wrote it last (-1: nobody).
  std::vector<int> writer(vsize / sector, -1);
  Bytes model(vsize, 0);
  // Writes (or discards) [off, off + len) at `level`, whose file is `path`.
  auto apply = [&](int level, const std::string& path, uint64_t off, uint64_t len, bool discard) {
    auto image = OpenPath(path, false);
    ASSERT_TRUE(image);
    Bytes data = discard ? Bytes(len, 0) : PatternBytes(len, off + level);
    Status st = discard ? image->Discard(off, len) : image->Write(off, data.data(), len);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_TRUE(image->Close().ok());
    std::memcpy(model.data() + off, data.data(), len);
    for (uint64_t s = off / sector; s < (off + len) / sector; ++s) writer[s] = level;
  };
  auto paths = MakeChain(
      "depth", 512, {{"", 1 * MiB, vsize}, {"", 1 * MiB}, {"", 2 * MiB}},
      [&](size_t level, const std::string& path) {
        if (level == 0) {
          apply(0, path, 0, 4 * MiB, false);  // base: blocks 0-3
        } else if (level == 1) {
          apply(1, path, 2 * MiB, 1 * MiB, false);             // middle: block 2
          apply(1, path, 5 * MiB, 512 * KiB, false);           // middle: half of block 5
          apply(1, path, 1 * MiB + 64 * KiB, 8 * KiB, false);  // middle: sectors inside block 1
        } else {
          apply(2, path, 3 * MiB, 1 * MiB, false);      // top: block 3
          apply(2, path, 6 * MiB + 4096, 4096, false);  // top: sectors in block 6
          // Top discards part of what the base wrote: zeros, defined by the top.
          apply(2, path, 512 * KiB, 64 * KiB, true);
        }
      });
  ASSERT_EQ(paths.size(), 3u);

  auto top = OpenPath(paths[2], true);
  ASSERT_TRUE(top);
  EXPECT_EQ(Difference(model, 0, ReadImage(*top, 0, vsize)), "");
  auto extents = MapAll(*top);
  ASSERT_FALSE(extents.empty());
  uint64_t expect_start = 0;
  for (const auto& x : extents) {
    SCOPED_TRACE(fmt::format("extent {:#x}+{:#x} depth {} zero {} data {}", x.start, x.length,
                             x.depth, x.zero, x.data));
    EXPECT_EQ(x.start, expect_start) << "extents must be contiguous";
    expect_start = x.start + x.length;
    ASSERT_EQ(x.start % sector, 0u);
    ASSERT_EQ(x.length % sector, 0u);
    bool all_zero = true;
    for (uint64_t s = x.start / sector; s < (x.start + x.length) / sector; ++s) {
      if (writer[s] >= 0) {
        EXPECT_EQ(x.depth, 2 - writer[s]) << "sector " << s << " was written by level " << writer[s];
        if (x.depth != 2 - writer[s]) break;
      }
      all_zero = all_zero && std::all_of(model.begin() + s * sector,
                                         model.begin() + (s + 1) * sector,
                                         [](uint8_t b) { return b == 0; });
    }
    if (x.zero) {
      EXPECT_TRUE(all_zero) << "a range mapped as zero holds data";
    }
    if (!all_zero) {
      EXPECT_TRUE(x.data) << "a range holding data is not mapped as data";
    }
  }
  EXPECT_EQ(expect_start, vsize);
}

// ---- Commit --------------------------------------------------------------

struct CommitCase {
  int depth;  // differencing images above the base
  bool keep_child;
};

class CommitTest : public ::testing::TestWithParam<CommitCase> {};

TEST_P(CommitTest, ParentReadsLikeTheChainAndTheChildStillReadsTheSame) {
  const CommitCase cc = GetParam();
  const uint32_t sector = cc.depth == 2 ? 512 : 4096;
  std::vector<LevelSpec> levels = {{"", 1 * MiB, 16 * MiB}};
  const uint32_t child_blocks[] = {2 * MiB, 1 * MiB, 32 * MiB};
  for (int i = 0; i < cc.depth; ++i) levels.push_back({"", child_blocks[i]});
  // Every level writes full blocks, partial blocks and unaligned bytes,
  // and discards some of what is below.
  std::mt19937_64 rng(cc.depth * 10 + cc.keep_child);
  auto fill = [&](size_t level, const std::string& path) {
    auto image = OpenPath(path, false);
    ASSERT_TRUE(image);
    for (int k = 0; k < 8; ++k) {
      const uint64_t len = k == 0 ? 2 * MiB : 1 + rng() % (700 * KiB);
      const uint64_t off = k == 0 ? (rng() % 7) * 2 * MiB : rng() % (16 * MiB - len);
      Bytes data = PatternBytes(len, rng());
      ASSERT_TRUE(image->Write(off, data.data(), len).ok());
    }
    if (level > 0) {
      ASSERT_TRUE(image->Discard(rng() % (15 * MiB), 100000).ok());
      ASSERT_TRUE(image->WriteZeroes(rng() % 15 * MiB, 1 * MiB, rng() % 2).ok());
    }
    ASSERT_TRUE(image->Close().ok());
  };
  auto paths = MakeChain(fmt::format("commit{}{}", cc.depth, cc.keep_child ? "k" : ""), sector,
                         levels, fill);
  ASSERT_EQ(paths.size(), levels.size());

  const std::string& top = paths.back();
  const std::string& parent = paths[paths.size() - 2];
  const std::string chain_hash = HashOfImageAt(top);
  const std::string parent_hash_before = HashOfImageAt(parent);
  ASSERT_NE(chain_hash, parent_hash_before) << "the top level must change something";
  AllocationSummary top_alloc_before;
  {
    auto image = OpenPath(top, true);
    ASSERT_TRUE(image);
    auto counts = image->CountAllocation();
    ASSERT_TRUE(counts.ok());
    top_alloc_before = *counts;
  }
  std::vector<std::string> untouched;  // files below the parent
  for (size_t i = 0; i + 2 < paths.size(); ++i) untouched.push_back(Sha256OfFile(paths[i]));

  uint64_t progress_calls = 0;
  CommitOptions options;
  options.keep_child = cc.keep_child;
  options.progress = [&](uint64_t done, uint64_t total) {
    ++progress_calls;
    EXPECT_LE(done, total);
  };
  auto result = CommitImage(top, options);
  ASSERT_TRUE(result.ok()) << result.status().message();
  std::error_code ec;
  EXPECT_TRUE(fs::equivalent(result->parent_path, parent, ec)) << result->parent_path;
  EXPECT_GT(result->bytes_copied, 0u);
  EXPECT_GT(progress_calls, 0u);

  EXPECT_EQ(HashOfImageAt(parent), chain_hash) << "the parent must read like the chain did";
  EXPECT_EQ(HashOfImageAt(top), chain_hash) << "the child must still read the same";
  for (size_t i = 0; i < untouched.size(); ++i)
    EXPECT_EQ(Sha256OfFile(paths[i]), untouched[i]) << "level " << i << " changed";
  EXPECT_EQ(CheckFindings(parent), "");
  EXPECT_EQ(CheckFindings(top), "");

  auto image = OpenPath(top, true);
  ASSERT_TRUE(image);
  auto counts = image->CountAllocation();
  ASSERT_TRUE(counts.ok());
  const uint64_t present = counts->payload[format::kPayloadFullyPresent] +
                           counts->payload[format::kPayloadPartiallyPresent];
  if (cc.keep_child) {
    EXPECT_EQ(counts->payload, top_alloc_before.payload) << "keep_child: the child keeps its blocks";
  } else {
    EXPECT_EQ(present, 0u) << "the emptied child still holds blocks";
    EXPECT_EQ(counts->payload[format::kPayloadZero] + counts->payload[format::kPayloadUnmapped] +
                  counts->payload[format::kPayloadUndefined],
              0u)
        << "the emptied child must read through to its parent everywhere";
  }
  // Writing to the child after the commit works and leaves the parent alone.
  const std::string parent_file = Sha256OfFile(parent);
  image.reset();
  WriteAt(top, 12345, PatternBytes(9999, 5));
  EXPECT_EQ(Sha256OfFile(parent), parent_file);
  EXPECT_EQ(HashOfImageAt(parent), chain_hash);
}

INSTANTIATE_TEST_SUITE_P(Cases, CommitTest,
                         ::testing::Values(CommitCase{2, false}, CommitCase{2, true},
                                           CommitCase{3, false}, CommitCase{3, true}),
                         [](const auto& param_info) {
                           return fmt::format("Depth{}{}", param_info.param.depth,
                                              param_info.param.keep_child ? "KeepChild" : "EmptyChild");
                         });

// ---- Flatten ---------------------------------------------------------------

TEST(ChainModelTest, FlattenedChainReadsLikeTheChain) {
  std::mt19937_64 rng(99);
  auto fill = [&](size_t level, const std::string& path) {
    auto image = OpenPath(path, false);
    ASSERT_TRUE(image);
    const uint64_t vsize = image->virtual_size();
    for (int k = 0; k < 6; ++k) {
      const uint64_t len = 1 + rng() % (1500 * KiB);
      const uint64_t off = rng() % (vsize - len);
      Bytes data = PatternBytes(len, rng());
      ASSERT_TRUE(image->Write(off, data.data(), len).ok());
    }
    if (level > 0) {
      ASSERT_TRUE(image->Discard(rng() % (vsize - 300000), 300000).ok());
    }
    ASSERT_TRUE(image->Close().ok());
  };
  auto paths = MakeChain("flat", 4096,
                         {{"", 2 * MiB, 12 * MiB}, {"", 1 * MiB, 20 * MiB}, {"", 32 * MiB}}, fill);
  ASSERT_EQ(paths.size(), 3u);
  const std::string chain_hash = HashOfImageAt(paths.back());
  std::vector<std::string> files;
  for (const auto& p : paths) files.push_back(Sha256OfFile(p));

  auto source = ConvertSource::Open(paths.back());
  ASSERT_TRUE(source.ok()) << source.status().message();
  const std::string out = fs::path(paths.back()).parent_path() / "flat-out.vhdx";
  CreateOptions create;
  create.block_size = 4 * MiB;
  create.logical_sector_size = 4096;
  Status st = ConvertToVhdx(*source, out, create);
  ASSERT_TRUE(st.ok()) << st.message();

  auto flat = OpenPath(out, true);
  ASSERT_TRUE(flat);
  EXPECT_EQ(flat->info().type, DiskType::kDynamic);
  EXPECT_EQ(flat->parent(), nullptr);
  EXPECT_EQ(flat->virtual_size(), 20 * MiB);
  EXPECT_EQ(Sha256OfImage(*flat), chain_hash);
  EXPECT_EQ(CheckFindings(out), "");
  for (size_t i = 0; i < paths.size(); ++i)
    EXPECT_EQ(Sha256OfFile(paths[i]), files[i]) << "flatten changed " << paths[i];
}

}  // namespace
}  // namespace vhdx::test
