// Base images for the hostile-input tests and the tools that damage them.
//
// A base image is a valid VHDX held in memory together with its Layout: the
// structures read back with the src/format parsers. Damage is applied by
// re-serialising those structures with one field changed, so that every
// checksum is valid unless the damage is the checksum itself.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "format/bat.h"
#include "format/header.h"
#include "format/log_format.h"
#include "format/metadata.h"
#include "format/region_table.h"
#include "vhdx/guid.h"

namespace vhdx::hostile {

using Bytes = std::vector<uint8_t>;

// The newest valid log entry whose LogGuid matches the current header.
struct LogEntryCopy {
  uint32_t log_pos = 0;  // offset inside the log
  format::LogEntryHeader header;
  std::vector<format::LogUpdate> updates;  // its descriptors, data rebuilt
};

struct Layout {
  uint64_t file_size = 0;
  std::array<format::Header, 2> headers;
  int current = 0;  // current header slot
  format::RegionTable regions;
  format::RegionEntry bat, metadata;
  format::MetadataTable meta;
  format::FileParameters params;
  uint64_t virtual_size = 0;
  uint32_t logical_sector_size = 0;
  format::Geometry geo;
  std::vector<uint64_t> bat_entries;  // as stored in the file (before any log replay)
  std::optional<LogEntryCopy> active_log;

  const format::Header& header() const { return headers[current]; }
  const format::MetadataEntry& Item(const Guid& id) const;  // throws if absent
  uint64_t ItemOffset(const Guid& id) const { return metadata.file_offset + Item(id).offset; }
  // Payload blocks in a given state, in block order.
  std::vector<uint64_t> BlocksInState(uint8_t state) const;
  // Whether the active log rewrites the byte at file offset `offset`.
  bool LogRewrites(uint64_t offset) const;
  // A 1 MiB-aligned offset inside the file that no structure or block uses.
  std::optional<uint64_t> FreeMiB() const;
};

// Parses every structure of a valid image; throws std::runtime_error with
// the reason when the image is not one.
Layout ParseLayout(const Bytes& image);

struct BaseImage {
  std::string name;
  Bytes bytes;
  Layout layout;
};

// Creates an image with qemu-img and fills it with qemu-io writes
// ("write -P 0xa5 0 3M" ...). Throws when the tools fail.
BaseImage MakeQemuImage(const std::string& name, const std::string& create_options,
                        const std::string& size, const std::vector<std::string>& writes);
// Loads a corpus image (decompressed by the test support library).
BaseImage LoadCorpusImage(const std::string& name, const std::string& corpus_file);
// Turns a clean image into one whose log must be replayed: the BAT entry of
// the first present block is cleared in place and a log entry carries the
// original BAT sector, so only a correct replay reads the original content.
BaseImage MakeDirtyLogImage(const std::string& name, const BaseImage& clean);

// --- damage helpers: each edits `image` in place --------------------------

// Re-serialises header slot(s) after `edit` (checksum recomputed).
void EditHeader(Bytes& image, const Layout& l, int slot,
                const std::function<void(format::Header&)>& edit);
void EditBothHeaders(Bytes& image, const Layout& l,
                     const std::function<void(format::Header&)>& edit);
// Re-serialises region table copy 0 and/or 1 after `edit`.
void EditRegionTable(Bytes& image, const Layout& l, int copy,
                     const std::function<void(format::RegionTable&)>& edit);
void EditBothRegionTables(Bytes& image, const Layout& l,
                          const std::function<void(format::RegionTable&)>& edit);
// Recomputes the checksum of a region table copy after raw byte edits.
void FixRegionTableChecksum(Bytes& image, int copy);
// Re-serialises the metadata table after `edit` (it has no checksum).
void EditMetadataTable(Bytes& image, const Layout& l,
                       const std::function<void(format::MetadataTable&)>& edit);
void PutU16(Bytes& image, uint64_t offset, uint16_t value);
void PutU32(Bytes& image, uint64_t offset, uint32_t value);
void PutU64(Bytes& image, uint64_t offset, uint64_t value);
void SetBatEntry(Bytes& image, const Layout& l, uint64_t index, uint64_t raw);
// The active log entry rebuilt after `edit` and written back at its place
// (SerializeLogEntry: checksum and data sectors consistent).
void EditActiveLogEntry(Bytes& image, const Layout& l,
                        const std::function<void(LogEntryCopy&)>& edit);
// File offset of the active log entry; recompute its checksum after raw edits.
uint64_t ActiveLogEntryOffset(const Layout& l);
void FixLogEntryChecksum(Bytes& image, const Layout& l);

// A fixed GUID derived from `seed` (deterministic damage).
Guid TestGuid(uint8_t seed);

}  // namespace vhdx::hostile
