#include "format/metadata.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "format/constants.h"
#include "util/coding.h"
#include "util/strings.h"

namespace vhdx::format {

const MetadataEntry* MetadataTable::FindSystem(const Guid& id) const {
  for (const auto& e : entries)
    if (e.item_id == id && !e.is_user()) return &e;
  return nullptr;
}

const char* SystemItemName(const Guid& id) {
  if (id == kFileParametersGuid) return "file_parameters";
  if (id == kVirtualDiskSizeGuid) return "virtual_disk_size";
  if (id == kVirtualDiskIdGuid) return "virtual_disk_id";
  if (id == kLogicalSectorSizeGuid) return "logical_sector_size";
  if (id == kPhysicalSectorSizeGuid) return "physical_sector_size";
  if (id == kParentLocatorGuid) return "parent_locator";
  return nullptr;
}

Status ParseMetadataTable(const uint8_t* p, uint64_t region_offset, uint64_t region_length,
                          MetadataTable* out) {
  auto fail = [&](const std::string& what) {
    return Status(Errc::kCorrupt,
                  fmt::format("metadata table at offset {:#x}: {}", region_offset, what));
  };
  if (region_length < kMetadataTableSize)
    return fail(fmt::format("region length {:#x} is smaller than the 64 KiB table", region_length));
  if (std::memcmp(p, kMetadataSignature, 8) != 0) return fail("signature is not 'metadata'");
  uint16_t count = DecodeFixed16(p + 10);
  if (count > kMaxTableEntries)
    return fail(fmt::format("entry count {} exceeds {}", count, kMaxTableEntries));
  out->entries.clear();
  uint32_t user_items = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = p + 32 + 32 * i;
    MetadataEntry m;
    std::memcpy(m.item_id.bytes.data(), e, 16);
    m.offset = DecodeFixed32(e + 16);
    m.length = DecodeFixed32(e + 20);
    m.flags = DecodeFixed32(e + 24);
    auto efail = [&](const std::string& what) {
      return fail(fmt::format("entry {} (item {}): {}", i, m.item_id.ToString(), what));
    };
    if (m.length == 0) {
      if (m.offset != 0) return efail("empty item with non-zero offset");
    } else {
      if (m.offset < kMetadataTableSize)
        return efail(fmt::format("item offset {:#x} lies inside the table", m.offset));
      if (m.length > kMaxMetadataItemLength)
        return efail(fmt::format("item length {:#x} exceeds 1 MiB", m.length));
      if (static_cast<uint64_t>(m.offset) + m.length > region_length)
        return efail(fmt::format("item [{:#x}, +{:#x}) extends past the region end {:#x}",
                                 m.offset, m.length, region_length));
    }
    if (m.is_user() && ++user_items > kMaxUserMetadataEntries)
      return fail(fmt::format("more than {} user metadata items", kMaxUserMetadataEntries));
    for (const auto& prev : out->entries)
      if (prev.item_id == m.item_id && prev.is_user() == m.is_user())
        return efail("item appears twice");
    // No user item is known to us, so a required one must refuse the open too (§4.2).
    if (m.is_required() && (m.is_user() || !SystemItemName(m.item_id)))
      return Status(Errc::kUnsupported,
                    fmt::format("metadata table at offset {:#x}: entry {} is an unknown {} "
                                "item {} marked required; this implementation cannot open the image",
                                region_offset, i, m.is_user() ? "user" : "system",
                                m.item_id.ToString()));
    out->entries.push_back(m);
  }
  std::vector<MetadataEntry> sorted;
  for (const auto& m : out->entries)
    if (m.length) sorted.push_back(m);
  std::sort(sorted.begin(), sorted.end(),
            [](const MetadataEntry& a, const MetadataEntry& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (static_cast<uint64_t>(sorted[i - 1].offset) + sorted[i - 1].length > sorted[i].offset)
      return fail(fmt::format("items {} at {:#x} and {} at {:#x} overlap",
                              sorted[i - 1].item_id.ToString(), sorted[i - 1].offset,
                              sorted[i].item_id.ToString(), sorted[i].offset));
  return Status::Ok();
}

void SerializeMetadataTable(const MetadataTable& t, uint8_t* p) {
  std::memset(p, 0, kMetadataTableSize);
  std::memcpy(p, kMetadataSignature, 8);
  EncodeFixed16(p + 10, static_cast<uint16_t>(t.entries.size()));
  for (size_t i = 0; i < t.entries.size(); ++i) {
    uint8_t* e = p + 32 + 32 * i;
    std::memcpy(e, t.entries[i].item_id.bytes.data(), 16);
    EncodeFixed32(e + 16, t.entries[i].offset);
    EncodeFixed32(e + 20, t.entries[i].length);
    EncodeFixed32(e + 24, t.entries[i].flags);
  }
}

namespace {
Status TooShort(const char* what, uint64_t off, size_t n, size_t need) {
  return Status(Errc::kCorrupt, fmt::format("{} metadata item at offset {:#x}: length {} is less "
                                            "than {}",
                                            what, off, n, need));
}
}  // namespace

Status ParseFileParameters(const uint8_t* p, size_t n, uint64_t off, FileParameters* out) {
  if (n < 8) return TooShort("file parameters", off, n, 8);
  out->block_size = DecodeFixed32(p);
  uint32_t flags = DecodeFixed32(p + 4);
  out->leave_block_allocated = flags & 1;
  out->has_parent = flags & 2;
  if (!IsPowerOfTwo(out->block_size) || out->block_size < kMinBlockSize ||
      out->block_size > kMaxBlockSize)
    return Status(Errc::kCorrupt,
                  fmt::format("file parameters metadata item at offset {:#x}: block size {} is "
                              "not a power of two between 1 MiB and 256 MiB",
                              off, out->block_size));
  if (flags & ~3u)
    return Status(Errc::kCorrupt,
                  fmt::format("file parameters metadata item at offset {:#x}: reserved flag bits "
                              "set ({:#x})",
                              off, flags));
  return Status::Ok();
}

void SerializeFileParameters(const FileParameters& fp, uint8_t* p) {
  EncodeFixed32(p, fp.block_size);
  EncodeFixed32(p + 4, (fp.leave_block_allocated ? 1u : 0u) | (fp.has_parent ? 2u : 0u));
}

Status ParseVirtualDiskSize(const uint8_t* p, size_t n, uint64_t off, uint64_t* out) {
  if (n < 8) return TooShort("virtual disk size", off, n, 8);
  *out = DecodeFixed64(p);
  if (*out == 0 || *out > kMaxVirtualSize)
    return Status(Errc::kCorrupt,
                  fmt::format("virtual disk size metadata item at offset {:#x}: size {} is not "
                              "between 1 byte and 64 TiB",
                              off, *out));
  return Status::Ok();
}

Status ParseSectorSize(const uint8_t* p, size_t n, uint64_t off, const char* which,
                       uint32_t* out) {
  if (n < 4) return TooShort(which, off, n, 4);
  *out = DecodeFixed32(p);
  if (*out != 512 && *out != 4096)
    return Status(Errc::kCorrupt, fmt::format("{} metadata item at offset {:#x}: {} is neither "
                                              "512 nor 4096",
                                              which, off, *out));
  return Status::Ok();
}

Status ParseVirtualDiskId(const uint8_t* p, size_t n, uint64_t off, Guid* out) {
  if (n < 16) return TooShort("virtual disk id", off, n, 16);
  std::memcpy(out->bytes.data(), p, 16);
  return Status::Ok();
}

const std::string* ParentLocator::Get(const std::string& key) const {
  for (const auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

Status ParseParentLocator(const uint8_t* p, size_t n, uint64_t off, ParentLocator* out) {
  auto fail = [&](const std::string& what) {
    return Status(Errc::kCorrupt,
                  fmt::format("parent locator metadata item at offset {:#x}: {}", off, what));
  };
  if (n < 20) return fail(fmt::format("length {} is less than its 20-byte header", n));
  std::memcpy(out->locator_type.bytes.data(), p, 16);
  if (out->locator_type != kVhdxParentLocatorType)
    return Status(Errc::kUnsupported,
                  fmt::format("parent locator metadata item at offset {:#x}: unknown locator "
                              "type {}",
                              off, out->locator_type.ToString()));
  uint16_t count = DecodeFixed16(p + 18);
  if (20 + 12ull * count > n)
    return fail(fmt::format("{} key/value entries do not fit in {} bytes", count, n));
  out->entries.clear();
  for (uint32_t k = 0; k < count; ++k) {
    const uint8_t* e = p + 20 + 12 * k;
    uint32_t ko = DecodeFixed32(e), vo = DecodeFixed32(e + 4);
    uint16_t kl = DecodeFixed16(e + 8), vl = DecodeFixed16(e + 10);
    auto range_ok = [&](uint32_t o, uint16_t l) {
      return o > 0 && l > 0 && l % 2 == 0 && static_cast<uint64_t>(o) + l <= n;
    };
    if (!range_ok(ko, kl) || !range_ok(vo, vl))
      return fail(fmt::format("entry {}: key [{:#x}, +{}) or value [{:#x}, +{}) is empty, odd "
                              "or outside the item",
                              k, ko, kl, vo, vl));
    auto key = Utf16LeToUtf8(p + ko, kl, /*reject_nul=*/true);
    auto value = Utf16LeToUtf8(p + vo, vl, /*reject_nul=*/true);
    if (!key || !value) return fail(fmt::format("entry {}: key or value is not valid UTF-16", k));
    for (const auto& prev : out->entries)
      if (prev.first == *key) return fail(fmt::format("key '{}' appears twice", *key));
    out->entries.emplace_back(std::move(*key), std::move(*value));
  }
  if (!out->Get("parent_linkage")) return fail("no parent_linkage key");
  if (!out->Get("relative_path") && !out->Get("volume_path") && !out->Get("absolute_win32_path"))
    return fail("no relative_path, volume_path or absolute_win32_path key");
  return Status::Ok();
}

std::vector<uint8_t> SerializeParentLocator(const ParentLocator& loc) {
  size_t count = loc.entries.size();
  std::vector<uint8_t> out(20 + 12 * count);
  std::memcpy(out.data(), loc.locator_type.bytes.data(), 16);
  EncodeFixed16(out.data() + 18, static_cast<uint16_t>(count));
  for (size_t k = 0; k < count; ++k) {
    std::string key = Utf8ToUtf16Le(loc.entries[k].first);
    std::string value = Utf8ToUtf16Le(loc.entries[k].second);
    uint8_t* e = out.data() + 20 + 12 * k;
    EncodeFixed32(e, static_cast<uint32_t>(out.size()));
    EncodeFixed16(e + 8, static_cast<uint16_t>(key.size()));
    out.insert(out.end(), key.begin(), key.end());
    e = out.data() + 20 + 12 * k;  // insert may have moved the buffer
    EncodeFixed32(e + 4, static_cast<uint32_t>(out.size()));
    EncodeFixed16(e + 10, static_cast<uint16_t>(value.size()));
    out.insert(out.end(), value.begin(), value.end());
  }
  return out;
}

}  // namespace vhdx::format
