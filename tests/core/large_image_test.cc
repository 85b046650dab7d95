// The largest image the format allows: 64 TiB of 1 MiB blocks with 512-byte
// sectors, a 513 MiB BAT region. Opening and reading must touch only the BAT
// pages a read needs (digest §5.4: page it in, never load it eagerly).
#include <random>

#include "bat_cache.h"
#include "core_test_util.h"
#include "format/bat.h"

namespace vhdx::test {
namespace {

constexpr uint64_t kSize = 64 * TiB;
constexpr uint64_t kBlocks = kSize / MiB;                      // 2^26
constexpr uint64_t kEntries = kBlocks + (kBlocks - 1) / 4096;  // 67 125 247

class LargeImageTest : public ::testing::Test {
 protected:
  LargeImageTest() : b_({.virtual_size = kSize}) {
    b_.WriteVirtual(kSize - 512, PatternBytes(512, 1));
    b_.WriteVirtual(kSize / 2 + 3 * MiB + 4096, PatternBytes(4096, 2));
  }
  ImageBuilder b_;
};

TEST_F(LargeImageTest, BuilderLayout) {
  EXPECT_EQ(b_.bat_length(), 513 * MiB);
  EXPECT_EQ(b_.geometry().total_entries, kEntries);
  EXPECT_LT(*b_.BuildFile()->AllocatedSize(), 2 * MiB);
}

TEST_F(LargeImageTest, OpenAndReadsTouchOnlyAFewBatPages) {
  auto counting = std::make_unique<CountingFile>(b_.BuildFile(), b_.bat_offset(),
                                                 b_.bat_offset() + b_.bat_length());
  const CountingFile* file = counting.get();
  auto opened = Image::Open(std::move(counting));
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  const Image& image = **opened;
  EXPECT_EQ(image.info().bat_entries, kEntries);
  EXPECT_EQ(image.info().payload_blocks, kBlocks);
  // Headers, region tables, metadata table and items: well under 1 MiB, and
  // no BAT at all.
  EXPECT_LT(file->bytes(), 512 * KiB);
  EXPECT_EQ(file->watched_bytes(), 0u);

  EXPECT_EQ(ReadImage(image, kSize - 512, 512), PatternBytes(512, 1));
  EXPECT_EQ(ReadImage(image, kSize / 2 + 3 * MiB + 4096, 4096), PatternBytes(4096, 2));
  EXPECT_LE(file->watched_bytes(), 2 * 4096u);

  std::mt19937_64 rng(7);
  const std::vector<uint8_t> zeros(4096, 0);
  const int kReads = 500;
  for (int i = 0; i < kReads; ++i) {
    uint64_t off = (rng() % (kSize / 4096)) * 4096;
    if (off == kSize - 4096 || off == kSize / 2 + 3 * MiB + 4096) continue;
    ASSERT_EQ(ReadImage(image, off, 4096), zeros) << off;
  }
  // One 4 KiB BAT page per read at most.
  EXPECT_LE(file->watched_bytes(), (kReads + 2) * 4096u);
}

TEST_F(LargeImageTest, BatCacheMemoryFollowsUseAndStaysBounded) {
  auto file = b_.BuildFile();
  std::mt19937_64 rng(11);
  const uint64_t last = b_.geometry().PayloadIndex(kBlocks - 1);
  {
    BatCache cache(*file, b_.bat_offset(), kEntries);
    EXPECT_EQ(cache.cached_pages(), 0u);
    for (int i = 0; i < 300; ++i) ASSERT_TRUE(cache.Get(rng() % kEntries).ok());
    EXPECT_LE(cache.cached_pages(), 300u);
    auto e = cache.Get(last);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(format::BatEntry::Decode(*e).state, format::kPayloadFullyPresent);
    EXPECT_EQ(cache.Get(kEntries).status().code(), Errc::kCorrupt);
  }
  {
    // A small cap holds however many pages are touched.
    BatCache cache(*file, b_.bat_offset(), kEntries, /*max_pages=*/128);
    for (int i = 0; i < 5000; ++i) ASSERT_TRUE(cache.Get(rng() % kEntries).ok());
    EXPECT_LE(cache.cached_pages(), 128u);
    auto e = cache.Get(last);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(format::BatEntry::Decode(*e).file_offset, b_.file_size() - 2 * MiB);
  }
}

TEST_F(LargeImageTest, MapNearTheEndAndCountAllocation) {
  auto image = OpenBuilt(b_);
  ASSERT_TRUE(image);
  std::vector<MapExtent> extents = MapRange(*image, kSize - 3 * MiB, 3 * MiB);
  ASSERT_EQ(extents.size(), 2u);
  EXPECT_FALSE(extents[0].data);
  EXPECT_EQ(extents[0].length, 2 * MiB);
  EXPECT_TRUE(extents[1].data);
  EXPECT_EQ(extents[1].start, kSize - MiB);
  EXPECT_EQ(extents[1].offset, 516 * MiB);  // first block allocated: after the 513 MiB BAT at 3 MiB

  // Reads the whole 513 MiB BAT (sparse: zeros but for two entries).
  auto count = image->CountAllocation();
  ASSERT_TRUE(count.ok()) << count.status().message();
  EXPECT_EQ(count->payload[format::kPayloadFullyPresent], 2u);
  EXPECT_EQ(count->payload[format::kPayloadNotPresent], kBlocks - 2);
  EXPECT_EQ(count->sector_bitmap[0], kEntries - kBlocks);
}

}  // namespace
}  // namespace vhdx::test
