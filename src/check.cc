// Read-only validation of every structure (digest §9). Unlike Image::Open,
// it keeps going past problems where it can, recording each as a finding.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

#include "format/constants.h"
#include "image_loader.h"
#include "image_util.h"
#include "util/coding.h"
#include "vhdx/image.h"

namespace vhdx {

using namespace format;

namespace {

class Checker {
 public:
  explicit Checker(const File& file) : file_(file) {}
  Result<CheckReport> Run();

 private:
  static constexpr size_t kMaxFindings = 1000;
  void Add(CheckFinding::Severity sev, std::string structure, uint64_t offset, std::string msg,
           bool redundant_copy_damaged = false) {
    if (report_.findings.size() == kMaxFindings) {
      report_.findings.push_back({CheckFinding::Severity::kError, "check", 0,
                                  "too many findings; the rest are not listed"});
    }
    if (report_.findings.size() > kMaxFindings) return;
    report_.findings.push_back({sev, std::move(structure), offset, std::move(msg), redundant_copy_damaged});
  }
  void Error(std::string s, uint64_t off, std::string m) {
    Add(CheckFinding::Severity::kError, std::move(s), off, std::move(m));
  }
  void Warn(std::string s, uint64_t off, std::string m) {
    Add(CheckFinding::Severity::kWarning, std::move(s), off, std::move(m));
  }
  Status CheckBat(const File& view, uint64_t file_size, uint64_t physical_size, const Geometry& g,
                  const RegionEntry& bat, const std::vector<Reserved>& reserved);
  // Names every entry that overlaps another (`late` found the overlap in
  // the first pass; `conflicts` are the shared units) and decides which of
  // them the repair zeroes.
  Status ReportOverlaps(const File& view, uint64_t file_size, const Geometry& g, const RegionEntry& bat,
                        const std::vector<Reserved>& reserved, std::vector<uint64_t> conflicts,
                        const std::vector<uint64_t>& late, bool* listed_all);
  // Fills report_.leaks: units not in `referenced` whose bytes are not all zero.
  Status FindLeaks(const File& view, uint64_t file_size, const std::vector<uint64_t>& referenced);

