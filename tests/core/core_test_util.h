// Helpers shared by the core read-path tests.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "format/constants.h"
#include "support/image_builder.h"
#include "vhdx/file.h"
#include "vhdx/image.h"

namespace vhdx::test {

using format::GiB;
using format::KiB;
using format::MiB;
using format::TiB;

// `n` deterministic pseudo-random bytes; different seeds give different bytes.
inline std::vector<uint8_t> PatternBytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    for (size_t k = 0; k < 8 && i + k < n; ++k) out[i + k] = static_cast<uint8_t>(v >> (8 * k));
  }
  return out;
}

// Opens the builder's image read-only; fails the test if it does not open.
inline std::unique_ptr<Image> OpenBuilt(const ImageBuilder& b, const OpenOptions& options = {}) {
  auto image = Image::Open(b.BuildFile(), options);
  EXPECT_TRUE(image.ok()) << image.status().message();
  if (!image.ok()) return nullptr;
  return std::move(image).value();
}

inline Status OpenStatus(const ImageBuilder& b) {
  auto image = Image::Open(b.BuildFile());
  return image.ok() ? Status::Ok() : image.status();
}

inline std::vector<uint8_t> ReadImage(const Image& image, uint64_t offset, size_t n) {
  std::vector<uint8_t> out(n, 0xEE);
  Status st = image.Read(offset, out.data(), n);
  EXPECT_TRUE(st.ok()) << "read " << n << " at " << offset << ": " << st.message();
  return out;
}

inline std::vector<MapExtent> MapRange(const Image& image, uint64_t start, uint64_t length) {
  std::vector<MapExtent> out;
  auto collect = [&](const MapExtent& x) {
    out.push_back(x);
    return true;
  };
  Status st = image.Map(start, length, collect);
  EXPECT_TRUE(st.ok()) << st.message();
  return out;
}

inline std::vector<MapExtent> MapAll(const Image& image) {
  return MapRange(image, 0, image.virtual_size());
}

// Counts the reads that reach a wrapped File and the bytes they read inside
// one watched range (e.g. the BAT region), and records the WillNeed hints.
class CountingFile final : public File {
 public:
  CountingFile(std::unique_ptr<File> base, uint64_t watch_start, uint64_t watch_end)
      : base_(std::move(base)), watch_start_(watch_start), watch_end_(watch_end) {}

  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override {
    reads_++;
    bytes_ += n;
    uint64_t a = std::max(offset, watch_start_), b = std::min(offset + n, watch_end_);
    if (a < b) watched_bytes_ += b - a;
    return base_->ReadAt(offset, buf, n);
  }
  Status WriteAt(uint64_t offset, const void* buf, size_t n) override {
    return base_->WriteAt(offset, buf, n);
  }
  Status Flush() override { return base_->Flush(); }
  Result<uint64_t> Size() const override { return base_->Size(); }
  Status Truncate(uint64_t size) override { return base_->Truncate(size); }
  Status PunchHole(uint64_t o, uint64_t l) override { return base_->PunchHole(o, l); }
  Status Allocate(uint64_t o, uint64_t l) override { return base_->Allocate(o, l); }
  bool writable() const override { return base_->writable(); }
  const std::string& name() const override { return base_->name(); }
  void WillNeed(uint64_t offset, uint64_t length) const override {
    std::lock_guard lock(hints_mu_);
    hints_.emplace_back(offset, length);
  }

  // The (offset, length) hints so far, which are then forgotten.
  std::vector<std::pair<uint64_t, uint64_t>> TakeHints() const {
    std::lock_guard lock(hints_mu_);
    return std::exchange(hints_, {});
  }
  uint64_t reads() const { return reads_; }
  uint64_t bytes() const { return bytes_; }
  uint64_t watched_bytes() const { return watched_bytes_; }

 private:
  std::unique_ptr<File> base_;
  uint64_t watch_start_, watch_end_;
  mutable std::atomic<uint64_t> reads_{0}, bytes_{0}, watched_bytes_{0};
  mutable std::mutex hints_mu_;
  mutable std::vector<std::pair<uint64_t, uint64_t>> hints_;
};

// A read-only view of a file owned elsewhere (a read-only open of a
// crashed file without copying it).
class ReadOnlyView final : public File {
 public:
  explicit ReadOnlyView(const File& base) : base_(base) {}
  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override {
    return base_.ReadAt(offset, buf, n);
  }
  Status WriteAt(uint64_t, const void*, size_t) override { return ReadOnly(); }
  Status Flush() override { return ReadOnly(); }
  Result<uint64_t> Size() const override { return base_.Size(); }
  Status Truncate(uint64_t) override { return ReadOnly(); }
  Status PunchHole(uint64_t, uint64_t) override { return ReadOnly(); }
  Status Allocate(uint64_t, uint64_t) override { return ReadOnly(); }
  Result<uint64_t> NextData(uint64_t offset) const override { return base_.NextData(offset); }
  bool writable() const override { return false; }
  const std::string& name() const override { return base_.name(); }

 private:
  static Status ReadOnly() { return Status(Errc::kReadOnly, "read-only view"); }
  const File& base_;
};

}  // namespace vhdx::test
