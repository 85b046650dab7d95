// vhdx compact: give back the file space of blocks the disk does not need,
// in place (Optimize-VHD).
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "common.h"
#include "vhdx/compact.h"

namespace vhdx::cli {

void RegisterCompact(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand(
      "compact", "Give back the file space of free and all-zero blocks, in place (Optimize-VHD, ext2/3/4 aware)");
  static std::string path, output;
  static std::vector<std::string> parent_dirs;
  static bool dry_run = false, progress = false, no_fs = false;
  sub->add_flag("-n,--dry-run", dry_run, "Report what would be freed and moved; write nothing");
  sub->add_flag("--no-fs", no_fs,
                "Do not read the guest's file systems: release only blocks whose data is all zeros");
  sub->add_flag("-p,--progress", progress, "Show a progress bar (blocks scanned, then moved)");
  AddOutputOption(sub, output);
  AddParentDirOption(sub, parent_dirs);
  sub->add_option("IMAGE", path, "Dynamic or differencing VHDX image (not in use)")->required();
  sub->footer(
      "The partition table (MBR, GPT, or none as in WSL's ext4.vhdx) and every clean ext2/3/4 file\n"
      "system on the disk are read (libblkid, libext2fs): blocks wholly in their free space are\n"
      "released unread; a file system that is not clean, or not one we read, is left alone with a\n"
      "notice. Then blocks whose data is all zeros are released (a differencing image keeps them as\n"
      "ZERO, so the parent's data stays hidden); blocks at the end of the file move into the holes,\n"
      "and the file is truncated. Every change goes through the image's log: a power failure at any\n"
      "moment leaves a consistent image. Free space released reads zeros afterwards, so the\n"
      "DataWriteGuid changes and children of the image no longer match it; with --no-fs nothing\n"
      "anyone reads changes and it stays. A fixed image is refused: convert it to dynamic\n"
      "(vhdx convert -O vhdx) instead. Shut the guest down first: the image must not be in use.\n");
  sub->callback([&result] {
    CompactOptions options;
    options.parent_dirs = parent_dirs;
    options.dry_run = dry_run;
    options.file_system = !no_fs;
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
      j["blocks-freed-fs"] = r.blocks_fs_free;
      j["file-systems-read"] = r.file_systems_read;
      j["notices"] = r.notices;
      j["stale-offsets-dropped"] = r.stale_offsets;
      j["blocks-moved"] = r.blocks_moved;
      j["bytes-moved"] = r.bytes_moved;
      j["seconds"] = seconds;
      fmt::print("{}\n", j.dump(4));
    } else {
      fmt::print("{}{}: {} -> {} ({} freed)\n", r.dry_run ? "Dry run, nothing written. " : "", path,
                 HumanSize(r.file_size_before), HumanSize(r.file_size_after),
                 HumanSize(r.file_size_before - std::min(r.file_size_before, r.file_size_after)));
      for (const std::string& notice : r.notices) fmt::print("Left alone: {}\n", notice);
      fmt::print("Blocks: {} in free space of {} file system(s) released, {} scanned, {} all zeros released, "
                 "{} moved ({}); {} stale offsets dropped; {:.2f} s\n",
                 r.blocks_fs_free, r.file_systems_read, r.blocks_scanned, r.blocks_zero, r.blocks_moved,
                 HumanSize(r.bytes_moved), r.stale_offsets, seconds);
    }
    result = kExitOk;
  });
}

}  // namespace vhdx::cli
