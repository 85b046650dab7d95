// A File decorator that injects failures and records every mutating call,
// for error-path tests now and crash-consistency tests of the write path.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "vhdx/file.h"

namespace vhdx {

class FaultInjectingFile final : public File {
 public:
  struct Op {
    enum Kind { kWrite, kFlush, kTruncate, kPunch } kind;
    uint64_t offset = 0;
    uint64_t length = 0;
  };

  explicit FaultInjectingFile(std::unique_ptr<File> base) : base_(std::move(base)) {}

  // The n-th read (0-based) from now fails with kIoError; -1 disables.
  void FailReadAfter(int64_t n) { reads_until_failure_ = n; }
  // The n-th write fails with `code` (kNoSpace simulates a full disk).
  void FailWriteAfter(int64_t n, Errc code = Errc::kIoError) {
    writes_until_failure_ = n;
    write_error_ = code;
  }
  std::vector<Op> ops() const {
    std::lock_guard lock(mu_);
    return ops_;
  }
  uint64_t reads() const { return reads_; }

  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override;
  Status WriteAt(uint64_t offset, const void* buf, size_t n) override;
  Status Flush() override;
  Result<uint64_t> Size() const override { return base_->Size(); }
  Status Truncate(uint64_t size) override;
  Status PunchHole(uint64_t offset, uint64_t length) override;
  Status Allocate(uint64_t offset, uint64_t length) override { return base_->Allocate(offset, length); }
  bool writable() const override { return base_->writable(); }
  const std::string& name() const override { return base_->name(); }

 private:
  void Record(Op op) {
    std::lock_guard lock(mu_);
    ops_.push_back(op);
  }
  std::unique_ptr<File> base_;
  mutable std::atomic<int64_t> reads_until_failure_{-1};
  std::atomic<int64_t> writes_until_failure_{-1};
  Errc write_error_ = Errc::kIoError;
  mutable std::atomic<uint64_t> reads_{0};
  mutable std::mutex mu_;
  std::vector<Op> ops_;
};

}  // namespace vhdx
