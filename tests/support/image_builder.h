// ImageBuilder: assembles a VHDX file in memory from the serialisers in
// src/format, so tests can state exactly which bytes an image holds — every
// BAT state, odd geometries, unknown regions and items, damaged copies and
// dirty logs — without depending on a writer.
//
//   ImageBuilder b({.virtual_size = 8 * MiB, .block_size = 2 * MiB});
//   b.WriteVirtual(4096, bytes);                  // allocates block 0
//   auto image = Image::Open(b.BuildFile());
//
// The file lives in a SparseMemoryFile, so huge virtual sizes (a 64 TiB
// image has a 513 MiB BAT) cost only the pages actually written.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "format/bat.h"
#include "format/header.h"
#include "format/log_format.h"
#include "format/metadata.h"
#include "format/region_table.h"
#include "vhdx/file.h"
#include "vhdx/image.h"

namespace vhdx::test {

// A File held in memory as 64 KiB pages allocated on first write; unwritten
// ranges read as zeros. Concurrent reads are safe.
class SparseMemoryFile final : public File {
 public:
  SparseMemoryFile(std::string name, bool writable);
  // A deep copy of `other` under a new name and access mode.
  SparseMemoryFile(const SparseMemoryFile& other, std::string name, bool writable);
  SparseMemoryFile(const SparseMemoryFile& other)
      : SparseMemoryFile(other, other.name_, other.writable_) {}
  SparseMemoryFile& operator=(const SparseMemoryFile&) = delete;

  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override;
  Status WriteAt(uint64_t offset, const void* buf, size_t n) override;
  Status Flush() override { return Status::Ok(); }
  Result<uint64_t> Size() const override;
  Status Truncate(uint64_t size) override;
  Status PunchHole(uint64_t offset, uint64_t length) override;
  // Extends the size; pages are still created only when written.
  Status Allocate(uint64_t offset, uint64_t length) override;
  Result<uint64_t> AllocatedSize() const override;
  Result<uint64_t> NextData(uint64_t offset) const override;
  bool writable() const override { return writable_; }
  const std::string& name() const override { return name_; }

  // Calls `fn(offset, bytes)` for every allocated page (clipped to the size).
  void ForEachPage(const std::function<void(uint64_t, std::span<const uint8_t>)>& fn) const;

 private:
  static constexpr uint64_t kPageSize = 64 * 1024;
  static Status ReadOnly() { return Status(Errc::kReadOnly, "file is open read-only"); }
  void ZeroRangeLocked(uint64_t offset, uint64_t length);

  std::string name_;
  bool writable_;
  mutable std::shared_mutex mu_;
  uint64_t size_ = 0;
  std::map<uint64_t, std::vector<uint8_t>> pages_;  // page number -> kPageSize bytes
};

// Where the builder puts the log, metadata and BAT (digest §10).
enum class Layout {
  kWindows,  // log @1 MiB, metadata @2 MiB, BAT @3 MiB; regions Required = 1
  kQemu,     // log @1 MiB, BAT @2 MiB, metadata after the BAT; regions Required = 0
};

struct ImageSpec {
  DiskType type = DiskType::kDynamic;
  uint64_t virtual_size = 64ull << 20;
  uint32_t block_size = 1u << 20;
  uint32_t logical_sector_size = 512;
  uint32_t physical_sector_size = 4096;
  Layout layout = Layout::kWindows;
  // Differencing images only (key, value); empty gives Hyper-V-like entries
  // whose relative_path is ".\parent.vhdx".
  std::vector<std::pair<std::string, std::string>> parent_locator{};
};

// One log entry to write into the ring. Defaults describe a well-formed
// entry that is its own tail.
struct LogEntrySpec {
  uint64_t sequence_number = 1;
  std::vector<format::LogUpdate> updates{};
  std::optional<uint32_t> position{};             // log offset; default: after the previous entry
  std::optional<uint32_t> tail{};                 // default: the entry's own position
  std::optional<Guid> log_guid{};                 // default: the builder's log GUID
  std::optional<uint64_t> flushed_file_offset{};  // default: the file size now
  std::optional<uint64_t> last_file_offset{};     // default: the file size now
  // Edits the serialised entry before its checksum is recomputed, for
  // hostile fields that must fail on their own rather than on the CRC.
  std::function<void(std::vector<uint8_t>&)> edit{};
};

// Copyable: copy a builder to derive variants of one image.
class ImageBuilder {
 public:
  explicit ImageBuilder(const ImageSpec& spec = {});

