// vhdx check: read-only validation of every structure.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "common.h"

namespace vhdx::cli {
namespace {

// File offset of the parent locator metadata item (0 if it has none).
uint64_t ParentLocatorOffset(const ImageInfo& info) {
  for (const auto& region : info.regions)
    if (region.name == "metadata")
      for (const auto& item : info.metadata_items)
        if (item.name == "parent_locator") return region.file_offset + item.offset;
  return 0;
}

}  // namespace

void RegisterCheck(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand(
      "check", "Validate every structure without modifying the image (exit 1 when errors are found)");
  static std::string output, path, repair;
  static std::vector<std::string> parent_dirs;
  AddOutputOption(sub, output);
  AddParentDirOption(sub, parent_dirs);
  AddForceShareOption(sub);
  sub->add_option("-r", repair,
                  "Repair first, as qemu-img: 'all' replays a dirty log into the file (opens it "
                  "read-write), then checks")
      ->check(CLI::IsMember({"all"}));
  sub->add_option("IMAGE", path, "VHDX image")->required();
  sub->callback([&result] {
    size_t replayed = 0;
    if (repair == "all") {
      // Replaying the file's own log does not need its parent.
      auto image = Image::Open(path, FileOnlyOpenOptions(/*read_only=*/false));
      if (!image.ok()) {
        result = Fail(path, image.status());
        return;
      }
      replayed = (*image)->info().log.replayed_entries;
    }
    auto report = Check(path, ForceShare());
    if (!report.ok()) {
      result = Fail(path, report.status());
      return;
    }
    CheckReport& r = *report;
    // A differencing image is only usable with its chain: when the file
    // itself is sound, opening the chain (finding each parent, checking its
    // linkage and sector size) is part of the check, and a failure is one
    // more error.
    if (r.errors() == 0) {
      auto alone = Image::Open(path, FileOnlyOpenOptions());
      if (alone.ok() && (*alone)->info().type == DiskType::kDifferencing) {
        auto chain = Image::Open(path, ChainOpenOptions(parent_dirs));
        if (!chain.ok())
          r.findings.push_back({CheckFinding::Severity::kError, "parent locator",
                                ParentLocatorOffset((*alone)->info()), chain.status().message()});
      }
    }
    if (output == "json") {
      nlohmann::ordered_json j;
      j["filename"] = path;
      j["format"] = "vhdx";
      j["check-errors"] = r.errors();
      if (repair == "all") j["log-entries-replayed"] = replayed;
      j["warnings"] = r.warnings();
      j["bat-entries-checked"] = r.bat_entries_checked;
      j["findings"] = nlohmann::ordered_json::array();
      for (const auto& f : r.findings)
        j["findings"].push_back({{"severity", f.severity == CheckFinding::Severity::kError ? "error" : "warning"},
                                 {"structure", f.structure},
                                 {"offset", f.offset},
                                 {"message", f.message}});
      fmt::print("{}\n", j.dump(4));
    } else {
      if (replayed) fmt::print("Replayed {} log entr{} into the image.\n", replayed, replayed == 1 ? "y" : "ies");
      for (const auto& f : r.findings)
        fmt::print("{}: {} (offset {:#x}): {}\n",
                   f.severity == CheckFinding::Severity::kError ? "ERROR" : "Warning", f.structure, f.offset,
                   f.message);
      if (r.errors() == 0)
        fmt::print("No errors were found on the image ({} BAT entries checked{}).\n", r.bat_entries_checked,
                   r.warnings() ? fmt::format(", {} warnings", r.warnings()) : "");
      else
        fmt::print("{} errors were found on the image.\n", r.errors());
    }
    result = kExitOk;
    // Like every other failure, a damaged image also gets its one-line
    // verdict on stderr (the findings above are on stdout).
    for (const auto& f : r.findings)
      if (f.severity == CheckFinding::Severity::kError) {
        result = Fail(path, fmt::format("{} error{} found; first: {} (offset {:#x}): {}", r.errors(),
                                        r.errors() == 1 ? "" : "s", f.structure, f.offset, f.message));
        break;
      }
  });
}

}  // namespace vhdx::cli
