// vhdx resize: grow or shrink an image's virtual size in place (Resize-VHD,
// qemu-img resize).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "common.h"
#include "vhdx/resize.h"

namespace vhdx::cli {

void RegisterResize(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand("resize", "Grow or shrink an image's virtual size in place (qemu-img resize)");
  static std::string path, size_text, format, output;
  static std::vector<std::string> parent_dirs;
  static bool shrink = false, progress = false;
  sub->add_flag("--shrink", shrink,
                "Allow a smaller size: data past the new end is lost (as qemu-img, required to shrink)");
  sub->add_flag("-p,--progress", progress, "Show a progress bar (the BAT written or scanned)");
  sub->add_option("-f", format, "Format of IMAGE: only vhdx (accepted for qemu-img command lines)")
      ->check(CLI::IsMember({"vhdx"}));
  AddOutputOption(sub, output);
  AddParentDirOption(sub, parent_dirs);
  sub->add_option("IMAGE", path, "VHDX image to resize (not in use)")->required();
  sub->add_option("SIZE", size_text,
                  "New virtual size (K/M/G/T suffixes), or +SIZE / -SIZE relative to the current one")
      ->required();
  sub->footer(
      "The size is a multiple of the logical sector size, at most 64 TiB. Growth reads as zeros; a\n"
      "fixed image gets its new blocks allocated. When the BAT outgrows its region it moves to the\n"
      "end of the file. The change is one entry of the image's log: a crash leaves the old size or\n"
      "the new one. The image gets a new DataWriteGuid, so its children no longer match it. A\n"
      "differencing image is resized on its own (its parent is opened read-only, never resized) and\n"
      "may not shrink below its parent's size.\n");
  sub->callback([&result] {
    const bool relative = !size_text.empty() && (size_text[0] == '+' || size_text[0] == '-');
    auto amount = ParseSize(relative ? size_text.substr(1) : size_text);
    if (!amount) {
      Fail(path, fmt::format("resize: invalid size '{}' (expected e.g. 10G, +512M or -1G)", size_text));
      result = kExitUsage;
      return;
    }
    // One read-write open for the whole job: the size a relative change is
    // taken from is the size the resize starts from.
    auto image = OpenImageOrFail(path, result, ChainOpenOptions(parent_dirs, /*read_only=*/false));
    if (!image) return;
    const uint64_t current = image->virtual_size();
    uint64_t target = *amount;
    if (relative && size_text[0] == '-') {
      if (*amount >= current) {
        result = Fail(path, fmt::format("resize: cannot shrink by {} bytes: the image is only {} bytes",
                                        *amount, current));
        return;
      }
      target = current - *amount;
    } else if (relative) {
      target = current + *amount;
      if (target < current) target = UINT64_MAX;  // refused as above 64 TiB
    }
    if (target < current && !shrink) {
      Fail(path, fmt::format("resize: the new size {} is smaller than the current {} bytes ({}); use --shrink "
                             "to shrink (data past the new end is lost)",
                             target, current, HumanSize(current)));
      result = kExitUsage;
      return;
    }
    ResizeOptions options;
    options.shrink = shrink;
    Progress bar(progress);
    if (progress) options.progress = [&bar](uint64_t done, uint64_t total) { bar.Update(done, total); };
    auto resized = ResizeImage(std::move(image), target, options);
    if (!resized.ok()) {
      result = Fail(path, resized.status());
      return;
    }
    bar.Update(1, 1);
    if (output == "json") {
      nlohmann::ordered_json j;
      j["filename"] = path;
      j["old-virtual-size"] = resized->old_size;
      j["virtual-size"] = resized->new_size;
      j["file-size-before"] = resized->file_size_before;
      j["file-size-after"] = resized->file_size_after;
      j["bat-offset"] = resized->bat_offset;
      j["bat-relocated"] = resized->bat_relocated;
      j["blocks-allocated"] = resized->blocks_allocated;
      j["blocks-freed"] = resized->blocks_freed;
      fmt::print("{}\n", j.dump(4));
    } else {
      fmt::print("Image resized.\n");
    }
    result = kExitOk;
  });
}

}  // namespace vhdx::cli