  const File& file_;
  CheckReport report_;
};

Result<CheckReport> Checker::Run() {
  VHDX_ASSIGN_OR_RETURN(uint64_t physical_size, file_.Size());
  uint8_t ident[520] = {};
  VHDX_ASSIGN_OR_RETURN(size_t got, file_.ReadAt(0, ident, sizeof ident));
  FileIdentifier id;
  if (got < 8 || !ParseFileIdentifier(ident, &id).ok()) {
    Error("file type identifier", 0, "signature is not 'vhdxfile' (not a VHDX image)");
    return report_;
  }
  if (physical_size < kHeaderSectionSize) {
    Error("file", 0, fmt::format("file is {} bytes, shorter than the 1 MiB header section", physical_size));
    return report_;
  }

  VHDX_ASSIGN_OR_RETURN(HeaderSet headers, LoadHeaders(file_));
  for (int i = 0; i < 2; ++i)
    if (!headers.problems[i].ok()) {
      bool other_ok = headers.problems[1 - i].ok();
      Add(other_ok ? CheckFinding::Severity::kWarning : CheckFinding::Severity::kError,
          fmt::format("header {}", i + 1), kHeaderOffsets[i],
          headers.problems[i].message() + (other_ok ? " (the other header is used)" : ""),
          /*redundant_copy_damaged=*/other_ok);
    }
  if (headers.current < 0) {
    if (headers.problems[0].ok() || headers.problems[1].ok())
      Error("headers", kHeader1Offset, headers.choice.message());
    return report_;
  }
  const Header& h = headers.Current();

  auto log = LoadLog(file_, h, physical_size);
  if (!log.ok()) {
    Error("log", h.log_offset, log.status().message());
    return report_;
  }
  std::unique_ptr<ReplayOverlayFile> overlay;
  const File* view = &file_;
  uint64_t file_size = physical_size;
  if (log->active) {
    report_.log_entries_checked = log->entries_validated;
    Warn("log", h.log_offset,
         fmt::format("the log needs replay: {} log entr{} with {} updates (checked as replayed in "
                     "memory; the file is not modified)",
                     log->active->entries.size(), log->active->entries.size() == 1 ? "y" : "ies",
                     log->active->ops.size()));
    overlay = std::make_unique<ReplayOverlayFile>(file_, h.log_offset, *log->active, physical_size);
    view = overlay.get();
    VHDX_ASSIGN_OR_RETURN(file_size, overlay->Size());
  }

  auto loaded_regions = LoadRegions(*view);
  if (!loaded_regions.ok()) {
    Error("region table", kRegionTable1Offset, loaded_regions.status().message());
    return report_;
  }
  const RegionSet& regions = *loaded_regions;
  for (int i = 0; i < 2; ++i)
    if (!regions.problems[i].ok())
      Add(CheckFinding::Severity::kWarning, fmt::format("region table {}", i + 1), kRegionTableOffsets[i],
          regions.problems[i].message() + fmt::format(" (region table {} is used)", regions.used + 1),
          /*redundant_copy_damaged=*/true);
  if (regions.problems[0].ok() && regions.problems[1].ok() && regions.raw[0] != regions.raw[1])
    Warn("region table 2", kRegionTable2Offset, "differs from region table 1 (copy 1 is used)");

  auto reserved = PlaceStructures(h, regions.table, file_size);
  if (!reserved.ok()) {
    Error("regions", kRegionTable1Offset, reserved.status().message());
    return report_;
  }
  const RegionEntry& bat = *regions.table.Find(kBatRegionGuid);
  const RegionEntry& meta_region = *regions.table.Find(kMetadataRegionGuid);
  for (const auto& r : regions.table.entries)
    if (!(r.guid == kBatRegionGuid) && !(r.guid == kMetadataRegionGuid))
      Warn("region table", kRegionTable1Offset,
           fmt::format("unknown optional region {} at {:#x} (kept, not interpreted)", r.guid.ToString(),
                       r.file_offset));

  auto meta = LoadMetadata(*view, meta_region);
  if (!meta.ok()) {
    Error("metadata", meta_region.file_offset, meta.status().message());
    return report_;
  }
  for (const auto& e : meta->table.entries)
    if (!e.is_user() && !SystemItemName(e.item_id))
      Warn("metadata table", meta_region.file_offset,
           fmt::format("unknown optional system item {} (kept, not interpreted)", e.item_id.ToString()));
  if (!meta->table.FindSystem(kPhysicalSectorSizeGuid))
    Warn("metadata table", meta_region.file_offset, "physical sector size item is missing");
  if (!meta->table.FindSystem(kVirtualDiskIdGuid))
    Warn("metadata table", meta_region.file_offset, "virtual disk id item is missing");
  if (!meta->params.has_parent && meta->table.FindSystem(kParentLocatorGuid))
    Warn("metadata table", meta_region.file_offset, "parent locator present in a non-differencing image");

  auto geo = Geometry::Make(meta->virtual_size, meta->params.block_size, meta->logical_sector_size,
                            meta->params.has_parent);
  if (!geo.ok()) {
    Error("metadata", meta_region.file_offset, geo.status().message());
    return report_;
  }
  if (bat.length < geo->total_entries * 8) {
    Error("BAT region", bat.file_offset,
          fmt::format("length {:#x} is too small for {} entries", bat.length, geo->total_entries));
    return report_;
  }
  VHDX_RETURN_IF_ERROR(CheckBat(*view, file_size, physical_size, *geo, bat, *reserved));
  return report_;
}

namespace {

// One bit per MiB unit of the file.
class UnitSet {
 public:
  explicit UnitSet(uint64_t units) : units_(units), bits_((units + 63) / 64, 0) {}
  uint64_t size() const { return units_; }
  bool Test(uint64_t u) const { return bits_[u / 64] & (uint64_t{1} << (u % 64)); }
  void Set(uint64_t u) { bits_[u / 64] |= uint64_t{1} << (u % 64); }
  const std::vector<uint64_t>& words() const { return bits_; }

