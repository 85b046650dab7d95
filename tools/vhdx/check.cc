// vhdx check: validation of every structure, and with -r the repairs that
// need no guessing (include/vhdx/repair.h), as qemu-img check.
#include <fmt/format.h>

#include "common.h"
#include "vhdx/json.h"
#include "vhdx/repair.h"

namespace vhdx::cli {
namespace {

// Exit statuses of check, as qemu-img check's: 0 clean, 1 the check could
// not run, 2 corruptions left, 3 only leaks left.
constexpr int kExitCorruptions = 2;
constexpr int kExitLeaks = 3;

void PrintFindings(const CheckReport& r) {
  for (const auto& f : r.findings)
    fmt::print("{}: {} (offset {:#x}): {}\n", f.severity == CheckFinding::Severity::kError ? "ERROR" : "Warning",
               f.structure, f.offset, f.message);
  for (const auto& l : r.leaks)
    fmt::print("Leaked: file range {:#x} (+{:#x}, {} MiB unit{}): no structure references it, yet it holds data\n",
               l.offset, l.length, l.units, l.units == 1 ? "" : "s");
}

std::string Plural(uint64_t n, const char* one, const char* many) { return n == 1 ? one : many; }

}  // namespace

void RegisterCheck(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand(
      "check",
      "Validate every structure; with -r, repair what needs no guessing. Exit status as qemu-img check: 0 "
      "clean, 1 the check could not run, 2 corruptions left, 3 only leaks left. Leaks are counted in 1 MiB "
      "units of the file (qemu-img counts clusters)");
  static std::string output, path, repair;
  static std::vector<std::string> parent_dirs;
  AddOutputOption(sub, output);
  AddParentDirOption(sub, parent_dirs);
  AddForceShareOption(sub);
  sub->add_option("-r", repair,
                  "Repair, then check again (opens the image read-write with an exclusive lock). 'leaks': "
                  "reclaim leaked space (1 MiB units nothing references that hold data: the file tail is "
                  "truncated, holes are punched inside). 'all': also replay a dirty log, rewrite a damaged "
                  "header or region table copy from the valid one, and make BAT entries whose space is "
                  "unusable (past the end, over another structure, overlapping another entry) read zeros, "
                  "through the log (their data is lost)")
      ->check(CLI::IsMember({"leaks", "all"}));
  sub->add_option("IMAGE", path, "VHDX image")->required();
  sub->callback([&result] {
    const RepairMode mode = repair == "all"     ? RepairMode::kAll
                            : repair == "leaks" ? RepairMode::kLeaks
                                                : RepairMode::kNone;
    // The library does the check (with the parent chain's open) and
    // renders the JSON: the C API's vhdx_check gives the same text.
    auto checked = CheckImage(path, {.mode = mode, .force_share = ForceShare(), .parent_dirs = parent_dirs});
    if (!checked.ok()) {
      result = Fail(path, checked.status());
      return;
    }
    const RepairReport& rep = checked->report;
    const CheckReport& r = rep.after;
    const std::string& chain_error = checked->chain_error;
    const uint64_t corruptions = r.corruptions();
    const uint64_t leaks = r.leaked_units();
    if (output == "json") {
      fmt::print("{}\n", CheckJson(*checked));
    } else {
      if (mode == RepairMode::kNone) {
        PrintFindings(r);
      } else {
        // As qemu-img: what was found, each repair, then the double check.
        PrintFindings(rep.before);
        if (rep.log_entries_replayed)
          fmt::print("Replayed {} log entr{} into the image.\n", rep.log_entries_replayed,
                     Plural(rep.log_entries_replayed, "y", "ies"));
        for (const auto& a : rep.actions)
          if (a.structure != "log")
            fmt::print("Repaired: {} (offset {:#x}): {}{}\n", a.structure, a.offset, a.action,
                       a.data_lost ? " [data lost]" : "");
        for (const auto& f : rep.not_repaired)
          fmt::print("Not repaired: {} (offset {:#x}): {}\n", f.structure, f.offset, f.message);
        if (rep.corruptions_fixed || rep.leaks_fixed) {
          fmt::print("The following inconsistencies were found and repaired:\n\n"
                     "    {} leaked 1 MiB unit{}\n    {} corruption{}\n\nDouble checking the fixed image now...\n",
                     rep.leaks_fixed, Plural(rep.leaks_fixed, "", "s"), rep.corruptions_fixed,
                     Plural(rep.corruptions_fixed, "", "s"));
          PrintFindings(r);
        }
      }
      if (corruptions == 0 && chain_error.empty())
        fmt::print("No errors were found on the image ({} BAT entries checked{}).\n", r.bat_entries_checked,
                   r.warnings() ? fmt::format(", {} warnings", r.warnings()) : "");
      if (corruptions)
        fmt::print("{} error{} {} found on the image.\nData may be corrupted, or further writes to the image may "
                   "corrupt it.\n",
                   corruptions, Plural(corruptions, "", "s"), Plural(corruptions, "was", "were"));
      if (leaks)
        fmt::print("{} leaked 1 MiB unit{} {} found on the image.\nThis means waste of disk space, but no harm "
                   "to data.\n",
                   leaks, Plural(leaks, "", "s"), Plural(leaks, "was", "were"));
      if (rep.image_end_offset) fmt::print("Image end offset: {}\n", rep.image_end_offset);
    }
    // Every non-zero exit also gets its one-line verdict on stderr (the
    // findings above are on stdout).
    result = kExitOk;
    if (!chain_error.empty()) {
      result = Fail(path, chain_error);
      return;
    }
    for (const auto& f : r.findings)
      if (f.corruption()) {
        Fail(path, fmt::format("{} corruption{} found; first: {} (offset {:#x}): {}", corruptions,
                               Plural(corruptions, "", "s"), f.structure, f.offset, f.message));
        result = kExitCorruptions;
        return;
      }
    if (leaks) {
      Fail(path, fmt::format("{} leaked 1 MiB unit{} found (no structure references {}); `vhdx check -r leaks` "
                             "reclaims them",
                             leaks, Plural(leaks, "", "s"), Plural(leaks, "it", "them")));
      result = kExitLeaks;
    }
  });
}

}  // namespace vhdx::cli
