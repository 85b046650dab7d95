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

Result<std::shared_ptr<BatCache::Page>> BatCache::LoadPage(uint64_t page_no) const {
  auto page = std::make_shared<Page>();
  page->fill(0);
  uint64_t first = page_no * kEntriesPerPage;
  uint64_t count = std::min<uint64_t>(kEntriesPerPage, total_entries_ - first);
  uint8_t raw[kPageBytes];
  VHDX_RETURN_IF_ERROR(ReadExact(file_, bat_offset_ + first * 8, raw, count * 8, "BAT"));
  for (uint64_t i = 0; i < count; ++i) (*page)[i] = DecodeFixed64(raw + 8 * i);
  return page;
}

void BatCache::Insert(Shard& shard, uint64_t page_no, std::shared_ptr<Page> page) const {
  if (shard.pages.size() >= max_pages_per_shard_) {
    for (auto p = shard.pages.begin(); p != shard.pages.end();)
      p = shard.dirty.count(p->first) ? std::next(p) : shard.pages.erase(p);
  }
  shard.pages.emplace(page_no, std::move(page));
}

Result<BatCache::Page*> BatCache::Find(Shard& shard, uint64_t page_no,
                                                       std::unique_lock<std::mutex>& lock) const {
  for (;;) {
    auto it = shard.pages.find(page_no);
    if (it != shard.pages.end()) return it->second.get();
    // Load outside the lock; two threads may load the same page, harmlessly.
    const uint64_t epoch = shard.epoch;
    lock.unlock();
    auto loaded = LoadPage(page_no);
    lock.lock();
    if (!loaded.ok()) return loaded.status();
    it = shard.pages.find(page_no);
    if (it != shard.pages.end()) return it->second.get();
    if (shard.epoch == epoch) {
      Page* page = loaded->get();
      Insert(shard, page_no, std::move(loaded).value());
      return page;
    }
    // The shard changed while the page was read: read it again.
  }
}

Result<BatCache::Page*> BatCache::PageOf(uint64_t index,
                                                         std::unique_lock<std::mutex>& lock) const {
  if (index >= total_entries_)
    return Status(Errc::kCorrupt, fmt::format("BAT index {} out of range ({} entries)", index,
                                              total_entries_));
  Shard& shard = shards_[index / kEntriesPerPage % kShards];
  lock = std::unique_lock(shard.mu);
  return Find(shard, index / kEntriesPerPage, lock);
}

Result<uint64_t> BatCache::Get(uint64_t index) const {
  std::unique_lock<std::mutex> lock;
  VHDX_ASSIGN_OR_RETURN(Page * page, PageOf(index, lock));
  return (*page)[index % kEntriesPerPage];
}

Status BatCache::Set(uint64_t index, uint64_t raw) {
  std::unique_lock<std::mutex> lock;
  VHDX_ASSIGN_OR_RETURN(Page * page, PageOf(index, lock));
  const uint64_t page_no = index / kEntriesPerPage;
  Shard& shard = shards_[page_no % kShards];
  (*page)[index % kEntriesPerPage] = raw;
  ++shard.epoch;
  if (shard.dirty.insert_or_assign(page_no, next_version_++).second) ++dirty_count_;
  return Status::Ok();
}

std::string BatCache::NotResident(uint64_t page_no) const {
  return fmt::format("BAT page at offset {:#x}: dirty but not in the cache (internal error)",
                     bat_offset_ + page_no * kPageBytes);
}

Result<std::vector<BatCache::DirtyPage>> BatCache::SnapshotDirty() const {
  std::vector<DirtyPage> out;
  for (auto& shard : shards_) {
    std::lock_guard lock(shard.mu);
    for (const auto& [page_no, version] : shard.dirty) {
      // Dirty pages are never evicted; were one missing, its change would
      // be lost: an error, not a guess.
      auto page = shard.pages.find(page_no);
      if (page == shard.pages.end()) return Status(Errc::kIoError, NotResident(page_no));
      DirtyPage d;
      d.page_no = page_no;
      d.version = version;
      d.file_offset = bat_offset_ + page_no * kPageBytes;
      d.bytes.resize(kPageBytes);
      const Page& p = *page->second;
      for (uint64_t i = 0; i < kEntriesPerPage; ++i) EncodeFixed64(d.bytes.data() + 8 * i, p[i]);
      out.push_back(std::move(d));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const DirtyPage& a, const DirtyPage& b) { return a.page_no < b.page_no; });
  return out;
}

size_t BatCache::dirty_pages() const { return dirty_count_.load(); }

Status BatCache::WriteBack(File& file, const std::vector<DirtyPage>& pages) {
  std::unique_lock guard(writeback_mu_);
  for (const DirtyPage& d : pages) {
    VHDX_RETURN_IF_ERROR(file.WriteAt(d.file_offset, d.bytes.data(), d.bytes.size())
                             .WithContext(fmt::format("BAT page at offset {:#x}", d.file_offset)));
    Shard& shard = shards_[d.page_no % kShards];
    std::lock_guard lock(shard.mu);
    auto it = shard.dirty.find(d.page_no);
    if (it != shard.dirty.end() && it->second == d.version) {
      shard.dirty.erase(it);
      --dirty_count_;
      ++shard.epoch;
    }
  }
  return Status::Ok();
}

Status BatCache::ReadRange(uint64_t first, uint64_t count, std::vector<uint64_t>* out) const {
  if (first > total_entries_ || count > total_entries_ - first)
    return Status(Errc::kCorrupt, fmt::format("BAT range {}+{} out of range ({} entries)", first,
                                              count, total_entries_));
  out->resize(count);
  std::vector<uint8_t> raw(count * 8);
  std::shared_lock guard(writeback_mu_);
  VHDX_RETURN_IF_ERROR(ReadExact(file_, bat_offset_ + first * 8, raw.data(), raw.size(), "BAT"));
  for (uint64_t i = 0; i < count; ++i) (*out)[i] = DecodeFixed64(raw.data() + 8 * i);
  if (dirty_count_.load() == 0 || count == 0) return Status::Ok();
  const uint64_t end = first + count;
  for (auto& shard : shards_) {
    std::lock_guard lock(shard.mu);
    for (const auto& [page_no, version] : shard.dirty) {
      const uint64_t p0 = page_no * kEntriesPerPage;
      const uint64_t s = std::max(first, p0), t = std::min(end, p0 + kEntriesPerPage);
      if (s >= t) continue;
      auto page = shard.pages.find(page_no);
      if (page == shard.pages.end()) return Status(Errc::kIoError, NotResident(page_no));
      const Page& p = *page->second;
      for (uint64_t i = s; i < t; ++i) (*out)[i - first] = p[i - p0];
    }
  }
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
