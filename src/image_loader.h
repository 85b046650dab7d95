// The stages of opening an image (digest §8.1 read side, §9 checks), shared
// by Image::Open, which stops at the first problem, and Check, which records
// every problem it can and carries on.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "format/bat.h"
#include "format/header.h"
#include "format/metadata.h"
#include "format/region_table.h"
#include "log_reader.h"
#include "vhdx/file.h"
#include "vhdx/image.h"

namespace vhdx {

struct HeaderSet {
  std::array<format::Header, 2> headers;
  std::array<Status, 2> problems;  // ok() = valid
  std::array<std::vector<uint8_t>, 2> raw;
  Status choice;        // why no header is current, when !choice.ok()
  int current = -1;
  const format::Header& Current() const { return headers[current]; }
};

// Reads both headers and picks the current one. Only I/O errors fail.
Result<HeaderSet> LoadHeaders(const File& file);

// Result of looking at the log of the current header.
struct LogState {
  bool dirty = false;
  std::optional<ActiveLog> active;
  uint64_t entries_validated = 0;
};

// When LogGuid is non-zero: checks the log lies in the file, finds the
// active sequence, applies the "Decide" rules (§7.5). Fails when the image
// cannot be read consistently.
Result<LogState> LoadLog(const File& file, const format::Header& header, uint64_t file_size);

struct RegionSet {
  format::RegionTable table;
  int used = -1;                   // 0 or 1
  std::array<Status, 2> problems;  // per copy
  std::array<std::vector<uint8_t>, 2> raw;
};

// Reads both region tables; uses copy 1 if valid, else copy 2.
Result<RegionSet> LoadRegions(const File& file);

// A named file range that no payload block may overlap.
struct Reserved {
  uint64_t start = 0, end = 0;
  std::string what;
};
// Header section, log and every region; checks that regions lie within the
// file and overlap neither the header section nor the log.
Result<std::vector<Reserved>> PlaceStructures(const format::Header& header,
                                              const format::RegionTable& regions,
                                              uint64_t file_size);

struct MetadataSet {
  uint64_t region_offset = 0;
  uint64_t region_length = 0;
  format::MetadataTable table;
  format::FileParameters params;
  uint64_t virtual_size = 0;
  uint32_t logical_sector_size = 0;
  uint32_t physical_sector_size = 0;
  Guid virtual_disk_id;
  std::optional<format::ParentLocator> parent;
};

// Reads the metadata table and every known system item, validating each.
Result<MetadataSet> LoadMetadata(const File& file, const format::RegionEntry& region);

// What an allocated BAT entry holds, named in messages ("payload block 17",
// "sector bitmap"). Formatted only when a message is built: reads check an
// entry for every block they touch.
struct EntryLabel {
  const char* kind = "payload block";
  std::optional<uint64_t> block;
  std::string ToString() const;
};

// Checks a FULLY/PARTIALLY_PRESENT payload entry (or a present sector
// bitmap entry) whose used part is `used_length` bytes: non-zero offset,
// inside the file, clear of every reserved structure.
Status CheckAllocatedEntry(uint64_t bat_index, const format::BatEntry& entry, uint64_t used_length,
                           uint64_t file_size, const std::vector<Reserved>& reserved,
                           const EntryLabel& label);

// Operations that rewrite the BAT wholesale (resize, compact) refuse a
// damaged image: they would carry the damage along, or free space a damaged
// entry shares. kCorrupt naming the first of vhdx::Check's errors ("OP: the
// image has N error(s), first ...; nothing was DONE"), else Ok (check.cc).
Status RequireUndamaged(const File& file, const char* op, const char* done);

}  // namespace vhdx
