#include "block_allocator.h"

#include <fmt/format.h>

#include "format/constants.h"

namespace vhdx {

namespace {
uint64_t RoundUpMiB(uint64_t x) { return (x + format::MiB - 1) / format::MiB * format::MiB; }
}  // namespace

BlockAllocator::BlockAllocator(File& file, uint64_t block_size, uint64_t end)
    : file_(file), block_size_(block_size), end_(RoundUpMiB(end)) {}

Result<BlockAllocator::Extent> BlockAllocator::Allocate() {
  std::lock_guard lock(mu_);
  if (!free_.empty()) {
    Extent e = free_.back();
    free_.pop_back();
    return e;
  }
  return AppendLocked(block_size_);
}

Result<BlockAllocator::Extent> BlockAllocator::AllocateTail(uint64_t bytes) {
  std::lock_guard lock(mu_);
  return AppendLocked(bytes);
}

Result<BlockAllocator::Extent> BlockAllocator::AppendLocked(uint64_t bytes) {
  const uint64_t offset = end_;
  if (offset + bytes > format::kMaxFileOffset)
    return Status(Errc::kNoSpace, fmt::format("no room for {} bytes at offset {:#x}: beyond the "
                                              "largest VHDX file",
                                              bytes, offset));
  // Extending the file makes the new range read as zeros (a hole), and puts
  // it inside the file so the BAT entry pointing at it is valid.
  VHDX_ASSIGN_OR_RETURN(uint64_t size, file_.Size());
  if (size < offset + bytes) VHDX_RETURN_IF_ERROR(file_.Truncate(offset + bytes));
  end_ = offset + bytes;
  // Bytes of the file past `end_` (left by another writer) are not known
  // to be zero.
  return Extent{offset, size <= offset};
}

void BlockAllocator::Abandon(uint64_t offset) {
  std::lock_guard lock(mu_);
  free_.push_back({offset, false});
}

void BlockAllocator::Release(uint64_t offset) {
  std::lock_guard lock(mu_);
  pending_.push_back(offset);
}

std::vector<uint64_t> BlockAllocator::TakePending() {
  std::lock_guard lock(mu_);
  return std::exchange(pending_, {});
}

void BlockAllocator::AddFree(uint64_t offset, bool zeroed) {
  std::lock_guard lock(mu_);
  free_.push_back({offset, zeroed});
}

uint64_t BlockAllocator::end() const {
  std::lock_guard lock(mu_);
  return end_;
}

}  // namespace vhdx
