// The write path (digest §7.7, §8): payload writes in place or into newly
// allocated blocks, BAT changes batched in memory and committed through the
// log at Flush (or when too many pages are dirty), applied in place after.
// Commits, flushes and closes: image_commit.cc (with the ordering of each
// commit); the blocks of differencing images: image_write_child.cc.
#include <fmt/format.h>

#include <algorithm>

#include "format/constants.h"
#include "header_writer.h"
#include "image_impl.h"
#include "image_util.h"

namespace vhdx {

using namespace format;

WriteStats ImageImpl::write_stats() const {
  WriteStats s;
  s.flushes = stat_flushes_;
  s.log_entries = stat_log_entries_;
  s.blocks_allocated = stat_allocated_;
  s.blocks_released = stat_released_;
  s.header_updates = stat_header_updates_;
  return s;
}

Status ImageImpl::Fail(Status s) {
  if (!s.ok()) {
    std::lock_guard lock(failure_mu_);
    if (!failed_) {
      failure_ = s;
      failed_ = true;
    }
  }
  return s;
}

Status ImageImpl::Failure() const {
  std::lock_guard lock(failure_mu_);
  return failure_;
}

Status ImageImpl::FlushFile() {
  ++stat_flushes_;
  return physical_->Flush();
}

void ImageImpl::GrowFileSize(uint64_t end) {
  uint64_t seen = file_size_.load();
  while (seen < end && !file_size_.compare_exchange_weak(seen, end)) {
  }
}

uint64_t ImageImpl::UsedBytes(uint64_t block) const {
  return std::min<uint64_t>(geo_.block_size, geo_.virtual_size - block * geo_.block_size);
}

Status ImageImpl::CheckWritable(uint64_t offset, uint64_t n, const char* op) const {
  if (!writable_)
    return Status(Errc::kReadOnly, fmt::format("{}: the image is open read-only", op));
  if (closed_) return Status(Errc::kInvalidArgument, fmt::format("{}: the image is closed", op));
  if (failed_) {
    Status failure = Failure();
    return Status(failure.code(), fmt::format("{}: refused after an earlier failure of the write "
                                               "path ({}); the file is consistent as of the last "
                                               "flush, reopen it",
                                               op, failure.message()));
  }
  if (geo_.has_parent && !parent_)
    return Status(Errc::kUnsupported, fmt::format("{}: the differencing image was opened without its "
                                                  "parent",
                                                  op));
  return CheckRange(offset, n, op);
}

Status ImageImpl::BeginChange() {
  if (changed_.load(std::memory_order_acquire)) return Status::Ok();
  std::lock_guard lock(commit_mu_);
  if (changed_) return Status::Ok();
  if (failed_) return Failure();
  // Refuse before anything changes if the log could not take our entries.
  const Header& h = headers_.Current();
  VHDX_ASSIGN_OR_RETURN(uint64_t size, physical_->Size());
  if (h.log_length < MiB || h.log_offset + h.log_length > size)
    return Status(Errc::kCorrupt, fmt::format("log at offset {:#x} (+{:#x}) cannot hold log entries "
                                              "in a file of {:#x} bytes; the image cannot be "
                                              "written",
                                              h.log_offset, h.log_length, size));
  ++stat_header_updates_;
  stat_flushes_ += 2;
  const Guid data_write_guid = next_data_write_guid_.value_or(Guid::Random());
  VHDX_RETURN_IF_ERROR(Fail(UpdateHeaders(*physical_, &headers_, [&](Header& next) {
    next.file_write_guid = Guid::Random();
    next.data_write_guid = data_write_guid;
  })));
  changed_.store(true, std::memory_order_release);
  return Status::Ok();
}

Result<BlockAllocator*> ImageImpl::Allocator() {
  if (BlockAllocator* a = allocator_ready_.load(std::memory_order_acquire)) return a;
  std::lock_guard lock(commit_mu_);
  if (allocator_) return allocator_.get();
  if (!allocator_refusal_.ok()) return allocator_refusal_;
  Status st = CreateAllocator();
  if (st.code() == Errc::kCorrupt) allocator_refusal_ = st;
  if (!st.ok()) return st;
  return allocator_.get();
}

Status ImageImpl::CreateAllocator() {
  // New blocks go past everything: structures, the file's end, and every
  // block any BAT entry points at (whatever its state).
  VHDX_ASSIGN_OR_RETURN(const uint64_t file_size, physical_->Size());
  uint64_t end = file_size;
  for (const Reserved& r : reserved_) end = std::max(end, r.end);
  // Space two entries share (a damaged image) must never be released: the
  // other entry would lose its data or see another block's. One bit per MiB.
  std::vector<uint64_t> used_mib;
  bool shared = false;
  constexpr uint64_t kBatch = 65536;
  std::vector<uint64_t> entries;
  for (uint64_t i0 = 0; i0 < geo_.total_entries; i0 += kBatch) {
    uint64_t n = std::min(kBatch, geo_.total_entries - i0);
    VHDX_RETURN_IF_ERROR(bat_->ReadRange(i0, n, &entries));
    for (uint64_t k = 0; k < n; ++k) {
      BatEntry e = BatEntry::Decode(entries[k]);
      const bool bitmap = geo_.IsBitmapIndex(i0 + k);
      // Sector-bitmap entries of a non-differencing image are never used
      // (QEMU before 8.0 left junk in them: digest §10).
      if (e.file_offset == 0 || (bitmap && !geo_.has_parent)) continue;
      if (e.file_offset >= file_size) {
        // Never read (reads of a present block there fail), but a new block
        // appended at the end of the file would alias it and a present
        // entry would start reading that block's data. Moving the end past
        // it is no answer either: a hostile offset can be 128 TiB.
        if (e.state == kPayloadFullyPresent || e.state == kPayloadPartiallyPresent)
          return Status(Errc::kCorrupt,
                        fmt::format("BAT entry {} (payload block {}) points at offset {:#x}, past the "
                                    "end of the file ({:#x} bytes); new blocks cannot be allocated "
                                    "safely in this damaged image",
                                    i0 + k, geo_.BlockOfIndex(i0 + k), e.file_offset, file_size));
        continue;  // a zero-reading entry: only its stale offset is beyond
      }
      const uint64_t len = bitmap ? MiB : geo_.block_size;
      end = std::max(end, e.file_offset + len);
      for (uint64_t m = e.file_offset / MiB; m < (e.file_offset + len) / MiB; ++m) {
        if (m / 64 >= used_mib.size()) used_mib.resize(m / 64 + 1 + used_mib.size() / 2);
        uint64_t bit = uint64_t{1} << (m % 64);
        shared |= (used_mib[m / 64] & bit) != 0;
        used_mib[m / 64] |= bit;
      }
    }
  }
  release_space_ = !shared;
  allocator_ = std::make_unique<BlockAllocator>(*physical_, geo_.block_size, RoundUpMiB(end));
  allocator_ready_.store(allocator_.get(), std::memory_order_release);
  return Status::Ok();
}

Status ImageImpl::WriteInPlace(uint64_t b, const BatEntry& e, uint64_t in_block, const uint8_t* data,
                               size_t n) {
  VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
  return physical_->WriteAt(e.file_offset + in_block, data, n);
}

Status ImageImpl::WriteInBlock(uint64_t b, uint64_t in_block, const uint8_t* data, size_t n) {
  const uint64_t index = geo_.PayloadIndex(b);
  {
    std::shared_lock lock(BlockLock(b));
    VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
    BatEntry e = BatEntry::Decode(raw);
    if (e.state == kPayloadFullyPresent) {
      return WriteInPlace(b, e, in_block, data, n);
    }
    if (!geo_.has_parent && !ReadsAsZero(e.state)) return BadWriteState(geo_, b, e);
  }
  if (geo_.has_parent) return WriteInChildBlock(b, in_block, data, n);
  // The block reads as zeros: zeros need no space.
  if (AllZero(data, n)) return Status::Ok();
  VHDX_RETURN_IF_ERROR(Allocator().status());
  std::unique_lock lock(BlockLock(b));
  VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
  BatEntry e = BatEntry::Decode(raw);
  if (e.state == kPayloadFullyPresent) {  // allocated meanwhile
    return WriteInPlace(b, e, in_block, data, n);
  }
  if (!ReadsAsZero(e.state)) return BadWriteState(geo_, b, e);
  return AllocateFull(b, e, in_block, data, n);
}

Status ImageImpl::AllocateFull(uint64_t b, const BatEntry& e, uint64_t in_block, const uint8_t* data,
                               size_t n) {
  BlockAllocator* alloc = allocator_ready_.load(std::memory_order_acquire);
  VHDX_ASSIGN_OR_RETURN(BlockAllocator::Extent x, alloc->Allocate());
  GrowFileSize(x.offset + geo_.block_size);
  // The rest of the block must read as zeros (never stale host data).
  Status s = Status::Ok();
  if (!x.zeroed) {
    s = WriteZeros(*physical_, x.offset, in_block);
    if (s.ok()) s = WriteZeros(*physical_, x.offset + in_block + n, geo_.block_size - in_block - n);
  }
  if (s.ok()) s = physical_->WriteAt(x.offset + in_block, data, n);
  // Only now, with the data written, may the entry point at it.
  if (s.ok()) s = bat_->Set(geo_.PayloadIndex(b), BatEntry{kPayloadFullyPresent, x.offset}.Encode());
  if (!s.ok()) {
    alloc->Abandon(x.offset);
    return s;
  }
  ++stat_allocated_;
  // A non-zero offset in a ZERO/UNMAPPED/UNDEFINED entry kept that space
  // reserved (digest §8.4); it is free once this entry is committed.
  if (release_space_ && e.file_offset != 0 && e.file_offset < open_file_size_ &&
      CheckPayload(b, BatEntry{kPayloadFullyPresent, e.file_offset}).ok())
    alloc->Release(e.file_offset);
  return Status::Ok();
}

Status ImageImpl::ZeroInBlock(uint64_t b, uint64_t in_block, uint64_t n, bool whole,
                              uint8_t new_state) {
  const uint64_t index = geo_.PayloadIndex(b);
  if (!whole) {
    // Partial block: zeros in place if allocated; otherwise it reads as
    // zeros already.
    std::shared_lock lock(BlockLock(b));
    VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
    BatEntry e = BatEntry::Decode(raw);
    if (e.state == kPayloadFullyPresent) {
      VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
      return WriteZeros(*physical_, e.file_offset + in_block, n);
    }
    if (!ReadsAsZero(e.state)) return BadWriteState(geo_, b, e);
    return Status::Ok();
  }
  VHDX_ASSIGN_OR_RETURN(BlockAllocator * alloc, Allocator());
  std::unique_lock lock(BlockLock(b));
  VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
  BatEntry e = BatEntry::Decode(raw);
  if (ReadsAsZero(e.state)) return Status::Ok();
  if (e.state != kPayloadFullyPresent) return BadWriteState(geo_, b, e);
  VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
  VHDX_RETURN_IF_ERROR(bat_->Set(index, BatEntry{new_state, 0}.Encode()));
  if (release_space_) alloc->Release(e.file_offset);
  ++stat_released_;
  return Status::Ok();
}

Status ImageImpl::ZeroRange(uint64_t offset, uint64_t length, bool may_unmap, uint8_t whole_state) {
  // Fixed images stay fully allocated (digest §8.5): zeros in place.
  const bool unmap = may_unmap && info_.type != DiskType::kFixed;
  while (length > 0) {
    uint64_t b = offset / geo_.block_size;
    uint64_t in_block = offset % geo_.block_size;
    uint64_t k = std::min<uint64_t>(length, UsedBytes(b) - in_block);
    if (geo_.has_parent) {
      VHDX_RETURN_IF_ERROR(ZeroChildRange(b, in_block, k, in_block == 0 && k == UsedBytes(b), may_unmap,
                                          whole_state));
      offset += k;
      length -= k;
      continue;
    }
    bool whole = unmap && in_block == 0 && k == UsedBytes(b);
    VHDX_RETURN_IF_ERROR(ZeroInBlock(b, in_block, k, whole, whole_state));
    offset += k;
    length -= k;
  }
  return MaybeCommit();
}

Status ImageImpl::Write(uint64_t offset, const void* buf, size_t n, const WriteOptions& options) {
  VHDX_RETURN_IF_ERROR(CheckWritable(offset, n, "write"));
  if (n > 0) {
    VHDX_RETURN_IF_ERROR(BeginChange());
    auto* p = static_cast<const uint8_t*>(buf);
    while (n > 0) {
      uint64_t b = offset / geo_.block_size;
      uint64_t in_block = offset % geo_.block_size;
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, geo_.block_size - in_block));
      VHDX_RETURN_IF_ERROR(WriteInBlock(b, in_block, p, k));
      p += k;
      offset += k;
      n -= k;
    }
    VHDX_RETURN_IF_ERROR(MaybeCommit());
  }
  return options.fua ? Flush() : Status::Ok();
}

Status ImageImpl::Discard(uint64_t offset, uint64_t length) {
  VHDX_RETURN_IF_ERROR(CheckWritable(offset, length, "discard"));
  if (length == 0) return Status::Ok();
  VHDX_RETURN_IF_ERROR(BeginChange());
  return ZeroRange(offset, length, /*may_unmap=*/true, kPayloadUnmapped);
}

Status ImageImpl::WriteZeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  VHDX_RETURN_IF_ERROR(CheckWritable(offset, length, "write zeroes"));
  if (length == 0) return Status::Ok();
  VHDX_RETURN_IF_ERROR(BeginChange());
  return ZeroRange(offset, length, may_unmap, kPayloadZero);
}

}  // namespace vhdx
