// Every block size × logical × physical sector size, with virtual sizes that
// end on and inside a block, and always more blocks than one chunk so the
// sector-bitmap slot sits inside the BAT (digest §5.2-5.4).
#include <fmt/format.h>

#include "core_test_util.h"
#include "format/bat.h"

namespace vhdx::test {
namespace {

struct GeometryCase {
  uint32_t block_size;
  uint32_t logical;
  uint32_t physical;
  bool partial_last_block;
};

std::string Name(const GeometryCase& c) {
  return fmt::format("block{}M_lss{}_pss{}_{}", c.block_size >> 20, c.logical, c.physical,
                     c.partial_last_block ? "partial" : "whole");
}
void PrintTo(const GeometryCase& c, std::ostream* os) { *os << Name(c); }

class GeometryTest : public ::testing::TestWithParam<GeometryCase> {};

struct Write {
  uint64_t offset;
  std::vector<uint8_t> data;
};

TEST_P(GeometryTest, WrittenContentReadsBackAndMapsExactly) {
  const GeometryCase& c = GetParam();
  const uint64_t B = c.block_size;
  const uint64_t chunk = (uint64_t{1} << 23) * c.logical;
  const uint64_t cr = chunk / B;
  // N = CR + 3 blocks: the last one is partial (3 sectors) or whole.
  const uint64_t size = cr * B + 2 * B + (c.partial_last_block ? 3 * c.logical : B);
  ImageBuilder b({.virtual_size = size,
                  .block_size = c.block_size,
                  .logical_sector_size = c.logical,
                  .physical_sector_size = c.physical});
  const uint64_t p0 = b.file_size();  // where the first allocated block goes

  // Allocation order (each write allocates the blocks it touches):
  // last block at p0; blocks CR-1, CR at p0+B, p0+2B; blocks 0, 1, 2 at
  // p0+3B .. p0+5B.
  std::vector<Write> writes;
  writes.push_back({size - c.logical - 100, PatternBytes(c.logical + 100, 1)});  // disk end
  writes.push_back({cr * B - 2000, PatternBytes(5000, 2)});      // across the SB slot
  writes.push_back({B - 1000, PatternBytes(2500, 3)});           // blocks 0|1
  writes.push_back({2 * B + B / 2 + 7, PatternBytes(5000, 4)});  // inside block 2
  writes.push_back({B - 1000 - 3000, PatternBytes(1000, 5)});    // block 0, again
  for (const Write& w : writes) b.WriteVirtual(w.offset, w.data);

  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  const ImageInfo& info = image->info();
  const uint64_t n = cr + 3;
  EXPECT_EQ(info.virtual_size, size);
  EXPECT_EQ(info.block_size, c.block_size);
  EXPECT_EQ(info.logical_sector_size, c.logical);
  EXPECT_EQ(info.physical_sector_size, c.physical);
  EXPECT_EQ(info.chunk_ratio, cr);
  EXPECT_EQ(info.payload_blocks, n);
  EXPECT_EQ(info.bat_entries, n + (n - 1) / cr);

  // Each written range and 4 KiB around it read back exactly.
  for (const Write& w : writes) {
    uint64_t lo = w.offset >= 4096 ? w.offset - 4096 : 0;
    uint64_t hi = std::min(size, w.offset + w.data.size() + 4096);
    std::vector<uint8_t> expected(hi - lo, 0);
    for (const Write& other : writes)  // later writes may overlap earlier ones' windows
      for (size_t i = 0; i < other.data.size(); ++i)
        if (other.offset + i >= lo && other.offset + i < hi)
          expected[other.offset + i - lo] = other.data[i];
    EXPECT_EQ(ReadImage(*image, lo, hi - lo), expected) << "around " << w.offset;
  }
  // The last sector on its own, and a read one byte too long.
  std::vector<uint8_t> last = ReadImage(*image, size - c.logical, c.logical);
  EXPECT_TRUE(std::equal(last.begin(), last.end(), writes[0].data.end() - c.logical));
  EXPECT_EQ(image->Read(size - c.logical, last.data(), c.logical + 1).code(), Errc::kOutOfRange);

  struct Expected {
    uint64_t start, end;
    std::optional<uint64_t> offset;  // data at this file offset, else a hole
  };
  const Expected expected[] = {
      {0, 3 * B, p0 + 3 * B},
      {3 * B, (cr - 1) * B, std::nullopt},
      {(cr - 1) * B, (cr + 1) * B, p0 + B},
      {(cr + 1) * B, (cr + 2) * B, std::nullopt},
      {(cr + 2) * B, size, p0},
  };
  auto extents = MapAll(*image);
  ASSERT_EQ(extents.size(), std::size(expected));
  for (size_t i = 0; i < extents.size(); ++i) {
    const MapExtent& x = extents[i];
    SCOPED_TRACE(fmt::format("extent {}", i));
    EXPECT_EQ(x.start, expected[i].start);
    EXPECT_EQ(x.length, expected[i].end - expected[i].start);
    EXPECT_EQ(x.offset, expected[i].offset);
    EXPECT_EQ(x.data, expected[i].offset.has_value());
    EXPECT_EQ(x.present, expected[i].offset.has_value());
    EXPECT_EQ(x.zero, !expected[i].offset.has_value());
  }
  // A map window starting and ending inside blocks.
  std::vector<MapExtent> window = MapRange(*image, B / 2 + 512, 2 * B);
  ASSERT_EQ(window.size(), 1u);
  EXPECT_EQ(window[0].start, B / 2 + 512);
  EXPECT_EQ(window[0].length, 2 * B);
  EXPECT_EQ(window[0].offset, p0 + 3 * B + B / 2 + 512);
  // Map stops when the sink says so.
  int calls = 0;
  ASSERT_TRUE(image->Map(0, size, [&](const MapExtent&) { return ++calls < 2; }).ok());
  EXPECT_EQ(calls, 2);
}

std::vector<GeometryCase> AllGeometries() {
  std::vector<GeometryCase> out;
  for (uint32_t block = 1u << 20; block <= 256u << 20; block <<= 1)
    for (uint32_t logical : {512u, 4096u})
      for (uint32_t physical : {512u, 4096u})
        for (bool partial : {false, true}) out.push_back({block, logical, physical, partial});
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, GeometryTest, ::testing::ValuesIn(AllGeometries()),
                         [](const auto& p) { return Name(p.param); });

// A reader that forgets the sector-bitmap slots reads the wrong entry for
// every block after the first chunk. Put a present-looking entry in the
// slot so that mistake would show as data.
TEST(BatInterleaving, SectorBitmapSlotIsNeverReadAsPayload) {
  ImageBuilder b({.virtual_size = 4097 * MiB});  // CR 4096: slot at BAT index 4096
  uint64_t decoy = b.AppendSpace(MiB);
  b.WriteFile(decoy, PatternBytes(MiB, 66));
  b.SetBatEntry(4096, format::kPayloadFullyPresent, decoy);
  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  std::vector<uint8_t> zeros(MiB, 0);
  EXPECT_EQ(ReadImage(*image, 4096 * MiB, MiB), zeros);  // block 4096 = BAT index 4097, unset
  EXPECT_EQ(ReadImage(*image, 4095 * MiB, MiB), zeros);
  auto extents = MapAll(*image);
  ASSERT_EQ(extents.size(), 1u);
  EXPECT_FALSE(extents[0].data);
}

}  // namespace
}  // namespace vhdx::test
