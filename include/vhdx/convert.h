// Converting a VHDX image to other forms.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "vhdx/file.h"
#include "vhdx/image.h"
#include "vhdx/status.h"

namespace vhdx {

struct ConvertOptions {
  // Called now and then with bytes done out of total (virtual size).
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// Writes the virtual disk into `dst` as a raw image of the virtual size.
// Sparse: unallocated and zero ranges (and all-zero 4 KiB runs inside data
// blocks) are never written, so they become holes. `dst` should be empty.
Status ConvertToRaw(const Image& src, File& dst, const ConvertOptions& options = {});

// Streams the raw disk to a file descriptor in order (a pipe, stdout):
// zeros are written out since a stream cannot have holes.
Status ConvertToRawStream(const Image& src, int fd, const ConvertOptions& options = {});

}  // namespace vhdx
