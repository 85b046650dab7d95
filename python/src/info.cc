// Dicts of what the library reports: image info, check reports.
//
// info() gives exactly the fields of `vhdx info --output=json`, rendered by
// the CLI in tools/vhdx/info.cc (same keys, same order, same values). That
// rendering is being moved into the library (include/vhdx/json.h, on a
// branch not merged yet); until then it is repeated here from ImageInfo,
// and tests/python/test_read.py compares the two outputs key for key so
// that they cannot drift apart. Once json.h lands, this file should call it
// and json.loads the text.
#include <optional>
#include <string>

#include "disk.h"

namespace vhdx::py_binding {
namespace {

const char* kStateNames[8] = {"not-present", "undefined", "zero", "unmapped",
                              "reserved-4", "reserved-5", "fully-present", "partially-present"};

py::dict HeaderDict(const HeaderInfo& h, int slot, bool current) {
  py::dict j;
  j["slot"] = slot;
  j["valid"] = h.valid;
  if (!h.valid) {
    j["problem"] = Text(h.problem);
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

// As the CLI's LocatorPath: relative_path, which Hyper-V always writes,
// else the absolute paths.
std::optional<std::string> LocatorPath(const ImageInfo& i) {
  if (!i.parent) return std::nullopt;
  for (const char* key : {"relative_path", "absolute_win32_path", "volume_path"})
    if (auto value = i.parent->Get(key)) return value;
  return std::nullopt;
}

}  // namespace

py::dict InfoDict(const Image& image, const AllocationSummary& alloc, uint64_t actual_size) {
  const ImageInfo& i = image.info();
  py::dict j;
  j["filename"] = Text(i.filename);
  j["format"] = "vhdx";
  j["virtual-size"] = i.virtual_size;
  j["actual-size"] = actual_size;
  j["cluster-size"] = i.block_size;
  j["block-size"] = i.block_size;
  j["logical-sector-size"] = i.logical_sector_size;
  j["physical-sector-size"] = i.physical_sector_size;
  j["type"] = DiskTypeName(i.type);
  j["creator"] = Text(i.creator);
  j["dirty"] = i.log.dirty;
  j["dirty-flag"] = i.log.dirty;
  j["virtual-disk-id"] = i.virtual_disk_id.ToString();
  j["file-size"] = i.file_size;
  if (auto backing = LocatorPath(i)) {
    j["backing-filename"] = Text(*backing);
    if (!i.parent_filename.empty()) j["full-backing-filename"] = Text(i.parent_filename);
    j["backing-filename-format"] = "vhdx";
  }
  py::dict log;
  log["offset"] = i.log.offset;
  log["length"] = i.log.length;
  log["active-entries"] = i.log.active_entries;
  log["active-descriptors"] = i.log.active_descriptors;
  if (i.log.dirty) log["head-sequence-number"] = i.log.head_sequence_number;
  j["log"] = log;
  py::list headers;
  for (int k = 0; k < 2; ++k) headers.append(HeaderDict(i.headers[k], k + 1, k == i.current_header));
  j["headers"] = headers;
  j["region-table-copy"] = i.region_table_used + 1;
  py::list regions;
  for (const auto& r : i.regions) {
    py::dict d;
    d["name"] = r.name;
    d["guid"] = r.guid.ToString();
    d["offset"] = r.file_offset;
    d["length"] = r.length;
    d["required"] = r.required;
    regions.append(d);
  }
  j["regions"] = regions;
  py::list items;
  for (const auto& m : i.metadata_items) {
    py::dict d;
    d["name"] = m.name;
    d["guid"] = m.item_id.ToString();
    d["offset"] = m.offset;
    d["length"] = m.length;
    d["is-user"] = m.is_user;
    d["is-virtual-disk"] = m.is_virtual_disk;
    d["is-required"] = m.is_required;
    items.append(d);
  }
  j["metadata-items"] = items;
  py::dict bat;
  bat["offset"] = i.bat_offset;
  bat["entries"] = i.bat_entries;
  bat["payload-blocks"] = i.payload_blocks;
  bat["chunk-ratio"] = i.chunk_ratio;
  j["bat"] = bat;
  py::dict payload, bitmap;
  for (int s = 0; s < 8; ++s) {
    if (alloc.payload[s] || s == 0 || s == 2 || s == 6) payload[kStateNames[s]] = alloc.payload[s];
    if (alloc.sector_bitmap[s]) bitmap[s == 6 ? "present" : kStateNames[s]] = alloc.sector_bitmap[s];
  }
  py::dict allocation;
  allocation["payload"] = payload;
  allocation["sector-bitmap"] = bitmap;
  j["allocation"] = allocation;
  if (i.parent) {
    py::dict p, entries;
    p["locator-type"] = i.parent->locator_type.ToString();
    for (const auto& [k, v] : i.parent->entries) entries[Text(k)] = Text(v);
    p["entries"] = entries;
    j["parent"] = p;
  }
  return j;
}

py::dict FindingDict(const CheckFinding& f) {
  py::dict d;
  d["severity"] = f.severity == CheckFinding::Severity::kError ? "error" : "warning";
  d["structure"] = Text(f.structure);
  d["offset"] = f.offset;
  d["message"] = Text(f.message);
  d["redundant_copy_damaged"] = f.redundant_copy_damaged;
  d["corruption"] = f.corruption();
  return d;
}

// Check reports keep the C++ struct's field names (snake_case): the CLI's
// check JSON is qemu-img's summary, not the whole report.
py::dict CheckReportDict(const CheckReport& r) {
  py::dict d;
  py::list findings, leaks, bad;
  for (const auto& f : r.findings) findings.append(FindingDict(f));
  for (const auto& l : r.leaks) {
    py::dict x;
    x["offset"] = l.offset;
    x["length"] = l.length;
    x["units"] = l.units;
    leaks.append(x);
  }
  for (const auto& b : r.bad_bat_entries) {
    py::dict x;
    x["index"] = b.index;
    x["value"] = b.value;
    x["sector_bitmap"] = b.sector_bitmap;
    x["problem"] = b.problem == CheckBadBatEntry::Problem::kPlacement ? "placement" : "overlap";
    x["repair"] = b.repair;
    bad.append(x);
  }
  d["findings"] = findings;
  d["errors"] = r.errors();
  d["warnings"] = r.warnings();
  d["corruptions"] = r.corruptions();
  d["complete"] = r.complete;
  d["leaks"] = leaks;
  d["leaked_units"] = r.leaked_units();
  d["image_end_offset"] = r.image_end_offset;
  d["bad_bat_entries"] = bad;
  d["bat_entries_checked"] = r.bat_entries_checked;
  d["log_entries_checked"] = r.log_entries_checked;
  return d;
}

}  // namespace vhdx::py_binding