 private:
  uint64_t units_;
  std::vector<uint64_t> bits_;
};

// Where an entry's file space lies, if it is an allocated entry whose
// placement is valid: what the first pass claims and the second re-finds.
struct Span {
  uint64_t offset = 0, length = 0;
  EntryLabel label;
};

bool HasReservedBits(uint64_t value) { return (value & 0xFFFF8ull) != 0; }

}  // namespace

// The first pass validates each entry, claims the space of valid allocated
// entries (finding overlaps) and marks every unit any entry names as
// referenced (finding leaks). An entry with a bad state or placement still
// marks its space referenced: the leak repair must never free space that
// some entry, however damaged, points at.
Status Checker::CheckBat(const File& view, uint64_t file_size, uint64_t physical_size, const Geometry& g,
                         const RegionEntry& bat, const std::vector<Reserved>& reserved) {
  const uint64_t scan_size = std::min(file_size, kMaxFileOffset);
  const uint64_t units = DivCeil(scan_size, MiB);
  UnitSet used(units);        // claimed by a valid allocated entry
  UnitSet referenced(units);  // named by a structure or any BAT entry
  uint64_t end_offset = 0;
  auto reference = [&](uint64_t off, uint64_t len) {
    if (off >= scan_size || len == 0) return;
    const uint64_t end = std::min(off + len, scan_size);  // no overflow: off < 128 TiB
    for (uint64_t u = off / MiB; u < DivCeil(end, MiB); ++u) referenced.Set(u);
    end_offset = std::max(end_offset, std::min(RoundUp(end, MiB), file_size));
  };
  for (const auto& r : reserved) reference(r.start, r.end - r.start);

  std::vector<uint64_t> conflicts;  // units claimed twice (with repeats)
  std::vector<uint64_t> late;       // entries whose claim found a unit already taken
  auto claim = [&](uint64_t index, uint64_t off, uint64_t len) {
    bool overlapped = false;
    for (uint64_t u = off / MiB; u < DivCeil(off + len, MiB) && u < units; ++u) {
      if (used.Test(u)) {
        overlapped = true;
        conflicts.push_back(u);
      }
      used.Set(u);
    }
    if (overlapped) late.push_back(index);
  };
  auto bad = [&](uint64_t index, uint64_t value, bool bitmap) {
    report_.bad_bat_entries.push_back({.index = index,
                                       .value = value,
                                       .sector_bitmap = bitmap,
                                       .problem = CheckBadBatEntry::Problem::kPlacement});
  };
  constexpr uint64_t kBatch = 65536;
  std::vector<uint8_t> raw;
  // Per chunk (at most 16 Ki of them): has a PARTIALLY_PRESENT block / a bitmap.
  std::vector<uint8_t> chunk_has_partial(g.bitmap_blocks + 1, 0);
  std::vector<uint8_t> chunk_has_bitmap(g.bitmap_blocks + 1, 0);
  for (uint64_t i0 = 0; i0 < g.total_entries; i0 += kBatch) {
    uint64_t n = std::min(kBatch, g.total_entries - i0);
    raw.resize(n * 8);
    auto st = ReadExact(view, bat.file_offset + i0 * 8, raw.data(), raw.size(), "BAT");
    if (!st.ok()) {
      Error("BAT region", bat.file_offset, st.message());
      return Status::Ok();
    }
    for (uint64_t k = 0; k < n; ++k) {
      uint64_t index = i0 + k;
      uint64_t value = DecodeFixed64(raw.data() + 8 * k);
      BatEntry e = BatEntry::Decode(value);
      // Formatted only for a finding: most of a 67-million-entry BAT is fine.
      auto where = [index] { return fmt::format("BAT entry {}", index); };
      uint64_t at = bat.file_offset + 8 * index;
      ++report_.bat_entries_checked;
      if (HasReservedBits(value)) Warn(where(), at, "reserved bits 3-19 are set (ignored)");
      if (g.IsBitmapIndex(index)) {
        uint64_t chunk = index / (g.chunk_ratio + 1);
        if (e.file_offset != 0) reference(e.file_offset, MiB);
        if (e.state == kSectorBitmapNotPresent) continue;
        if (e.state != kSectorBitmapPresent) {
          Error(where(), at, fmt::format("sector bitmap entry has invalid state {}", e.state));
          continue;
        }
        if (!g.has_parent) {
          Warn(where(), at, "sector bitmap entry present in a non-differencing image (ignored; old QEMU bug)");
          continue;
        }
        const EntryLabel bitmap{.kind = "sector bitmap", .block = std::nullopt};
        auto st2 = CheckAllocatedEntry(index, e, MiB, file_size, reserved, bitmap);
        if (!st2.ok()) {
          Error(where(), at, st2.message());
          bad(index, value, true);
          continue;
        }
        chunk_has_bitmap[chunk] = 1;
        claim(index, e.file_offset, MiB);
        continue;
      }
      uint64_t b = g.BlockOfIndex(index);
      uint64_t used_len = std::min<uint64_t>(g.block_size, g.virtual_size - b * g.block_size);
      // Whatever the state: some writers keep the offset of an UNMAPPED or
      // UNDEFINED block to reuse its space, so its space is not a leak.
      if (e.file_offset != 0) reference(e.file_offset, used_len);
      switch (e.state) {
        case kPayloadNotPresent:
        case kPayloadUndefined:
        case kPayloadZero:
        case kPayloadUnmapped:
          if (e.state == kPayloadZero && e.file_offset != 0)
            Warn(where(), at, "ZERO block with a non-zero file offset (Hyper-V is said to reject this)");
          break;
        case kPayloadPartiallyPresent:
          if (!g.has_parent) {
            Error(where(), at, fmt::format("payload block {}: PARTIALLY_PRESENT in a non-differencing image", b));
            break;
          }
          chunk_has_partial[b / g.chunk_ratio] = 1;
          [[fallthrough]];
        case kPayloadFullyPresent: {
          const EntryLabel what{.block = b};
          auto st2 = CheckAllocatedEntry(index, e, used_len, file_size, reserved, what);
          if (!st2.ok()) {
            Error(where(), at, st2.message());
            bad(index, value, false);
            break;
          }
          claim(index, e.file_offset, used_len);
          break;
        }
        default:
          Error(where(), at, fmt::format("payload block {}: reserved state {}", b, e.state));
      }
    }
  }
  for (uint64_t c = 0; c < g.bitmap_blocks; ++c)
    if (chunk_has_partial[c] && !chunk_has_bitmap[c])
      Error(fmt::format("BAT entry {}", g.BitmapIndex(c)), bat.file_offset + 8 * g.BitmapIndex(c),
            fmt::format("chunk {} has PARTIALLY_PRESENT blocks but no sector bitmap", c));
  bool listed_all = true;
  if (!late.empty())
    VHDX_RETURN_IF_ERROR(ReportOverlaps(view, file_size, g, bat, reserved, std::move(conflicts), late, &listed_all));
  report_.image_end_offset = end_offset;
  // Only what the host file holds: past its end, a dirty log's larger
  // LastFileOffset (up to 128 TiB in a hostile image) reads as zeros, and
  // scanning it would take hours.
  VHDX_RETURN_IF_ERROR(FindLeaks(view, std::min(scan_size, physical_size), referenced.words()));
  report_.complete = listed_all;
  return Status::Ok();
}

// The first pass only knows that a later entry hit a unit an earlier one
// took, not which entry that was: a second pass over the BAT finds every
// valid allocated entry on a shared unit, so that both sides of each
// overlap are named and listed for repair.
Status Checker::ReportOverlaps(const File& view, uint64_t file_size, const Geometry& g, const RegionEntry& bat,
                               const std::vector<Reserved>& reserved, std::vector<uint64_t> conflicts,
                               const std::vector<uint64_t>& late, bool* listed_all) {
  std::sort(conflicts.begin(), conflicts.end());
  conflicts.erase(std::unique(conflicts.begin(), conflicts.end()), conflicts.end());
  // A hostile BAT can point millions of entries at one unit: bound what is
  // listed; the repair then does nothing (the lists are incomplete).
  constexpr size_t kMaxOwners = size_t{1} << 20;
  size_t owners_listed = 0;
  std::map<uint64_t, std::vector<uint64_t>> owners;  // conflicted unit -> entries on it
  std::map<uint64_t, std::pair<uint64_t, Span>> entries;  // index -> (raw value, span)
  constexpr uint64_t kBatch = 65536;
  std::vector<uint8_t> raw;
  for (uint64_t i0 = 0; i0 < g.total_entries; i0 += kBatch) {
    uint64_t n = std::min(kBatch, g.total_entries - i0);
    raw.resize(n * 8);
    VHDX_RETURN_IF_ERROR(ReadExact(view, bat.file_offset + i0 * 8, raw.data(), raw.size(), "BAT"));
    for (uint64_t k = 0; k < n; ++k) {
      const uint64_t index = i0 + k;
      const uint64_t value = DecodeFixed64(raw.data() + 8 * k);
      const BatEntry e = BatEntry::Decode(value);
      Span span;
      // The same entries the first pass claimed.
      if (g.IsBitmapIndex(index)) {
        if (e.state != kSectorBitmapPresent || !g.has_parent) continue;
        span = {e.file_offset, MiB, EntryLabel{.kind = "sector bitmap", .block = std::nullopt}};
      } else {
        const uint64_t b = g.BlockOfIndex(index);
        if (e.state != kPayloadFullyPresent && !(e.state == kPayloadPartiallyPresent && g.has_parent)) continue;
        span = {e.file_offset, std::min<uint64_t>(g.block_size, g.virtual_size - b * g.block_size),
                EntryLabel{.block = b}};
      }
      if (!CheckAllocatedEntry(index, e, span.length, file_size, reserved, span.label).ok()) continue;
      const uint64_t first = span.offset / MiB, last = DivCeil(span.offset + span.length, MiB);
      bool on_conflict = false;
      for (auto it = std::lower_bound(conflicts.begin(), conflicts.end(), first);
           it != conflicts.end() && *it < last; ++it) {
        if (++owners_listed > kMaxOwners) {
          *listed_all = false;
          Error("BAT region", bat.file_offset,
                fmt::format("more than {} BAT entries overlap each other; they are not all listed, so "
                            "none of them is repaired",
                            kMaxOwners));
          return Status::Ok();
        }
        owners[*it].push_back(index);
        on_conflict = true;
      }
      if (on_conflict) entries.emplace(index, std::make_pair(value, span));
    }
  }
  // Partners of each entry: every other entry on one of its shared units.
  std::map<uint64_t, std::vector<uint64_t>> partners;
  for (const auto& [unit, list] : owners)
    for (uint64_t a : list)
      for (uint64_t b : list)
        if (a != b) partners[a].push_back(b);
  for (auto& [index, list] : partners) {
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());
  }
  // Which side is bad is not knowable from the BAT alone, unless an entry
  // has reserved bits set: then it is garbage (a torn or overwritten
  // sector), and a clean entry it overlaps keeps its space.
  auto is_clean = [&](uint64_t index) { return !HasReservedBits(entries.at(index).first); };
  auto must_zero = [&](uint64_t index) {
    if (!is_clean(index)) return true;
    const auto& list = partners[index];
    return std::any_of(list.begin(), list.end(), is_clean);
  };
  for (const auto& [index, entry] : entries) {
    const bool bitmap = g.IsBitmapIndex(index);
    report_.bad_bat_entries.push_back({.index = index,
                                       .value = entry.first,
                                       .sector_bitmap = bitmap,
                                       .problem = CheckBadBatEntry::Problem::kOverlap,
                                       .repair = must_zero(index)});
  }
  for (uint64_t index : late) {
    if (!entries.count(index)) continue;
    const Span& span = entries.at(index).second;
    std::string names;
    for (uint64_t other : partners[index])
      names += fmt::format("{}{} (BAT entry {})", names.empty() ? "" : ", ",
                           entries.at(other).second.label.ToString(), other);
    std::string verdict;
    if (!is_clean(index))
      verdict = "this entry has reserved bits set, so it is taken as the bad one: `check -r all` makes it read "
                "zeros (its data is lost)";
    else if (must_zero(index))
      verdict = "nothing shows which entry is right, so `check -r all` makes all of them read zeros (their data "
                "is lost)";
    else
      verdict = "the other entries have reserved bits set, so they are taken as the bad ones: `check -r all` "
                "makes them read zeros and this one keeps its space";
    Error(fmt::format("BAT entry {}", index), bat.file_offset + 8 * index,
          fmt::format("{} at file offset {:#x} overlaps another block: {} claim{} the same space; {}",
                      span.label.ToString(), span.offset, names, partners[index].size() == 1 ? "s" : "",
                      verdict));
  }
  return Status::Ok();
}

// The File interface has no hole query (SEEK_DATA would serve only POSIX
// files, not the memory and overlay files the checker also runs on), so
// each unreferenced unit is read: an all-zero unit, hole or not, holds
// nothing to reclaim from a reader's point of view, and a punched unit
// reads as zeros afterwards, which is how the repair is verified. The cost
// is one read of the unreferenced space, which is small in a healthy image
// (punched holes read fast).
Status Checker::FindLeaks(const File& view, uint64_t scan_size, const std::vector<uint64_t>& referenced) {
  std::vector<uint8_t> buf(MiB);
  const uint64_t units = DivCeil(scan_size, MiB);
  for (uint64_t u = 0; u < units; ++u) {
    if (referenced[u / 64] == ~uint64_t{0}) {  // skip whole referenced words fast
      u = u / 64 * 64 + 63;
      continue;
    }
    if (referenced[u / 64] & (uint64_t{1} << (u % 64))) continue;
    const uint64_t off = u * MiB;
    const size_t n = static_cast<size_t>(std::min(MiB, scan_size - off));
    // Holes read as zeros: skip them unread (a fixed image grown by
    // terabytes but not yet committed is one such unreferenced hole).
    VHDX_ASSIGN_OR_RETURN(const uint64_t data, view.NextData(off));
    if (data >= off + n) {
      if (data >= scan_size) break;
      u = data / MiB - 1;  // the loop's ++u lands on the unit holding data
      continue;
    }
    VHDX_ASSIGN_OR_RETURN(size_t got, view.ReadAt(off, buf.data(), n));
    if (AllZero(buf.data(), got)) continue;
    if (!report_.leaks.empty() && report_.leaks.back().offset + report_.leaks.back().length == off) {
      report_.leaks.back().length += n;
      ++report_.leaks.back().units;
    } else {
      report_.leaks.push_back({off, n, 1});
    }
  }
  return Status::Ok();
}
}  // namespace

