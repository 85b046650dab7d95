// The plugin below the vhdx filter as a vhdx::File: the container read and
// written through nbdkit's next_ops (NextFile), for one connection.
#pragma once

#include <nbdkit-filter.h>

#include <cstdint>
#include <string>

#include "paged_reader.h"

#include "vhdx/file.h"

namespace vhdx_filter {

// Reads go through a PagedReader (1 MiB pages: few round trips); writes
// go through and drop the pages they touch.
//
// The container's size is read once: the plugin's export cannot grow or
// shrink, so a write that needs the file to grow (a dynamic image
// allocating a block) fails with kNoSpace, saying so.
class NextFile final : public vhdx::File {
 public:
  NextFile(nbdkit_next* next, uint64_t size, bool writable)
      : next_(next), size_(size), writable_(writable), reader_(size, [this](uint64_t offset, void* buf, size_t n) {
          return Fetch(offset, buf, n);
        }) {}

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
  static constexpr uint64_t kZeroChunk = 1 << 20;    // written zeros, where the plugin cannot zero
  static constexpr size_t kMaxRequest = 32u << 20;  // next_ops take 32-bit counts

  vhdx::Status Fetch(uint64_t offset, void* buf, size_t n) const;
  vhdx::Status NoGrowth(uint64_t end, const char* what) const;
  vhdx::Status Zero(uint64_t offset, uint64_t length);

  nbdkit_next* next_;
  uint64_t size_;
  bool writable_;
  std::string name_ = "the VHDX image the plugin serves";
  PagedReader reader_;
};

}  // namespace vhdx_filter
