// The CLI's JSON reports (include/vhdx/json.h), moved here from
// tools/vhdx/info.cc and check.cc so that the CLI and the C API share them.
#include "vhdx/json.h"

#include <nlohmann/json.hpp>

#include "vhdx/file.h"

namespace vhdx {
namespace {

using json = nlohmann::ordered_json;

// Strings from an image (creator, locator entries, a path given by the
// user) may not be valid UTF-8: they are written with U+FFFD rather than
// making dump() throw.
std::string Dump(const json& j) { return j.dump(4, ' ', false, json::error_handler_t::replace); }

json HeaderJson(const HeaderInfo& h, int slot, bool current) {
  json j;
  j["slot"] = slot;
  j["valid"] = h.valid;
  if (!h.valid) {
    j["problem"] = h.problem;
    return j;
  }
  j["current"] = current;
  j["sequence-number"] = h.sequence_number;
  j["file-write-guid"] = h.file_write_guid.ToString();
  j["data-write-guid"] = h.data_write_guid.ToString();
  j["log-guid"] = h.log_guid.ToString();
  j["version"] = h.version;
  j["log-version"] = h.log_version;
  j["log-offset"] = h.log_offset;
  j["log-length"] = h.log_length;
  return j;
}

const char* kStateNames[8] = {"not-present", "undefined", "zero", "unmapped",
                              "reserved-4", "reserved-5", "fully-present", "partially-present"};

// The parent's path as the locator writes it (qemu-img's backing-filename):
// relative_path, which Hyper-V always writes; else the absolute paths.
std::optional<std::string> LocatorPath(const ImageInfo& i) {
  if (!i.parent) return std::nullopt;
  for (const char* key : {"relative_path", "absolute_win32_path", "volume_path"})
    if (auto value = i.parent->Get(key)) return value;
  return std::nullopt;
}

json InfoObject(const InfoSummary& s) {
  const ImageInfo& i = s.image->info();
  const AllocationSummary& alloc = s.allocation;
  json j;
  j["filename"] = i.filename;
  j["format"] = "vhdx";
  j["virtual-size"] = i.virtual_size;
  j["actual-size"] = s.actual_size;
  j["cluster-size"] = i.block_size;
  j["block-size"] = i.block_size;
  j["logical-sector-size"] = i.logical_sector_size;
  j["physical-sector-size"] = i.physical_sector_size;
  j["type"] = DiskTypeName(i.type);
  j["creator"] = i.creator;
  j["dirty"] = i.log.dirty;
  j["dirty-flag"] = i.log.dirty;
  j["virtual-disk-id"] = i.virtual_disk_id.ToString();
  j["file-size"] = i.file_size;
  if (auto backing = LocatorPath(i)) {
    j["backing-filename"] = *backing;
    if (!i.parent_filename.empty()) j["full-backing-filename"] = i.parent_filename;
    j["backing-filename-format"] = "vhdx";
  }
  j["log"] = {{"offset", i.log.offset},
              {"length", i.log.length},
              {"active-entries", i.log.active_entries},
              {"active-descriptors", i.log.active_descriptors}};
  if (i.log.dirty) j["log"]["head-sequence-number"] = i.log.head_sequence_number;
  j["headers"] = json::array();
  for (int k = 0; k < 2; ++k) j["headers"].push_back(HeaderJson(i.headers[k], k + 1, k == i.current_header));
  j["region-table-copy"] = i.region_table_used + 1;
  j["regions"] = json::array();
  for (const auto& r : i.regions)
    j["regions"].push_back({{"name", r.name}, {"guid", r.guid.ToString()}, {"offset", r.file_offset},
                            {"length", r.length}, {"required", r.required}});
  j["metadata-items"] = json::array();
  for (const auto& m : i.metadata_items)
    j["metadata-items"].push_back({{"name", m.name}, {"guid", m.item_id.ToString()}, {"offset", m.offset},
                                   {"length", m.length}, {"is-user", m.is_user},
                                   {"is-virtual-disk", m.is_virtual_disk}, {"is-required", m.is_required}});
  j["bat"] = {{"offset", i.bat_offset}, {"entries", i.bat_entries}, {"payload-blocks", i.payload_blocks},
              {"chunk-ratio", i.chunk_ratio}};
  json payload, bitmap;
  for (int st = 0; st < 8; ++st) {
    if (alloc.payload[st] || st == 0 || st == 2 || st == 6) payload[kStateNames[st]] = alloc.payload[st];
    if (alloc.sector_bitmap[st]) bitmap[st == 6 ? "present" : kStateNames[st]] = alloc.sector_bitmap[st];
  }
  j["allocation"] = {{"payload", payload}, {"sector-bitmap", bitmap.is_null() ? json::object() : bitmap}};
  if (i.parent) {
    json p;
    p["locator-type"] = i.parent->locator_type.ToString();
    json entries = json::object();
    for (const auto& [k, v] : i.parent->entries) entries[k] = v;
    p["entries"] = entries;
    j["parent"] = p;
  }
  return j;
}

// File offset of the parent locator metadata item (0 if it has none).
uint64_t ParentLocatorOffset(const ImageInfo& info) {
  for (const auto& region : info.regions)
    if (region.name == "metadata")
      for (const auto& item : info.metadata_items)
        if (item.name == "parent_locator") return region.file_offset + item.offset;
  return 0;
}

const char* SeverityName(const CheckFinding& f) {
  return f.severity == CheckFinding::Severity::kError ? "error" : "warning";
}

json FindingsJson(const std::vector<CheckFinding>& findings) {
  auto out = json::array();
  for (const auto& f : findings)
    out.push_back({{"severity", SeverityName(f)},
                   {"structure", f.structure},
                   {"offset", f.offset},
                   {"message", f.message},
                   {"corruption", f.corruption()}});
  return out;
}

json LeaksJson(const CheckReport& r) {
  auto out = json::array();
  for (const auto& l : r.leaks) out.push_back({{"offset", l.offset}, {"length", l.length}, {"units", l.units}});
  return out;
}

}  // namespace

Result<InfoSummary> SummarizeImage(const Image& image) {
  auto alloc = image.CountAllocation();
  if (!alloc.ok()) return alloc.status();
  InfoSummary s{&image, *alloc, 0};
  // The file is opened again, unlocked, only for its size: an image whose
  // file is gone (or a memory file) shows 0, as qemu-img's actual-size.
  auto file = OpenPosixFile(image.info().filename, false);
  if (file.ok()) {
    auto allocated = (*file)->AllocatedSize();
    if (allocated.ok()) s.actual_size = *allocated;
  }
  return s;
}

std::string InfoJson(const InfoSummary& summary) { return Dump(InfoObject(summary)); }

std::string InfoJson(const std::vector<InfoSummary>& chain) {
  json all = json::array();
  for (const InfoSummary& s : chain) all.push_back(InfoObject(s));
  return Dump(all);
}

Result<CheckImageResult> CheckImage(const std::string& path, const CheckImageOptions& options) {
  auto repaired = CheckAndRepair(path, options.mode, options.force_share);
  if (!repaired.ok()) return repaired.status();
  CheckImageResult out;
  out.path = path;
  out.mode = options.mode;
  out.report = std::move(repaired).value();
  CheckReport& r = out.report.after;
  // A differencing image is only usable with its chain: when the file
  // itself is sound, opening the chain (finding each parent, checking its
  // linkage and sector size) is part of the check. A failure means the
  // virtual disk could not be checked (as qemu-img, which cannot open the
  // image then).
  if (r.corruptions() == 0) {
    OpenOptions alone_options;
    alone_options.skip_parent = true;
    alone_options.force_share = options.force_share;
    auto alone = Image::Open(path, alone_options);
    if (alone.ok()) {
      out.total_clusters = (*alone)->info().payload_blocks;
      if (auto summary = (*alone)->CountAllocation(); summary.ok())
        out.allocated_clusters = summary->payload[6] + summary->payload[7];  // FULLY / PARTIALLY_PRESENT
    }
    if (alone.ok() && (*alone)->info().type == DiskType::kDifferencing) {
      OpenOptions chain_options;
      chain_options.parent_dirs = options.parent_dirs;
      chain_options.force_share = options.force_share;
      auto chain = Image::Open(path, chain_options);
      if (!chain.ok()) {
        r.findings.push_back({CheckFinding::Severity::kError, "parent locator",
                              ParentLocatorOffset((*alone)->info()), chain.status().message()});
        out.chain_error = "the parent chain cannot be opened: " + chain.status().message();
      }
    }
  }
  return out;
}

std::string CheckJson(const CheckImageResult& result) {
  const RepairReport& rep = result.report;
  const CheckReport& r = rep.after;
  json j;
  j["filename"] = result.path;
  j["format"] = "vhdx";
  j["check-errors"] = r.errors();
  if (result.mode == RepairMode::kAll) j["log-entries-replayed"] = rep.log_entries_replayed;
  j["warnings"] = r.warnings();
  j["bat-entries-checked"] = r.bat_entries_checked;
  j["corruptions"] = r.corruptions();
  j["leaks"] = r.leaked_units();
  j["corruptions-fixed"] = rep.corruptions_fixed;
  j["leaks-fixed"] = rep.leaks_fixed;
  j["image-end-offset"] = rep.image_end_offset;
  if (result.total_clusters) j["total-clusters"] = *result.total_clusters;
  if (result.allocated_clusters) j["allocated-clusters"] = *result.allocated_clusters;
  j["findings"] = FindingsJson(r.findings);
  j["leaked-ranges"] = LeaksJson(r);
  if (result.mode != RepairMode::kNone) {
    j["findings-before-repair"] = FindingsJson(rep.before.findings);
    j["repairs"] = json::array();
    for (const auto& a : rep.actions)
      j["repairs"].push_back({{"structure", a.structure},
                              {"offset", a.offset},
                              {"action", a.action},
                              {"data-lost", a.data_lost},
                              {"leak", a.leak}});
    j["not-repaired"] = FindingsJson(rep.not_repaired);
  }
  return Dump(j);
}

}  // namespace vhdx
