// Image::Prefetch: the host ranges it hands to File::WillNeed are exactly
// the data behind the virtual range, each in the file of the chain level
// that holds it, and nothing for ranges that read as zeros or are out of
// bounds. (Convert warms its cold reads with it.)
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core_test_util.h"
#include "support/test_util.h"
#include "vhdx/create.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

// Byte ranges as a set: start -> end, adjacent and overlapping ones merged.
using Ranges = std::map<uint64_t, uint64_t>;

void AddRange(Ranges& r, uint64_t start, uint64_t length) {
  uint64_t end = start + length;
  auto it = r.upper_bound(start);
  if (it != r.begin() && std::prev(it)->second >= start) {
    --it;
    start = it->first;
    end = std::max(end, it->second);
    it = r.erase(it);
  }
  while (it != r.end() && it->first <= end) {
    end = std::max(end, it->second);
    it = r.erase(it);
  }
  r[start] = end;
}

// The hints a file received, merged into ranges.
Ranges Hinted(const CountingFile& file) {
  Ranges out;
  for (auto [offset, length] : file.TakeHints()) AddRange(out, offset, length);
  return out;
}

void WriteOrFail(Image& image, uint64_t offset, const std::vector<uint8_t>& data) {
  Status st = image.Write(offset, data.data(), data.size());
  ASSERT_TRUE(st.ok()) << st.message();
}

class PrefetchTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kSize = 16 * MiB;

  void SetUp() override {
    const std::string dir = ScratchPath("prefetch");
    fs::remove_all(dir);
    fs::create_directories(dir);
    parent_path_ = dir + "/parent.vhdx";
    child_path_ = dir + "/child.avhdx";
    // Parent (1 MiB blocks): blocks 0, 2, 3 and 9 hold data.
    ASSERT_TRUE(CreateImage(parent_path_, {DiskType::kDynamic, kSize, 1 * MiB}).ok());
    {
      auto p = Image::Open(parent_path_, {.read_only = false});
      ASSERT_TRUE(p.ok()) << p.status().message();
      WriteOrFail(**p, 0, PatternBytes(MiB, 1));
      WriteOrFail(**p, 2 * MiB, PatternBytes(2 * MiB, 2));
      WriteOrFail(**p, 9 * MiB + 4096, PatternBytes(4096, 3));
      ASSERT_TRUE((*p)->Close().ok());
    }
    // Child (1 MiB blocks): sectors inside parent block 2, all of block 5
    // (zeros below it), and block 9 wholly rewritten.
    CreateOptions co;
    co.parent_path = parent_path_;
    co.block_size = 1 * MiB;
    ASSERT_TRUE(CreateImage(child_path_, co).ok());
    {
      auto c = Image::Open(child_path_, {.read_only = false});
      ASSERT_TRUE(c.ok()) << c.status().message();
      WriteOrFail(**c, 2 * MiB + 8192, PatternBytes(1024, 4));
      WriteOrFail(**c, 5 * MiB, PatternBytes(MiB, 5));
      WriteOrFail(**c, 9 * MiB, PatternBytes(MiB, 6));
      ASSERT_TRUE((*c)->Close().ok());
    }
    auto pf = OpenPosixFile(parent_path_, false);
    ASSERT_TRUE(pf.ok()) << pf.status().message();
    auto precording = std::make_unique<CountingFile>(std::move(pf).value(), 0, 0);
    parent_file_ = precording.get();
    auto parent = Image::Open(std::move(precording), {});
    ASSERT_TRUE(parent.ok()) << parent.status().message();
    parent_ = std::shared_ptr<const Image>(std::move(parent).value());
    auto cf = OpenPosixFile(child_path_, false);
    ASSERT_TRUE(cf.ok()) << cf.status().message();
    auto crecording = std::make_unique<CountingFile>(std::move(cf).value(), 0, 0);
    child_file_ = crecording.get();
    auto child = Image::Open(std::move(crecording), {.parent = parent_});
    ASSERT_TRUE(child.ok()) << child.status().message();
    child_ = std::move(child).value();
    parent_file_->TakeHints();  // hints while opening do not count
    child_file_->TakeHints();
  }

  // The host ranges holding [start, start+length) of the child, per level.
  void Expected(uint64_t start, uint64_t length, Ranges& child, Ranges& parent) const {
    for (const MapExtent& x : MapRange(*child_, start, length)) {
      if (!x.data) continue;
      AddRange(x.depth == 0 ? child : parent, *x.offset, x.length);
    }
  }

  std::string parent_path_, child_path_;
  CountingFile* parent_file_ = nullptr;
  CountingFile* child_file_ = nullptr;
  std::shared_ptr<const Image> parent_;
  std::unique_ptr<Image> child_;
};

TEST_F(PrefetchTest, HintsExactlyTheDataOfEachLevel) {
  Ranges want_child, want_parent;
  Expected(0, kSize, want_child, want_parent);
  // The layout above puts data in both files, so the test means something.
  ASSERT_FALSE(want_child.empty());
  ASSERT_FALSE(want_parent.empty());
  child_->Prefetch(0, kSize);
  EXPECT_EQ(Hinted(*child_file_), want_child);
  EXPECT_EQ(Hinted(*parent_file_), want_parent);
}

TEST_F(PrefetchTest, PartOfTheDiskHintsOnlyThatPart) {
  // 1.5 MiB into block 2 up to the middle of block 5: the parent's rest of
  // block 2 and block 3, the child's half of block 5 (the child's sectors
  // in block 2 lie before the range).
  const uint64_t start = 2 * MiB + MiB / 2, length = 3 * MiB;
  Ranges want_child, want_parent;
  Expected(start, length, want_child, want_parent);
  child_->Prefetch(start, length);
  Ranges got_child = Hinted(*child_file_), got_parent = Hinted(*parent_file_);
  EXPECT_EQ(got_child, want_child);
  EXPECT_EQ(got_parent, want_parent);
  uint64_t parent_bytes = 0, child_bytes = 0;
  for (auto [a, b] : got_parent) parent_bytes += b - a;
  for (auto [a, b] : got_child) child_bytes += b - a;
  EXPECT_EQ(parent_bytes, MiB / 2 + MiB);
  EXPECT_EQ(child_bytes, MiB / 2);
}

TEST_F(PrefetchTest, ZerosAndOutOfBoundsRangesHintNothing) {
  child_->Prefetch(12 * MiB, 4 * MiB);  // nothing written there at any level
  child_->Prefetch(kSize - 4096, 8192);  // runs past the end
  child_->Prefetch(kSize + MiB, MiB);    // wholly past the end
  EXPECT_TRUE(child_file_->TakeHints().empty());
  EXPECT_TRUE(parent_file_->TakeHints().empty());
  // Reads still work afterwards, with the data the map promised.
  const std::vector<uint8_t> block5 = PatternBytes(MiB, 5);
  EXPECT_EQ(ReadImage(*child_, 5 * MiB, 4096), std::vector<uint8_t>(block5.begin(), block5.begin() + 4096));
}

}  // namespace
}  // namespace vhdx::test
