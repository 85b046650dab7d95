// The plugin below the vhdx filter as a vhdx::File: the container read and
// written through nbdkit's next_ops (NextFile), for one connection.
#pragma once

#include <nbdkit-filter.h>

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "vhdx/file.h"

namespace vhdx_filter {

// Round trips are what a remote image costs (an HTTP range request each),
// and the library reads structures in small pieces (a 4 KiB header, a
// 64 KiB region table, 8-byte metadata items, a BAT page). So reads
// smaller than kPage are served from whole 1 MiB-aligned pages of the
// container, fetched once and kept (kPages of them, least recently used
// dropped): opening an image costs two requests (the header section and
// the metadata region), and sequential reads of data fetch 1 MiB at a
// time. Larger reads go to the plugin as they are; writes go through and
// drop the pages they touch.
//
// The container's size is read once: the plugin's export cannot grow or
// shrink, so a write that needs the file to grow (a dynamic image
// allocating a block) fails with kNoSpace, saying so.
class NextFile final : public vhdx::File {
 public:
  NextFile(nbdkit_next* next, uint64_t size, bool writable) : next_(next), size_(size), writable_(writable) {}

  vhdx::Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override;
  vhdx::Status WriteAt(uint64_t offset, const void* buf, size_t n) override;
  vhdx::Status Flush() override;
  vhdx::Result<uint64_t> Size() const override { return size_; }
  vhdx::Status Truncate(uint64_t size) override;
  vhdx::Status PunchHole(uint64_t offset, uint64_t length) override;
  vhdx::Status Allocate(uint64_t offset, uint64_t length) override;
  bool writable() const override { return writable_; }
  const std::string& name() const override { return name_; }

 private:
  static constexpr uint64_t kPage = 1 << 20;
  static constexpr size_t kPages = 16;
  static constexpr size_t kMaxRequest = 32u << 20;  // next_ops take 32-bit counts

  vhdx::Status Fetch(uint64_t offset, void* buf, size_t n) const;
  vhdx::Status Page(uint64_t page, std::shared_ptr<const std::vector<uint8_t>>* out) const;
  void Forget(uint64_t offset, uint64_t length);
  vhdx::Status NoGrowth(uint64_t end, const char* what) const;
  vhdx::Status Zero(uint64_t offset, uint64_t length);

  nbdkit_next* next_;
  uint64_t size_;
  bool writable_;
  std::string name_ = "the VHDX image the plugin serves";
  mutable std::mutex mutex_;
  mutable std::list<std::pair<uint64_t, std::shared_ptr<const std::vector<uint8_t>>>> pages_;
};

}  // namespace vhdx_filter
