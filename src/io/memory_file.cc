#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <shared_mutex>

#include "util/coding.h"
#include "vhdx/file.h"

namespace vhdx {
namespace {

class MemoryFile final : public File {
 public:
  MemoryFile(std::string name, std::vector<uint8_t> data, bool writable)
      : name_(std::move(name)), data_(std::move(data)), writable_(writable) {}

  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override {
    std::shared_lock lock(mu_);
    if (offset >= data_.size()) return size_t{0};
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, data_.size() - offset));
    std::memcpy(buf, data_.data() + offset, k);
    return k;
  }
  Status WriteAt(uint64_t offset, const void* buf, size_t n) override {
    if (!writable_) return Status(Errc::kReadOnly, "file is open read-only");
    uint64_t end;
    if (AddOverflows(offset, n, &end))  // would wrap and copy outside the buffer
      return Status(Errc::kInvalidArgument,
                    fmt::format("write of {} bytes at offset {:#x} overflows", n, offset));
    std::unique_lock lock(mu_);
    if (end > data_.size()) data_.resize(end);
    std::memcpy(data_.data() + offset, buf, n);
    return Status::Ok();
  }
  Status Flush() override { return Status::Ok(); }
  Result<uint64_t> Size() const override {
    std::shared_lock lock(mu_);
    return static_cast<uint64_t>(data_.size());
  }
  Status Truncate(uint64_t size) override {
    if (!writable_) return Status(Errc::kReadOnly, "file is open read-only");
    std::unique_lock lock(mu_);
    data_.resize(size);
    return Status::Ok();
  }
  Status PunchHole(uint64_t offset, uint64_t length) override {
    if (!writable_) return Status(Errc::kReadOnly, "file is open read-only");
    std::unique_lock lock(mu_);
    if (offset < data_.size())
      std::memset(data_.data() + offset, 0, std::min<uint64_t>(length, data_.size() - offset));
    return Status::Ok();
  }
  Status Allocate(uint64_t offset, uint64_t length) override {
    if (!writable_) return Status(Errc::kReadOnly, "file is open read-only");
    uint64_t end;
    if (AddOverflows(offset, length, &end))
      return Status(Errc::kInvalidArgument, fmt::format("allocate {:#x}+{:#x} overflows", offset, length));
    std::unique_lock lock(mu_);
    if (end > data_.size()) data_.resize(end);
    return Status::Ok();
  }
  bool writable() const override { return writable_; }
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
  mutable std::shared_mutex mu_;
  std::vector<uint8_t> data_;
  bool writable_;
};

}  // namespace

std::unique_ptr<File> NewMemoryFile(std::string name, std::vector<uint8_t> contents, bool writable) {
  return std::make_unique<MemoryFile>(std::move(name), std::move(contents), writable);
}

}  // namespace vhdx
