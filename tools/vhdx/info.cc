// vhdx info: describe an image (qemu-img info field names where they agree).
#include <fmt/format.h>

#include "common.h"
#include "vhdx/json.h"

namespace vhdx::cli {
namespace {

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
    std::vector<InfoSummary> shown;
    for (const Image* level = image.get(); level; level = backing_chain ? level->parent() : nullptr) {
      auto described = SummarizeImage(*level);
      if (!described.ok()) {
        result = Fail(level->info().filename, described.status());
        return;
      }
      shown.push_back(*described);
    }
    if (output == "json") {
      // The library renders it: the C API's vhdx_info_json gives the same text.
      fmt::print("{}\n", backing_chain ? InfoJson(shown) : InfoJson(shown[0]));
    } else {
      for (size_t k = 0; k < shown.size(); ++k) {
        if (k > 0) fmt::print("\n");
        PrintHuman(*shown[k].image, shown[k].allocation, shown[k].actual_size);
      }
    }
    // The chain that was asked for could not be listed whole.
    result = backing_chain && chain_incomplete ? kExitError : kExitOk;
  });
}

}  // namespace vhdx::cli
