// Check and repair (include/vhdx/repair.h). The order of a repair session:
//   1. the header update every write session begins with (new
//      FileWriteGuid, digest §2.4): it writes the non-current slot first,
//      which is the damaged one when one header is damaged;
//   2. a dirty log replayed into the file, then LogGuid cleared;
//   3. a damaged region table copy rewritten from the valid one;
//   4. unusable BAT entries set to states that read zeros, through the log;
//   5. leaks reclaimed (truncate the tail, punch holes inside the file).
// Each step works from a fresh check of the file as the previous step left
// it, and a step whose inputs are unusable does nothing.
#include "vhdx/repair.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "format/bat.h"
#include "format/constants.h"
#include "header_writer.h"
#include "image_loader.h"
#include "log_reader.h"
#include "log_writer.h"
#include "util/coding.h"

namespace vhdx {

using namespace format;

namespace {

const char* PayloadStateName(uint8_t state) {
  switch (state) {
    case kPayloadNotPresent: return "NOT_PRESENT";
    case kPayloadUndefined: return "UNDEFINED";
    case kPayloadZero: return "ZERO";
    case kPayloadUnmapped: return "UNMAPPED";
    case kPayloadFullyPresent: return "FULLY_PRESENT";
    case kPayloadPartiallyPresent: return "PARTIALLY_PRESENT";
    default: return "reserved";
  }
}

class Repairer {
 public:
  Repairer(File& file, RepairMode mode, RepairReport* report) : file_(file), mode_(mode), report_(*report) {}
  Status Run();

 private:
  void Leave(std::string structure, uint64_t offset, std::string why) {
    report_.not_repaired.push_back(
        {CheckFinding::Severity::kWarning, std::move(structure), offset, std::move(why)});
  }
  void Did(std::string structure, uint64_t offset, std::string action, bool data_lost = false,
           bool leak = false) {
    report_.actions.push_back({std::move(structure), offset, std::move(action), data_lost, leak});
  }
  // The header update that begins every write session, once, before the
  // first byte of anything else changes.
  Status BeginSession();
  // Names the error that stopped `check` early: what depends on the
  // structures it could not read is left alone.
  void LeaveIncomplete(const CheckReport& check, const std::string& what);
  Status RepairRegionTables();
  Status RepairBat(const CheckReport& check);
  Status ReclaimLeaks(const CheckReport& check);

