// Operations on differencing chains: commit (merge) a child into its
// parent, and rebase (set-parent) a child onto a moved or renamed parent.
// Flattening a chain into one standalone image is ConvertToVhdx of the
// child (convert.h): reads go through the chain.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vhdx/export.h"
#include "vhdx/status.h"

namespace vhdx {

struct CommitOptions {
  // Extra directories to find parents in (OpenOptions::parent_dirs).
  std::vector<std::string> parent_dirs;
  // qemu-img commit -d: leave the child's blocks in place. By default the
  // child is emptied after the commit (every block NOT_PRESENT, its space
  // released), so it reads through to the parent, which now holds its data.
  bool keep_child = false;
  // Called now and then with bytes done out of total (child's virtual size).
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct CommitResult {
  std::string parent_path;   // the image written into
  uint64_t bytes_copied = 0;  // bytes of the child written into the parent
};

// Merge-VHD / qemu-img commit: writes every sector present in the child at
// `child_path` into its immediate parent (which may itself be differencing),
// crash-safely: the parent's new DataWriteGuid is recorded in the child's
// parent_linkage2 (through the child's log) before the parent changes, so at
// every crash point the chain opens and reads as before. The parent must
// not be smaller than the child. Other children of the parent are
// invalidated, as with Hyper-V.
VHDX_API Result<CommitResult> CommitImage(const std::string& child_path, const CommitOptions& options = {});

struct RebaseOptions {
  // Extra directories to resolve the new parent's own chain.
  std::vector<std::string> parent_dirs;
  // Skip the linkage check: the child is pointed at the new parent even if
  // its DataWriteGuid differs, and parent_linkage takes that GUID. The
  // caller vouches that the new parent holds the same data.
  bool force = false;
};

// Set-VHD -ParentPath: points the child at `new_parent_path` (a moved or
// renamed copy of its parent), rewriting the parent locator through the
// child's log. The new parent must have the child's logical sector size, a
// virtual size no larger than the child's, and (unless `force`) the
// DataWriteGuid the child's linkage names. The child's own data is not
// touched; its current parent need not exist.
VHDX_API Status RebaseImage(const std::string& child_path, const std::string& new_parent_path,
                            const RebaseOptions& options = {});

}  // namespace vhdx
