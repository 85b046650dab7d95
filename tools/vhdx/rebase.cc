// vhdx rebase: point a differencing image at a moved or renamed parent
// (Set-VHD -ParentPath, qemu-img rebase -u).
#include <fmt/format.h>

#include "common.h"
#include "vhdx/chain.h"

namespace vhdx::cli {

void RegisterRebase(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand(
      "rebase", "Point a differencing image at a moved or renamed copy of its parent (rewrites its locator)");
  static std::string path, parent, parent_format, format;
  static std::vector<std::string> parent_dirs;
  static bool force = false;
  sub->add_option("-b,--parent", parent,
                  "The parent's new path, as given (relative to the current directory); required")
      ->type_name("NEWPATH")
      ->required();
  sub->add_flag("--force,-u", force,
                "Skip the linkage check: accept a parent whose DataWriteGuid is not the one the child "
                "was made from (you vouch that it holds the same data). -u is qemu-img's 'unsafe' "
                "flag; vhdx rebase never copies data, so here it means --force");
  sub->add_option("-F", parent_format, "Format of NEWPATH: only vhdx (accepted for qemu-img command lines)")
      ->check(CLI::IsMember({"vhdx"}));
  sub->add_option("-f", format, "Format of IMAGE: only vhdx (accepted for qemu-img command lines)")
      ->check(CLI::IsMember({"vhdx"}));
  AddParentDirOption(sub, parent_dirs);
  sub->add_option("IMAGE", path, "Differencing image to rebase")->required();
  sub->footer(
      "The new parent must have the child's logical sector size, a virtual size no larger than the\n"
      "child's and, unless --force, the DataWriteGuid the child's linkage names. The child's data is\n"
      "not touched and its old parent need not exist. Prints nothing on success, as qemu-img.\n");
  sub->callback([&result] {
    if (parent.empty()) {
      // qemu-img rebase -b '' makes the image standalone; here that is
      // `vhdx convert` (flatten).
      Fail(path, "rebase: an empty --parent (detaching the parent) is not supported; flatten the chain with "
                 "'vhdx convert -O vhdx' instead");
      result = kExitUsage;
      return;
    }
    RebaseOptions options;
    options.parent_dirs = parent_dirs;
    options.force = force;
    Status st = RebaseImage(path, parent, options);
    result = st.ok() ? kExitOk : Fail(path, st);
  });
}

}  // namespace vhdx::cli
