// vhdx commit: merge a differencing image into its parent (Merge-VHD,
// qemu-img commit).
#include <fmt/format.h>

#include "common.h"
#include "vhdx/chain.h"

namespace vhdx::cli {

void RegisterCommit(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand(
      "commit", "Write a differencing image's data into its parent, then empty it (qemu-img commit)");
  static std::string path, format;
  static std::vector<std::string> parent_dirs;
  static bool progress = false, keep = false;
  sub->add_flag("-p,--progress", progress, "Show a progress bar");
  sub->add_flag("-d", keep,
                "Keep the child's data after the commit (by default it is emptied, and reads through "
                "to the parent, which now holds the data)");
  sub->add_option("-f", format, "Format of IMAGE: only vhdx (accepted for qemu-img command lines)")
      ->check(CLI::IsMember({"vhdx"}));
  AddParentDirOption(sub, parent_dirs);
  sub->add_option("IMAGE", path, "Differencing image to commit into its parent")->required();
  sub->footer(
      "The parent is written crash-safely (through its log); other children of the parent are\n"
      "invalidated by the commit, as with Hyper-V.\n");
  sub->callback([&result] {
    Status st;
    {
      Progress bar(progress);  // ends its line before the verdict
      CommitOptions options;
      options.parent_dirs = parent_dirs;
      options.keep_child = keep;
      options.progress = [&bar](uint64_t done, uint64_t total) { bar.Update(done, total); };
      auto committed = CommitImage(path, options);
      st = committed.status();
      if (st.ok()) bar.Update(1, 1);
    }
    if (!st.ok()) {
      result = Fail(path, st);
      return;
    }
    fmt::print("Image committed.\n");
    result = kExitOk;
  });
}

}  // namespace vhdx::cli
