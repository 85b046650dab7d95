// The write path (digest §7.7, §8): payload writes in place or into newly
// allocated blocks, BAT changes batched in memory and committed through the
// log at Flush (or when too many pages are dirty), applied in place after.
//
// Ordering, per commit (rule numbers from digest §8.3):
//   1. FileWriteGuid/DataWriteGuid were made durable before the session's
//      first change (BeginChange).
//   2. Payload data is flushed before the log entry that points BAT entries
//      at it: every BAT entry is set in memory only after its data write
//      returned, the commit snapshots the dirty pages, then flushes.
//   3. The entry is flushed before its pages are written in place.
//   4. Log space is reused only after the next flush made the in-place
//      writes durable (LogWriter::MarkApplied).
// A commit therefore costs two fsyncs however many blocks it covers (three
// for the session's first, whose entry is written before the header names
// its LogGuid, so the header never points at a log without a valid entry),
// plus one per further entry when its BAT pages exceed one entry (half the
// log: 125 pages, 64 Ki blocks, with a 1 MiB log). Each entry is its own
// sequence and never overlaps the previous one, so a torn entry always
// leaves the previous one valid.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "format/constants.h"
#include "header_writer.h"
#include "image_impl.h"
#include "util/coding.h"

namespace vhdx {

using namespace format;

namespace {

bool AllZero(const uint8_t* p, size_t n) {
  static constexpr uint8_t kZero[256] = {};
  while (n >= sizeof(kZero)) {
    if (std::memcmp(p, kZero, sizeof(kZero)) != 0) return false;
    p += sizeof(kZero);
    n -= sizeof(kZero);
  }
  return std::memcmp(p, kZero, n) == 0;
}

const uint8_t* ZeroMiB() {
  static const std::vector<uint8_t> zeros(MiB, 0);
  return zeros.data();
}

bool ReadsAsZero(uint8_t state) {
  return state == kPayloadNotPresent || state == kPayloadUndefined || state == kPayloadZero ||
         state == kPayloadUnmapped;
}

uint64_t RoundUpMiB(uint64_t x) { return (x + MiB - 1) / MiB * MiB; }

Status WriteZeros(File& file, uint64_t offset, uint64_t n) {
  while (n > 0) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, MiB));
    VHDX_RETURN_IF_ERROR(file.WriteAt(offset, ZeroMiB(), k));
    offset += k;
    n -= k;
  }
  return Status::Ok();
}

Status BadWriteState(const Geometry& g, uint64_t b, const BatEntry& e) {
  return Status(Errc::kCorrupt, fmt::format("BAT entry {} (payload block {}): state {} cannot be "
                                            "written in a {} image",
                                            g.PayloadIndex(b), b, e.state,
                                            g.has_parent ? "differencing" : "non-differencing"));
}

}  // namespace

ImageImpl::~ImageImpl() {
  if (writable_ && !closed_) (void)Close();
}

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

// ---- Differencing images -----------------------------------------------------
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

Status ImageImpl::Flush() {
  VHDX_RETURN_IF_ERROR(CheckWritable(0, 0, "flush"));
  if (!changed_) return Status::Ok();  // nothing written this session
  return Commit();
}

Status ImageImpl::MaybeCommit() {
  size_t dirty = bat_->dirty_pages() + (bitmaps_ ? bitmaps_->dirty_pages() : 0);
  if (dirty <= max_dirty_pages_) return Status::Ok();
  return Commit();
}

Status ImageImpl::Commit() {
  std::lock_guard lock(commit_mu_);
  return CommitLocked();
}

