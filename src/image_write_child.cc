// The write path of differencing images (the rest is in image_write.cc).
//
// A block of a child is in one of three situations: FULLY_PRESENT (written
// in place like any block), reading as zeros (ZERO/UNMAPPED/UNDEFINED: a new
// block must be FULLY_PRESENT with the rest zeroed, since its sectors must
// not fall back to the parent), or (partly) in the parent: NOT_PRESENT and
// PARTIALLY_PRESENT. Writes to those make the written sectors present in the
// sector bitmap (digest §8.5 (a)); a sector only partly written is first
// filled from where it reads now. A write of a whole NOT_PRESENT block needs
// no bitmap; a PARTIALLY_PRESENT block whose sectors are all present is
// promoted to FULLY_PRESENT.
//
// Crash safety: data is flushed before any entry (as for plain images); a
// chunk's bitmap block is allocated and committed on its own before any
// entry of the chunk may be PARTIALLY_PRESENT; and a commit logs bitmap
// pages before BAT pages, so a BAT change that is durable always has its
// bits durable too (when a commit takes several entries).
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "format/constants.h"
#include "image_impl.h"
#include "image_util.h"

namespace vhdx {

using namespace format;

Result<uint64_t> ImageImpl::EnsureBitmap(uint64_t b) {
  const uint64_t chunk = b / geo_.chunk_ratio;
  const uint64_t index = geo_.BitmapIndex(chunk);
  std::lock_guard lock(commit_mu_);
  VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
  BatEntry sb = BatEntry::Decode(raw);
  if (sb.state == kSectorBitmapPresent) {
    VHDX_RETURN_IF_ERROR(CheckAllocatedEntry(index, sb, MiB, file_size_, reserved_,
                                             EntryLabel{.kind = "sector bitmap of chunk", .block = chunk}));
    return sb.file_offset;
  }
  if (sb.state != kSectorBitmapNotPresent)
    return Status(Errc::kCorrupt, fmt::format("BAT entry {} (sector bitmap of chunk {}): state {} is "
                                              "not a sector bitmap state",
                                              index, chunk, sb.state));
  VHDX_ASSIGN_OR_RETURN(BlockAllocator::Extent x, allocator_->AllocateTail(MiB));
  GrowFileSize(x.offset + MiB);
  if (!x.zeroed) VHDX_RETURN_IF_ERROR(Fail(WriteZeros(*physical_, x.offset, MiB)));
  VHDX_RETURN_IF_ERROR(bat_->Set(index, BatEntry{kSectorBitmapPresent, x.offset}.Encode()));
  // Durable before any payload entry of the chunk says PARTIALLY_PRESENT.
  VHDX_RETURN_IF_ERROR(CommitLocked());
  return x.offset;
}

Status ImageImpl::WriteInChildBlock(uint64_t b, uint64_t in_block, const uint8_t* data, size_t n) {
  const uint64_t index = geo_.PayloadIndex(b);
  const uint64_t ss = geo_.logical_sector_size;
  const uint64_t used = UsedBytes(b);
  VHDX_RETURN_IF_ERROR(Allocator().status());
  std::unique_lock lock(BlockLock(b));
  VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
  BatEntry e = BatEntry::Decode(raw);
  if (e.state == kPayloadFullyPresent) {
    return WriteInPlace(b, e, in_block, data, n);
  }
  if (e.state == kPayloadZero || e.state == kPayloadUnmapped || e.state == kPayloadUndefined) {
    if (AllZero(data, n)) return Status::Ok();
    return AllocateFull(b, e, in_block, data, n);
  }
  if (e.state == kPayloadNotPresent && in_block == 0 && n == used) {
    // The whole block: nothing of the parent's is left in it.
    if (AllZero(data, n)) return bat_->Set(index, BatEntry{kPayloadZero, 0}.Encode());
    return AllocateFull(b, e, in_block, data, n);
  }
  if (e.state != kPayloadNotPresent && e.state != kPayloadPartiallyPresent)
    return BadWriteState(geo_, b, e);

  // Some sectors of the block come from the parent.
  uint64_t sb = 0, block_offset = 0;
  BlockAllocator::Extent fresh;
  if (e.state == kPayloadPartiallyPresent) {
    VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
    VHDX_ASSIGN_OR_RETURN(sb, BitmapOf(b));
    block_offset = e.file_offset;
  } else {
    VHDX_ASSIGN_OR_RETURN(sb, EnsureBitmap(b));
    VHDX_ASSIGN_OR_RETURN(fresh, allocator_->Allocate());
    block_offset = fresh.offset;
    GrowFileSize(fresh.offset + geo_.block_size);
  }
  const uint64_t s0 = in_block / ss, s1 = (in_block + n - 1) / ss;
  const bool partial = e.state == kPayloadPartiallyPresent;
  // A sector only partly written: the rest as it reads now (own bytes if
  // present, else the parent's).
  auto fill_sector = [&](uint64_t sector, std::vector<uint8_t>& buf) -> Status {
    buf.resize(ss);
    bool own = false;
    if (partial) {
      VHDX_ASSIGN_OR_RETURN(own, bitmaps_->AllSet(sb, FirstBit(b) + sector, 1));
    }
    if (own) return ReadExact(*physical_, block_offset + sector * ss, buf.data(), ss, "payload block");
    return ReadParent(b * geo_.block_size + sector * ss, buf.data(), ss);
  };
  Status s = [&]() -> Status {
    const uint64_t end = in_block + n;
    std::vector<uint8_t> head, tail;
    uint64_t mid_start = in_block, mid_end = end;
    if (in_block % ss) {
      VHDX_RETURN_IF_ERROR(fill_sector(s0, head));
      uint64_t k = std::min<uint64_t>(end, (s0 + 1) * ss) - in_block;
      std::memcpy(head.data() + in_block % ss, data, k);
      mid_start = (s0 + 1) * ss;
    }
    if (end % ss && (s1 != s0 || in_block % ss == 0)) {
      VHDX_RETURN_IF_ERROR(fill_sector(s1, tail));
      std::memcpy(tail.data(), data + (s1 * ss - in_block), end - s1 * ss);
      mid_end = s1 * ss;
    }
    if (!head.empty()) VHDX_RETURN_IF_ERROR(physical_->WriteAt(block_offset + s0 * ss, head.data(), ss));
    if (mid_end > mid_start)
      VHDX_RETURN_IF_ERROR(
          physical_->WriteAt(block_offset + mid_start, data + (mid_start - in_block), mid_end - mid_start));
    if (!tail.empty()) VHDX_RETURN_IF_ERROR(physical_->WriteAt(block_offset + s1 * ss, tail.data(), ss));
    // Only now, with the data written, may the bits and the entry say so.
    if (!partial) {
      // Bits left from an earlier life of the block would expose garbage.
      VHDX_RETURN_IF_ERROR(bitmaps_->Clear(sb, FirstBit(b), used / ss));
    }
    VHDX_RETURN_IF_ERROR(bitmaps_->Set(sb, FirstBit(b) + s0, s1 - s0 + 1));
    VHDX_ASSIGN_OR_RETURN(bool full, bitmaps_->AllSet(sb, FirstBit(b), used / ss));
    uint8_t state = full ? kPayloadFullyPresent : kPayloadPartiallyPresent;
    if (state != e.state || !partial)
      VHDX_RETURN_IF_ERROR(bat_->Set(index, BatEntry{state, block_offset}.Encode()));
    return Status::Ok();
  }();
  if (!partial) {
    if (!s.ok()) {
      allocator_->Abandon(fresh.offset);
      return s;
    }
    ++stat_allocated_;
  }
  return s;
}

Status ImageImpl::ZeroChildRange(uint64_t b, uint64_t in_block, uint64_t n, bool whole, bool unmap,
                                 uint8_t new_state) {
  if (!whole) {
    // Present zeros, never the parent's data again: write them.
    while (n > 0) {
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, MiB));
      VHDX_RETURN_IF_ERROR(WriteInBlock(b, in_block, ZeroMiB(), k));
      in_block += k;
      n -= k;
    }
    return Status::Ok();
  }
  VHDX_ASSIGN_OR_RETURN(BlockAllocator * alloc, Allocator());
  std::unique_lock lock(BlockLock(b));
  const uint64_t index = geo_.PayloadIndex(b);
  VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
  BatEntry e = BatEntry::Decode(raw);
  const bool allocated = e.state == kPayloadFullyPresent || e.state == kPayloadPartiallyPresent;
  if (!allocated && e.state != kPayloadNotPresent && !ReadsAsZero(e.state)) return BadWriteState(geo_, b, e);
  if (allocated) VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
  if (!unmap && allocated) {
    // Keep the space: zeros in place, every sector present.
    VHDX_RETURN_IF_ERROR(WriteZeros(*physical_, e.file_offset, UsedBytes(b)));
    if (e.state == kPayloadPartiallyPresent)
      VHDX_RETURN_IF_ERROR(bat_->Set(index, BatEntry{kPayloadFullyPresent, e.file_offset}.Encode()));
    return Status::Ok();
  }
  if (!allocated && e.state != kPayloadNotPresent) return Status::Ok();  // reads as zeros already
  // The sector bits of a block leaving PARTIALLY_PRESENT are left alone:
  // they are irrelevant in its new state, and clearing them in the same
  // commit could, after a crash between two of its entries, make the old
  // entry read the parent.
  VHDX_RETURN_IF_ERROR(bat_->Set(index, BatEntry{unmap ? new_state : uint8_t{kPayloadZero}, 0}.Encode()));
  if (allocated) {
    if (release_space_) alloc->Release(e.file_offset);
    ++stat_released_;
  }
  return Status::Ok();
}

}  // namespace vhdx
