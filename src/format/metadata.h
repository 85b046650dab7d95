// Metadata region: table, system items and the parent locator (digest §4).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "vhdx/guid.h"
#include "vhdx/status.h"

namespace vhdx::format {

inline constexpr uint32_t kMetaIsUser = 1u << 0;
inline constexpr uint32_t kMetaIsVirtualDisk = 1u << 1;
inline constexpr uint32_t kMetaIsRequired = 1u << 2;

struct MetadataEntry {
  Guid item_id;
  uint32_t offset = 0;  // from the start of the metadata region
  uint32_t length = 0;
  uint32_t flags = 0;
  bool is_user() const { return flags & kMetaIsUser; }
  bool is_required() const { return flags & kMetaIsRequired; }
};

struct MetadataTable {
  std::vector<MetadataEntry> entries;
  // The system (IsUser = 0) item with this GUID.
  const MetadataEntry* FindSystem(const Guid& id) const;
};

// Name of a known system item ("file_parameters", ...) or nullptr.
const char* SystemItemName(const Guid& id);

// Parses and validates the 64 KiB table at the start of a metadata region
// of `region_length` bytes at `region_offset`: signature, entry count,
// item ranges inside the region, no overlap, unique (ItemId, IsUser), at
// most 1024 user items, no unknown required item (system or user).
Status ParseMetadataTable(const uint8_t* p, uint64_t region_offset, uint64_t region_length,
                          MetadataTable* out);
// Writes the 64 KiB table.
void SerializeMetadataTable(const MetadataTable& table, uint8_t* p);

struct FileParameters {
  uint32_t block_size = 0;
  bool leave_block_allocated = false;
  bool has_parent = false;
};

// Each parser gets the item bytes (`n` = item length) and the file offset of
// the item for messages, and validates the value's range.
Status ParseFileParameters(const uint8_t* p, size_t n, uint64_t off, FileParameters* out);
Status ParseVirtualDiskSize(const uint8_t* p, size_t n, uint64_t off, uint64_t* out);
Status ParseSectorSize(const uint8_t* p, size_t n, uint64_t off, const char* which, uint32_t* out);
Status ParseVirtualDiskId(const uint8_t* p, size_t n, uint64_t off, Guid* out);
void SerializeFileParameters(const FileParameters& fp, uint8_t* p /*8 bytes*/);

struct ParentLocator {
  Guid locator_type;
  std::vector<std::pair<std::string, std::string>> entries;  // UTF-8 key, value
  const std::string* Get(const std::string& key) const;
};

// Validates the header, every key/value range (inside the item, non-empty,
// even length, valid UTF-16 without NUL), unique keys, the VHDX locator type
// and the presence of parent_linkage and at least one path key.
Status ParseParentLocator(const uint8_t* p, size_t n, uint64_t off, ParentLocator* out);
std::vector<uint8_t> SerializeParentLocator(const ParentLocator& locator);

}  // namespace vhdx::format
