// vhdx info: describe an image (qemu-img info field names where they agree).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "common.h"

namespace vhdx::cli {
namespace {

using json = nlohmann::ordered_json;

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

json InfoJson(const Image& image, const AllocationSummary& alloc, uint64_t actual_size) {
  const ImageInfo& i = image.info();
  json j;
  j["filename"] = i.filename;
  j["format"] = "vhdx";
  j["virtual-size"] = i.virtual_size;
  j["actual-size"] = actual_size;
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
  for (int s = 0; s < 8; ++s) {
    if (alloc.payload[s] || s == 0 || s == 2 || s == 6) payload[kStateNames[s]] = alloc.payload[s];
    if (alloc.sector_bitmap[s]) bitmap[s == 6 ? "present" : kStateNames[s]] = alloc.sector_bitmap[s];
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

void PrintHuman(const Image& image, const AllocationSummary& alloc, uint64_t actual_size) {
  const ImageInfo& i = image.info();
  fmt::print("image: {}\n", i.filename);
  fmt::print("file format: vhdx\n");
  fmt::print("virtual size: {} ({} bytes)\n", HumanSize(i.virtual_size), i.virtual_size);
  fmt::print("disk size: {}\n", HumanSize(actual_size));
  fmt::print("type: {}\n", DiskTypeName(i.type));
  fmt::print("block size: {} ({} bytes)\n", HumanSize(i.block_size), i.block_size);
  fmt::print("sector size: {} logical, {} physical\n", i.logical_sector_size, i.physical_sector_size);
  fmt::print("creator: {}\n", i.creator.empty() ? "(none)" : i.creator);
  fmt::print("virtual disk id: {}\n", i.virtual_disk_id.ToString());
  if (i.log.dirty)
    fmt::print("log: {} at {:#x}, DIRTY: {} log entr{} ({} updates) replayed in memory, file untouched\n",
               HumanSize(i.log.length), i.log.offset, i.log.active_entries,
               i.log.active_entries == 1 ? "y" : "ies", i.log.active_descriptors);
  else
    fmt::print("log: {} at {:#x}, clean\n", HumanSize(i.log.length), i.log.offset);
  for (int k = 0; k < 2; ++k) {
    const HeaderInfo& h = i.headers[k];
    if (!h.valid) {
      fmt::print("header {}: INVALID: {}\n", k + 1, h.problem);
      continue;
    }
    fmt::print("header {}: sequence {}{}, file write {}, data write {}\n", k + 1, h.sequence_number,
               k == i.current_header ? " (current)" : "", h.file_write_guid.ToString(),
               h.data_write_guid.ToString());
  }
  for (const auto& r : i.regions)
    fmt::print("region {}: {} at {:#x}{}\n", r.name, HumanSize(r.length), r.file_offset,
               r.required ? " (required)" : "");
  fmt::print("BAT: {} entries, {} payload blocks, chunk ratio {}\n", i.bat_entries, i.payload_blocks,
             i.chunk_ratio);
  std::string blocks;
  for (int s = 0; s < 8; ++s)
    if (alloc.payload[s]) blocks += fmt::format("{}{} {}", blocks.empty() ? "" : ", ", alloc.payload[s], kStateNames[s]);
  fmt::print("blocks: {}\n", blocks.empty() ? "none" : blocks);
  if (alloc.sector_bitmap[6]) fmt::print("sector bitmaps: {} present\n", alloc.sector_bitmap[6]);
  if (i.parent) {
    fmt::print("parent locator:\n");
    for (const auto& [k, v] : i.parent->entries) fmt::print("    {}: {}\n", k, v);
  }
}

}  // namespace

void RegisterInfo(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand("info", "Show what an image is: geometry, headers, log, allocation");
  static std::string output, path;
  AddOutputOption(sub, output);
  sub->add_option("IMAGE", path, "VHDX image")->required();
  sub->callback([&result] {
    auto image = OpenImageOrFail(path, result);
    if (!image) return;
    auto alloc = image->CountAllocation();
    if (!alloc.ok()) {
      result = Fail(path, alloc.status());
      return;
    }
    auto file = OpenPosixFile(path, false);
    uint64_t actual = 0;
    if (file.ok()) {
      auto a = (*file)->AllocatedSize();
      if (a.ok()) actual = *a;
    }
    if (output == "json")
      fmt::print("{}\n", InfoJson(*image, *alloc, actual).dump(4));
    else
      PrintHuman(*image, *alloc, actual);
    result = kExitOk;
  });
}

}  // namespace vhdx::cli