Status ImageImpl::CommitLocked() {
  if (failed_) return Failure();
  // Releases first, then the snapshot: every release follows its BAT
  // change, so each released block's change is in this snapshot (or an
  // earlier commit) and is durable before the space is reused.
  std::vector<uint64_t> released = allocator_ ? allocator_->TakePending() : std::vector<uint64_t>{};
  std::vector<uint64_t> released_bitmaps = std::move(released_bitmaps_);
  released_bitmaps_.clear();
  // What this commit logs, in this order: metadata sectors (a locator
  // rewrite, all in the first entry), sector bitmap pages, then BAT pages,
  // so that a durable BAT change always has its bitmap bits durable.
  std::vector<BatCache::DirtyPage> bat_pages = bat_->SnapshotDirty();
  std::vector<SectorBitmapCache::DirtyPage> bitmap_pages =
      bitmaps_ ? bitmaps_->SnapshotDirty() : std::vector<SectorBitmapCache::DirtyPage>{};
  std::map<uint64_t, std::vector<uint8_t>> metadata = std::move(pending_metadata_);
  pending_metadata_.clear();
  const size_t total = metadata.size() + bitmap_pages.size() + bat_pages.size();
  VHDX_ASSIGN_OR_RETURN(uint64_t size, physical_->Size());
  const bool first = !log_;
  if (total == 0 || !first) {
    // Payload data durable (rule 2), and the previous commit's in-place
    // writes too, so its log space may be reused (rule 4).
    VHDX_RETURN_IF_ERROR(Fail(FlushFile()));
    if (log_) log_->MarkApplied();
  }
  if (total > 0) {
    struct Update {
      uint64_t file_offset;
      const std::vector<uint8_t>* bytes;
    };
    std::vector<Update> all;
    all.reserve(total);
    for (const auto& [offset, bytes] : metadata) all.push_back({offset, &bytes});
    for (const auto& p : bitmap_pages) all.push_back({p.file_offset, &p.bytes});
    for (const auto& p : bat_pages) all.push_back({p.file_offset, &p.bytes});
    const Header& h = headers_.Current();
    if (first) log_ = std::make_unique<LogWriter>(*physical_, h.log_offset, h.log_length, Guid::Random());
    // The entry's FlushedFileOffset: the size just made durable (the first
    // commit's flush comes right after the entry is written, before the
    // header makes the entry count).
    const uint64_t flushed = size / MiB * MiB;
    const uint64_t last = RoundUpMiB(std::max(size, allocator_ ? allocator_->end() : 0));
    bool header_pending = first;
    for (size_t i = 0; i < total;) {
      if (i > 0) {
        // Every entry is a sequence of its own (Tail = itself), so the
        // previous entry's in-place writes are made durable first. Chained
        // entries could fill the ring; the next entry would then overwrite
        // the only valid sequence while it is written, and a crash tearing
        // it would leave no valid sequence at all.
        VHDX_RETURN_IF_ERROR(Fail(FlushFile()));
        log_->MarkApplied();
      }
      // Never 0: everything is applied here and an entry may take half
      // the ring (LogWriter::MaxDataUpdatesPerEntry).
      const size_t room = log_->MaxDataUpdatesNow();
      const size_t take = std::min(room, total - i);
      std::vector<LogUpdate> updates(take);
      for (size_t k = 0; k < take; ++k) {
        updates[k].file_offset = all[i + k].file_offset;
        updates[k].data = *all[i + k].bytes;
      }
      VHDX_RETURN_IF_ERROR(Fail(log_->Append(updates, flushed, last)));
      ++stat_log_entries_;
      VHDX_RETURN_IF_ERROR(Fail(FlushFile()));
      if (header_pending) {
        ++stat_header_updates_;
        stat_flushes_ += 2;
        const Guid log_guid = log_->log_guid();
        VHDX_RETURN_IF_ERROR(
            Fail(UpdateHeaders(*physical_, &headers_, [&](Header& next) { next.log_guid = log_guid; })));
        header_pending = false;
      }
      // Apply the entry in place: each kind of page by its owner.
      const size_t stop = i + take;
      const size_t meta_end = metadata.size();
      const size_t bitmap_end = meta_end + bitmap_pages.size();
      for (size_t k = i; k < std::min(stop, meta_end); ++k)
        VHDX_RETURN_IF_ERROR(Fail(physical_->WriteAt(all[k].file_offset, all[k].bytes->data(),
                                                     all[k].bytes->size())));
      if (stop > meta_end && i < bitmap_end) {
        std::vector<SectorBitmapCache::DirtyPage> chunk(
            std::make_move_iterator(bitmap_pages.begin() + (std::max(i, meta_end) - meta_end)),
            std::make_move_iterator(bitmap_pages.begin() + (std::min(stop, bitmap_end) - meta_end)));
        VHDX_RETURN_IF_ERROR(Fail(bitmaps_->WriteBack(*physical_, chunk)));
      }
      if (stop > bitmap_end) {
        std::vector<BatCache::DirtyPage> chunk(
            std::make_move_iterator(bat_pages.begin() + (std::max(i, bitmap_end) - bitmap_end)),
            std::make_move_iterator(bat_pages.begin() + (stop - bitmap_end)));
        VHDX_RETURN_IF_ERROR(Fail(bat_->WriteBack(*physical_, chunk)));
      }
      i = stop;
    }
  }
  // The changes that released these blocks are committed: give the space
  // back to the host, then to the allocator.
  for (uint64_t offset : released) {
    Status punched = physical_->PunchHole(offset, geo_.block_size);
    allocator_->AddFree(offset, punched.ok());
  }
  for (uint64_t offset : released_bitmaps) (void)physical_->PunchHole(offset, MiB);
  return Status::Ok();
}

