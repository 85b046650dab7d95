// What each payload block state reads as (digest §5.5, "What our reader
// returns"), and the bounds of Read.
#include <random>

#include "core_test_util.h"
#include "format/bat.h"

namespace vhdx::test {
namespace {

using namespace format;

bool AllZero(const std::vector<uint8_t>& v) {
  return std::all_of(v.begin(), v.end(), [](uint8_t b) { return b == 0; });
}

// 4 blocks of 2 MiB: block 1 gets `state` with its FileOffsetMB pointing at
// 2 MiB of non-zero bytes, so a reader that follows the offset shows them;
// blocks 0 and 2 hold data, block 3 is NOT_PRESENT.
struct StateImage {
  explicit StateImage(uint8_t state, DiskType type = DiskType::kDynamic)
      : b({.type = type, .virtual_size = 8 * MiB, .block_size = 2 * MiB}) {
    stale = PatternBytes(2 * MiB, state + 100);
    target = b.AppendSpace(2 * MiB);
    b.WriteFile(target, stale);
    b.SetBlock(1, state, target);
    b.WriteVirtual(0, PatternBytes(2 * MiB, 1));
    b.WriteVirtual(4 * MiB, PatternBytes(2 * MiB, 2));
  }
  ImageBuilder b;
  std::vector<uint8_t> stale;
  uint64_t target = 0;
};

// Parameters are state values (unsigned, so test names print as numbers).
class ZeroStateTest : public ::testing::TestWithParam<unsigned> {};

TEST_P(ZeroStateTest, ReadsZerosWhateverTheOffsetPointsAt) {
  StateImage s(static_cast<uint8_t>(GetParam()));
  auto image = OpenBuilt(s.b);
  ASSERT_TRUE(image);
  EXPECT_TRUE(AllZero(ReadImage(*image, 2 * MiB, 2 * MiB)));
  EXPECT_TRUE(AllZero(ReadImage(*image, 3 * MiB - 5, 10)));

  auto extents = MapAll(*image);
  ASSERT_EQ(extents.size(), 4u);
  const MapExtent& x = extents[1];
  EXPECT_EQ(x.start, 2 * MiB);
  EXPECT_EQ(x.length, 2 * MiB);
  EXPECT_TRUE(x.zero);
  EXPECT_FALSE(x.data);
  EXPECT_FALSE(x.offset.has_value());
  // NOT_PRESENT is left to a parent (none here); the others are defined here.
  EXPECT_EQ(x.present, GetParam() != kPayloadNotPresent);
}

INSTANTIATE_TEST_SUITE_P(States, ZeroStateTest,
                         ::testing::Values(0u, 1u, 2u, 3u));

TEST(BlockStates, ZeroStatesInFixedImageReadZeros) {
  // Fixed files behave like dynamic ones for each state (digest §5.5 note).
  StateImage s(kPayloadZero, DiskType::kFixed);
  auto image = OpenBuilt(s.b);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().type, DiskType::kFixed);
  EXPECT_TRUE(AllZero(ReadImage(*image, 2 * MiB, 2 * MiB)));
}

TEST(BlockStates, FullyPresentReadsTheFileBytes) {
  StateImage s(kPayloadFullyPresent);
  auto image = OpenBuilt(s.b);
  ASSERT_TRUE(image);
  EXPECT_EQ(ReadImage(*image, 2 * MiB, 2 * MiB), s.stale);
  auto mid = ReadImage(*image, 2 * MiB + 12345, 777);
  EXPECT_TRUE(std::equal(mid.begin(), mid.end(), s.stale.begin() + 12345));
  auto extents = MapAll(*image);
  ASSERT_EQ(extents.size(), 4u);
  EXPECT_TRUE(extents[1].data && extents[1].present && !extents[1].zero);
  EXPECT_EQ(extents[1].offset, s.target);
}

// Invalid states name the BAT entry; 1 MiB blocks with 512-byte sectors put
// block 4096 at BAT index 4097 (after chunk 0's sector-bitmap slot).
class InvalidStateTest : public ::testing::TestWithParam<unsigned> {};

TEST_P(InvalidStateTest, ReadAndMapFailAsCorruptNamingTheEntry) {
  ImageBuilder b({.virtual_size = 4100 * MiB});
  uint64_t where = b.AppendSpace(MiB);
  b.WriteFile(where, PatternBytes(MiB, 3));
  b.SetBlock(4096, static_cast<uint8_t>(GetParam()), where);
  b.WriteVirtual(4095 * MiB, PatternBytes(MiB, 4));  // a good neighbour
  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);

  std::vector<uint8_t> buf(4096);
  Status st = image->Read(4096 * MiB, buf.data(), buf.size());
  EXPECT_EQ(st.code(), Errc::kCorrupt);
  EXPECT_NE(st.message().find("BAT entry 4097"), std::string::npos) << st.message();
  // A read that starts in a good block and runs into the bad one fails too.
  st = image->Read(4096 * MiB - 100, buf.data(), buf.size());
  EXPECT_EQ(st.code(), Errc::kCorrupt) << st.message();
  // The good block alone still reads.
  EXPECT_TRUE(image->Read(4095 * MiB, buf.data(), buf.size()).ok());

