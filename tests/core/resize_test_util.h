// Helpers shared by the resize tests (in-process and through the CLI): the
// shapes resized, an image with data where resizing can lose it, and what a
// resized (or half-resized) image must read.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core_test_util.h"
#include "vhdx/create.h"

namespace vhdx::test {

inline std::string CheckErrors(const File& file) {
  auto report = Check(file);
  if (!report.ok()) return "check failed: " + report.status().message();
  std::string out;
  for (const auto& f : report->findings)
    if (f.severity == CheckFinding::Severity::kError)
      out += fmt::format("[{} at {:#x}: {}] ", f.structure, f.offset, f.message);
  return out;
}

struct Spec {
  DiskType type = DiskType::kDynamic;
  uint64_t size = 0;
  uint32_t block_size = 1 * MiB;
  uint32_t sector = 512;
  uint64_t new_size = 0;
  std::string Describe() const {
    return fmt::format("{} image of {} bytes ({} KiB blocks, {}-byte sectors) resized to {}",
                       type == DiskType::kFixed ? "fixed" : type == DiskType::kDynamic ? "dynamic" : "differencing", size, block_size / KiB, sector, new_size);
  }
};

// Image::Open over the file given, writes going into it.
class Borrowed final : public File {
 public:
  explicit Borrowed(File& base) : base_(base) {}
  Result<size_t> ReadAt(uint64_t o, void* b, size_t n) const override { return base_.ReadAt(o, b, n); }
  Status WriteAt(uint64_t o, const void* b, size_t n) override { return base_.WriteAt(o, b, n); }
  Status Flush() override { return base_.Flush(); }
  Result<uint64_t> Size() const override { return base_.Size(); }
  Status Truncate(uint64_t s) override { return base_.Truncate(s); }
  Status PunchHole(uint64_t o, uint64_t n) override { return base_.PunchHole(o, n); }
  Status Allocate(uint64_t o, uint64_t n) override { return base_.Allocate(o, n); }
  Result<uint64_t> NextData(uint64_t offset) const override { return base_.NextData(offset); }
  bool writable() const override { return base_.writable(); }
  const std::string& name() const override { return base_.name(); }

 private:
  File& base_;
};

// A base image with data: a few whole blocks, a partial one, and the last
// (partial when the size is not a multiple of the block size) block written
// to its very end. `model` gets the content.
inline std::unique_ptr<SparseMemoryFile> MakeImage(const Spec& spec, uint64_t seed, std::vector<uint8_t>* model) {
  auto file = std::make_unique<SparseMemoryFile>("resize.vhdx", true);
  CreateOptions options;
  options.type = spec.type;
  options.virtual_size = spec.size;
  options.block_size = spec.block_size;
  options.logical_sector_size = spec.sector;
  EXPECT_TRUE(CreateImage(*file, options).ok());
  model->assign(spec.size, 0);
  auto image = Image::Open(std::make_unique<Borrowed>(*file), {.read_only = false});
  EXPECT_TRUE(image.ok()) << image.status().message();
  auto put = [&](uint64_t offset, uint64_t n, uint64_t s) {
    auto bytes = PatternBytes(n, s);
    ASSERT_TRUE((*image)->Write(offset, bytes.data(), n).ok());
    std::copy(bytes.begin(), bytes.end(), model->begin() + offset);
  };
  put(0, spec.block_size, seed);
  // A partial block: the fourth, or one inside the first quarter of a disk
  // of few large blocks.
  put(std::min<uint64_t>(3ull * spec.block_size, spec.size / 4) / 4096 * 4096 + 4096, 8192, seed + 1);
  put(spec.size - 2 * spec.sector, 2 * spec.sector, seed + 2);
  put(spec.size / 2 / spec.sector * spec.sector, 64 * KiB, seed + 3);
  EXPECT_TRUE((*image)->Close().ok());
  return file;
}

// Content of `image` against `model` (the content before the resize, of
// `old_size` bytes): below the smaller size as before, past the old end
// zeros. Large growth is checked through the map (no data past the old last
// block, whose tail is zeroed in place) plus reads at its ends.
inline std::string CompareContent(const Image& image, const std::vector<uint8_t>& model) {
  const uint64_t size = image.virtual_size();
  const uint64_t keep = std::min<uint64_t>(size, model.size());
  std::vector<uint8_t> got(keep);
  Status st = image.Read(0, got.data(), keep);
  if (!st.ok()) return "read: " + st.message();
  if (!std::equal(got.begin(), got.end(), model.begin())) {
    size_t i = std::mismatch(got.begin(), got.end(), model.begin()).first - got.begin();
    return fmt::format("content below the old end differs at {:#x}", i);
  }
  if (size <= model.size()) return "";
  const uint64_t grown = size - model.size();
  std::string bad;
  st = image.Map(model.size(), grown, [&](const MapExtent& x) {
    const uint64_t bs = image.info().block_size;
    const uint64_t old_blocks_end = (model.size() + bs - 1) / bs * bs;
    // (A fixed image's new blocks are allocated and zeroed: the reads below check them.)
    if (image.info().type != DiskType::kFixed && !x.zero && x.data && grown > 256 * MiB &&
        x.start + x.length > old_blocks_end)
      bad = fmt::format("extent at {:#x}+{:#x} holds data", x.start, x.length);
    return bad.empty();
  });
  if (!st.ok()) return "map: " + st.message();
  if (!bad.empty()) return bad;
  auto zeros_at = [&](uint64_t offset, uint64_t n) -> std::string {
    std::vector<uint8_t> buf(n, 0xEE);
    Status r = image.Read(offset, buf.data(), n);
    if (!r.ok()) return "read: " + r.message();
    if (std::any_of(buf.begin(), buf.end(), [](uint8_t b) { return b != 0; }))
      return fmt::format("growth at {:#x}+{:#x} is not zeros", offset, n);
    return "";
  };
  if (grown <= 256 * MiB) return zeros_at(model.size(), grown);
  std::string e = zeros_at(model.size(), 4 * MiB);
  return e.empty() ? zeros_at(size - 4 * MiB, 4 * MiB) : e;
}

}  // namespace vhdx::test
