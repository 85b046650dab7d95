// File space for payload blocks (digest §8.4): 1 MiB-aligned ranges of
// BlockSize bytes, appended at the end of the file or reused from blocks
// released earlier in the session.
//
// Released space is not reusable at once: until the BAT change that
// released it is committed through the log, a crash would bring back the
// old entry pointing at it, and it must still hold that block's data.
// So a release is pending until the caller commits, then the caller hands
// the space back (after punching a hole in it) with AddFree.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "vhdx/file.h"
#include "vhdx/status.h"

namespace vhdx {

class BlockAllocator {
 public:
  // `end` is the first byte past every structure and allocated block,
  // rounded up to 1 MiB by the allocator.
  BlockAllocator(File& file, uint64_t block_size, uint64_t end);

  struct Extent {
    uint64_t offset = 0;
    bool zeroed = false;  // every byte reads as zero (fresh or punched space)
  };
  // A free range of block_size bytes; the file is extended to cover it.
  Result<Extent> Allocate();
  // `bytes` (a 1 MiB multiple: a sector bitmap block) appended at the end
  // of the file, never from the free list; reads as zeros when zeroed.
  Result<Extent> AllocateTail(uint64_t bytes);
  // Gives back an extent whose allocation was abandoned (a failed write):
  // it may hold some bytes now, so it is no longer zeroed.
  void Abandon(uint64_t offset);
  // Space of a block whose BAT entry no longer points at it (pending).
  void Release(uint64_t offset);
  // The pending releases, to be committed; the caller calls AddFree for
  // each once the BAT change is durable.
  std::vector<uint64_t> TakePending();
  void AddFree(uint64_t offset, bool zeroed);

  // End of the allocated area (a 1 MiB multiple).
  uint64_t end() const;

 private:
  // `bytes` at the end of the allocated area (mu_ held).
  Result<Extent> AppendLocked(uint64_t bytes);

  File& file_;
  const uint64_t block_size_;
  mutable std::mutex mu_;
  uint64_t end_;
  std::vector<Extent> free_;
  std::vector<uint64_t> pending_;
};

}  // namespace vhdx
