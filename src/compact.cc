// Compact (include/vhdx/compact.h).
//
// Two phases, each crash-safe through the log:
//  release: every FULLY_PRESENT block is read; one that is all zeros gets
//           a state that reads as zeros without file space (NOT_PRESENT in
//           a base image; ZERO in a child, where NOT_PRESENT would show the
//           parent's data), and UNMAPPED/UNDEFINED/ZERO/NOT_PRESENT entries
//           that kept a file offset lose it. The BAT changes are committed,
//           then the space is punched (the write path's release).
//  move:    blocks at the end of the file are copied into free space lower
//           down (compact_plan.h), the copies flushed, and only then the
//           BAT entries switched through the log: a crash before the switch
//           leaves the old entries and their untouched data, after it the
//           new ones. Space a move frees is reused only in a later round,
//           once the switch is durable. Finally the image is closed (log
//           emptied) and the file truncated after the last block.
// Before both, the guest's file systems are read (fs/free_space.h) and the
// blocks wholly in their free space are released unread. Zeros released and
// blocks moved change nothing anyone reads, so the DataWriteGuid stays
// (digest §8.2: relocation and compaction keep it); free space released
// reads zeros instead of its old bytes, so then it changes.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "compact_plan.h"
#include "fs/free_space.h"
#include "format/bat.h"
#include "format/constants.h"
#include "image_impl.h"
#include "image_util.h"