size_t CheckReport::errors() const {
  return std::count_if(findings.begin(), findings.end(),
                       [](const CheckFinding& f) { return f.severity == CheckFinding::Severity::kError; });
}
size_t CheckReport::warnings() const { return findings.size() - errors(); }

Result<CheckReport> Check(const File& file) { return Checker(file).Run(); }

size_t CheckReport::corruptions() const {
  return std::count_if(findings.begin(), findings.end(), [](const CheckFinding& f) { return f.corruption(); });
}

uint64_t CheckReport::leaked_units() const {
  uint64_t n = 0;
  for (const auto& l : leaks) n += l.units;
  return n;
}

Result<CheckReport> Check(const std::string& path, bool force_share) {
  auto f = OpenPosixFile(path, false, false, force_share ? FileLockMode::kNone : FileLockMode::kRead);
  if (!f.ok()) return f.status();
  return Check(**f);
}

Status RequireUndamaged(const File& file, const char* op, const char* done) {
  VHDX_ASSIGN_OR_RETURN(const CheckReport report, Check(file));
  if (report.errors() == 0) return Status::Ok();
  const CheckFinding* first = nullptr;
  for (const CheckFinding& finding : report.findings)
    if (first == nullptr && finding.severity == CheckFinding::Severity::kError) first = &finding;
  return Status(Errc::kCorrupt, fmt::format("{}: the image has {} error(s), first {} at offset {:#x}: {}; nothing "
                                            "was {} (vhdx check lists them)",
                                            op, report.errors(), first->structure, first->offset, first->message,
                                            done));
}

}  // namespace vhdx
