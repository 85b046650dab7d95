// vhdx compact: give back the file space of blocks the disk does not need,
// in place (Optimize-VHD).
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "common.h"
#include "vhdx/compact.h"

namespace vhdx::cli {

void RegisterCompact(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand("compact", "Give back the file space of all-zero blocks, in place (Optimize-VHD)");
  static std::string path, output;
  static std::vector<std::string> parent_dirs;
  static bool dry_run = false, progress = false;
  sub->add_flag("-n,--dry-run", dry_run, "Report what would be freed and moved; write nothing");
  sub->add_flag("-p,--progress", progress, "Show a progress bar (blocks scanned, then moved)");
  AddOutputOption(sub, output);
  AddParentDirOption(sub, parent_dirs);
  sub->add_option("IMAGE", path, "Dynamic or differencing VHDX image (not in use)")->required();
  sub->footer(
      "Blocks whose data is all zeros are released (a differencing image keeps them as ZERO, so the\n"
      "parent's data stays hidden); blocks at the end of the file then move into the holes, and the\n"
      "file is truncated. Every change goes through the image's log: a power failure at any moment\n"
      "leaves a consistent image that reads as before. Nothing anyone reads changes, so the\n"
      "DataWriteGuid stays and children of the image still open. A fixed image is refused: convert\n"
      "it to dynamic (vhdx convert -O vhdx) instead.\n");
  sub->callback([&result] {
    CompactOptions options;
    options.parent_dirs = parent_dirs;
    options.dry_run = dry_run;
    Progress bar(progress);
    if (progress) options.progress = [&bar](uint64_t done, uint64_t total) { bar.Update(done, total); };
    const auto started = std::chrono::steady_clock::now();
    auto compacted = CompactImage(path, options);
    if (!compacted.ok()) {
      result = Fail(path, compacted.status());
      return;
    }
    bar.Update(1, 1);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const CompactResult& r = *compacted;
    if (output == "json") {
      nlohmann::ordered_json j;
      j["filename"] = path;
      j["dry-run"] = r.dry_run;
      j["file-size-before"] = r.file_size_before;
      j["file-size-after"] = r.file_size_after;
      j["blocks-scanned"] = r.blocks_scanned;
      j["blocks-freed-zero"] = r.blocks_zero;
      j["stale-offsets-dropped"] = r.stale_offsets;
      j["blocks-moved"] = r.blocks_moved;
      j["bytes-moved"] = r.bytes_moved;
      j["seconds"] = seconds;
      fmt::print("{}\n", j.dump(4));
    } else {
      fmt::print("{}{}: {} -> {} ({} freed)\n", r.dry_run ? "Dry run, nothing written. " : "", path,
                 HumanSize(r.file_size_before), HumanSize(r.file_size_after),
                 HumanSize(r.file_size_before - std::min(r.file_size_before, r.file_size_after)));
      fmt::print("Blocks: {} scanned, {} all zeros released, {} moved ({}); {} stale offsets dropped; {:.2f} s\n",
                 r.blocks_scanned, r.blocks_zero, r.blocks_moved, HumanSize(r.bytes_moved), r.stale_offsets,
                 seconds);
    }
    result = kExitOk;
  });
}

}  // namespace vhdx::cli