  const ImageSpec& spec() const { return spec_; }
  const format::Geometry& geometry() const { return geo_; }
  uint64_t log_offset() const { return log_offset_; }
  uint32_t log_length() const { return log_length_; }
  uint64_t metadata_offset() const { return metadata_offset_; }
  uint64_t bat_offset() const { return bat_offset_; }
  uint64_t bat_length() const { return bat_length_; }
  uint64_t file_size() const;

  // --- BAT and payload --------------------------------------------------
  // Writes the raw BAT entry at `index` (payload or sector-bitmap slot).
  void SetBatEntry(uint64_t index, uint8_t state, uint64_t file_offset = 0);
  uint64_t bat_entry(uint64_t index) const;
  // Sets the BAT entry of payload block `block`.
  void SetBlock(uint64_t block, uint8_t state, uint64_t file_offset = 0);
  // Extends the file by `length` zero bytes at the next 1 MiB boundary;
  // returns where the new space starts. The BAT is not touched.
  uint64_t AppendSpace(uint64_t length);
  // Makes `block` FULLY_PRESENT in new space at the end of the file unless it
  // already is; returns its file offset.
  uint64_t AllocateBlock(uint64_t block);
  // Writes `data` at virtual offset `offset`, allocating blocks as needed.
  void WriteVirtual(uint64_t offset, std::span<const uint8_t> data);

  // Raw file bytes (for damage the other knobs do not cover).
  void WriteFile(uint64_t offset, std::span<const uint8_t> data);
  std::vector<uint8_t> ReadFile(uint64_t offset, size_t n) const;
  void SetFileSize(uint64_t size);

  // --- Regions and metadata ---------------------------------------------
  // Adds a region of `length` bytes (MiB multiple) at the end of the file and
  // rewrites both region tables; returns its offset.
  uint64_t AddRegion(const Guid& guid, uint32_t length, bool required);
  // Adds a metadata item (flags: format::kMetaIsUser | kMetaIsVirtualDisk |
  // kMetaIsRequired) after the existing items and rewrites the table.
  void AddMetadataItem(const Guid& id, std::span<const uint8_t> data, uint32_t flags);

  // --- Headers ----------------------------------------------------------
  // Slot 0 is at 64 KiB, slot 1 at 128 KiB. Defaults: sequence numbers 1 and
  // 2 (slot 1 current), equal GUIDs, clean log.
  const format::Header& header(int slot) const { return headers_[slot]; }
  void SetHeader(int slot, const format::Header& h);
  // Breaks the checksum of a header / region table copy (0 or 1). Do this
  // last: later header or region changes rewrite the structure.
  void DamageHeader(int slot);
  void DamageRegionTable(int copy);

  // --- Log --------------------------------------------------------------
  const Guid& log_guid() const { return log_guid_; }
  // Puts the builder's log GUID into both headers: the image needs replay.
  void MarkLogDirty();
  // Serialises an entry into the ring (sector by sector, wrapping at the ring
  // end) and returns its log offset. Nothing is applied in place.
  uint32_t WriteLogEntry(const LogEntrySpec& entry);
  // The 4 KiB BAT sector holding entry `index` as the file holds it now,
  // with that entry replaced: the update a writer would log.
  format::LogUpdate BatSectorUpdate(uint64_t index, uint8_t state, uint64_t file_offset) const;
  static format::LogUpdate DataUpdate(uint64_t file_offset, std::vector<uint8_t> sector);
  static format::LogUpdate ZeroUpdate(uint64_t file_offset, uint64_t length);

  // --- Output -----------------------------------------------------------
  // The whole file as bytes; meant for images of a few hundred MiB at most.
  std::vector<uint8_t> Build() const;
  // A sparse in-memory copy of the file.
  std::unique_ptr<SparseMemoryFile> BuildFile(bool writable = false,
                                              std::string name = "builder.vhdx") const;
  // Writes the file to `path` as a sparse host file.
  void WriteTo(const std::string& path) const;

 private:
  void WriteHeaders();
  void WriteRegionTables();
  void WriteMetadataTable();
  void PlaceMetadataItem(const Guid& id, std::span<const uint8_t> data, uint32_t flags);

  ImageSpec spec_;
  format::Geometry geo_;
  uint64_t log_offset_ = 0;
  uint32_t log_length_ = 0;
  uint64_t metadata_offset_ = 0;
  uint64_t bat_offset_ = 0;
  uint64_t bat_length_ = 0;
  format::Header headers_[2];
  format::RegionTable regions_;
  format::MetadataTable metadata_;
  uint32_t next_item_offset_ = 0;  // within the metadata region
  Guid log_guid_;
  uint32_t log_cursor_ = 0;
  SparseMemoryFile file_;
};

}  // namespace vhdx::test