namespace vhdx {

using namespace format;

namespace {

// Moves per round: each round costs a flush and a commit; 64 blocks of
// 1 MiB to 256 MiB keep a round's copy bounded (and its log entry small).
constexpr size_t kMovesPerRound = 64;

Status Named(const std::string& path, const Status& s) {
  if (s.ok()) return s;
  return Status(s.code(), fmt::format("{}: {}", path, s.message()));
}

}  // namespace

Result<CompactResult> ImageImpl::CompactAndClose(const CompactOptions& options) {
  CompactResult result;
  result.dry_run = options.dry_run;
  VHDX_ASSIGN_OR_RETURN(result.file_size_before, physical_->Size());
  result.file_size_after = result.file_size_before;
  if (info_.type == DiskType::kFixed)
    return Status(Errc::kUnsupported,
                  "compact: a fixed image stays fully allocated by definition; `vhdx convert -O vhdx` "
                  "makes a dynamic copy that holds only the data");
  if (!options.dry_run && !writable_) return Status(Errc::kReadOnly, "compact: the image is open read-only");
  if (geo_.has_parent && !parent_)
    return Status(Errc::kUnsupported, "compact: the differencing image was opened without its parent");
  if (writable_) VHDX_RETURN_IF_ERROR(Flush());
  VHDX_RETURN_IF_ERROR(RequireUndamaged(*physical_, "compact", options.dry_run ? "checked" : "compacted"));

  // The guest's free space. Runs under 64 KiB are left out: they bound the
  // report's size, and seldom decide whether a block holds only zeros.
  std::vector<fs::FreeRange> free;
  if (options.file_system) {
    VHDX_ASSIGN_OR_RETURN(fs::FreeSpaceReport report, fs::FindFreeSpace(*this, {.min_length = 64 * KiB}));
    free = std::move(report.free);
    result.file_systems_read = report.file_systems_read;
    for (fs::FsNotice& notice : report.notices) result.notices.push_back(std::move(notice.message));
  }
  // The parts of [start, end) that lie outside the free space, for blocks
  // asked in increasing order (one cursor walks the sorted ranges).
  struct FreeCursor {
    const std::vector<fs::FreeRange>& free;
    size_t at = 0;
    std::vector<std::pair<uint64_t, uint64_t>> Used(uint64_t start, uint64_t end) {
      while (at < free.size() && free[at].offset + free[at].length <= start) ++at;
      std::vector<std::pair<uint64_t, uint64_t>> used;
      uint64_t from = start;
      for (size_t i = at; i < free.size() && free[i].offset < end && from < end; ++i) {
        if (free[i].offset > from) used.emplace_back(from, free[i].offset);
        from = std::max(from, free[i].offset + free[i].length);
      }
      if (from < end) used.emplace_back(from, end);
      return used;
    }
  };
  FreeCursor free_cursor{free};

  // The first change starts the session (headers, log); a compaction with
  // nothing to do writes nothing. Released zeros and moved blocks change
  // nothing anyone reads, so the DataWriteGuid stays; once free space is
  // known, a released block's free parts read zeros instead of their old
  // bytes, so it changes (as for a discard).
  if (!options.dry_run && free.empty()) SetNextDataWriteGuid(headers_.Current().data_write_guid);
  BlockAllocator* alloc = nullptr;
  auto begin_change = [&]() -> Status {
    if (alloc) return Status::Ok();
    VHDX_RETURN_IF_ERROR(BeginChange());
    VHDX_ASSIGN_OR_RETURN(alloc, Allocator());
    return Status::Ok();
  };
  auto progress = [&](uint64_t done, uint64_t total) {
    if (options.progress) options.progress(done, total);
  };
  // A block's space given back: it reads as zeros (in a child, ZERO: the
  // parent's data stays hidden), its space released once committed.
  auto release = [&](uint64_t index, uint64_t b, const BatEntry& e,
                     uint8_t state = kPayloadNotPresent) -> Status {
    if (options.dry_run) return Status::Ok();
    VHDX_RETURN_IF_ERROR(begin_change());
    std::unique_lock lock(BlockLock(b));
    if (geo_.has_parent && state == kPayloadNotPresent && e.state == kPayloadFullyPresent) state = kPayloadZero;
    VHDX_RETURN_IF_ERROR(Fail(bat_->Set(index, BatEntry{state, 0}.Encode())));
    if (release_space_) alloc->Release(e.file_offset);
    ++stat_released_;
    return Status::Ok();
  };
  auto block_start = [&](uint64_t b) { return b * geo_.block_size; };

  // Release, and the extents that stay (for the moves).
  std::vector<CompactExtent> extents;
  std::vector<uint8_t> buf(std::min<uint64_t>(geo_.block_size, 4 * MiB));
  constexpr uint64_t kBatch = 65536;
  std::vector<uint64_t> entries;
  for (uint64_t i0 = 0; i0 < geo_.total_entries; i0 += kBatch) {
    const uint64_t n = std::min(kBatch, geo_.total_entries - i0);
    VHDX_RETURN_IF_ERROR(bat_->ReadRange(i0, n, &entries));
    for (uint64_t k = 0; k < n; ++k) {
      const uint64_t index = i0 + k;
      const BatEntry e = BatEntry::Decode(entries[k]);
      if (geo_.IsBitmapIndex(index)) {
        // A base image's sector bitmap entries are unused (digest §10: QEMU
        // once left junk there); a child's present bitmaps stay and move.
        if (geo_.has_parent && e.state == kSectorBitmapPresent) extents.push_back({e.file_offset, MiB, index});
        continue;
      }
      const uint64_t b = geo_.BlockOfIndex(index);
      const uint64_t used = UsedBytes(b);
      // Only the parts outside the file systems' free space matter.
      const auto in_use = (e.state == kPayloadFullyPresent || e.state == kPayloadPartiallyPresent)
                              ? free_cursor.Used(block_start(b), block_start(b) + used)
                              : std::vector<std::pair<uint64_t, uint64_t>>{};
      if ((e.state == kPayloadFullyPresent || e.state == kPayloadPartiallyPresent) && in_use.empty()) {
        ++result.blocks_fs_free;
        VHDX_RETURN_IF_ERROR(release(index, b, e));
        continue;
      }
      // A block holds BlockSize bytes of file space even where the disk
      // ends inside it: a later growth zeroes its tail in place.
      if (e.state == kPayloadPartiallyPresent) {
        // Every sector this child holds lies in free space: the block can
        // read its parent everywhere (NOT_PRESENT), as it already does where
        // the file system has data. (A later write into it clears the
        // block's stale bits before setting its own.)
        bool own_in_use = false;
        VHDX_ASSIGN_OR_RETURN(const uint64_t sb, BitmapOf(b));
        const uint64_t ss = geo_.logical_sector_size;
        for (const auto& [from, to] : in_use) {
          const uint64_t first = (from - block_start(b)) / ss, last = (to - block_start(b) + ss - 1) / ss;
          VHDX_RETURN_IF_ERROR(bitmaps_->ForEachRun(sb, FirstBit(b) + first, last - first,
                                                    [&](bool present, uint64_t) { own_in_use |= present; }));
          if (own_in_use) break;
        }
        if (!own_in_use && !free.empty()) {
          ++result.blocks_fs_free;
          VHDX_RETURN_IF_ERROR(release(index, b, e, kPayloadNotPresent));
          continue;
        }
        extents.push_back({e.file_offset, geo_.block_size, index});
        continue;
      }
      if (e.state != kPayloadFullyPresent) {
        // Reads as zeros (or the parent) whatever the offset says: the
        // offset only pins file space (digest §8.4), so it goes.
        if (e.file_offset == 0) continue;
        ++result.stale_offsets;
        if (options.dry_run) continue;
        VHDX_RETURN_IF_ERROR(begin_change());
        std::unique_lock lock(BlockLock(b));
        VHDX_RETURN_IF_ERROR(Fail(bat_->Set(index, BatEntry{e.state, 0}.Encode())));
        if (release_space_ && e.file_offset < open_file_size_ &&
            CheckPayload(b, BatEntry{kPayloadFullyPresent, e.file_offset}).ok())
          alloc->Release(e.file_offset);
        continue;
      }
      ++result.blocks_scanned;
      bool zero = true;
      for (const auto& [from, to] : in_use) {
        for (uint64_t at = from; at < to && zero; at += buf.size()) {
          const size_t len = static_cast<size_t>(std::min<uint64_t>(buf.size(), to - at));
          VHDX_RETURN_IF_ERROR(ReadExact(*view_, e.file_offset + (at - block_start(b)), buf.data(), len,
                                         "payload block"));
          zero = AllZero(buf.data(), len);
        }
      }
      if (!zero) {
        extents.push_back({e.file_offset, geo_.block_size, index});
        continue;
      }
      // All zeros where the file systems use it: partly free space counts
      // as free space (its old bytes read zeros from now on).
      ++(in_use.size() == 1 && in_use[0].second - in_use[0].first == used ? result.blocks_zero
                                                                          : result.blocks_fs_free);
      VHDX_RETURN_IF_ERROR(release(index, b, e));
    }
    if (alloc) VHDX_RETURN_IF_ERROR(MaybeCommit());
    progress(i0 + n, geo_.total_entries);
  }
  if (alloc) VHDX_RETURN_IF_ERROR(Commit());  // the released space punched

  uint64_t floor = 0;
  for (const Reserved& r : reserved_) floor = std::max(floor, r.end);
  const CompactPlan plan = PlanCompaction(std::move(extents), RoundUpMiB(floor), kMovesPerRound);
  result.blocks_moved = plan.moves();
  for (const auto& round : plan.rounds)
    for (const CompactMove& m : round) result.bytes_moved += m.length;
  const uint64_t end = RoundUpMiB(plan.end_after);
  if (options.dry_run) {
    result.file_size_after = std::min(result.file_size_before, end);
    return result;
  }

  uint64_t moved = 0;
  if (!plan.rounds.empty()) VHDX_RETURN_IF_ERROR(begin_change());
  for (const auto& round : plan.rounds) {
    for (const CompactMove& m : round) {
      for (uint64_t at = 0; at < m.length; at += buf.size()) {
        const size_t len = static_cast<size_t>(std::min<uint64_t>(buf.size(), m.length - at));
        // A short last block of a file that ends inside it reads as zeros
        // past the end, as the reader treats it.
        VHDX_ASSIGN_OR_RETURN(const size_t got, physical_->ReadAt(m.from + at, buf.data(), len));
        std::memset(buf.data() + got, 0, len - got);
        VHDX_RETURN_IF_ERROR(Fail(physical_->WriteAt(m.to + at, buf.data(), len)));
      }
    }
    // Data before pointer (digest §8.3 rule 2): the commit below flushes
    // the copies before its log entry can count.
    for (const CompactMove& m : round) {
      VHDX_ASSIGN_OR_RETURN(const uint64_t raw, bat_->Get(m.bat_index));
      VHDX_RETURN_IF_ERROR(Fail(bat_->Set(m.bat_index, BatEntry{BatEntry::Decode(raw).state, m.to}.Encode())));
    }
    VHDX_RETURN_IF_ERROR(Commit());
    moved += round.size();
    progress(moved, plan.moves());
  }
  // Everything durable and the log emptied: the tail no entry references
  // can go (a log entry's FlushedFileOffset could name the old size, so not
  // before).
  VHDX_RETURN_IF_ERROR(Close());
  VHDX_ASSIGN_OR_RETURN(const uint64_t size, physical_->Size());
  if (end < size && headers_.Current().log_guid.IsZero()) {
    VHDX_RETURN_IF_ERROR(physical_->Truncate(end));
    VHDX_RETURN_IF_ERROR(physical_->Flush());
  }
  VHDX_ASSIGN_OR_RETURN(result.file_size_after, physical_->Size());
  return result;
}

Result<CompactResult> CompactImage(const std::string& path, const CompactOptions& options) {
  OpenOptions open_options;
  open_options.read_only = options.dry_run;
  open_options.parent_dirs = options.parent_dirs;
  VHDX_ASSIGN_OR_RETURN(std::unique_ptr<Image> image, Image::Open(path, open_options));
  auto compacted = CompactImage(std::move(image), options);
  if (!compacted.ok()) return Named(path, compacted.status());
  return compacted;
}

Result<CompactResult> CompactImage(std::unique_ptr<Image> image, const CompactOptions& options) {
  return static_cast<ImageImpl*>(image.get())->CompactAndClose(options);
}

}  // namespace vhdx
