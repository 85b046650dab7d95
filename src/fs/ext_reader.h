// Free blocks of one ext2/3/4 file system on a region of the virtual disk,
// read with libext2fs through an io_manager over vhdx::Image::Read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fs/free_space.h"
#include "vhdx/image.h"
#include "vhdx/status.h"

namespace vhdx::fs {

struct ExtOutcome {
  enum Kind {
    kNotExt,     // no ext2/3/4 superblock there
    kLeftAlone,  // an ext file system we do not trust or cannot read: `why`
    kRead,       // its free runs were appended
  };
  Kind kind = kNotExt;
  std::string why;
};

// Reads the ext2/3/4 file system in [offset, offset + length) of the disk,
// read-only, and appends its free runs (disk byte offsets, ascending, each at
// least `min_length` long) to `free`; nothing is appended unless the outcome
// is kRead. An error is a read of the image that failed.
Result<ExtOutcome> ReadExtFreeSpace(const Image& image, uint64_t offset, uint64_t length,
                                    uint64_t min_length, std::vector<FreeRange>& free);

}  // namespace vhdx::fs
