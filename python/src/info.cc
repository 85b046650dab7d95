// Dicts of what the library reports: check reports. (info() is the text of
// `vhdx info --output=json`, rendered by the library, include/vhdx/json.h,
// and parsed by json.loads: see Info in disk.cc.)
#include <optional>
#include <string>

#include "disk.h"

namespace vhdx::py_binding {

py::dict FindingDict(const CheckFinding& f) {
  py::dict d;
  d["severity"] = f.severity == CheckFinding::Severity::kError ? "error" : "warning";
  d["structure"] = Text(f.structure);
  d["offset"] = f.offset;
  d["message"] = Text(f.message);
  d["redundant_copy_damaged"] = f.redundant_copy_damaged;
  d["corruption"] = f.corruption();
  return d;
}

// Check reports keep the C++ struct's field names (snake_case): the CLI's
// check JSON is qemu-img's summary, not the whole report.
py::dict CheckReportDict(const CheckReport& r) {
  py::dict d;
  py::list findings, leaks, bad;
  for (const auto& f : r.findings) findings.append(FindingDict(f));
  for (const auto& l : r.leaks) {
    py::dict x;
    x["offset"] = l.offset;
    x["length"] = l.length;
    x["units"] = l.units;
    leaks.append(x);
  }
  for (const auto& b : r.bad_bat_entries) {
    py::dict x;
    x["index"] = b.index;
    x["value"] = b.value;
    x["sector_bitmap"] = b.sector_bitmap;
    x["problem"] = b.problem == CheckBadBatEntry::Problem::kPlacement ? "placement" : "overlap";
    x["repair"] = b.repair;
    bad.append(x);
  }
  d["findings"] = findings;
  d["errors"] = r.errors();
  d["warnings"] = r.warnings();
  d["corruptions"] = r.corruptions();
  d["complete"] = r.complete;
  d["leaks"] = leaks;
  d["leaked_units"] = r.leaked_units();
  d["image_end_offset"] = r.image_end_offset;
  d["bad_bat_entries"] = bad;
  d["bat_entries_checked"] = r.bat_entries_checked;
  d["log_entries_checked"] = r.log_entries_checked;
  return d;
}

}  // namespace vhdx::py_binding