Status ImageImpl::Close() {
  if (!writable_ || closed_.exchange(true)) return Status::Ok();
  Status s = Status::Ok();
  if (changed_) {
    std::lock_guard lock(commit_mu_);
    s = CommitLocked();
    if (s.ok() && log_) {
      // Everything applied and durable: empty the log (LogGuid zero) so that
      // readers without log support open the file.
      s = Fail(FlushFile());
      if (s.ok()) {
        ++stat_header_updates_;
        stat_flushes_ += 2;
        s = Fail(UpdateHeaders(*physical_, &headers_, [](Header& next) { next.log_guid = Guid{}; }));
      }
    }
  }
  for (int i = 0; i < 2; ++i) {
    info_.headers[i].sequence_number = headers_.headers[i].sequence_number;
    info_.headers[i].file_write_guid = headers_.headers[i].file_write_guid;
    info_.headers[i].data_write_guid = headers_.headers[i].data_write_guid;
    info_.headers[i].log_guid = headers_.headers[i].log_guid;
  }
  info_.current_header = headers_.current;
  // Clean and closed: other processes may open the file now, though this
  // object (and its parents' read locks) lives on.
  if (s.ok()) physical_->ReleaseLock();
  return s;
}

}  // namespace vhdx

namespace vhdx {

void ImageImpl::SetNextDataWriteGuid(const Guid& guid) { next_data_write_guid_ = guid; }

Status ImageImpl::RewriteParentLocator(const ParentLocator& locator) {
  if (!writable_) return Status(Errc::kReadOnly, "parent locator: the image is open read-only");
  if (closed_) return Status(Errc::kInvalidArgument, "parent locator: the image is closed");
  if (!locator_) return Status(Errc::kInvalidArgument, "not a differencing image: it has no parent locator");
  std::vector<uint8_t> item = SerializeParentLocator(locator);
  {
    // The new locator must read back as valid before anything changes.
    ParentLocator check;
    VHDX_RETURN_IF_ERROR(ParseParentLocator(item.data(), item.size(), 0, &check));
  }
  VHDX_RETURN_IF_ERROR(BeginChange());
  std::lock_guard lock(commit_mu_);
  size_t which = meta_table_.entries.size();
  for (size_t i = 0; i < meta_table_.entries.size(); ++i)
    if (!meta_table_.entries[i].is_user() && meta_table_.entries[i].item_id == kParentLocatorGuid) which = i;
  if (which == meta_table_.entries.size())
    return Status(Errc::kCorrupt, "metadata table: no parent locator entry");
  MetadataEntry& entry = meta_table_.entries[which];
  // In place when it fits before the next item; else after every item.
  uint64_t place = entry.offset;
  uint64_t items_end = kMetadataTableSize;
  bool fits = true;
  for (size_t i = 0; i < meta_table_.entries.size(); ++i) {
    const MetadataEntry& m = meta_table_.entries[i];
    if (m.length == 0) continue;
    items_end = std::max<uint64_t>(items_end, uint64_t{m.offset} + m.length);
    if (i != which && m.offset < place + item.size() && uint64_t{m.offset} + m.length > place) fits = false;
  }
  if (!fits) place = (items_end + 7) / 8 * 8;
  if (place + item.size() > meta_region_length_)
    return Status(Errc::kNoSpace, fmt::format("metadata region at offset {:#x}: no room for a parent "
                                              "locator of {} bytes",
                                              meta_region_offset_, item.size()));
  // The sectors to change, as they are now (or as a pending change left them).
  auto sector = [&](uint64_t file_offset) -> Result<std::vector<uint8_t>*> {
    const uint64_t at = file_offset / 4096 * 4096;
    auto it = pending_metadata_.find(at);
    if (it == pending_metadata_.end()) {
      std::vector<uint8_t> bytes(4096);
      VHDX_RETURN_IF_ERROR(ReadExact(*physical_, at, bytes.data(), bytes.size(), "metadata region"));
      it = pending_metadata_.emplace(at, std::move(bytes)).first;
    }
    return &it->second;
  };
  auto put = [&](uint64_t file_offset, const uint8_t* p, size_t n) -> Status {
    while (n > 0) {
      VHDX_ASSIGN_OR_RETURN(std::vector<uint8_t> * s, sector(file_offset));
      const size_t in = file_offset % 4096;
      const size_t k = std::min<size_t>(n, 4096 - in);
      std::memcpy(s->data() + in, p, k);
      file_offset += k;
      p += k;
      n -= k;
    }
    return Status::Ok();
  };
  uint8_t fields[8];
  EncodeFixed32(fields, static_cast<uint32_t>(place));
  EncodeFixed32(fields + 4, static_cast<uint32_t>(item.size()));
  Status s = put(meta_region_offset_ + 32 + 32 * which + 16, fields, 8);
  if (s.ok()) s = put(meta_region_offset_ + place, item.data(), item.size());
  if (!s.ok()) {
    pending_metadata_.clear();
    return s;
  }
  entry.offset = static_cast<uint32_t>(place);
  entry.length = static_cast<uint32_t>(item.size());
  // Table entry and item in one entry of the log: durable when we return.
  VHDX_RETURN_IF_ERROR(CommitLocked());
  locator_ = locator;
  info_.parent = ParentLocatorInfo{locator.locator_type, locator.entries};
  return Status::Ok();
}

Status ImageImpl::DropAllBlocks() {
  if (!geo_.has_parent) return Status(Errc::kInvalidArgument, "not a differencing image");
  VHDX_RETURN_IF_ERROR(CheckWritable(0, 0, "empty the image"));
  VHDX_RETURN_IF_ERROR(BeginChange());
  VHDX_ASSIGN_OR_RETURN(BlockAllocator * alloc, Allocator());
  constexpr uint64_t kBatch = 65536;
  std::vector<uint64_t> entries;
  for (uint64_t b0 = 0; b0 < geo_.payload_blocks; b0 += kBatch) {
    const uint64_t b1 = std::min(geo_.payload_blocks, b0 + kBatch) - 1;
    const uint64_t i0 = geo_.PayloadIndex(b0);
    VHDX_RETURN_IF_ERROR(bat_->ReadRange(i0, geo_.PayloadIndex(b1) - i0 + 1, &entries));
    for (uint64_t b = b0; b <= b1; ++b) {
      if (BatEntry::Decode(entries[geo_.PayloadIndex(b) - i0]).state == kPayloadNotPresent) continue;
      std::unique_lock lock(BlockLock(b));
      VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(geo_.PayloadIndex(b)));
      BatEntry e = BatEntry::Decode(raw);
      if (e.state == kPayloadNotPresent) continue;
      if ((e.state == kPayloadFullyPresent || e.state == kPayloadPartiallyPresent) &&
          CheckPayload(b, e).ok()) {
        if (release_space_) alloc->Release(e.file_offset);
        ++stat_released_;
      }
      VHDX_RETURN_IF_ERROR(bat_->Set(geo_.PayloadIndex(b), BatEntry{kPayloadNotPresent, 0}.Encode()));
    }
    VHDX_RETURN_IF_ERROR(MaybeCommit());
  }
  // Bitmap entries last: a BAT page holding a chunk's bitmap entry comes
  // after the pages of its payload entries, so no entry of the log makes a
  // bitmap NOT_PRESENT while a block of its chunk is still PARTIALLY_PRESENT.
  std::lock_guard lock(commit_mu_);
  for (uint64_t c = 0; c < geo_.bitmap_blocks; ++c) {
    const uint64_t index = geo_.BitmapIndex(c);
    if (index >= geo_.total_entries) break;
    VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
    BatEntry sb = BatEntry::Decode(raw);
    if (sb.state == kSectorBitmapNotPresent && sb.file_offset == 0) continue;
    if (sb.state == kSectorBitmapPresent && release_space_ &&
        CheckAllocatedEntry(index, sb, MiB, file_size_, reserved_, EntryLabel{}).ok())
      released_bitmaps_.push_back(sb.file_offset);
    VHDX_RETURN_IF_ERROR(bat_->Set(index, BatEntry{kSectorBitmapNotPresent, 0}.Encode()));
  }
  return CommitLocked();
}

}  // namespace vhdx
