#include "support/image_builder.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "format/constants.h"
#include "format/crc32c.h"
#include "util/coding.h"

namespace vhdx::test {

using namespace format;

// --- SparseMemoryFile --------------------------------------------------------

SparseMemoryFile::SparseMemoryFile(std::string name, bool writable)
    : name_(std::move(name)), writable_(writable) {}

SparseMemoryFile::SparseMemoryFile(const SparseMemoryFile& other, std::string name, bool writable)
    : name_(std::move(name)), writable_(writable) {
  std::shared_lock lock(other.mu_);
  size_ = other.size_;
  pages_ = other.pages_;
}

Result<size_t> SparseMemoryFile::ReadAt(uint64_t offset, void* buf, size_t n) const {
  std::shared_lock lock(mu_);
  if (offset >= size_) return size_t{0};
  n = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
  auto* out = static_cast<uint8_t*>(buf);
  for (size_t done = 0; done < n;) {
    uint64_t pos = offset + done;
    uint64_t in_page = pos % kPageSize;
    size_t k = static_cast<size_t>(std::min<uint64_t>(n - done, kPageSize - in_page));
    auto it = pages_.find(pos / kPageSize);
    if (it == pages_.end())
      std::memset(out + done, 0, k);
    else
      std::memcpy(out + done, it->second.data() + in_page, k);
    done += k;
  }
  return n;
}

Result<uint64_t> SparseMemoryFile::NextData(uint64_t offset) const {
  std::shared_lock lock(mu_);
  auto it = pages_.lower_bound(offset / kPageSize);
  if (it == pages_.end()) return std::max(offset, size_);
  return std::min(std::max(offset, it->first * kPageSize), std::max(offset, size_));
}

Status SparseMemoryFile::WriteAt(uint64_t offset, const void* buf, size_t n) {
  if (!writable_) return ReadOnly();
  std::unique_lock lock(mu_);
  const auto* in = static_cast<const uint8_t*>(buf);
  for (size_t done = 0; done < n;) {
    uint64_t pos = offset + done;
    uint64_t in_page = pos % kPageSize;
    size_t k = static_cast<size_t>(std::min<uint64_t>(n - done, kPageSize - in_page));
    auto& page = pages_[pos / kPageSize];
    if (page.empty()) page.assign(kPageSize, 0);
    std::memcpy(page.data() + in_page, in + done, k);
    done += k;
  }
  size_ = std::max(size_, offset + n);
  return Status::Ok();
}

Result<uint64_t> SparseMemoryFile::Size() const {
  std::shared_lock lock(mu_);
  return size_;
}

void SparseMemoryFile::ZeroRangeLocked(uint64_t offset, uint64_t length) {
  const uint64_t end = offset + length;
  for (auto it = pages_.lower_bound(offset / kPageSize); it != pages_.end();) {
    uint64_t start = it->first * kPageSize;
    if (start >= end) break;
    uint64_t a = std::max(start, offset), b = std::min(start + kPageSize, end);
    if (a == start && b == start + kPageSize) {
      it = pages_.erase(it);
      continue;
    }
    std::memset(it->second.data() + (a - start), 0, b - a);
    ++it;
  }
}

Status SparseMemoryFile::Truncate(uint64_t size) {
  if (!writable_) return ReadOnly();
  std::unique_lock lock(mu_);
  // Bytes past the old end must read as zeros if the file grows again.
  if (size < size_) ZeroRangeLocked(size, size_ - size);
  size_ = size;
  return Status::Ok();
}

Status SparseMemoryFile::PunchHole(uint64_t offset, uint64_t length) {
  if (!writable_) return ReadOnly();
  std::unique_lock lock(mu_);
  ZeroRangeLocked(offset, length);
  return Status::Ok();
}

Status SparseMemoryFile::Allocate(uint64_t offset, uint64_t length) {
  if (!writable_) return ReadOnly();
  std::unique_lock lock(mu_);
  size_ = std::max(size_, offset + length);
  return Status::Ok();
}

Result<uint64_t> SparseMemoryFile::AllocatedSize() const {
  std::shared_lock lock(mu_);
  return pages_.size() * kPageSize;
}

void SparseMemoryFile::ForEachPage(
    const std::function<void(uint64_t, std::span<const uint8_t>)>& fn) const {
  std::shared_lock lock(mu_);
  for (const auto& [number, bytes] : pages_) {
    uint64_t start = number * kPageSize;
    if (start >= size_) break;
    fn(start, std::span<const uint8_t>(bytes.data(), std::min<uint64_t>(kPageSize, size_ - start)));
  }
}

// --- ImageBuilder ------------------------------------------------------------

namespace {

// Fixed GUIDs keep every built image byte-for-byte reproducible.
Guid PatternGuid(uint8_t b) {
  Guid g;
  g.bytes.fill(b);
  return g;
}

void Require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(std::string("ImageBuilder: ") + what);
}

std::vector<uint8_t> U32(uint32_t v) {
  std::vector<uint8_t> b(4);
  EncodeFixed32(b.data(), v);
  return b;
}
std::vector<uint8_t> U64(uint64_t v) {
  std::vector<uint8_t> b(8);
  EncodeFixed64(b.data(), v);
  return b;
}

}  // namespace

