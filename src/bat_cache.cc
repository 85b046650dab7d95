#include "bat_cache.h"

#include <fmt/format.h>

#include <algorithm>

#include "util/coding.h"

namespace vhdx {

BatCache::BatCache(const File& file, uint64_t bat_offset, uint64_t total_entries, size_t max_pages)
    : file_(file),
      bat_offset_(bat_offset),
      total_entries_(total_entries),
      max_pages_per_shard_(std::max<size_t>(1, max_pages / kShards)) {}

Result<uint64_t> BatCache::Get(uint64_t index) const {
  if (index >= total_entries_)
    return Status(Errc::kCorrupt, fmt::format("BAT index {} out of range ({} entries)", index,
                                              total_entries_));
  const uint64_t page_no = index / kEntriesPerPage;
  Shard& shard = shards_[page_no % kShards];
  {
    std::lock_guard lock(shard.mu);
    auto it = shard.pages.find(page_no);
    if (it != shard.pages.end()) return (*it->second)[index % kEntriesPerPage];
  }
  // Load outside the lock; two threads may load the same page, harmlessly.
  auto page = std::make_shared<Page>();
  uint64_t first = page_no * kEntriesPerPage;
  uint64_t count = std::min<uint64_t>(kEntriesPerPage, total_entries_ - first);
  uint8_t raw[kEntriesPerPage * 8];
  VHDX_RETURN_IF_ERROR(ReadExact(file_, bat_offset_ + first * 8, raw, count * 8, "BAT"));
  for (uint64_t i = 0; i < count; ++i) (*page)[i] = DecodeFixed64(raw + 8 * i);
  uint64_t value = (*page)[index % kEntriesPerPage];
  std::lock_guard lock(shard.mu);
  if (shard.pages.size() >= max_pages_per_shard_) shard.pages.clear();
  shard.pages.emplace(page_no, std::move(page));
  return value;
}

Status BatCache::ReadRange(uint64_t first, uint64_t count, std::vector<uint64_t>* out) const {
  if (first > total_entries_ || count > total_entries_ - first)
    return Status(Errc::kCorrupt, fmt::format("BAT range {}+{} out of range ({} entries)", first,
                                              count, total_entries_));
  out->resize(count);
  std::vector<uint8_t> raw(count * 8);
  VHDX_RETURN_IF_ERROR(ReadExact(file_, bat_offset_ + first * 8, raw.data(), raw.size(), "BAT"));
  for (uint64_t i = 0; i < count; ++i) (*out)[i] = DecodeFixed64(raw.data() + 8 * i);
  return Status::Ok();
}

size_t BatCache::cached_pages() const {
  size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard lock(s.mu);
    n += s.pages.size();
  }
  return n;
}

}  // namespace vhdx
