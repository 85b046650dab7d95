// Check and repair, as `qemu-img check -r leaks|all`: fixes what can be
// repaired without guessing, each change listed.
//
//   auto r = vhdx::CheckAndRepair("disk.vhdx", vhdx::RepairMode::kAll);
//   if (r.ok()) for (const auto& a : r->actions) puts(a.action.c_str());
//
// What is repaired (kAll; kLeaks does only the last item):
//   - a dirty log: replayed into the file;
//   - a damaged header copy (the other one valid): rewritten from the valid
//     one by the header update every write session begins with;
//   - a damaged region table copy (the other one valid): rewritten from it;
//   - BAT entries whose space is unusable (past the end of the file, in the
//     header section, over the log or a region, overlapping another
//     entry): set to a state that reads zeros, through the log; their data
//     is lost, and a differencing image no longer shows its parent there;
//   - leaks (file space nothing references that holds data, in 1 MiB
//     units): truncated at the file tail, hole-punched inside the file.
// Anything else is reported and left alone, and so is everything that
// depends on a structure that cannot be repaired (no valid header, no
// valid region table, unusable metadata): a repair never makes things
// worse.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vhdx/export.h"
#include "vhdx/file.h"
#include "vhdx/image.h"
#include "vhdx/status.h"

namespace vhdx {

enum class RepairMode {
  kNone,   // check only, nothing is written
  kLeaks,  // reclaim leaked space only
  kAll,    // everything listed above
};

// One change made to the file.
struct RepairAction {
  std::string structure;  // "header 1", "region table 2", "BAT entry 17", "file", "log"
  uint64_t offset = 0;    // file offset of the structure (or of the leaked range)
  std::string action;     // what was done, in words
  bool data_lost = false;  // a block's data (or its parent's, for a child) no longer reads
  bool leak = false;       // reclaimed leaked space (else: fixed a corruption)
};

struct RepairReport {
  CheckReport before;  // the image as found
  CheckReport after;   // the image as left (equal to `before` for kNone)
  std::vector<RepairAction> actions;
  // Damage found but left, and why (as findings: structure, offset, reason).
  std::vector<CheckFinding> not_repaired;
  uint64_t log_entries_replayed = 0;
  // As qemu-img check: what is left after the repair, and what it fixed.
  uint64_t corruptions = 0;  // after.corruptions()
  uint64_t leaks = 0;        // after.leaked_units(), 1 MiB units
  uint64_t corruptions_fixed = 0;
  uint64_t leaks_fixed = 0;  // 1 MiB units reclaimed
  uint64_t image_end_offset = 0;  // after.image_end_offset
};

// Checks `file` and, unless `mode` is kNone, repairs it through it (which
// must be writable; nothing else may use the file meanwhile).
VHDX_API Result<RepairReport> CheckAndRepair(File& file, RepairMode mode);

// Opens `path` read-only (kNone, locked for reading unless `force_share`)
// or read-write with an exclusive lock (kLeaks, kAll: the image must not be
// in use; `force_share` is refused, since repairing an image another
// process writes would corrupt it).
VHDX_API Result<RepairReport> CheckAndRepair(const std::string& path, RepairMode mode, bool force_share = false);

}  // namespace vhdx
