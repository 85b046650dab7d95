// Creating new VHDX images.
#pragma once

#include <cstdint>
#include <string>

#include "vhdx/export.h"
#include "vhdx/file.h"
#include "vhdx/image.h"
#include "vhdx/status.h"

namespace vhdx {

struct CreateOptions {
  DiskType type = DiskType::kDynamic;  // kDynamic or kFixed
  uint64_t virtual_size = 0;           // multiple of the logical sector size, <= 64 TiB
  uint32_t block_size = 32u << 20;     // power of two, 1-256 MiB (Hyper-V's default 32 MiB)
  uint32_t logical_sector_size = 512;  // 512 or 4096
  uint32_t physical_sector_size = 4096;  // 512 or 4096 (Hyper-V's default 4096)

  // Differencing: a child of the image at `parent_path` (type is then
  // ignored). The child takes the parent's virtual size (virtual_size 0;
  // a larger one is allowed, a smaller one refused), its logical and
  // physical sector sizes (the ones given here are ignored) and disk ID,
  // and a parent locator as Hyper-V writes it: parent_linkage = the
  // parent's DataWriteGuid, absolute_win32_path, relative_path,
  // volume_path, parent_linkage2 zero. The parent is opened read-only, with
  // its chain, and never written.
  std::string parent_path{};
  std::vector<std::string> parent_dirs{};  // to resolve the parent's own chain
};

// Checks the options; the message names the offending one.
VHDX_API Status ValidateCreateOptions(const CreateOptions& options);

// Writes a new, empty image into `file` (which must be empty), laid out as
// Hyper-V does: log 1 MiB at 1 MiB, metadata 1 MiB at 2 MiB, BAT at 3 MiB,
// payload after it; regions marked required. A fixed image has every block
// FULLY_PRESENT and its payload space reserved with fallocate (not sparse).
// For a differencing image the child's path is file.name(): its
// relative_path is computed from it.
VHDX_API Status CreateImage(File& file, const CreateOptions& options);

// Creates the file at `path` (refusing to overwrite an existing one) and
// writes the image into it; a failure removes the partial file.
VHDX_API Status CreateImage(const std::string& path, const CreateOptions& options);

}  // namespace vhdx
