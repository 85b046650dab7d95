#include "format/region_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "format/constants.h"
#include "format/crc32c.h"
#include "util/coding.h"

namespace vhdx::format {

const RegionEntry* RegionTable::Find(const Guid& guid) const {
  for (const auto& e : entries)
    if (e.guid == guid) return &e;
  return nullptr;
}

Status ParseRegionTable(const uint8_t* p, uint64_t off, RegionTable* out) {
  auto fail = [&](const std::string& what) {
    return Status(Errc::kCorrupt, fmt::format("region table at offset {:#x}: {}", off, what));
  };
  if (std::memcmp(p, kRegionSignature, 4) != 0) return fail("signature is not 'regi'");
  uint32_t stored = DecodeFixed32(p + 4);
  uint32_t crc = crc32c::ValueWithZeroedField(p, kRegionTableSize, 4);
  if (crc != stored)
    return fail(fmt::format("checksum mismatch (stored {:#010x}, computed {:#010x})", stored, crc));
  uint32_t count = DecodeFixed32(p + 8);
  if (count > kMaxTableEntries)
    return fail(fmt::format("entry count {} exceeds {}", count, kMaxTableEntries));
  out->entries.clear();
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = p + 16 + 32 * i;
    RegionEntry r;
    std::memcpy(r.guid.bytes.data(), e, 16);
    r.file_offset = DecodeFixed64(e + 16);
    r.length = DecodeFixed32(e + 24);
    r.required = DecodeFixed32(e + 28);
    auto efail = [&](const std::string& what) {
      return fail(fmt::format("entry {} ({}): {}", i, r.guid.ToString(), what));
    };
    bool known = r.guid == kBatRegionGuid || r.guid == kMetadataRegionGuid;
    if (!known && r.required != 0)
      return Status(Errc::kUnsupported,
                    fmt::format("region table at offset {:#x}: entry {} is an unknown region {} "
                                "marked required; this implementation cannot open the image",
                                off, i, r.guid.ToString()));
    if (r.file_offset % MiB != 0 || r.file_offset < kHeaderSectionSize)
      return efail(fmt::format("file offset {:#x} is not a 1 MiB-aligned offset past the header "
                               "section",
                               r.file_offset));
    if (r.length % MiB != 0)
      return efail(fmt::format("length {:#x} is not a multiple of 1 MiB", r.length));
    if (known && r.length == 0) return efail("length is zero");
    if (r.file_offset > kMaxFileOffset)
      return efail(fmt::format("file offset {:#x} is beyond any valid file size", r.file_offset));
    for (const auto& prev : out->entries)
      if (prev.guid == r.guid) return efail("region GUID appears twice");
    out->entries.push_back(r);
  }
  if (!out->Find(kBatRegionGuid)) return fail("no BAT region");
  if (!out->Find(kMetadataRegionGuid)) return fail("no metadata region");
  // Overlap between regions (sorted by offset, each must end before the next starts).
  std::vector<RegionEntry> sorted = out->entries;
  std::sort(sorted.begin(), sorted.end(),
            [](const RegionEntry& a, const RegionEntry& b) { return a.file_offset < b.file_offset; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i - 1].file_offset + sorted[i - 1].length > sorted[i].file_offset)
      return fail(fmt::format("regions {} at {:#x} and {} at {:#x} overlap",
                              sorted[i - 1].guid.ToString(), sorted[i - 1].file_offset,
                              sorted[i].guid.ToString(), sorted[i].file_offset));
  return Status::Ok();
}

void SerializeRegionTable(const RegionTable& t, uint8_t* p) {
  std::memset(p, 0, kRegionTableSize);
  std::memcpy(p, kRegionSignature, 4);
  EncodeFixed32(p + 8, static_cast<uint32_t>(t.entries.size()));
  for (size_t i = 0; i < t.entries.size(); ++i) {
    uint8_t* e = p + 16 + 32 * i;
    std::memcpy(e, t.entries[i].guid.bytes.data(), 16);
    EncodeFixed64(e + 16, t.entries[i].file_offset);
    EncodeFixed32(e + 24, t.entries[i].length);
    EncodeFixed32(e + 28, t.entries[i].required);
  }
  EncodeFixed32(p + 4, crc32c::ValueWithZeroedField(p, kRegionTableSize, 4));
}

}  // namespace vhdx::format
