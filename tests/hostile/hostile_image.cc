#include "hostile/hostile_image.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "format/constants.h"
#include "format/crc32c.h"
#include "support/test_util.h"
#include "util/coding.h"

namespace vhdx::hostile {

using namespace format;

namespace {

[[noreturn]] void Throw(const std::string& what) { throw std::runtime_error(what); }

void Require(const Status& s, const std::string& what) {
  if (!s.ok()) Throw(what + ": " + s.message());
}

// Finds the newest entry of the log that matches `guid`, fits in the ring
// without wrapping and has a valid checksum.
std::optional<LogEntryCopy> FindActiveEntry(const Bytes& image, const Header& h) {
  std::optional<LogEntryCopy> best;
  for (uint32_t pos = 0; pos + kLogSectorSize <= h.log_length; pos += kLogSectorSize) {
    const uint8_t* p = image.data() + h.log_offset + pos;
    LogEntryHeader eh;
    if (!ParseLogEntryHeader(p, &eh).ok() || eh.log_guid != h.log_guid) continue;
    if (uint64_t{pos} + eh.entry_length > h.log_length) continue;
    if (crc32c::ValueWithZeroedField(p, eh.entry_length, 4) != eh.checksum) continue;
    if (best && best->header.sequence_number > eh.sequence_number) continue;
    LogEntryCopy e;
    e.log_pos = pos;
    e.header = eh;
    uint64_t data_index = 0;
    for (uint32_t k = 0; k < eh.descriptor_count; ++k) {
      LogDescriptor d;
      Require(ParseLogDescriptor(p + 64 + 32 * k, eh.sequence_number, &d), "log descriptor");
      LogUpdate u;
      u.file_offset = d.file_offset;
      u.is_zero = d.is_zero;
      u.zero_length = d.zero_length;
      if (!d.is_zero) {
        u.data.resize(kLogSectorSize);
        ReconstructDataSector(d, p + (eh.DescriptorSectors() + data_index++) * kLogSectorSize,
                              u.data.data());
      }
      e.updates.push_back(std::move(u));
    }
    best = std::move(e);
  }
  return best;
}

}  // namespace

const MetadataEntry& Layout::Item(const Guid& id) const {
  const MetadataEntry* e = meta.FindSystem(id);
  if (!e) Throw("metadata item " + id.ToString() + " is absent");
  return *e;
}

std::vector<uint64_t> Layout::BlocksInState(uint8_t state) const {
  std::vector<uint64_t> out;
  for (uint64_t b = 0; b < geo.payload_blocks; ++b)
    if ((bat_entries[geo.PayloadIndex(b)] & 7) == state) out.push_back(b);
  return out;
}

bool Layout::LogRewrites(uint64_t offset) const {
  if (!active_log) return false;
  for (const auto& u : active_log->updates)
    if (offset >= u.file_offset &&
        offset - u.file_offset < (u.is_zero ? u.zero_length : kLogSectorSize))
      return true;
  return false;
}

std::optional<uint64_t> Layout::FreeMiB() const {
  std::vector<bool> used(file_size / MiB, false);
  auto mark = [&](uint64_t start, uint64_t length) {
    for (uint64_t m = start / MiB; m < DivCeil(start + length, MiB) && m < used.size(); ++m)
      used[m] = true;
  };
  mark(0, kHeaderSectionSize);
  mark(header().log_offset, header().log_length);
  for (const auto& r : regions.entries) mark(r.file_offset, r.length);
  for (uint64_t i = 0; i < bat_entries.size(); ++i) {
    BatEntry e = BatEntry::Decode(bat_entries[i]);
    if (e.file_offset != 0) mark(e.file_offset, geo.IsBitmapIndex(i) ? MiB : geo.block_size);
  }
  if (active_log)
    for (const auto& u : active_log->updates) mark(u.file_offset, u.is_zero ? u.zero_length : 4096);
  for (uint64_t m = 0; m < used.size(); ++m)
    if (!used[m]) return m * MiB;
  return std::nullopt;
}

Layout ParseLayout(const Bytes& image) {
  Layout l;
  l.file_size = image.size();
  if (l.file_size < kHeaderSectionSize) Throw("image shorter than 1 MiB");
  FileIdentifier id;
  Require(ParseFileIdentifier(image.data(), &id), "file identifier");
  const uint64_t header_offsets[2] = {kHeader1Offset, kHeader2Offset};
  Status header_status[2];
  for (int i = 0; i < 2; ++i)
    header_status[i] =
        ParseHeader(image.data() + header_offsets[i], header_offsets[i], &l.headers[i]);
  auto current =
      ChooseCurrentHeader(header_status[0].ok(), l.headers[0], image.data() + kHeader1Offset,
                          header_status[1].ok(), l.headers[1], image.data() + kHeader2Offset);
  Require(current.status(), "headers");
  l.current = *current;
  Require(ParseRegionTable(image.data() + kRegionTable1Offset, kRegionTable1Offset, &l.regions),
          "region table");
  l.bat = *l.regions.Find(kBatRegionGuid);
  l.metadata = *l.regions.Find(kMetadataRegionGuid);
  if (l.metadata.file_offset + l.metadata.length > l.file_size ||
      l.bat.file_offset + l.bat.length > l.file_size)
    Throw("regions past the end of the image");
  Require(ParseMetadataTable(image.data() + l.metadata.file_offset, l.metadata.file_offset,
                             l.metadata.length, &l.meta),
          "metadata table");
  auto item = [&](const Guid& g) { return image.data() + l.ItemOffset(g); };
  Require(ParseFileParameters(item(kFileParametersGuid), 8, 0, &l.params), "file parameters");
  Require(ParseVirtualDiskSize(item(kVirtualDiskSizeGuid), 8, 0, &l.virtual_size), "virtual size");
  Require(ParseSectorSize(item(kLogicalSectorSizeGuid), 4, 0, "logical sector size",
                          &l.logical_sector_size),
          "logical sector size");
  auto geo = Geometry::Make(l.virtual_size, l.params.block_size, l.logical_sector_size,
                            l.params.has_parent);
  Require(geo.status(), "geometry");
  l.geo = *geo;
  for (uint64_t i = 0; i < l.geo.total_entries; ++i)
    l.bat_entries.push_back(DecodeFixed64(image.data() + l.bat.file_offset + 8 * i));
  if (!l.header().log_guid.IsZero()) {
    l.active_log = FindActiveEntry(image, l.header());
    if (!l.active_log) Throw("dirty log without a valid entry");
  }
  return l;
}

BaseImage MakeQemuImage(const std::string& name, const std::string& create_options,
                        const std::string& size, const std::vector<std::string>& writes) {
  std::string path = test::ScratchPath("base-" + name + ".vhdx");
  auto created = test::Run(
      fmt::format("qemu-img create -q -f vhdx -o {} '{}' {}", create_options, path, size));
  if (created.exit_code != 0) Throw("qemu-img create failed: " + created.output);
  if (!writes.empty()) {
    std::string cmd = "qemu-io -f vhdx";
    for (const auto& w : writes) cmd += " -c 'write -q " + w + "'";
    auto wrote = test::Run(cmd + " '" + path + "'");
    if (wrote.exit_code != 0) Throw("qemu-io failed: " + wrote.output);
  }
  BaseImage base{name, test::ReadWholeFile(path), {}};
  base.layout = ParseLayout(base.bytes);
  return base;
}

BaseImage LoadCorpusImage(const std::string& name, const std::string& corpus_file) {
  BaseImage base{name, test::ReadWholeFile(test::DecompressCorpusImage(corpus_file)), {}};
  base.layout = ParseLayout(base.bytes);
  return base;
}

BaseImage MakeDirtyLogImage(const std::string& name, const BaseImage& clean) {
  const Layout& l = clean.layout;
  auto present = l.BlocksInState(kPayloadFullyPresent);
  if (present.empty() || l.header().log_length == 0) Throw("no present block or no log to use");
  BaseImage dirty{name, clean.bytes, {}};
  const uint64_t index = l.geo.PayloadIndex(present.front());
  const uint64_t sector = l.bat.file_offset + index * 8 / kLogSectorSize * kLogSectorSize;
  LogUpdate update;
  update.file_offset = sector;
  update.data.assign(clean.bytes.begin() + sector, clean.bytes.begin() + sector + kLogSectorSize);
  const Guid log_guid = TestGuid(0x61);
  Bytes entry = SerializeLogEntry(0x1000, 0, log_guid, l.file_size, l.file_size, {update});
  std::copy(entry.begin(), entry.end(), dirty.bytes.begin() + l.header().log_offset);
  SetBatEntry(dirty.bytes, l, index, 0);  // only the replayed BAT sector maps the block
  EditBothHeaders(dirty.bytes, l, [&](Header& h) { h.log_guid = log_guid; });
  dirty.layout = ParseLayout(dirty.bytes);
  return dirty;
}

void EditHeader(Bytes& image, const Layout& l, int slot, const std::function<void(Header&)>& edit) {
  Header h = l.headers[slot];
  edit(h);
  SerializeHeader(h, image.data() + (slot == 0 ? kHeader1Offset : kHeader2Offset));
}

void EditBothHeaders(Bytes& image, const Layout& l, const std::function<void(Header&)>& edit) {
  EditHeader(image, l, 0, edit);
  EditHeader(image, l, 1, edit);
}

void EditRegionTable(Bytes& image, const Layout& l, int copy,
                     const std::function<void(RegionTable&)>& edit) {
  RegionTable t = l.regions;
  edit(t);
  SerializeRegionTable(t, image.data() + (copy == 0 ? kRegionTable1Offset : kRegionTable2Offset));
}

void EditBothRegionTables(Bytes& image, const Layout& l,
                          const std::function<void(RegionTable&)>& edit) {
  EditRegionTable(image, l, 0, edit);
  EditRegionTable(image, l, 1, edit);
}

void FixRegionTableChecksum(Bytes& image, int copy) {
  uint8_t* p = image.data() + (copy == 0 ? kRegionTable1Offset : kRegionTable2Offset);
  EncodeFixed32(p + 4, crc32c::ValueWithZeroedField(p, kRegionTableSize, 4));
}

void EditMetadataTable(Bytes& image, const Layout& l,
                       const std::function<void(MetadataTable&)>& edit) {
  MetadataTable t = l.meta;
  edit(t);
  SerializeMetadataTable(t, image.data() + l.metadata.file_offset);
}

void PutU16(Bytes& image, uint64_t offset, uint16_t value) {
  EncodeFixed16(image.data() + offset, value);
}
void PutU32(Bytes& image, uint64_t offset, uint32_t value) {
  EncodeFixed32(image.data() + offset, value);
}
void PutU64(Bytes& image, uint64_t offset, uint64_t value) {
  EncodeFixed64(image.data() + offset, value);
}

void SetBatEntry(Bytes& image, const Layout& l, uint64_t index, uint64_t raw) {
  PutU64(image, l.bat.file_offset + 8 * index, raw);
}

uint64_t ActiveLogEntryOffset(const Layout& l) {
  if (!l.active_log) Throw("the image has no active log entry");
  return l.header().log_offset + l.active_log->log_pos;
}

void EditActiveLogEntry(Bytes& image, const Layout& l,
                        const std::function<void(LogEntryCopy&)>& edit) {
  LogEntryCopy e = *l.active_log;
  edit(e);
  const LogEntryHeader& h = e.header;
  Bytes entry = SerializeLogEntry(h.sequence_number, h.tail, h.log_guid, h.flushed_file_offset,
                                  h.last_file_offset, e.updates);
  if (e.log_pos + entry.size() > l.header().log_length) Throw("edited log entry does not fit");
  std::copy(entry.begin(), entry.end(), image.begin() + l.header().log_offset + e.log_pos);
}

void FixLogEntryChecksum(Bytes& image, const Layout& l) {
  uint8_t* p = image.data() + ActiveLogEntryOffset(l);
  // Over EntryLength bytes, clamped to the log and to at least the first
  // sector when the length itself is the damage.
  uint64_t room = l.header().log_length - l.active_log->log_pos;
  uint64_t length = std::clamp<uint64_t>(DecodeFixed32(p + 8), kLogSectorSize, room);
  EncodeFixed32(p + 4, crc32c::ValueWithZeroedField(p, length, 4));
}

Guid TestGuid(uint8_t seed) {
  Guid g;
  for (int i = 0; i < 16; ++i) g.bytes[i] = static_cast<uint8_t>(seed * 31 + i * 7 + 1);
  return g;
}

}  // namespace vhdx::hostile
