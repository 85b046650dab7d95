// The free space of the guest file systems on a virtual disk, for `vhdx
// compact`: byte ranges of the disk that no file system we read uses. Only
// what a well-kept library understands counts (libblkid for the partition
// tables, libext2fs for ext2/3/4); everything else is left alone with a
// notice, so a range is reported free only when a file system says so.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vhdx/image.h"
#include "vhdx/status.h"

namespace vhdx::fs {

// Bytes of the virtual disk.
struct FreeRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const FreeRange&) const = default;
};

// Something left alone, one line: "partition 3 at 0x...: not a file system
// we read (vfat); left alone". `offset` is the disk byte offset it concerns.
struct FsNotice {
  uint64_t offset = 0;
  std::string message;
};

struct FreeSpaceReport {
  std::vector<FreeRange> free;  // sorted, merged, disjoint
  std::vector<FsNotice> notices;
  uint64_t file_systems_read = 0;
};

struct FreeSpaceOptions {
  // Free runs shorter than this are not reported. Compact passes its block
  // size: within one file system runs are maximal, so a shorter run can
  // never cover a whole block, and dropping them bounds the report's size.
  uint64_t min_length = 0;
};

// Reads the partition table (or, without one, the whole disk as one
// candidate), then the block bitmaps of every ext2/3/4 file system that is
// clean. Errors are for the image itself (a read that fails); a partition or
// file system that cannot be trusted becomes a notice instead.
Result<FreeSpaceReport> FindFreeSpace(const Image& image, const FreeSpaceOptions& options = {});

}  // namespace vhdx::fs
