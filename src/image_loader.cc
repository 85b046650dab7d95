#include "image_loader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "format/constants.h"
#include "util/coding.h"

namespace vhdx {

using namespace format;

Result<HeaderSet> LoadHeaders(const File& file) {
  HeaderSet set;
  for (int i = 0; i < 2; ++i) {
    set.raw[i].assign(kHeaderSize, 0);
    VHDX_ASSIGN_OR_RETURN(size_t got, file.ReadAt(kHeaderOffsets[i], set.raw[i].data(), kHeaderSize));
    if (got < kHeaderSize)
      set.problems[i] = Status(Errc::kCorrupt, fmt::format("header at offset {:#x}: beyond the end of "
                                                           "the file",
                                                           kHeaderOffsets[i]));
    else
      set.problems[i] = ParseHeader(set.raw[i].data(), kHeaderOffsets[i], &set.headers[i]);
  }
  auto chosen = ChooseCurrentHeader(set.problems[0].ok(), set.headers[0], set.raw[0].data(),
                                    set.problems[1].ok(), set.headers[1], set.raw[1].data());
  if (chosen.ok()) {
    set.current = *chosen;
  } else {
    set.choice = chosen.status();
    if (!set.problems[0].ok() && !set.problems[1].ok())
      set.choice = Status(Errc::kCorrupt, fmt::format("no valid header ({}; {})",
                                                      set.problems[0].message(),
                                                      set.problems[1].message()));
  }
  return set;
}

Result<LogState> LoadLog(const File& file, const Header& h, uint64_t file_size) {
  LogState state;
  if (h.log_guid.IsZero()) return state;
  state.dirty = true;
  if (h.log_length == 0)
    return Status(Errc::kCorrupt, "header: log GUID is set but the log length is zero");
  if (h.log_offset + h.log_length > file_size)
    return Status(Errc::kCorrupt, fmt::format("log at offset {:#x} (+{:#x}) extends past the end of "
                                              "the file ({:#x} bytes)",
                                              h.log_offset, h.log_length, file_size));
  LogReader reader(file, h.log_offset, h.log_length, h.log_guid);
  VHDX_ASSIGN_OR_RETURN(state.active, reader.FindActiveSequence());
  state.entries_validated = reader.entries_validated();
  if (!state.active)
    return Status(Errc::kCorrupt, fmt::format("log at offset {:#x}: the image needs log replay (log "
                                              "GUID {}) but the log holds no valid entry sequence",
                                              h.log_offset, h.log_guid.ToString()));
  const ActiveLog& a = *state.active;
  if (a.head_flushed_file_offset > file_size)
    return Status(Errc::kCorrupt, fmt::format("log at offset {:#x}: the file ({:#x} bytes) is "
                                              "shorter than the log's flushed file offset {:#x}; "
                                              "it was truncated",
                                              h.log_offset, file_size, a.head_flushed_file_offset));
  if (a.head_last_file_offset > kMaxFileOffset)
    return Status(Errc::kCorrupt, fmt::format("log at offset {:#x}: last file offset {:#x} is beyond "
                                              "any valid file size",
                                              h.log_offset, a.head_last_file_offset));
  return state;
}

Result<RegionSet> LoadRegions(const File& file) {
  RegionSet set;
  for (int i = 0; i < 2; ++i) {
    set.raw[i].assign(kRegionTableSize, 0);
    VHDX_ASSIGN_OR_RETURN(size_t got, file.ReadAt(kRegionTableOffsets[i], set.raw[i].data(), kRegionTableSize));
    if (got < kRegionTableSize) {
      set.problems[i] = Status(Errc::kCorrupt, fmt::format("region table at offset {:#x}: beyond "
                                                           "the end of the file",
                                                           kRegionTableOffsets[i]));
      continue;
    }
    RegionTable t;
    set.problems[i] = ParseRegionTable(set.raw[i].data(), kRegionTableOffsets[i], &t);
    if (set.problems[i].ok() && set.used < 0) {
      set.used = i;
      set.table = std::move(t);
    }
  }
  if (set.used < 0) {
    // An unknown required region is a refusal, not damage: report it as such.
    for (const auto& p : set.problems)
      if (p.code() == Errc::kUnsupported) return p;
    return Status(Errc::kCorrupt, fmt::format("no valid region table ({}; {})",
                                              set.problems[0].message(), set.problems[1].message()));
  }
  return set;
}

Result<std::vector<Reserved>> PlaceStructures(const Header& h, const RegionTable& regions,
                                              uint64_t file_size) {
  std::vector<Reserved> out;
  out.push_back({0, kHeaderSectionSize, "header section"});
  if (h.log_length) out.push_back({h.log_offset, h.log_offset + h.log_length, "log"});
  for (const auto& r : regions.entries) {
    std::string what = r.guid == kBatRegionGuid        ? "BAT region"
                       : r.guid == kMetadataRegionGuid ? "metadata region"
                                                       : "region " + r.guid.ToString();
    uint64_t end = r.file_offset + r.length;
    if (r.length == 0) continue;
    if (end > file_size)
      return Status(Errc::kCorrupt, fmt::format("{} at offset {:#x} (+{:#x}) extends past the end "
                                                "of the file ({:#x} bytes)",
                                                what, r.file_offset, r.length, file_size));
    if (h.log_length && r.file_offset < h.log_offset + h.log_length && end > h.log_offset)
      return Status(Errc::kCorrupt, fmt::format("{} at offset {:#x} overlaps the log at {:#x}",
                                                what, r.file_offset, h.log_offset));
    out.push_back({r.file_offset, end, what});
  }
  std::sort(out.begin(), out.end(), [](const Reserved& a, const Reserved& b) { return a.start < b.start; });
  return out;
}

Result<MetadataSet> LoadMetadata(const File& file, const RegionEntry& region) {
  MetadataSet m;
  m.region_offset = region.file_offset;
  m.region_length = region.length;
  std::vector<uint8_t> table(kMetadataTableSize);
  if (region.length < kMetadataTableSize)
    return Status(Errc::kCorrupt, fmt::format("metadata region at offset {:#x}: length {:#x} is "
                                              "smaller than its 64 KiB table",
                                              region.file_offset, region.length));
  VHDX_RETURN_IF_ERROR(ReadExact(file, region.file_offset, table.data(), table.size(), "metadata table"));
  VHDX_RETURN_IF_ERROR(ParseMetadataTable(table.data(), region.file_offset, region.length, &m.table));

  std::vector<uint8_t> item;
  auto load = [&](const Guid& id, const char* what, bool required) -> Result<const MetadataEntry*> {
    const MetadataEntry* e = m.table.FindSystem(id);
    if (!e) {
      if (required)
        return Status(Errc::kCorrupt, fmt::format("metadata table at offset {:#x}: required item "
                                                  "{} is missing",
                                                  region.file_offset, what));
      return nullptr;
    }
    item.assign(e->length, 0);
    VHDX_RETURN_IF_ERROR(ReadExact(file, region.file_offset + e->offset, item.data(), item.size(), what));
    return e;
  };
  auto item_off = [&](const MetadataEntry* e) { return region.file_offset + e->offset; };

  VHDX_ASSIGN_OR_RETURN(const MetadataEntry* fp, load(kFileParametersGuid, "file parameters", true));
  VHDX_RETURN_IF_ERROR(ParseFileParameters(item.data(), item.size(), item_off(fp), &m.params));
  VHDX_ASSIGN_OR_RETURN(const MetadataEntry* vs, load(kVirtualDiskSizeGuid, "virtual disk size", true));
  VHDX_RETURN_IF_ERROR(ParseVirtualDiskSize(item.data(), item.size(), item_off(vs), &m.virtual_size));
  VHDX_ASSIGN_OR_RETURN(const MetadataEntry* ls, load(kLogicalSectorSizeGuid, "logical sector size", true));
  VHDX_RETURN_IF_ERROR(
      ParseSectorSize(item.data(), item.size(), item_off(ls), "logical sector size", &m.logical_sector_size));
  // Physical sector size and disk ID are required of writers; a reader can
  // do without them (7-Zip does), so a missing one is tolerated.
  VHDX_ASSIGN_OR_RETURN(const MetadataEntry* ps, load(kPhysicalSectorSizeGuid, "physical sector size", false));
  if (ps) {
    VHDX_RETURN_IF_ERROR(ParseSectorSize(item.data(), item.size(), item_off(ps), "physical sector size",
                                         &m.physical_sector_size));
  }
  VHDX_ASSIGN_OR_RETURN(const MetadataEntry* id, load(kVirtualDiskIdGuid, "virtual disk id", false));
  if (id) VHDX_RETURN_IF_ERROR(ParseVirtualDiskId(item.data(), item.size(), item_off(id), &m.virtual_disk_id));
  if (m.virtual_size % m.logical_sector_size != 0)
    return Status(Errc::kCorrupt, fmt::format("virtual disk size metadata item at offset {:#x}: size "
                                              "{} is not a multiple of the logical sector size {}",
                                              item_off(vs), m.virtual_size, m.logical_sector_size));
  if (m.params.has_parent) {
    VHDX_ASSIGN_OR_RETURN(const MetadataEntry* pl, load(kParentLocatorGuid, "parent locator", true));
    format::ParentLocator loc;
    VHDX_RETURN_IF_ERROR(ParseParentLocator(item.data(), item.size(), item_off(pl), &loc));
    m.parent = std::move(loc);
  }
  return m;
}

std::string EntryLabel::ToString() const {
  return block ? fmt::format("{} {}", kind, *block) : std::string(kind);
}

Status CheckAllocatedEntry(uint64_t index, const BatEntry& e, uint64_t used, uint64_t file_size,
                           const std::vector<Reserved>& reserved, const EntryLabel& label) {
  auto fail = [&](const std::string& msg) {
    return Status(Errc::kCorrupt, fmt::format("BAT entry {} ({}): {}", index, label.ToString(), msg));
  };
  if (e.file_offset < kHeaderSectionSize)
    return fail(fmt::format("file offset {:#x} lies in the header section", e.file_offset));
  uint64_t end;
  if (AddOverflows(e.file_offset, used, &end) || end > file_size)
    return fail(fmt::format("data at file offset {:#x} (+{:#x}) extends past the end of the file "
                            "({:#x} bytes)",
                            e.file_offset, used, file_size));
  uint64_t span_end = RoundUp(end, MiB);
  for (const auto& r : reserved)
    if (e.file_offset < r.end && span_end > r.start)
      return fail(fmt::format("data at file offset {:#x} overlaps the {} at {:#x}", e.file_offset,
                              r.what, r.start));
  return Status::Ok();
}

}  // namespace vhdx
