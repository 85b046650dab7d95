// Region table (digest §3): 64 KiB at 192 KiB, copy at 256 KiB.
#pragma once

#include <cstdint>
#include <vector>

#include "vhdx/guid.h"
#include "vhdx/status.h"

namespace vhdx::format {

struct RegionEntry {
  Guid guid;
  uint64_t file_offset = 0;
  uint32_t length = 0;
  uint32_t required = 0;  // raw field; any non-zero value counts as required
};

struct RegionTable {
  std::vector<RegionEntry> entries;
  const RegionEntry* Find(const Guid& guid) const;
};

// Parses and validates the 64 KiB table read at `file_offset`: signature,
// CRC over 64 KiB, entry count, each entry's placement, unique GUIDs, BAT and
// metadata present once, no unknown required region, no overlap between
// regions. Placement against the log and the file length is the caller's.
Status ParseRegionTable(const uint8_t* p, uint64_t file_offset, RegionTable* out);
// Writes the 64 KiB table with its checksum.
void SerializeRegionTable(const RegionTable& table, uint8_t* p);

}  // namespace vhdx::format
