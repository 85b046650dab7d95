// Sector bitmaps of a differencing image (digest §6), paged in on demand in
// 4 KiB pages (32768 sectors each) keyed by file offset, so a reader of a
// PARTIALLY_PRESENT block loads only the bits it needs.
//
// Like BatCache: writers set bits in memory after their data is written; a
// changed page stays dirty (never evicted) until the log entry carrying it
// is written and the page written back in place (WriteBack). Sharded so
// that readers of different pages rarely meet on one lock.
#pragma once

#include <array>
#include <bit>
#include <cstring>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "vhdx/file.h"
#include "vhdx/status.h"

namespace vhdx {

// Calls f(bit_value, count) for the runs of equal bits [first, first + n) of
// `bits` (bit i = byte i / 8, mask 1 << (i % 8)); `bits` holds at least
// (first + n + 7) / 8 bytes. A run's end is found 64 bits at a time.
template <typename F>
void ForEachBitRun(const uint8_t* bits, uint64_t first, uint64_t n, F&& f) {
  const uint64_t end = first + n;
  const uint64_t bytes = (end + 7) / 8;
  uint64_t i = first;
  while (i < end) {
    const bool v = (bits[i / 8] >> (i % 8)) & 1;
    const uint64_t start = i;
    for (;;) {
      // Up to 57 bits from i, inverted when looking for the end of a 1-run.
      uint64_t word = 0;
      const uint64_t at = i / 8;
      std::memcpy(&word, bits + at, std::min<uint64_t>(8, bytes - at));
      word >>= i % 8;
      if (v) word = ~word;
      const uint64_t valid = std::min<uint64_t>(64 - i % 8, end - i);
      const uint64_t mask = valid == 64 ? ~uint64_t{0} : (uint64_t{1} << valid) - 1;
      if (word & mask) {
        i += static_cast<uint64_t>(std::countr_zero(word & mask));
        break;
      }
      i += valid;
      if (i >= end) break;
    }
    f(v, i - start);
  }
}

class SectorBitmapCache {
 public:
  static constexpr uint64_t kPageBytes = 4096;
  static constexpr uint64_t kBitsPerPage = kPageBytes * 8;

  // `max_pages` bounds the memory held by clean pages (each 4 KiB).
  explicit SectorBitmapCache(const File& file, size_t max_pages = 8192);

  // Calls `run(present, count)` for the consecutive runs of equal bits in
  // [first_bit, first_bit + nbits) of the bitmap block at `block_offset`.
  // Long runs of 0x00 / 0xFF bytes are scanned a word at a time.
  Status Runs(uint64_t block_offset, uint64_t first_bit, uint64_t nbits,
              const std::function<void(bool present, uint64_t count)>& run) const;
  // Copies bytes [first_byte, first_byte + n) of the bitmap block at
  // `block_offset` into `out` (one lock per 4 KiB page, no callbacks).
  Status CopyBytes(uint64_t block_offset, uint64_t first_byte, size_t n, uint8_t* out) const;
  // Calls f(present, count) for the runs of bits [first_bit, first_bit +
  // nbits): the bits are copied out first (no lock held while f runs).
  template <typename F>
  Status ForEachRun(uint64_t block_offset, uint64_t first_bit, uint64_t nbits, F&& f) const {
    if (nbits == 0) return Status::Ok();
    const uint64_t first_byte = first_bit / 8;
    const size_t n = static_cast<size_t>((first_bit + nbits + 7) / 8 - first_byte);
    uint8_t small[512];  // a 4 KiB read needs a byte or two; a 32 MiB block 8 KiB
    std::vector<uint8_t> large;
    uint8_t* bytes = small;
    if (n > sizeof small) {
      large.resize(n);
      bytes = large.data();
    }
    VHDX_RETURN_IF_ERROR(CopyBytes(block_offset, first_byte, n, bytes));
    ForEachBitRun(bytes, first_bit % 8, nbits, f);
    return Status::Ok();
  }
  // True when every bit of the range is set.
  Result<bool> AllSet(uint64_t block_offset, uint64_t first_bit, uint64_t nbits) const;
  // Sets the bits of the range in memory and marks their pages dirty.
  Status Set(uint64_t block_offset, uint64_t first_bit, uint64_t nbits);
  // Clears the bits of the range (a block leaving PARTIALLY_PRESENT:
  // Windows keeps the bits of other states zero).
  Status Clear(uint64_t block_offset, uint64_t first_bit, uint64_t nbits);

  struct DirtyPage {
    uint64_t file_offset = 0;
    uint64_t version = 0;
    std::vector<uint8_t> bytes;  // 4096
  };
  Result<std::vector<DirtyPage>> SnapshotDirty() const;
  size_t dirty_pages() const { return dirty_count_.load(std::memory_order_relaxed); }
  // Writes the pages in place and marks each clean unless it changed again.
  Status WriteBack(File& file, const std::vector<DirtyPage>& pages);

 private:
  using Page = std::array<uint8_t, kPageBytes>;
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, std::shared_ptr<Page>> pages;  // by file offset
    std::unordered_map<uint64_t, uint64_t> dirty;               // file offset -> version
    uint64_t epoch = 0;  // see BatCache::Shard::epoch
  };
  static constexpr size_t kShards = 16;
  Shard& ShardOf(uint64_t page_offset) const { return shards_[(page_offset / kPageBytes) % kShards]; }
  // The page at `page_offset`, loaded if needed; shard mutex held on return
  // (the page is valid while it is held).
  Result<Page*> Find(uint64_t page_offset, std::unique_lock<std::mutex>& lock) const;
  Status Change(uint64_t block_offset, uint64_t first_bit, uint64_t nbits, bool value);

  const File& file_;
  size_t max_pages_per_shard_;
  mutable std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> next_version_{1};
  std::atomic<size_t> dirty_count_{0};
};

}  // namespace vhdx