  st = image->Map(0, image->virtual_size(), [](const MapExtent&) { return true; });
  EXPECT_EQ(st.code(), Errc::kCorrupt);
  EXPECT_NE(st.message().find("BAT entry 4097"), std::string::npos) << st.message();
}

INSTANTIATE_TEST_SUITE_P(States, InvalidStateTest,
                         ::testing::Values(7u, 4u, 5u));

TEST(BlockStates, PartiallyPresentInFixedImageIsCorrupt) {
  StateImage s(kPayloadPartiallyPresent, DiskType::kFixed);
  auto image = OpenBuilt(s.b);
  ASSERT_TRUE(image);
  std::vector<uint8_t> buf(512);
  Status st = image->Read(2 * MiB, buf.data(), buf.size());
  EXPECT_EQ(st.code(), Errc::kCorrupt);
  EXPECT_NE(st.message().find("BAT entry 1"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("PARTIALLY_PRESENT"), std::string::npos) << st.message();
}

TEST(BlockStates, FullyPresentWithBadOffsetIsCorrupt) {
  struct Case {
    uint64_t offset;
    const char* what;
  } cases[] = {{0, "header section"},
               {1 * MiB, "log"},
               {2 * MiB, "metadata region"},
               {3 * MiB, "BAT region"},
               {64 * MiB, "end of the file"}};
  for (const Case& c : cases) {
    ImageBuilder b({.virtual_size = 8 * MiB, .block_size = 1 * MiB});
    b.SetBlock(5, kPayloadFullyPresent, c.offset);
    auto image = OpenBuilt(b);
    ASSERT_TRUE(image);
    std::vector<uint8_t> buf(512);
    Status st = image->Read(5 * MiB + 512, buf.data(), buf.size());
    EXPECT_EQ(st.code(), Errc::kCorrupt) << c.what;
    EXPECT_NE(st.message().find("BAT entry 5"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(c.what), std::string::npos) << st.message();
    EXPECT_TRUE(image->Read(4 * MiB, buf.data(), buf.size()).ok());  // other blocks unaffected
  }
}

TEST(BlockStates, ReadsOutsideTheVirtualDiskAreOutOfRange) {
  ImageBuilder b({.virtual_size = 8 * MiB - 512, .block_size = 2 * MiB});
  b.WriteVirtual(8 * MiB - 1024, PatternBytes(512, 9));
  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  const uint64_t size = image->virtual_size();
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(ReadImage(*image, size - 512, 512), PatternBytes(512, 9));
  EXPECT_TRUE(image->Read(size, buf.data(), 0).ok());
  EXPECT_EQ(image->Read(size - 512, buf.data(), 513).code(), Errc::kOutOfRange);
  EXPECT_EQ(image->Read(size, buf.data(), 1).code(), Errc::kOutOfRange);
  EXPECT_EQ(image->Read(size + 4096, buf.data(), 0).code(), Errc::kOutOfRange);
  EXPECT_EQ(image->Read(UINT64_MAX - 10, buf.data(), 100).code(), Errc::kOutOfRange);
  EXPECT_EQ(image->Map(size - 512, 1024, [](const MapExtent&) { return true; }).code(),
            Errc::kOutOfRange);
}

// Random states per block, random unaligned reads that cross blocks,
// compared with a model of the virtual disk.
TEST(BlockStates, RandomUnalignedReadsMatchModel) {
  const uint64_t kBlock = 1 * MiB, kBlocks = 24;
  ImageBuilder b({.virtual_size = kBlocks * kBlock - 4096, .block_size = kBlock});
  std::vector<uint8_t> model(b.spec().virtual_size, 0);
  std::mt19937_64 rng(42);
  const uint8_t zero_states[] = {kPayloadNotPresent, kPayloadUndefined, kPayloadZero,
                                 kPayloadUnmapped};
  for (uint64_t blk = 0; blk < kBlocks; ++blk) {
    uint64_t start = blk * kBlock;
    uint64_t len = std::min(kBlock, model.size() - start);
    if (rng() % 3) {
      auto data = PatternBytes(len, blk + 1000);
      b.WriteVirtual(start, data);
      std::copy(data.begin(), data.end(), model.begin() + start);
    } else {
      uint64_t junk = b.AppendSpace(kBlock);  // stale bytes a zero state must hide
      b.WriteFile(junk, PatternBytes(kBlock, blk + 2000));
      b.SetBlock(blk, zero_states[rng() % 4], junk);
    }
  }
  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  for (int i = 0; i < 400; ++i) {
    uint64_t len = 1 + rng() % (3 * kBlock);
    uint64_t off = rng() % (model.size() - len + 1);
    auto got = ReadImage(*image, off, len);
    ASSERT_TRUE(std::equal(got.begin(), got.end(), model.begin() + off)) << off << "+" << len;
  }
}

}  // namespace
}  // namespace vhdx::test
