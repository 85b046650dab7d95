// BAT entries and the disk geometry that places them (digest §5).
#pragma once

#include <cstdint>

#include "vhdx/status.h"

namespace vhdx::format {

enum : uint8_t {
  kPayloadNotPresent = 0,
  kPayloadUndefined = 1,
  kPayloadZero = 2,
  kPayloadUnmapped = 3,
  kPayloadFullyPresent = 6,
  kPayloadPartiallyPresent = 7,
  kSectorBitmapNotPresent = 0,
  kSectorBitmapPresent = 6,
};

struct BatEntry {
  uint8_t state = 0;
  uint64_t file_offset = 0;  // bytes; FileOffsetMB * 1 MiB (reserved bits 3-19 ignored)

  static BatEntry Decode(uint64_t raw) {
    return BatEntry{static_cast<uint8_t>(raw & 7), raw & 0xFFFFFFFFFFF00000ull};
  }
  uint64_t Encode() const { return file_offset | state; }
};

// Everything derived from block size, logical sector size and virtual size.
struct Geometry {
  uint64_t virtual_size = 0;
  uint32_t block_size = 0;
  uint32_t logical_sector_size = 0;
  bool has_parent = false;

  uint64_t chunk_ratio = 0;     // payload blocks per sector-bitmap block (CR)
  uint64_t payload_blocks = 0;  // N
  uint64_t bitmap_blocks = 0;   // S
  uint64_t total_entries = 0;   // TotalBATEntries

  // Validates the three inputs (sizes already range-checked by the parsers
  // are rechecked here) and computes the rest.
  static Result<Geometry> Make(uint64_t virtual_size, uint32_t block_size,
                               uint32_t logical_sector_size, bool has_parent);

  uint64_t PayloadIndex(uint64_t block) const { return block + block / chunk_ratio; }
  uint64_t BitmapIndex(uint64_t chunk) const { return chunk * (chunk_ratio + 1) + chunk_ratio; }
  bool IsBitmapIndex(uint64_t index) const { return index % (chunk_ratio + 1) == chunk_ratio; }
  // Payload block number of a payload BAT index.
  uint64_t BlockOfIndex(uint64_t index) const {
    return index - index / (chunk_ratio + 1);
  }
  uint64_t SectorsPerBlock() const { return block_size / logical_sector_size; }
};

}  // namespace vhdx::format
