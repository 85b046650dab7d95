// Commits, flushes and closes of the write path (image_write.cc): the
// BAT changes batched in memory go through the log, then in place.
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
#include <algorithm>
#include <map>
#include <vector>

#include "format/constants.h"
#include "header_writer.h"
#include "image_impl.h"
#include "image_util.h"

namespace vhdx {

using namespace format;

ImageImpl::~ImageImpl() {
  if (writable_ && !closed_) (void)Close();
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
  VHDX_ASSIGN_OR_RETURN(std::vector<BatCache::DirtyPage> bat_pages, bat_->SnapshotDirty());
  std::vector<SectorBitmapCache::DirtyPage> bitmap_pages;
  if (bitmaps_) {
    VHDX_ASSIGN_OR_RETURN(bitmap_pages, bitmaps_->SnapshotDirty());
  }
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
