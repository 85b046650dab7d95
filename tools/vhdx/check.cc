// vhdx check: validation of every structure, and with -r the repairs that
// need no guessing (include/vhdx/repair.h), as qemu-img check.
#include <fmt/format.h>

#include <optional>

#include <nlohmann/json.hpp>

#include "common.h"
#include "vhdx/repair.h"

namespace vhdx::cli {
namespace {

// Exit statuses of check, as qemu-img check's: 0 clean, 1 the check could
// not run, 2 corruptions left, 3 only leaks left.
constexpr int kExitCorruptions = 2;
constexpr int kExitLeaks = 3;

// File offset of the parent locator metadata item (0 if it has none).
uint64_t ParentLocatorOffset(const ImageInfo& info) {
  for (const auto& region : info.regions)
    if (region.name == "metadata")
      for (const auto& item : info.metadata_items)
        if (item.name == "parent_locator") return region.file_offset + item.offset;
  return 0;
}

const char* SeverityName(const CheckFinding& f) {
  return f.severity == CheckFinding::Severity::kError ? "error" : "warning";
}

nlohmann::ordered_json FindingsJson(const std::vector<CheckFinding>& findings) {
  auto out = nlohmann::ordered_json::array();
  for (const auto& f : findings)
    out.push_back({{"severity", SeverityName(f)},
                   {"structure", f.structure},
                   {"offset", f.offset},
                   {"message", f.message},
                   {"corruption", f.corruption()}});
  return out;
}

nlohmann::ordered_json LeaksJson(const CheckReport& r) {
  auto out = nlohmann::ordered_json::array();
  for (const auto& l : r.leaks) out.push_back({{"offset", l.offset}, {"length", l.length}, {"units", l.units}});
  return out;
}

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
    auto repaired = CheckAndRepair(path, mode, ForceShare());
    if (!repaired.ok()) {
      result = Fail(path, repaired.status());
      return;
    }
    RepairReport& rep = *repaired;
    CheckReport& r = rep.after;
    // A differencing image is only usable with its chain: when the file
    // itself is sound, opening the chain (finding each parent, checking its
    // linkage and sector size) is part of the check. A failure means the
    // virtual disk could not be checked (as qemu-img, which cannot open
    // the image then): exit status 1.
    std::string chain_error;
    // qemu-img's cluster counts: payload blocks, and those holding data.
    std::optional<uint64_t> total_clusters, allocated_clusters;
    if (r.corruptions() == 0) {
      auto alone = Image::Open(path, FileOnlyOpenOptions());
      if (alone.ok()) {
        total_clusters = (*alone)->info().payload_blocks;
        if (auto summary = (*alone)->CountAllocation(); summary.ok())
          allocated_clusters = summary->payload[6] + summary->payload[7];  // FULLY / PARTIALLY_PRESENT
      }
      if (alone.ok() && (*alone)->info().type == DiskType::kDifferencing) {
        auto chain = Image::Open(path, ChainOpenOptions(parent_dirs));
        if (!chain.ok()) {
          r.findings.push_back({CheckFinding::Severity::kError, "parent locator",
                                ParentLocatorOffset((*alone)->info()), chain.status().message()});
          chain_error = "the parent chain cannot be opened: " + chain.status().message();
        }
      }
    }
    const uint64_t corruptions = r.corruptions();
    const uint64_t leaks = r.leaked_units();
    if (output == "json") {
      nlohmann::ordered_json j;
      j["filename"] = path;
      j["format"] = "vhdx";
      j["check-errors"] = r.errors();
      if (mode == RepairMode::kAll) j["log-entries-replayed"] = rep.log_entries_replayed;
      j["warnings"] = r.warnings();
      j["bat-entries-checked"] = r.bat_entries_checked;
      j["corruptions"] = corruptions;
      j["leaks"] = leaks;
      j["corruptions-fixed"] = rep.corruptions_fixed;
      j["leaks-fixed"] = rep.leaks_fixed;
      j["image-end-offset"] = rep.image_end_offset;
      if (total_clusters) j["total-clusters"] = *total_clusters;
      if (allocated_clusters) j["allocated-clusters"] = *allocated_clusters;
      j["findings"] = FindingsJson(r.findings);
      j["leaked-ranges"] = LeaksJson(r);
      if (mode != RepairMode::kNone) {
        j["findings-before-repair"] = FindingsJson(rep.before.findings);
        j["repairs"] = nlohmann::ordered_json::array();
        for (const auto& a : rep.actions)
          j["repairs"].push_back({{"structure", a.structure},
                                  {"offset", a.offset},
                                  {"action", a.action},
                                  {"data-lost", a.data_lost},
                                  {"leak", a.leak}});
        j["not-repaired"] = FindingsJson(rep.not_repaired);
      }
      fmt::print("{}\n", j.dump(4));
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
