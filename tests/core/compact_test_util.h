// Helpers shared by the compact tests (in-process and through the CLI): a
// fragmented image for compaction to work on, its content's digest, and the
// size it packs to.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core_test_util.h"
#include "resize_test_util.h"
#include "support/test_util.h"
#include "vhdx/create.h"

namespace vhdx::test {

// SHA-256 of the content of the image in `file` (read-only), or why it does
// not open.
inline std::string ContentSha(const File& file, std::shared_ptr<const Image> parent = nullptr) {
  auto image = Image::Open(std::make_unique<ReadOnlyView>(file), {.parent = parent});
  if (!image.ok()) return "open: " + image.status().message();
  return Sha256OfImage(**image);
}

// A dynamic image whose written blocks are interleaved: data, zeros written
// as data (FULLY_PRESENT and all zero), discarded, data ... and a last
// block with data, so that blocks at the end must move into the holes.
inline std::unique_ptr<SparseMemoryFile> MakeFragmented(uint32_t block_size, uint32_t sector,
                                                        uint64_t blocks, uint64_t* data_blocks) {
  auto file = std::make_unique<SparseMemoryFile>("compact.vhdx", true);
  EXPECT_TRUE(CreateImage(*file, {.virtual_size = blocks * block_size - sector, .block_size = block_size,
                                  .logical_sector_size = sector})
                  .ok());
  auto image = Image::Open(std::make_unique<Borrowed>(*file), {.read_only = false});
  EXPECT_TRUE(image.ok()) << image.status().message();
  std::vector<uint8_t> zeros(block_size, 0);
  *data_blocks = 0;
  const uint64_t size = (*image)->virtual_size();
  for (uint64_t b = 0; b < blocks; ++b) {
    const uint64_t at = b * block_size, n = std::min<uint64_t>(block_size, size - at);
    switch (b % 4) {
      case 0:
      case 3: {
        auto bytes = PatternBytes(n, b + 1);
        EXPECT_TRUE((*image)->Write(at, bytes.data(), n).ok());
        ++*data_blocks;
        break;
      }
      case 1: {
        // Data, then zeros over it in place: FULLY_PRESENT and all zero (a
        // zero write into an unallocated block allocates nothing).
        auto bytes = PatternBytes(n, b + 1);
        EXPECT_TRUE((*image)->Write(at, bytes.data(), n).ok());
        EXPECT_TRUE((*image)->Write(at, zeros.data(), n).ok());
        break;
      }
      case 2: {
        auto bytes = PatternBytes(n, b + 1);
        EXPECT_TRUE((*image)->Write(at, bytes.data(), n).ok());
        EXPECT_TRUE((*image)->Discard(at, n).ok());  // UNMAPPED, space punched
        break;
      }
    }
  }
  EXPECT_TRUE((*image)->Close().ok());
  return file;
}

// The size of the image in `file` packed: its structures, then
// `data_blocks` blocks.
inline uint64_t PackedSize(const File& file, uint64_t data_blocks) {
  auto image = Image::Open(std::make_unique<ReadOnlyView>(file));
  EXPECT_TRUE(image.ok()) << image.status().message();
  if (!image.ok()) return 0;
  uint64_t floor = 0;
  for (const auto& region : (*image)->info().regions) floor = std::max(floor, region.file_offset + region.length);
  floor = (floor + MiB - 1) / MiB * MiB;
  return floor + data_blocks * (*image)->info().block_size;
}

}  // namespace vhdx::test