ImageBuilder::ImageBuilder(const ImageSpec& spec) : spec_(spec), file_("builder.vhdx", true) {
  const bool differencing = spec.type == DiskType::kDifferencing;
  auto geo =
      Geometry::Make(spec.virtual_size, spec.block_size, spec.logical_sector_size, differencing);
  Require(geo.ok(), "invalid geometry");
  geo_ = *geo;
  bat_length_ = std::max<uint64_t>(MiB, RoundUp(geo_.total_entries * 8, MiB));
  log_offset_ = 1 * MiB;
  log_length_ = 1 * MiB;
  if (spec.layout == Layout::kWindows) {
    metadata_offset_ = 2 * MiB;
    bat_offset_ = 3 * MiB;
  } else {
    bat_offset_ = 2 * MiB;
    metadata_offset_ = bat_offset_ + bat_length_;
  }
  SetFileSize(std::max(bat_offset_ + bat_length_, metadata_offset_ + MiB));

  std::vector<uint8_t> ident(64 * KiB);
  SerializeFileIdentifier(FileIdentifier{"libvhdx test ImageBuilder"}, ident.data());
  WriteFile(0, ident);

  for (int i = 0; i < 2; ++i) {
    Header& h = headers_[i];
    h.sequence_number = 1 + i;
    h.file_write_guid = PatternGuid(0x11);
    h.data_write_guid = PatternGuid(0x22);
    h.log_length = log_length_;
    h.log_offset = log_offset_;
  }
  log_guid_ = PatternGuid(0x33);
  WriteHeaders();

  const uint32_t required = spec.layout == Layout::kWindows ? 1 : 0;
  regions_.entries = {
      {kBatRegionGuid, bat_offset_, static_cast<uint32_t>(bat_length_), required},
      {kMetadataRegionGuid, metadata_offset_, static_cast<uint32_t>(MiB), required}};
  WriteRegionTables();

  // System items with the flags Windows writes (digest §4.3).
  FileParameters fp{spec.block_size, spec.type == DiskType::kFixed, differencing};
  std::vector<uint8_t> fp_bytes(8);
  SerializeFileParameters(fp, fp_bytes.data());
  const uint32_t disk = kMetaIsVirtualDisk | kMetaIsRequired;
  Guid disk_id = PatternGuid(0x44);
  next_item_offset_ = kMetadataTableSize;
  PlaceMetadataItem(kFileParametersGuid, fp_bytes, kMetaIsRequired);
  PlaceMetadataItem(kVirtualDiskSizeGuid, U64(spec.virtual_size), disk);
  if (spec.layout == Layout::kWindows) {
    PlaceMetadataItem(kLogicalSectorSizeGuid, U32(spec.logical_sector_size), disk);
    PlaceMetadataItem(kPhysicalSectorSizeGuid, U32(spec.physical_sector_size), disk);
    PlaceMetadataItem(kVirtualDiskIdGuid, disk_id.bytes, disk);
  } else {
    PlaceMetadataItem(kVirtualDiskIdGuid, disk_id.bytes, disk);
    PlaceMetadataItem(kLogicalSectorSizeGuid, U32(spec.logical_sector_size), disk);
    PlaceMetadataItem(kPhysicalSectorSizeGuid, U32(spec.physical_sector_size), disk);
  }
  if (differencing) {
    ParentLocator loc;
    loc.locator_type = kVhdxParentLocatorType;
    loc.entries = spec.parent_locator;
    if (loc.entries.empty())
      loc.entries = {{"parent_linkage", "{22222222-2222-2222-2222-222222222222}"},
                     {"relative_path", ".\\parent.vhdx"},
                     {"absolute_win32_path", "C:\\images\\parent.vhdx"}};
    PlaceMetadataItem(kParentLocatorGuid, SerializeParentLocator(loc), kMetaIsRequired);
  }
  WriteMetadataTable();

  if (spec.type == DiskType::kFixed)
    for (uint64_t b = 0; b < geo_.payload_blocks; ++b) AllocateBlock(b);
}

