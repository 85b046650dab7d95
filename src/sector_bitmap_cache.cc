#include "sector_bitmap_cache.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace vhdx {

SectorBitmapCache::SectorBitmapCache(const File& file, size_t max_pages)
    : file_(file), max_pages_per_shard_(std::max<size_t>(4, max_pages / kShards)) {}

Result<SectorBitmapCache::Page*> SectorBitmapCache::Find(
    uint64_t page_offset, std::unique_lock<std::mutex>& lock) const {
  Shard& shard = ShardOf(page_offset);
  lock = std::unique_lock(shard.mu);
  for (;;) {
    auto it = shard.pages.find(page_offset);
    if (it != shard.pages.end()) return it->second.get();
    const uint64_t epoch = shard.epoch;
    lock.unlock();
    auto page = std::make_shared<Page>();
    Status s = ReadExact(file_, page_offset, page->data(), kPageBytes, "sector bitmap");
    lock.lock();
    if (!s.ok()) return s;
    // A page changed and written back while we read may be older in our
    // copy: read again.
    if (shard.epoch != epoch) continue;
    // Another reader may have loaded it meanwhile: use theirs (emplace would
    // drop ours, and the pointer returned with it).
    auto again = shard.pages.find(page_offset);
    if (again != shard.pages.end()) return again->second.get();
    if (shard.pages.size() >= max_pages_per_shard_) {
      for (auto e = shard.pages.begin(); e != shard.pages.end();) {
        if (shard.dirty.count(e->first))
          ++e;
        else
          e = shard.pages.erase(e);
        if (shard.pages.size() < max_pages_per_shard_ / 2) break;
      }
    }
    Page* raw = page.get();
    shard.pages.emplace(page_offset, std::move(page));
    return raw;
  }
}

Status SectorBitmapCache::CopyBytes(uint64_t block_offset, uint64_t first_byte, size_t n,
                                     uint8_t* out) const {
  while (n > 0) {
    const uint64_t page_offset = block_offset + first_byte / kPageBytes * kPageBytes;
    const size_t in_page = first_byte % kPageBytes;
    const size_t k = std::min<size_t>(n, kPageBytes - in_page);
    std::unique_lock<std::mutex> lock;
    VHDX_ASSIGN_OR_RETURN(Page * page, Find(page_offset, lock));
    std::memcpy(out, page->data() + in_page, k);
    lock.unlock();
    out += k;
    first_byte += k;
    n -= k;
  }
  return Status::Ok();
}

Status SectorBitmapCache::Runs(uint64_t block_offset, uint64_t first_bit, uint64_t nbits,
                               const std::function<void(bool, uint64_t)>& run) const {
  return ForEachRun(block_offset, first_bit, nbits, run);
}

Result<bool> SectorBitmapCache::AllSet(uint64_t block_offset, uint64_t first_bit, uint64_t nbits) const {
  bool all = true;
  VHDX_RETURN_IF_ERROR(Runs(block_offset, first_bit, nbits, [&](bool v, uint64_t) { all &= v; }));
  return all;
}

Status SectorBitmapCache::Change(uint64_t block_offset, uint64_t first_bit, uint64_t nbits, bool value) {
  while (nbits > 0) {
    const uint64_t page_offset = block_offset + first_bit / kBitsPerPage * kPageBytes;
    uint64_t i = first_bit % kBitsPerPage;
    const uint64_t k = std::min(nbits, kBitsPerPage - i);
    std::unique_lock<std::mutex> lock;
    VHDX_ASSIGN_OR_RETURN(Page * page, Find(page_offset, lock));
    Shard& shard = ShardOf(page_offset);
    uint8_t* b = page->data();
    const uint64_t end = i + k;
    for (; i < end && i % 8; ++i) b[i / 8] = value ? b[i / 8] | (1u << (i % 8)) : b[i / 8] & ~(1u << (i % 8));
    if (end - i >= 8) {
      std::memset(b + i / 8, value ? 0xFF : 0, (end - i) / 8);
      i += (end - i) / 8 * 8;
    }
    for (; i < end; ++i) b[i / 8] = value ? b[i / 8] | (1u << (i % 8)) : b[i / 8] & ~(1u << (i % 8));
    auto [it, inserted] = shard.dirty.insert_or_assign(page_offset, next_version_++);
    (void)it;
    if (inserted) dirty_count_.fetch_add(1, std::memory_order_relaxed);
    ++shard.epoch;
    first_bit += k;
    nbits -= k;
  }
  return Status::Ok();
}

Status SectorBitmapCache::Set(uint64_t block_offset, uint64_t first_bit, uint64_t nbits) {
  return Change(block_offset, first_bit, nbits, true);
}

Status SectorBitmapCache::Clear(uint64_t block_offset, uint64_t first_bit, uint64_t nbits) {
  return Change(block_offset, first_bit, nbits, false);
}

Result<std::vector<SectorBitmapCache::DirtyPage>> SectorBitmapCache::SnapshotDirty() const {
  std::vector<DirtyPage> out;
  for (Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    for (auto [offset, version] : shard.dirty) {
      // Dirty pages are never evicted; were one missing, its change would
      // be lost: an error, not a guess.
      auto it = shard.pages.find(offset);
      if (it == shard.pages.end())
        return Status(Errc::kIoError,
                      fmt::format("sector bitmap page at offset {:#x}: dirty but not in the cache (internal error)",
                                  offset));
      const Page& page = *it->second;
      out.push_back({offset, version, std::vector<uint8_t>(page.begin(), page.end())});
    }
  }
  std::sort(out.begin(), out.end(),
            [](const DirtyPage& a, const DirtyPage& b) { return a.file_offset < b.file_offset; });
  return out;
}

Status SectorBitmapCache::WriteBack(File& file, const std::vector<DirtyPage>& pages) {
  for (const DirtyPage& p : pages) {
    VHDX_RETURN_IF_ERROR(file.WriteAt(p.file_offset, p.bytes.data(), p.bytes.size()));
    Shard& shard = ShardOf(p.file_offset);
    std::lock_guard lock(shard.mu);
    auto it = shard.dirty.find(p.file_offset);
    if (it != shard.dirty.end() && it->second == p.version) {
      shard.dirty.erase(it);
      dirty_count_.fetch_sub(1, std::memory_order_relaxed);
      ++shard.epoch;
    }
  }
  return Status::Ok();
}

}  // namespace vhdx
