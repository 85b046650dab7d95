// NBD block status from Image::Map, shared by the vhdx plugin and filter.
// Include after nbdkit-plugin.h or nbdkit-filter.h (nbdkit_add_extent).
#pragma once

#include <cstdint>

#include "vhdx/image.h"

namespace vhdx_nbdkit {

// Adds the extents of [offset, offset+count) to `extents`, as qemu's NBD
// server derives them: HOLE|ZERO where no file bytes back the range and it
// reads as zeros, data otherwise; only the first with NBDKIT_FLAG_REQ_ONE.
// `*add_failed` is set when nbdkit_add_extent failed (it has reported why).
inline vhdx::Status AddBlockStatus(const vhdx::Image& image, uint32_t count, uint64_t offset, uint32_t flags,
                                   struct nbdkit_extents* extents, bool* add_failed) {
  const bool req_one = (flags & NBDKIT_FLAG_REQ_ONE) != 0;
  *add_failed = false;
  return image.Map(offset, count, [&](const vhdx::MapExtent& x) {
    uint32_t type = 0;
    if (!x.data) type = x.zero ? (NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) : 0;
    if (nbdkit_add_extent(extents, x.start, x.length, type) == -1) {
      *add_failed = true;
      return false;
    }
    return !req_one;
  });
}

}  // namespace vhdx_nbdkit
