// The BAT, paged in on demand in 4 KiB pages (512 entries) so that opening a
// 64 TiB image with a 512 MiB BAT costs nothing up front, and memory follows
// what is read. Sharded so that concurrent readers rarely share a lock and
// never hold one across I/O.
//
// Writers change entries in memory (Set); a changed page is dirty until the
// log entry carrying it has been written and the page written back in
// place (WriteBack). Dirty pages are never evicted, and bulk reads overlay
// them on the file's contents, so every reader sees the newest entries.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

#include <string>

#include "vhdx/file.h"
#include "vhdx/status.h"

namespace vhdx {

class BatCache {
 public:
  static constexpr uint64_t kEntriesPerPage = 512;
  static constexpr uint64_t kPageBytes = kEntriesPerPage * 8;

  // `max_pages` bounds the memory held by clean pages (each 4 KiB).
  BatCache(const File& file, uint64_t bat_offset, uint64_t total_entries, size_t max_pages = 16384);

  // Raw 64-bit entry at `index` (< total_entries).
  Result<uint64_t> Get(uint64_t index) const;
  // Entries [first, first+count): the file's bytes with dirty pages laid
  // over them (bulk scans: map, allocation counts); does not fill the cache.
  Status ReadRange(uint64_t first, uint64_t count, std::vector<uint64_t>* out) const;

  // Changes entry `index` in memory and marks its page dirty.
  Status Set(uint64_t index, uint64_t raw);

  // A dirty page as it is now: its 4 KiB image and the version it had.
  struct DirtyPage {
    uint64_t page_no = 0;
    uint64_t version = 0;
    std::vector<uint8_t> bytes;  // 4096 bytes, little-endian entries
    uint64_t file_offset = 0;    // where the page lives in the file
  };
  Result<std::vector<DirtyPage>> SnapshotDirty() const;
  size_t dirty_pages() const;
  // Writes `pages` at their places in `file` and marks each clean unless it
  // changed again since its snapshot. Bulk readers wait while it runs.
  Status WriteBack(File& file, const std::vector<DirtyPage>& pages);

  uint64_t total_entries() const { return total_entries_; }
  size_t cached_pages() const;

 private:
  // The error for a dirty page missing from the cache (an invariant broken).
  std::string NotResident(uint64_t page_no) const;
  using Page = std::array<uint64_t, kEntriesPerPage>;
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, std::shared_ptr<Page>> pages;
    std::unordered_map<uint64_t, uint64_t> dirty;  // page_no -> version
    // Bumped whenever a page of the shard is changed or written back. A
    // page loaded outside the lock is cached only if the epoch did not move
    // meanwhile: otherwise it may predate a change that was written back
    // and evicted while it was being read.
    uint64_t epoch = 0;
  };
  static constexpr size_t kShards = 64;

  Result<std::shared_ptr<Page>> LoadPage(uint64_t page_no) const;
  // The cached page, loading it if needed (shard.mu held on return).
  // The returned page stays valid while `lock` is held.
  Result<Page*> Find(Shard& shard, uint64_t page_no,
                                     std::unique_lock<std::mutex>& lock) const;
  // The page holding entry `index`, with its shard's mutex held in `lock`.
  Result<Page*> PageOf(uint64_t index, std::unique_lock<std::mutex>& lock) const;
  // Inserts a loaded page. Evicts clean pages when the shard is full.
  void Insert(Shard& shard, uint64_t page_no, std::shared_ptr<Page> page) const;

  const File& file_;
  uint64_t bat_offset_;
  uint64_t total_entries_;
  size_t max_pages_per_shard_;
  mutable std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> next_version_{1};
  std::atomic<size_t> dirty_count_{0};
  // Held shared by ReadRange and exclusively by WriteBack, so that a bulk
  // read never sees a page neither in the file nor among the dirty ones.
  mutable std::shared_mutex writeback_mu_;
};

}  // namespace vhdx
