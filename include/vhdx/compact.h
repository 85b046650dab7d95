// Optimize-VHD for Linux: gives back the file space of blocks the disk does
// not need, in place. Blocks whose payload is all zeros become unallocated;
// blocks at the end of the file move into the holes below them, and the
// file is truncated. Every change goes through the image's log: a power
// failure at any moment leaves a consistent image that reads as before.
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

struct CompactOptions {
  // Extra directories to find the parents of a differencing image in
  // (OpenOptions::parent_dirs); parents are only read.
  std::vector<std::string> parent_dirs{};
  // Report what would be done without writing anything.
  bool dry_run = false;
  // Read the guest's file systems (the partition table, then each clean
  // ext2/3/4 through libext2fs) and release every block that lies wholly in
  // their free space, unread. Their bytes then read as zeros, a change of
  // what the disk reads, so the DataWriteGuid changes (as for a discard) and
  // children of the image no longer match it. false: only all-zero blocks.
  bool file_system = true;
  // Called as blocks are scanned, then as they are moved: (done, total) of
  // the current phase.
  std::function<void(uint64_t done, uint64_t total)> progress{};
};

struct CompactResult {
  uint64_t file_size_before = 0, file_size_after = 0;  // after: predicted by a dry run
  uint64_t blocks_scanned = 0;      // allocated payload blocks read for zeros
  uint64_t blocks_zero = 0;         // released: their payload was all zeros
  uint64_t blocks_fs_free = 0;      // released: wholly in a file system's free space
  uint64_t file_systems_read = 0;   // clean ext2/3/4 file systems whose free space was used
  std::vector<std::string> notices; // partitions and file systems left alone, one line each
  uint64_t stale_offsets = 0;       // UNMAPPED/UNDEFINED entries whose kept file offset was dropped
  uint64_t blocks_moved = 0;        // payload and sector bitmap blocks moved down
  uint64_t bytes_moved = 0;
  bool dry_run = false;
};

// Compacts the image at `path` (dynamic or differencing; a fixed image is
// refused: it stays fully allocated by definition, and converting it to
// dynamic is how it is compacted). Unless blocks in file-system free space
// are released, nothing anyone reads changes, so the DataWriteGuid stays and
// children of the image still match it. Refused: an image in use (locked),
// a damaged one (any error vhdx::Check reports).
VHDX_API Result<CompactResult> CompactImage(const std::string& path, const CompactOptions& options = {});
// The same on an image opened read-write (with its parent, if any): compacted,
// then closed.
VHDX_API Result<CompactResult> CompactImage(std::unique_ptr<Image> image, const CompactOptions& options = {});

}  // namespace vhdx
