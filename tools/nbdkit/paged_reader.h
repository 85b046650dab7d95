// Reads of a remote container in whole 1 MiB-aligned pages, for the vhdx
// filter's files (NextFile over the plugin, UrlFile over libcurl).
//
// Round trips are what a remote image costs (an HTTP range request each),
// and the library reads structures in small pieces (a 4 KiB header, a
// 64 KiB region table, 8-byte metadata items, a BAT page). So reads
// smaller than kPage are served from whole pages, fetched once and kept
// (kPages of them, least recently used dropped): opening an image costs
// two requests (the header section and the metadata region), and
// sequential reads of data fetch 1 MiB at a time. Larger reads are fetched
// as they are.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "vhdx/status.h"

namespace vhdx_filter {

class PagedReader {
 public:
  // Reads exactly [offset, offset+n) of the container.
  using Fetch = std::function<vhdx::Status(uint64_t offset, void* buf, size_t n)>;

  PagedReader(uint64_t size, Fetch fetch) : size_(size), fetch_(std::move(fetch)) {}

  // File::ReadAt's contract: short only at the end of the container.
  vhdx::Result<size_t> Read(uint64_t offset, void* buf, size_t n) const;
  // Drops the pages [offset, offset+length) touches (it was written). A
  // read racing the write may put back the old page; the library never
  // reads a range while it writes it.
  void Forget(uint64_t offset, uint64_t length);

 private:
  static constexpr uint64_t kPage = 1 << 20;
  static constexpr size_t kPages = 16;
  vhdx::Status Page(uint64_t page, std::shared_ptr<const std::vector<uint8_t>>* out) const;

  uint64_t size_;
  Fetch fetch_;
  mutable std::mutex mutex_;
  mutable std::list<std::pair<uint64_t, std::shared_ptr<const std::vector<uint8_t>>>> pages_;
};

}  // namespace vhdx_filter
