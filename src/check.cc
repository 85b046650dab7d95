// Read-only validation of every structure (digest §9). Unlike Image::Open,
// it keeps going past problems where it can, recording each as a finding.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "format/constants.h"
#include "image_loader.h"
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
  void Add(CheckFinding::Severity sev, std::string structure, uint64_t offset, std::string msg) {
    if (report_.findings.size() == kMaxFindings) {
      report_.findings.push_back({CheckFinding::Severity::kError, "check", 0,
                                  "too many findings; the rest are not listed"});
    }
    if (report_.findings.size() > kMaxFindings) return;
    report_.findings.push_back({sev, std::move(structure), offset, std::move(msg)});
  }
  void Error(std::string s, uint64_t off, std::string m) {
    Add(CheckFinding::Severity::kError, std::move(s), off, std::move(m));
  }
  void Warn(std::string s, uint64_t off, std::string m) {
    Add(CheckFinding::Severity::kWarning, std::move(s), off, std::move(m));
  }
  Status CheckBat(const File& view, uint64_t file_size, const Geometry& g, const RegionEntry& bat,
                  const std::vector<Reserved>& reserved);

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
          headers.problems[i].message() + (other_ok ? " (the other header is used)" : ""));
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
      Warn(fmt::format("region table {}", i + 1), kRegionTableOffsets[i],
           regions.problems[i].message());
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
  VHDX_RETURN_IF_ERROR(CheckBat(*view, file_size, *geo, bat, *reserved));
  return report_;
}

Status Checker::CheckBat(const File& view, uint64_t file_size, const Geometry& g, const RegionEntry& bat,
                         const std::vector<Reserved>& reserved) {
  // One bit per MiB of file: finds blocks that overlap each other.
  const uint64_t units = DivCeil(std::min(file_size, kMaxFileOffset), MiB);
  std::vector<uint64_t> used((units + 63) / 64, 0);
  auto claim = [&](uint64_t index, uint64_t off, uint64_t len, const EntryLabel& label) {
    for (uint64_t u = off / MiB; u < DivCeil(off + len, MiB) && u < units; ++u) {
      if (used[u / 64] & (uint64_t{1} << (u % 64))) {
        Error(fmt::format("BAT entry {}", index), bat.file_offset + 8 * index,
              fmt::format("{} at file offset {:#x} overlaps another block", label.ToString(), off));
        return;
      }
      used[u / 64] |= uint64_t{1} << (u % 64);
    }
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
      if (value & 0xFFFF8ull) Warn(where(), at, "reserved bits 3-19 are set (ignored)");
      if (g.IsBitmapIndex(index)) {
        uint64_t chunk = index / (g.chunk_ratio + 1);
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
          continue;
        }
        chunk_has_bitmap[chunk] = 1;
        claim(index, e.file_offset, MiB, bitmap);
        continue;
      }
      uint64_t b = g.BlockOfIndex(index);
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
          uint64_t used_len = std::min<uint64_t>(g.block_size, g.virtual_size - b * g.block_size);
          const EntryLabel what{.block = b};
          auto st2 = CheckAllocatedEntry(index, e, used_len, file_size, reserved, what);
          if (!st2.ok()) {
            Error(where(), at, st2.message());
            break;
          }
          claim(index, e.file_offset, used_len, what);
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
  return Status::Ok();
}

}  // namespace

size_t CheckReport::errors() const {
  return std::count_if(findings.begin(), findings.end(),
                       [](const CheckFinding& f) { return f.severity == CheckFinding::Severity::kError; });
}
size_t CheckReport::warnings() const { return findings.size() - errors(); }

Result<CheckReport> Check(const File& file) { return Checker(file).Run(); }

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
