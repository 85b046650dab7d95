// The BAT, paged in on demand in 4 KiB pages (512 entries) so that opening a
// 64 TiB image with a 512 MiB BAT costs nothing up front, and memory follows
// what is read. Sharded so that concurrent readers rarely share a lock and
// never hold one across I/O.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "vhdx/file.h"
#include "vhdx/status.h"

namespace vhdx {

class BatCache {
 public:
  static constexpr uint64_t kEntriesPerPage = 512;

  // `max_pages` bounds the memory held (each page 4 KiB).
  BatCache(const File& file, uint64_t bat_offset, uint64_t total_entries, size_t max_pages = 16384);

  // Raw 64-bit entry at `index` (< total_entries).
  Result<uint64_t> Get(uint64_t index) const;
  // Entries [first, first+count) read straight from the file (bulk scans:
  // map, check, allocation counts); does not fill the cache.
  Status ReadRange(uint64_t first, uint64_t count, std::vector<uint64_t>* out) const;

  uint64_t total_entries() const { return total_entries_; }
  size_t cached_pages() const;

 private:
  using Page = std::array<uint64_t, kEntriesPerPage>;
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, std::shared_ptr<const Page>> pages;
  };
  static constexpr size_t kShards = 64;

  const File& file_;
  uint64_t bat_offset_;
  uint64_t total_entries_;
  size_t max_pages_per_shard_;
  mutable std::array<Shard, kShards> shards_;
};

}  // namespace vhdx
