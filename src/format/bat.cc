#include "format/bat.h"

#include <fmt/format.h>

#include "format/constants.h"
#include "util/coding.h"

namespace vhdx::format {

Result<Geometry> Geometry::Make(uint64_t virtual_size, uint32_t block_size,
                                uint32_t logical_sector_size, bool has_parent) {
  if (logical_sector_size != 512 && logical_sector_size != 4096)
    return Status(Errc::kCorrupt, fmt::format("logical sector size {} is neither 512 nor 4096",
                                              logical_sector_size));
  if (!IsPowerOfTwo(block_size) || block_size < kMinBlockSize || block_size > kMaxBlockSize)
    return Status(Errc::kCorrupt, fmt::format("block size {} is not a power of two between 1 MiB "
                                              "and 256 MiB",
                                              block_size));
  if (virtual_size == 0 || virtual_size > kMaxVirtualSize)
    return Status(Errc::kCorrupt,
                  fmt::format("virtual size {} is not between 1 byte and 64 TiB", virtual_size));
  if (virtual_size % logical_sector_size != 0)
    return Status(Errc::kCorrupt,
                  fmt::format("virtual size {} is not a multiple of the logical sector size {}",
                              virtual_size, logical_sector_size));
  Geometry g;
  g.virtual_size = virtual_size;
  g.block_size = block_size;
  g.logical_sector_size = logical_sector_size;
  g.has_parent = has_parent;
  g.chunk_ratio = (uint64_t{1} << 23) * logical_sector_size / block_size;
  g.payload_blocks = DivCeil(virtual_size, block_size);
  g.bitmap_blocks = DivCeil(g.payload_blocks, g.chunk_ratio);
  if (has_parent)
    g.total_entries = g.bitmap_blocks * (g.chunk_ratio + 1);
  else
    g.total_entries = g.payload_blocks + (g.payload_blocks - 1) / g.chunk_ratio;
  return g;
}

}  // namespace vhdx::format
