// The JSON reports of the vhdx CLI, rendered here in the library so that
// `vhdx info --output=json`, `vhdx check --output=json` and the C API
// (vhdx.h: vhdx_info_json, vhdx_check) give byte-identical text for the
// same image. Field names follow qemu-img's where the two agree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vhdx/export.h"
#include "vhdx/image.h"
#include "vhdx/repair.h"
#include "vhdx/status.h"

namespace vhdx {

// What `vhdx info` shows of one image of a chain, beyond Image::info().
struct InfoSummary {
  const Image* image = nullptr;  // not owned; must outlive the summary
  AllocationSummary allocation;  // BAT entries per state
  uint64_t actual_size = 0;      // host space the file takes (0 if unknown)
};

// Reads the whole BAT (CountAllocation) and the file's allocated size.
VHDX_API Result<InfoSummary> SummarizeImage(const Image& image);

// `vhdx info --output=json` (no trailing newline): one image's object.
VHDX_API std::string InfoJson(const InfoSummary& summary);
// `vhdx info --backing-chain --output=json`: an array, top image first.
VHDX_API std::string InfoJson(const std::vector<InfoSummary>& chain);

struct CheckImageOptions {
  RepairMode mode = RepairMode::kNone;
  bool force_share = false;             // OpenOptions::force_share (kNone only)
  std::vector<std::string> parent_dirs{};  // OpenOptions::parent_dirs
};

// Everything `vhdx check` reports.
struct CheckImageResult {
  std::string path;
  RepairMode mode = RepairMode::kNone;
  // report.after also lists, as an error of "parent locator", a parent
  // chain that cannot be opened (the virtual disk cannot be checked then).
  RepairReport report;
  // qemu-img's cluster counts (payload blocks, and those holding data);
  // only when the image has no corruption.
  std::optional<uint64_t> total_clusters, allocated_clusters;
  // Non-empty: the parent chain could not be opened (the CLI's exit 1).
  std::string chain_error;
};

// CheckAndRepair (repair.h) of the file at `path`, then, when the file is
// sound and differencing, an open of its parent chain. Fails only when the
// check could not run (file missing, unreadable, locked).
VHDX_API Result<CheckImageResult> CheckImage(const std::string& path, const CheckImageOptions& options = {});

// `vhdx check --output=json` (no trailing newline).
VHDX_API std::string CheckJson(const CheckImageResult& result);

}  // namespace vhdx
