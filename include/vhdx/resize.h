// Resize-VHD / qemu-img resize: grow or shrink an image's virtual size in
// place, crash-safely (the size change, and the BAT region's move when the
// BAT outgrows its region, are one entry of the image's log).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "vhdx/export.h"
#include "vhdx/image.h"
#include "vhdx/status.h"

namespace vhdx {

struct ResizeOptions {
  // Extra directories to find the parents of a differencing image in
  // (OpenOptions::parent_dirs). A child's parent is opened read-only, to
  // check the new size against it; it is never resized.
  std::vector<std::string> parent_dirs{};
  // qemu-img resize --shrink: without it a smaller size is refused.
  bool shrink = false;
  // Called as the BAT is written (growth) or scanned (shrink), the work
  // that grows with the disk: (entries done, entries in all).
  std::function<void(uint64_t done, uint64_t total)> progress{};
};

struct ResizeResult {
  uint64_t old_size = 0, new_size = 0;         // virtual sizes, bytes
  uint64_t file_size_before = 0, file_size_after = 0;
  bool bat_relocated = false;                   // the BAT moved to a larger region
  uint64_t bat_offset = 0;                      // where the BAT is now
  uint64_t blocks_allocated = 0;                // fixed images: new payload blocks
  uint64_t blocks_freed = 0;                    // shrink: blocks past the new end released
};

// Sets the virtual size of the image at `path` to `new_size` bytes (a
// multiple of its logical sector size, at most 64 TiB). Growth reads as
// zeros; content below the smaller of the two sizes is unchanged. The image
// gets a new DataWriteGuid (its children, as with Hyper-V, no longer match).
// Refused: an image in use (locked), a smaller size unless `shrink`, a
// differencing image shrunk below its parent's size (growing it back would
// show the parent's data there), or grown while its parent is larger than it.
VHDX_API Result<ResizeResult> ResizeImage(const std::string& path, uint64_t new_size, const ResizeOptions& options = {});
// The same on an image opened read-write (with its parent, if any; the
// options' parent_dirs are unused): resized, then closed (also when the
// resize is refused or fails).
VHDX_API Result<ResizeResult> ResizeImage(std::unique_ptr<Image> image, uint64_t new_size, const ResizeOptions& options = {});

}  // namespace vhdx