uint64_t ImageBuilder::file_size() const { return *file_.Size(); }

void ImageBuilder::SetBatEntry(uint64_t index, uint8_t state, uint64_t file_offset) {
  Require(index < bat_length_ / 8, "BAT index beyond the BAT region");
  Require(file_offset % MiB == 0, "BAT file offset not MiB-aligned");
  WriteFile(bat_offset_ + 8 * index, U64(BatEntry{state, file_offset}.Encode()));
}

uint64_t ImageBuilder::bat_entry(uint64_t index) const {
  return DecodeFixed64(ReadFile(bat_offset_ + 8 * index, 8).data());
}

void ImageBuilder::SetBlock(uint64_t block, uint8_t state, uint64_t file_offset) {
  Require(block < geo_.payload_blocks, "block beyond the virtual disk");
  SetBatEntry(geo_.PayloadIndex(block), state, file_offset);
}

uint64_t ImageBuilder::AppendSpace(uint64_t length) {
  uint64_t start = RoundUp(file_size(), MiB);
  SetFileSize(start + length);
  return start;
}

uint64_t ImageBuilder::AllocateBlock(uint64_t block) {
  Require(block < geo_.payload_blocks, "block beyond the virtual disk");
  BatEntry e = BatEntry::Decode(bat_entry(geo_.PayloadIndex(block)));
  if (e.state == kPayloadFullyPresent) return e.file_offset;
  uint64_t offset = AppendSpace(geo_.block_size);
  SetBlock(block, kPayloadFullyPresent, offset);
  return offset;
}

void ImageBuilder::WriteVirtual(uint64_t offset, std::span<const uint8_t> data) {
  Require(offset + data.size() <= geo_.virtual_size, "write beyond the virtual disk");
  for (size_t done = 0; done < data.size();) {
    uint64_t pos = offset + done;
    uint64_t block = pos / geo_.block_size, in_block = pos % geo_.block_size;
    size_t k =
        static_cast<size_t>(std::min<uint64_t>(data.size() - done, geo_.block_size - in_block));
    WriteFile(AllocateBlock(block) + in_block, data.subspan(done, k));
    done += k;
  }
}

void ImageBuilder::WriteFile(uint64_t offset, std::span<const uint8_t> data) {
  Require(file_.WriteAt(offset, data.data(), data.size()).ok(), "write failed");
}

std::vector<uint8_t> ImageBuilder::ReadFile(uint64_t offset, size_t n) const {
  std::vector<uint8_t> out(n, 0);  // past the end reads as zeros, like a hole
  Require(file_.ReadAt(offset, out.data(), n).ok(), "read failed");
  return out;
}

void ImageBuilder::SetFileSize(uint64_t size) {
  Require(file_.Truncate(size).ok(), "truncate failed");
}

uint64_t ImageBuilder::AddRegion(const Guid& guid, uint32_t length, bool required) {
  Require(length % MiB == 0, "region length not a MiB multiple");
  uint64_t offset = AppendSpace(length);
  regions_.entries.push_back({guid, offset, length, required ? 1u : 0u});
  WriteRegionTables();
  return offset;
}

void ImageBuilder::AddMetadataItem(const Guid& id, std::span<const uint8_t> data, uint32_t flags) {
  PlaceMetadataItem(id, data, flags);
  WriteMetadataTable();
}

void ImageBuilder::PlaceMetadataItem(const Guid& id, std::span<const uint8_t> data,
                                     uint32_t flags) {
  Require(next_item_offset_ + data.size() <= MiB, "metadata region full");
  MetadataEntry e{id, data.empty() ? 0 : next_item_offset_, static_cast<uint32_t>(data.size()),
                  flags};
  metadata_.entries.push_back(e);
  WriteFile(metadata_offset_ + next_item_offset_, data);
  next_item_offset_ += static_cast<uint32_t>(data.size());
}

void ImageBuilder::SetHeader(int slot, const Header& h) {
  headers_[slot] = h;
  WriteHeaders();
}

void ImageBuilder::DamageHeader(int slot) {
  uint64_t at = (slot == 0 ? kHeader1Offset : kHeader2Offset) + 200;  // reserved, checksummed
  WriteFile(at, std::vector<uint8_t>{static_cast<uint8_t>(ReadFile(at, 1)[0] ^ 0x5A)});
}

void ImageBuilder::DamageRegionTable(int copy) {
  uint64_t at = (copy == 0 ? kRegionTable1Offset : kRegionTable2Offset) + 60000;
  WriteFile(at, std::vector<uint8_t>{static_cast<uint8_t>(ReadFile(at, 1)[0] ^ 0x5A)});
}

