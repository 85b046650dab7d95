#include "format/bat.h"

#include <gtest/gtest.h>

#include <cstring>

#include "format/constants.h"
#include "util/coding.h"

namespace vhdx::format {
namespace {

Geometry Make(uint64_t virtual_size, uint32_t block_size, uint32_t sector, bool has_parent) {
  auto g = Geometry::Make(virtual_size, block_size, sector, has_parent);
  EXPECT_TRUE(g.ok()) << g.status().message();
  return g.ok() ? *g : Geometry{};
}

// Spec §5.2: payload blocks per sector bitmap block.
TEST(Geometry, ChunkRatioTable) {
  struct Row {
    uint32_t block_size;
    uint64_t cr512, cr4096;
  };
  const Row rows[] = {
      {1 * MiB, 4096, 32768}, {2 * MiB, 2048, 16384}, {4 * MiB, 1024, 8192},
      {8 * MiB, 512, 4096},   {16 * MiB, 256, 2048},  {32 * MiB, 128, 1024},
      {64 * MiB, 64, 512},    {128 * MiB, 32, 256},   {256 * MiB, 16, 128},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(Make(GiB, r.block_size, 512, false).chunk_ratio, r.cr512) << r.block_size;
    EXPECT_EQ(Make(GiB, r.block_size, 4096, false).chunk_ratio, r.cr4096) << r.block_size;
    EXPECT_EQ(Make(GiB, r.block_size, 512, false).SectorsPerBlock(), r.block_size / 512);
    EXPECT_EQ(Make(GiB, r.block_size, 4096, false).SectorsPerBlock(), r.block_size / 4096);
  }
}

TEST(Geometry, SpecExample1GiB32MiB) {
  Geometry dynamic = Make(GiB, 32 * MiB, 512, false);
  EXPECT_EQ(dynamic.chunk_ratio, 128u);
  EXPECT_EQ(dynamic.payload_blocks, 32u);
  EXPECT_EQ(dynamic.bitmap_blocks, 1u);
  EXPECT_EQ(dynamic.total_entries, 32u);
  Geometry differencing = Make(GiB, 32 * MiB, 512, true);
  EXPECT_EQ(differencing.total_entries, 129u);
  EXPECT_EQ(differencing.BitmapIndex(0), 128u);
  // Spec §11 address translation: last sector 0x3FFFFE00 is in block 31, BAT index 31.
  EXPECT_EQ(dynamic.PayloadIndex(0x3FFFFE00ull / (32 * MiB)), 31u);
}

TEST(Geometry, WorstCase64TiB1MiB512) {
  Geometry dynamic = Make(64 * TiB, MiB, 512, false);
  EXPECT_EQ(dynamic.payload_blocks, 67108864u);
  EXPECT_EQ(dynamic.chunk_ratio, 4096u);
  EXPECT_EQ(dynamic.total_entries, 67125247u);
  EXPECT_EQ(Make(64 * TiB, MiB, 512, true).total_entries, 67125248u);
}

TEST(Geometry, SpecExample10GiB32MiB) {
  Geometry g = Make(10 * GiB, 32 * MiB, 512, false);
  uint64_t block = 0x140000000ull / g.block_size;
  EXPECT_EQ(block, 160u);
  EXPECT_EQ(g.PayloadIndex(block), 161u);
  EXPECT_EQ(g.BitmapIndex(0), 128u);
  EXPECT_TRUE(g.IsBitmapIndex(128));
  // On a 5 GiB disk the last block is 159, at BAT index 160.
  Geometry five = Make(5 * GiB, 32 * MiB, 512, false);
  EXPECT_EQ(five.payload_blocks, 160u);
  EXPECT_EQ(five.PayloadIndex(159), 160u);
  EXPECT_EQ(five.total_entries, 161u);
}

TEST(Geometry, EntryCountsAtChunkBoundaries) {
  // 4 GiB of 32 MiB blocks fills chunk 0 exactly: the dynamic BAT ends with
  // the last payload entry, the differencing one with chunk 0's SB entry.
  EXPECT_EQ(Make(4 * GiB, 32 * MiB, 512, false).total_entries, 128u);
  EXPECT_EQ(Make(4 * GiB, 32 * MiB, 512, true).total_entries, 129u);
  // One more block starts chunk 1.
  EXPECT_EQ(Make(4 * GiB + 512, 32 * MiB, 512, false).total_entries, 130u);
  EXPECT_EQ(Make(4 * GiB + 512, 32 * MiB, 512, true).total_entries, 258u);
  // A disk smaller than one block still has one payload block.
  Geometry tiny = Make(512, 256 * MiB, 512, false);
  EXPECT_EQ(tiny.payload_blocks, 1u);
  EXPECT_EQ(tiny.total_entries, 1u);
  EXPECT_EQ(Make(512, 256 * MiB, 512, true).total_entries, 17u);
  // Virtual size not a multiple of the block size (spec §4.5).
  EXPECT_EQ(Make(10 * MiB, 32 * MiB, 512, false).payload_blocks, 1u);
  EXPECT_EQ(Make(10 * MiB + 4096, 2 * MiB, 4096, false).payload_blocks, 6u);
}

// The array ends with the last payload entry (fixed/dynamic) or with the
// last chunk's SB entry (differencing), for every block/sector size.
TEST(Geometry, TotalEntriesEndWhereTheInterleavingSaysForEveryBlockSize) {
  for (uint32_t bs = MiB; bs <= 256 * MiB; bs *= 2)
    for (uint32_t sector : {512u, 4096u})
      for (uint64_t size : {uint64_t{4096}, 3 * GiB + 4096, 100 * GiB, 5 * TiB, 64 * TiB}) {
        Geometry dynamic = Make(size, bs, sector, false);
        Geometry differencing = Make(size, bs, sector, true);
        EXPECT_EQ(dynamic.total_entries, dynamic.PayloadIndex(dynamic.payload_blocks - 1) + 1)
            << size << " " << bs << " " << sector;
        EXPECT_EQ(differencing.total_entries,
                  differencing.BitmapIndex(differencing.bitmap_blocks - 1) + 1)
            << size << " " << bs << " " << sector;
        EXPECT_EQ(dynamic.bitmap_blocks, DivCeil(dynamic.payload_blocks, dynamic.chunk_ratio));
      }
}

// Walks every BAT index of a differencing geometry and checks that the
// index helpers agree with each other and with the layout of spec §5.3.
void CheckEveryIndex(const Geometry& g) {
  uint64_t next_block = 0, next_chunk = 0;
  for (uint64_t i = 0; i < g.total_entries; ++i) {
    uint64_t chunk = i / (g.chunk_ratio + 1);
    if (g.IsBitmapIndex(i)) {
      ASSERT_EQ(i % (g.chunk_ratio + 1), g.chunk_ratio) << i;
      ASSERT_EQ(chunk, next_chunk) << i;
      ASSERT_EQ(g.BitmapIndex(next_chunk++), i);
    } else {
      ASSERT_EQ(g.BlockOfIndex(i), next_block) << i;
      ASSERT_EQ(next_block / g.chunk_ratio, chunk) << i;
      ASSERT_EQ(g.PayloadIndex(next_block++), i);
    }
  }
  EXPECT_EQ(next_chunk, g.bitmap_blocks);
  EXPECT_EQ(next_block, g.bitmap_blocks * g.chunk_ratio);
  EXPECT_GE(next_block, g.payload_blocks);
}

TEST(Geometry, IndexHelpersAgreeForEveryIndex) {
  CheckEveryIndex(Make(64 * GiB, 256 * MiB, 512, true));        // CR 16, 16 full chunks
  CheckEveryIndex(Make(25 * GiB + 512, 256 * MiB, 512, true));  // last chunk partial
  CheckEveryIndex(Make(100 * GiB, 32 * MiB, 512, true));        // CR 128
  CheckEveryIndex(Make(70 * GiB, 256 * MiB, 4096, true));       // CR 128, 32 GiB chunks
  CheckEveryIndex(Make(9 * GiB, MiB, 512, true));               // CR 4096
}

TEST(BatEntry, SpecExample) {
  // Payload block at 4 MiB, FULLY_PRESENT: 0x400006, on disk 06 00 40 00 00 00 00 00.
  BatEntry e = BatEntry::Decode(0x400006);
  EXPECT_EQ(e.state, kPayloadFullyPresent);
  EXPECT_EQ(e.file_offset, 4 * MiB);
  EXPECT_EQ(e.Encode(), 0x400006u);
  uint8_t raw[8];
  EncodeFixed64(raw, BatEntry{kPayloadFullyPresent, 4 * MiB}.Encode());
  const uint8_t expected[8] = {0x06, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(std::memcmp(raw, expected, 8), 0);
}

TEST(BatEntry, EveryStateRoundTrips) {
  for (uint8_t state = 0; state < 8; ++state) {
    BatEntry e{state, 123 * MiB};
    BatEntry back = BatEntry::Decode(e.Encode());
    EXPECT_EQ(back.state, state);
    EXPECT_EQ(back.file_offset, 123 * MiB);
  }
}

TEST(BatEntry, ReservedBits3To19AreMaskedOff) {
  const uint64_t reserved = 0xFFFF8;  // bits 3-19
  BatEntry e = BatEntry::Decode(0x400006 | reserved);
  EXPECT_EQ(e.state, kPayloadFullyPresent);
  EXPECT_EQ(e.file_offset, 4 * MiB);
  EXPECT_EQ(e.Encode(), 0x400006u);
}

TEST(BatEntry, LargestOffset) {
  BatEntry e = BatEntry::Decode(~uint64_t{0});
  EXPECT_EQ(e.state, 7);
  EXPECT_EQ(e.file_offset, 0xFFFFFFFFFFF00000ull);  // FileOffsetMB 2^44 - 1
}

void ExpectMakeRejected(uint64_t size, uint32_t block_size, uint32_t sector, const char* fragment) {
  auto g = Geometry::Make(size, block_size, sector, false);
  ASSERT_FALSE(g.ok()) << size << " " << block_size << " " << sector;
  EXPECT_EQ(g.status().code(), Errc::kCorrupt);
  EXPECT_NE(g.status().message().find(fragment), std::string::npos) << g.status().message();
}

TEST(Geometry, MakeRejectsBadInputs) {
  for (uint32_t sector : {0u, 1024u, 520u, 8192u})
    ExpectMakeRejected(GiB, 32 * MiB, sector, "neither 512 nor 4096");
  for (uint32_t bs : {0u, 512u * 1024, 3u * 1024 * 1024, 512u * 1024 * 1024, 0x80000000u})
    ExpectMakeRejected(GiB, bs, 512, "block size");
  ExpectMakeRejected(0, 32 * MiB, 512, "virtual size 0");
  ExpectMakeRejected(64 * TiB + 512, 32 * MiB, 512, "virtual size");
  ExpectMakeRejected(UINT64_MAX - 511, 32 * MiB, 512, "virtual size");
  ExpectMakeRejected(1000, 32 * MiB, 512, "not a multiple of the logical sector size");
  ExpectMakeRejected(3 * 512, 32 * MiB, 4096, "not a multiple of the logical sector size");
}

}  // namespace
}  // namespace vhdx::format
