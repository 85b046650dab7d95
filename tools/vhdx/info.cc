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

// The parent's path as the locator writes it (qemu-img's backing-filename):
// relative_path, which Hyper-V always writes; else the absolute paths.
std::optional<std::string> LocatorPath(const ImageInfo& i) {
  if (!i.parent) return std::nullopt;
  for (const char* key : {"relative_path", "absolute_win32_path", "volume_path"})
    if (auto value = i.parent->Get(key)) return value;
  return std::nullopt;
}

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
  if (auto backing = LocatorPath(i)) {
    // As qemu-img: the path as written, and the one opened when it differs.
    if (i.parent_filename.empty())
      fmt::print("backing file: {} (not opened)\n", *backing);
    else if (i.parent_filename != *backing)
      fmt::print("backing file: {} (actual path: {})\n", *backing, i.parent_filename);
    else
      fmt::print("backing file: {}\n", *backing);
    fmt::print("backing file format: vhdx\n");
  }
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

// What info shows of one image of the chain.
struct Described {
  const Image* image;
  AllocationSummary alloc;
  uint64_t actual_size = 0;
};

Result<Described> Describe(const Image& image) {
  auto alloc = image.CountAllocation();
  if (!alloc.ok()) return alloc.status();
  Described d{&image, *alloc};
  auto file = OpenPosixFile(image.info().filename, false);
  if (file.ok()) {
    auto allocated = (*file)->AllocatedSize();
    if (allocated.ok()) d.actual_size = *allocated;
  }
  return d;
}

}  // namespace

void RegisterInfo(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand("info", "Show what an image is: geometry, headers, log, allocation, parent");
  static std::string output, path;
  static std::vector<std::string> parent_dirs;
  static bool backing_chain = false;
  AddOutputOption(sub, output);
  AddParentDirOption(sub, parent_dirs);
  AddForceShareOption(sub);
  sub->add_flag("--backing-chain", backing_chain,
                "Show every image of a differencing chain, top to bottom (JSON: an array)");
  sub->add_option("IMAGE", path, "VHDX image")->required();
  sub->callback([&result] {
    OpenOptions options = ChainOpenOptions(parent_dirs);
    auto opened = Image::Open(path, options);
    std::unique_ptr<Image> image;
    bool chain_incomplete = false;
    if (opened.ok()) {
      image = std::move(opened).value();
    } else {
      // info is for looking at broken things too: a child whose parent
      // cannot be opened is still shown, alone, with a warning.
      options.skip_parent = true;
      auto alone = Image::Open(path, options);
      if (!alone.ok() || (*alone)->info().type != DiskType::kDifferencing) {
        result = Fail(path, opened.status());
        return;
      }
      // With --backing-chain the listing is incomplete: an error (exit 1).
      Fail(path, (backing_chain ? "chain incomplete, showing this image alone: "
                                : "warning: parent not opened, showing this image alone: ") +
                     opened.status().message());
      image = std::move(alone).value();
      chain_incomplete = true;
    }
    std::vector<Described> shown;
    for (const Image* level = image.get(); level; level = backing_chain ? level->parent() : nullptr) {
      auto described = Describe(*level);
      if (!described.ok()) {
        result = Fail(level->info().filename, described.status());
        return;
      }
      shown.push_back(*described);
    }
    if (output == "json") {
      if (backing_chain) {
        json all = json::array();
        for (const Described& d : shown) all.push_back(InfoJson(*d.image, d.alloc, d.actual_size));
        fmt::print("{}\n", all.dump(4));
      } else {
        fmt::print("{}\n", InfoJson(*image, shown[0].alloc, shown[0].actual_size).dump(4));
      }
    } else {
      for (size_t k = 0; k < shown.size(); ++k) {
        if (k > 0) fmt::print("\n");
        PrintHuman(*shown[k].image, shown[k].alloc, shown[k].actual_size);
      }
    }
    // The chain that was asked for could not be listed whole.
    result = backing_chain && chain_incomplete ? kExitError : kExitOk;
  });
}

}  // namespace vhdx::cli