void ImageBuilder::WriteHeaders() {
  uint8_t raw[kHeaderSize];
  SerializeHeader(headers_[0], raw);
  WriteFile(kHeader1Offset, raw);
  SerializeHeader(headers_[1], raw);
  WriteFile(kHeader2Offset, raw);
}

void ImageBuilder::WriteRegionTables() {
  std::vector<uint8_t> raw(kRegionTableSize);
  SerializeRegionTable(regions_, raw.data());
  WriteFile(kRegionTable1Offset, raw);
  WriteFile(kRegionTable2Offset, raw);
}

void ImageBuilder::WriteMetadataTable() {
  std::vector<uint8_t> raw(kMetadataTableSize);
  SerializeMetadataTable(metadata_, raw.data());
  WriteFile(metadata_offset_, raw);
}

void ImageBuilder::MarkLogDirty() {
  for (Header& h : headers_) h.log_guid = log_guid_;
  WriteHeaders();
}

uint32_t ImageBuilder::WriteLogEntry(const LogEntrySpec& spec) {
  const uint32_t pos = spec.position.value_or(log_cursor_);
  Require(pos % kLogSectorSize == 0 && pos < log_length_, "log position");
  const uint64_t size = file_size();
  std::vector<uint8_t> entry = SerializeLogEntry(
      spec.sequence_number, spec.tail.value_or(pos), spec.log_guid.value_or(log_guid_),
      spec.flushed_file_offset.value_or(size), spec.last_file_offset.value_or(size), spec.updates);
  if (spec.edit) {
    spec.edit(entry);
    entry.resize(RoundUp(entry.size(), kLogSectorSize), 0);  // whole sectors, whatever the edit did
    EncodeFixed32(entry.data() + 4, crc32c::ValueWithZeroedField(entry.data(), entry.size(), 4));
  }
  Require(entry.size() <= log_length_, "log entry larger than the log");
  for (size_t s = 0; s < entry.size(); s += kLogSectorSize) {
    uint64_t ring = (pos + s) % log_length_;
    WriteFile(log_offset_ + ring, std::span<const uint8_t>(entry).subspan(s, kLogSectorSize));
  }
  log_cursor_ = static_cast<uint32_t>((pos + entry.size()) % log_length_);
  return pos;
}

LogUpdate ImageBuilder::BatSectorUpdate(uint64_t index, uint8_t state, uint64_t file_offset) const {
  uint64_t at = bat_offset_ + 8 * index;
  uint64_t sector = at / kLogSectorSize * kLogSectorSize;
  LogUpdate u = DataUpdate(sector, ReadFile(sector, kLogSectorSize));
  EncodeFixed64(u.data.data() + (at - sector), BatEntry{state, file_offset}.Encode());
  return u;
}

LogUpdate ImageBuilder::DataUpdate(uint64_t file_offset, std::vector<uint8_t> sector) {
  Require(sector.size() == kLogSectorSize, "data update must be 4 KiB");
  LogUpdate u;
  u.file_offset = file_offset;
  u.data = std::move(sector);
  return u;
}

LogUpdate ImageBuilder::ZeroUpdate(uint64_t file_offset, uint64_t length) {
  LogUpdate u;
  u.file_offset = file_offset;
  u.is_zero = true;
  u.zero_length = length;
  return u;
}

std::vector<uint8_t> ImageBuilder::Build() const {
  Require(file_size() <= (uint64_t{1} << 30), "image too large for Build(); use BuildFile()");
  std::vector<uint8_t> out(file_size(), 0);
  file_.ForEachPage([&](uint64_t offset, std::span<const uint8_t> bytes) {
    std::memcpy(out.data() + offset, bytes.data(), bytes.size());
  });
  return out;
}

std::unique_ptr<SparseMemoryFile> ImageBuilder::BuildFile(bool writable, std::string name) const {
  return std::make_unique<SparseMemoryFile>(file_, std::move(name), writable);
}

void ImageBuilder::WriteTo(const std::string& path) const {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  Require(fd >= 0, "cannot create the output file");
  bool ok = true;
  file_.ForEachPage([&](uint64_t offset, std::span<const uint8_t> bytes) {
    if (std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; })) return;
    ok = ok && ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)) ==
                   static_cast<ssize_t>(bytes.size());
  });
  ok = ok && ::ftruncate(fd, static_cast<off_t>(file_size())) == 0;
  ok = (::close(fd) == 0) && ok;
  Require(ok, "cannot write the output file");
}

}  // namespace vhdx::test