  File& file_;
  RepairMode mode_;
  RepairReport& report_;
  HeaderSet headers_;
  bool session_started_ = false;
};

Status Repairer::BeginSession() {
  if (session_started_) return Status::Ok();
  session_started_ = true;
  return UpdateHeaders(file_, &headers_, [](Header& next) { next.file_write_guid = Guid::Random(); });
}

void Repairer::LeaveIncomplete(const CheckReport& check, const std::string& what) {
  for (const auto& f : check.findings)
    if (f.severity == CheckFinding::Severity::kError) {
      Leave(f.structure, f.offset,
            what + " not repaired: the check could not get through the image (" + f.message + ")");
      return;
    }
  Leave("image", 0, what + " not repaired: the check could not get through the image");
}

Status Repairer::Run() {
  VHDX_ASSIGN_OR_RETURN(headers_, LoadHeaders(file_));
  const CheckReport& before = report_.before;
  if (headers_.current < 0) {
    Leave("headers", kHeader1Offset,
          "no usable header (" + headers_.choice.message() + "): nothing can be repaired safely");
    return Status::Ok();
  }
  // A slot that is not valid while the other one is current: nothing reads
  // it, so overwriting it loses nothing.
  int damaged_slot = -1;
  for (int i = 0; i < 2; ++i)
    if (!headers_.problems[i].ok() && headers_.current == 1 - i) damaged_slot = i;
  VHDX_ASSIGN_OR_RETURN(uint64_t size, file_.Size());
  auto log = LoadLog(file_, headers_.Current(), size);
  if (!log.ok()) {
    Leave("log", headers_.Current().log_offset,
          log.status().message() + ": the log cannot be replayed, and nothing else is repaired "
                                   "(the image's metadata is unknown until it is)");
    return Status::Ok();
  }
  const bool dirty = log->active.has_value();

  if (mode_ == RepairMode::kLeaks) {
    if (!before.complete) {
      LeaveIncomplete(before, "leaks");
      return Status::Ok();
    }
    if (before.leaks.empty()) return Status::Ok();
    if (dirty) {
      // The log may describe a longer file (FlushedFileOffset) and
      // BAT changes not in place yet: both are replay's business.
      Leave("log", headers_.Current().log_offset,
            "leaks are not reclaimed while the log needs replay (`check -r all` replays it first)");
      return Status::Ok();
    }
    if (!before.bad_bat_entries.empty()) {
      // A damaged entry may have lost its pointer to exactly this space:
      // it stays for whoever recovers the data, until `-r all` has
      // declared those blocks lost.
      const std::string entry = fmt::format("BAT entry {}", before.bad_bat_entries.front().index);
      uint64_t at = 0;
      for (const auto& f : before.findings)
        if (f.structure == entry) at = f.offset;
      Leave(entry, at,
            "leaks are not reclaimed while BAT entries are damaged: the leaked space may hold the data a damaged "
            "entry no longer points at (`-r all` repairs the entries first)");
      return Status::Ok();
    }
    if (damaged_slot >= 0) {
      Leave(fmt::format("header {}", damaged_slot + 1), kHeaderOffsets[damaged_slot],
            "leaks are not reclaimed: the header update every write session begins with would rewrite "
            "this damaged header, which `-r leaks` must not repair (use `-r all`)");
      return Status::Ok();
    }
    return ReclaimLeaks(before);
  }

  // kAll. Nothing to do: nothing is written, not even the headers.
  bool region_damage = std::any_of(before.findings.begin(), before.findings.end(), [](const CheckFinding& f) {
    return f.redundant_copy_damaged && f.structure.starts_with("region table");
  });
  bool bat_damage = std::any_of(before.bad_bat_entries.begin(), before.bad_bat_entries.end(),
                                [](const CheckBadBatEntry& e) { return e.repair; });
  if (damaged_slot < 0 && !dirty && !region_damage && !bat_damage && before.leaks.empty()) {
    if (!before.complete) LeaveIncomplete(before, "BAT entries and leaks");
    return Status::Ok();
  }

  const int valid_slot = headers_.current;
  VHDX_RETURN_IF_ERROR(BeginSession());
  if (damaged_slot >= 0)
    Did(fmt::format("header {}", damaged_slot + 1), kHeaderOffsets[damaged_slot],
        fmt::format("rewritten from header {} (by the header update that begins the repair)", valid_slot + 1));
  if (dirty) {
    // As ReplayLogInPlace, whose first header update BeginSession made.
    const Header h = headers_.Current();
    VHDX_RETURN_IF_ERROR(ApplyActiveLog(file_, h.log_offset, *log->active));
    VHDX_RETURN_IF_ERROR(UpdateHeaders(file_, &headers_, [](Header& next) { next.log_guid = Guid{}; }));
    report_.log_entries_replayed = log->active->entries.size();
    Did("log", h.log_offset,
        fmt::format("replayed {} log entr{} into the file", report_.log_entries_replayed,
                    report_.log_entries_replayed == 1 ? "y" : "ies"));
  }
  VHDX_RETURN_IF_ERROR(RepairRegionTables());

  // The BAT and the leaks as the file now is (replayed, tables repaired).
  VHDX_ASSIGN_OR_RETURN(CheckReport now, Check(file_));
  if (!now.complete) {
    LeaveIncomplete(now, "BAT entries and leaks");
    return Status::Ok();
  }
  bool changed_bat = false;
  if (std::any_of(now.bad_bat_entries.begin(), now.bad_bat_entries.end(),
                  [](const CheckBadBatEntry& e) { return e.repair; })) {
    const size_t actions = report_.actions.size();
    VHDX_RETURN_IF_ERROR(RepairBat(now));
    changed_bat = report_.actions.size() != actions;
  }
  if (changed_bat) {
    // The blocks the repair zeroed left their space unreferenced.
    VHDX_ASSIGN_OR_RETURN(now, Check(file_));
    if (!now.complete) return Status::Ok();
  }
  return ReclaimLeaks(now);
}

Status Repairer::RepairRegionTables() {
  auto regions = LoadRegions(file_);
  // No valid copy to repair from: the check that follows stops at the
  // region table, and that is what the report names.
  if (!regions.ok()) return Status::Ok();
  const int good = regions->used;
  for (int i = 0; i < 2; ++i) {
    if (i == good || regions->problems[i].ok()) continue;
    // A copy that parsed but names a region we do not know as required
    // may be right and from a newer writer: not ours to overwrite.
    if (regions->problems[i].code() != Errc::kCorrupt) {
      Leave(fmt::format("region table {}", i + 1), kRegionTableOffsets[i],
            regions->problems[i].message() + ": not damage this repair understands; left as it is");
      continue;
    }
    // Written in place, not through the log: this copy is already invalid
    // and no reader uses it, the valid copy is not touched, and a torn
    // write leaves the 64 KiB checksum failing, i.e. this copy still
    // invalid: at every point the file reads as before.
    VHDX_RETURN_IF_ERROR(file_.WriteAt(kRegionTableOffsets[i], regions->raw[good].data(), kRegionTableSize)
                             .WithContext(fmt::format("region table at offset {:#x}", kRegionTableOffsets[i])));
    VHDX_RETURN_IF_ERROR(file_.Flush());
    Did(fmt::format("region table {}", i + 1), kRegionTableOffsets[i],
        fmt::format("rewritten from region table {}", good + 1));
  }
  return Status::Ok();
}

Status Repairer::RepairBat(const CheckReport& check) {
  const Header& h = headers_.Current();
  VHDX_ASSIGN_OR_RETURN(RegionSet regions, LoadRegions(file_));
  const RegionEntry& bat = *regions.table.Find(kBatRegionGuid);
  VHDX_ASSIGN_OR_RETURN(MetadataSet meta, LoadMetadata(file_, *regions.table.Find(kMetadataRegionGuid)));
  VHDX_ASSIGN_OR_RETURN(Geometry g, Geometry::Make(meta.virtual_size, meta.params.block_size,
                                                   meta.logical_sector_size, meta.params.has_parent));
  if (h.log_length == 0) {
    Leave("log", h.log_offset,
          "the image has no log, so BAT changes cannot be made crash-safe: the bad BAT entries are left");
    return Status::Ok();
  }
  // A fixed image must stay fully allocated (digest §4.4): instead of
  // ZERO, a bad block gets new space, which reads as zeros.
  const bool fixed = meta.params.leave_block_allocated && !g.has_parent;
  const char* parent_note = g.has_parent ? "; the parent's data there is hidden too" : "";

  struct Change {
    uint64_t old_value, new_value;
    std::string why;
  };
  std::map<uint64_t, Change> changes;  // BAT index -> change
  VHDX_ASSIGN_OR_RETURN(uint64_t size, file_.Size());
  uint64_t new_space = RoundUp(size, MiB);
  const uint64_t first_new_space = new_space;
  auto zero_block = [&](uint64_t index, uint64_t old_value, const std::string& why) {
    if (changes.count(index)) return;
    uint64_t value = BatEntry{kPayloadZero, 0}.Encode();
    if (fixed) {
      value = BatEntry{kPayloadFullyPresent, new_space}.Encode();
      new_space += g.block_size;
    }
    changes[index] = {old_value, value, why};
  };
  for (const CheckBadBatEntry& e : check.bad_bat_entries) {
    if (!e.repair) continue;
    const std::string why = e.problem == CheckBadBatEntry::Problem::kOverlap
                                ? "its space overlaps another entry's"
                                : "its space is unusable (past the end of the file, or over another structure)";
    if (!e.sector_bitmap) {
      zero_block(e.index, e.value, why);
      continue;
    }
    // A chunk whose PARTIALLY_PRESENT blocks have no bitmap is corrupt
    // (digest §5.6): those blocks read zeros too.
    changes[e.index] = {e.value, BatEntry{kSectorBitmapNotPresent, 0}.Encode(), why};
    const uint64_t chunk = e.index / (g.chunk_ratio + 1);
    const uint64_t first = chunk * (g.chunk_ratio + 1);
    std::vector<uint8_t> raw(g.chunk_ratio * 8);
    VHDX_RETURN_IF_ERROR(ReadExact(file_, bat.file_offset + first * 8, raw.data(), raw.size(), "BAT"));
    for (uint64_t k = 0; k < g.chunk_ratio && first + k < g.total_entries; ++k) {
      const uint64_t value = DecodeFixed64(raw.data() + 8 * k);
      if (BatEntry::Decode(value).state == kPayloadPartiallyPresent)
        zero_block(first + k, value, fmt::format("the sector bitmap of its chunk {} (BAT entry {}) is unusable",
                                                 chunk, e.index));
    }
  }
  if (changes.empty()) return Status::Ok();

  if (new_space > first_new_space) {
    // New space past the end reads as zeros; durable before any BAT entry
    // points at it.
    VHDX_RETURN_IF_ERROR(file_.Allocate(first_new_space, new_space - first_new_space));
    VHDX_RETURN_IF_ERROR(file_.Flush());
    VHDX_ASSIGN_OR_RETURN(size, file_.Size());
  }

  // The 4 KiB BAT sectors holding the changed entries, as they will read.
  std::map<uint64_t, std::vector<uint8_t>> sectors;
  for (const auto& [index, change] : changes) {
    const uint64_t at = bat.file_offset + index * 8;
    const uint64_t sector = at / kLogSectorSize * kLogSectorSize;
    auto [it, inserted] = sectors.try_emplace(sector);
    if (inserted) {
      it->second.resize(kLogSectorSize);
      VHDX_RETURN_IF_ERROR(ReadExact(file_, sector, it->second.data(), kLogSectorSize, "BAT"));
    }
    EncodeFixed64(it->second.data() + (at - sector), change.new_value);
  }
  std::vector<LogUpdate> updates;
  for (auto& [offset, bytes] : sectors) updates.push_back({.file_offset = offset, .data = std::move(bytes)});

  // As the write path commits (src/image_write.cc CommitLocked): each
  // entry is written and flushed, the first one made active by the header
  // (with a new DataWriteGuid: what the disk reads changes), applied in
  // place and flushed; then the log is emptied. A crash at any point
  // leaves the old entries (log not active yet) or the new ones (replay).
  LogWriter log(file_, h.log_offset, h.log_length, Guid::Random());
  const uint64_t flushed = size / MiB * MiB;
  const uint64_t last = RoundUp(size, MiB);
  bool header_pending = true;
  for (size_t i = 0; i < updates.size();) {
    const size_t take = std::min(log.MaxDataUpdatesNow(), updates.size() - i);
    if (take == 0)
      return Status(Errc::kInvalidArgument,
                    fmt::format("log at offset {:#x}: too small for one BAT sector", h.log_offset));
    std::vector<LogUpdate> part(updates.begin() + i, updates.begin() + i + take);
    VHDX_RETURN_IF_ERROR(log.Append(part, flushed, last));
    VHDX_RETURN_IF_ERROR(file_.Flush());
    if (header_pending) {
      const Guid log_guid = log.log_guid();
      VHDX_RETURN_IF_ERROR(UpdateHeaders(file_, &headers_, [&](Header& next) {
        next.log_guid = log_guid;
        next.data_write_guid = Guid::Random();
      }));
      header_pending = false;
    }
    for (const auto& u : part)
      VHDX_RETURN_IF_ERROR(file_.WriteAt(u.file_offset, u.data.data(), u.data.size())
                               .WithContext(fmt::format("BAT sector at offset {:#x}", u.file_offset)));
    VHDX_RETURN_IF_ERROR(file_.Flush());
    log.MarkApplied();
    i += take;
  }
  VHDX_RETURN_IF_ERROR(UpdateHeaders(file_, &headers_, [](Header& next) { next.log_guid = Guid{}; }));

  for (const auto& [index, change] : changes) {
    const BatEntry old_e = BatEntry::Decode(change.old_value);
    const BatEntry new_e = BatEntry::Decode(change.new_value);
    std::string action;
    bool lost = false;
    if (g.IsBitmapIndex(index)) {
      action = fmt::format("sector bitmap of chunk {}: PRESENT at {:#x} -> NOT_PRESENT, because {}",
                           index / (g.chunk_ratio + 1), old_e.file_offset, change.why);
    } else {
      lost = old_e.state == kPayloadFullyPresent || old_e.state == kPayloadPartiallyPresent;
      const std::string target =
          new_e.state == kPayloadZero ? "ZERO" : fmt::format("new zeroed space at {:#x}", new_e.file_offset);
      action = fmt::format("payload block {}: {} at {:#x} -> {}, because {}; it reads zeros, its data is lost{}",
                           g.BlockOfIndex(index), PayloadStateName(old_e.state), old_e.file_offset, target,
                           change.why, parent_note);
    }
    Did(fmt::format("BAT entry {}", index), bat.file_offset + 8 * index, std::move(action), lost);
  }
  Did("headers", kHeader1Offset,
      "DataWriteGuid renewed, as the format requires when what the disk reads changes: differencing images "
      "made from this one no longer link to it");
  return Status::Ok();
}

Status Repairer::ReclaimLeaks(const CheckReport& check) {
  if (check.leaks.empty()) return Status::Ok();
  if (!check.complete) {
    LeaveIncomplete(check, "leaks");
    return Status::Ok();
  }
  // Safe without the log: nothing references this space, so no reader,
  // replay or crash ever looks at it.
  VHDX_RETURN_IF_ERROR(BeginSession());
  VHDX_ASSIGN_OR_RETURN(uint64_t size, file_.Size());
  uint64_t tail_units = 0;
  for (const CheckLeak& l : check.leaks) {
    if (l.offset >= check.image_end_offset) {
      tail_units += l.units;
      continue;
    }
    Status punched = file_.PunchHole(l.offset, l.length);
    if (!punched.ok()) {
      Leave("file", l.offset,
            fmt::format("leaked range {:#x} (+{:#x}) not reclaimed: {}", l.offset, l.length, punched.message()));
      continue;
    }
    report_.leaks_fixed += l.units;
    Did("file", l.offset,
        fmt::format("leaked range {:#x} (+{:#x}, {} MiB unit{}) punched out", l.offset, l.length, l.units,
                    l.units == 1 ? "" : "s"),
        false, true);
  }
  if (tail_units > 0) {
    // Everything past the last referenced unit is unreferenced; the zero
    // units between leaks go too.
    VHDX_RETURN_IF_ERROR(file_.Truncate(check.image_end_offset));
    report_.leaks_fixed += tail_units;
    Did("file", check.image_end_offset,
        fmt::format("truncated from {:#x} to {:#x} bytes ({} leaked MiB unit{} at the tail)", size,
                    check.image_end_offset, tail_units, tail_units == 1 ? "" : "s"),
        false, true);
  }
  return file_.Flush();
}

// Every corruption the repair leaves is in `not_repaired` with a reason:
// those the repair named itself, and the damage it has no repair for
// (a reserved BAT state, say, where the entry's data may still be
// recoverable by hand, and zeroing it would be a guess).
void ExplainWhatIsLeft(RepairMode mode, RepairReport* r) {
  for (const CheckFinding& f : r->after.findings) {
    if (!f.corruption()) continue;
    const bool named = std::any_of(r->not_repaired.begin(), r->not_repaired.end(),
                                   [&](const CheckFinding& n) { return n.structure == f.structure; });
    if (named) continue;
    r->not_repaired.push_back(
        {CheckFinding::Severity::kWarning, f.structure, f.offset,
         mode == RepairMode::kLeaks
             ? f.message + ": `-r leaks` reclaims leaks only (`-r all` repairs what it can)"
             : f.message + ": no repair for this damage is known to be safe; it is left as found"});
  }
}

void Summarize(RepairReport* r) {
  r->corruptions = r->after.corruptions();
  r->leaks = r->after.leaked_units();
  const uint64_t before = r->before.corruptions();
  r->corruptions_fixed = before > r->corruptions ? before - r->corruptions : 0;
  r->image_end_offset = r->after.image_end_offset;
}

}  // namespace

Result<RepairReport> CheckAndRepair(File& file, RepairMode mode) {
  RepairReport report;
  VHDX_ASSIGN_OR_RETURN(report.before, Check(file));
  if (mode == RepairMode::kNone) {
    report.after = report.before;
    Summarize(&report);
    return report;
  }
  if (!file.writable())
    return Status(Errc::kReadOnly, fmt::format("{}: a repair needs the image open read-write", file.name()));
  VHDX_RETURN_IF_ERROR(Repairer(file, mode, &report).Run());
  if (report.actions.empty()) {
    report.after = report.before;
  } else {
    VHDX_ASSIGN_OR_RETURN(report.after, Check(file));
  }
  ExplainWhatIsLeft(mode, &report);
  Summarize(&report);
  return report;
}

Result<RepairReport> CheckAndRepair(const std::string& path, RepairMode mode, bool force_share) {
  if (mode == RepairMode::kNone) {
    VHDX_ASSIGN_OR_RETURN(auto file,
                          OpenPosixFile(path, false, false, force_share ? FileLockMode::kNone : FileLockMode::kRead));
    return CheckAndRepair(*file, mode);
  }
  if (force_share)
    return Status(Errc::kInvalidArgument,
                  "a repair cannot share the image (force_share): it writes, and another process may be using it");
  // The exclusive lock: no other process (ours or QEMU) has the image open.
  VHDX_ASSIGN_OR_RETURN(auto file, OpenPosixFile(path, true, false, FileLockMode::kWrite));
  return CheckAndRepair(*file, mode);
}

}  // namespace vhdx
