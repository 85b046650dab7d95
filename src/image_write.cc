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
  if (geo_.has_parent)
    return Status(Errc::kUnsupported, fmt::format("{}: writing differencing images is not supported "
                                                  "yet",
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
  VHDX_RETURN_IF_ERROR(Fail(UpdateHeaders(*physical_, &headers_, [](Header& next) {
    next.file_write_guid = Guid::Random();
    next.data_write_guid = Guid::Random();
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

Status ImageImpl::WriteInBlock(uint64_t b, uint64_t in_block, const uint8_t* data, size_t n) {
  const uint64_t index = geo_.PayloadIndex(b);
  {
    std::shared_lock lock(BlockLock(b));
    VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
    BatEntry e = BatEntry::Decode(raw);
    if (e.state == kPayloadFullyPresent) {
      VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
      return physical_->WriteAt(e.file_offset + in_block, data, n);
    }
    if (!ReadsAsZero(e.state)) return BadWriteState(geo_, b, e);
  }
  // The block reads as zeros: zeros need no space.
  if (AllZero(data, n)) return Status::Ok();
  VHDX_ASSIGN_OR_RETURN(BlockAllocator * alloc, Allocator());
  std::unique_lock lock(BlockLock(b));
  VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
  BatEntry e = BatEntry::Decode(raw);
  if (e.state == kPayloadFullyPresent) {  // allocated meanwhile
    VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
    return physical_->WriteAt(e.file_offset + in_block, data, n);
  }
  if (!ReadsAsZero(e.state)) return BadWriteState(geo_, b, e);
  VHDX_ASSIGN_OR_RETURN(BlockAllocator::Extent x, alloc->Allocate());
  uint64_t seen = file_size_.load();
  while (seen < x.offset + geo_.block_size &&
         !file_size_.compare_exchange_weak(seen, x.offset + geo_.block_size)) {
  }
  // The rest of the block must read as zeros (never stale host data).
  Status s = Status::Ok();
  if (!x.zeroed) {
    s = WriteZeros(*physical_, x.offset, in_block);
    if (s.ok()) s = WriteZeros(*physical_, x.offset + in_block + n, geo_.block_size - in_block - n);
  }
  if (s.ok()) s = physical_->WriteAt(x.offset + in_block, data, n);
  // Only now, with the data written, may the entry point at it.
  if (s.ok()) s = bat_->Set(index, BatEntry{kPayloadFullyPresent, x.offset}.Encode());
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
  if (bat_->dirty_pages() <= max_dirty_pages_) return Status::Ok();
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
  std::vector<BatCache::DirtyPage> pages = bat_->SnapshotDirty();
  VHDX_ASSIGN_OR_RETURN(uint64_t size, physical_->Size());
  const bool first = !log_;
  if (pages.empty() || !first) {
    // Payload data durable (rule 2), and the previous commit's in-place
    // writes too, so its log space may be reused (rule 4).
    VHDX_RETURN_IF_ERROR(Fail(FlushFile()));
    if (log_) log_->MarkApplied();
  }
  if (!pages.empty()) {
    const Header& h = headers_.Current();
    if (first) log_ = std::make_unique<LogWriter>(*physical_, h.log_offset, h.log_length, Guid::Random());
    // The entry's FlushedFileOffset: the size just made durable (the first
    // commit's flush comes right after the entry is written, before the
    // header makes the entry count).
    const uint64_t flushed = size / MiB * MiB;
    const uint64_t last = RoundUpMiB(std::max(size, allocator_ ? allocator_->end() : 0));
    bool header_pending = first;
    for (size_t i = 0; i < pages.size();) {
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
      const size_t take = std::min(room, pages.size() - i);
      std::vector<LogUpdate> updates(take);
      for (size_t k = 0; k < take; ++k) {
        updates[k].file_offset = pages[i + k].file_offset;
        updates[k].data = pages[i + k].bytes;
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
      std::vector<BatCache::DirtyPage> chunk(std::make_move_iterator(pages.begin() + i),
                                             std::make_move_iterator(pages.begin() + i + take));
      VHDX_RETURN_IF_ERROR(Fail(bat_->WriteBack(*physical_, chunk)));
      i += take;
    }
  }
  // The changes that released these blocks are committed: give the space
  // back to the host, then to the allocator.
  for (uint64_t offset : released) {
    Status punched = physical_->PunchHole(offset, geo_.block_size);
    allocator_->AddFree(offset, punched.ok());
  }
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
  return s;
}

}  // namespace vhdx
