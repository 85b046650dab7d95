// Model-based tests of the write path: seeded random sequences of writes,
// write-zeroes, discards, flushes, FUA writes and close/reopen on small
// dynamic and fixed images, checked after every step against a plain byte
// vector holding what the virtual disk must read. Every reopen (and the end)
// also compares the whole disk and requires vhdx::Check to find nothing.
// A threaded variant runs four writers on disjoint blocks against two
// readers of blocks nobody writes.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "core_test_util.h"
#include "format/bat.h"
#include "vhdx/create.h"

namespace vhdx::test {
namespace {

struct ModelConfig {
  DiskType type = DiskType::kDynamic;
  uint32_t block_size = 1 * MiB;
  uint32_t logical_sector_size = 512;
  uint64_t virtual_size = 0;

  std::string Describe() const {
    return fmt::format("{} image, {} MiB blocks, {}-byte sectors, virtual size {}",
                       DiskTypeName(type), block_size / MiB, logical_sector_size, virtual_size);
  }
};

// Seeds cycle through the geometries; the virtual size is always a few
// blocks plus a partial last block (a multiple of 4 KiB, so valid for both
// sector sizes).
ModelConfig ConfigForSeed(uint64_t seed) {
  static constexpr struct {
    DiskType type;
    uint32_t block;
    uint32_t sector;
  } kShapes[] = {
      {DiskType::kDynamic, 1 * MiB, 512}, {DiskType::kDynamic, 2 * MiB, 4096},
      {DiskType::kFixed, 1 * MiB, 4096},  {DiskType::kDynamic, 1 * MiB, 4096},
      {DiskType::kFixed, 2 * MiB, 512},
  };
  const auto& shape = kShapes[seed % std::size(kShapes)];
  std::mt19937_64 rng(seed * 7919 + 13);
  ModelConfig c;
  c.type = shape.type;
  c.block_size = shape.block;
  c.logical_sector_size = shape.sector;
  const uint64_t whole_blocks = 3 + rng() % 4;
  const uint64_t tail_pages = 1 + rng() % (shape.block / 4096 - 1);
  c.virtual_size = whole_blocks * shape.block + tail_pages * 4096;
  return c;
}

std::unique_ptr<SparseMemoryFile> NewImage(const ModelConfig& c) {
  auto file = std::make_unique<SparseMemoryFile>("model.vhdx", true);
  CreateOptions o;
  o.type = c.type;
  o.virtual_size = c.virtual_size;
  o.block_size = c.block_size;
  o.logical_sector_size = c.logical_sector_size;
  Status st = CreateImage(*file, o);
  EXPECT_TRUE(st.ok()) << st.message();
  return file;
}

// First difference between `got` and model[offset, offset + got.size()),
// described; empty when equal.
std::string Difference(const std::vector<uint8_t>& model, uint64_t offset,
                       const std::vector<uint8_t>& got) {
  if (std::equal(got.begin(), got.end(), model.begin() + static_cast<ptrdiff_t>(offset))) return {};
  size_t i = 0;
  while (got[i] == model[offset + i]) ++i;
  size_t n = 0;
  for (size_t k = i; k < got.size(); ++k) n += got[k] != model[offset + k];
  return fmt::format(
      "first wrong byte at virtual offset {:#x}: read {:#04x}, model {:#04x} ({} bytes "
      "differ in the {} read at {:#x})",
      offset + i, got[i], model[offset + i], n, got.size(), offset);
}

std::string CheckFindings(const File& file) {
  auto report = Check(file);
  if (!report.ok()) return "check failed: " + report.status().message();
  std::string out;
  for (const auto& f : report->findings)
    out += fmt::format("{}{} at {:#x}: {}; ",
                       f.severity == CheckFinding::Severity::kError ? "error " : "warning ",
                       f.structure, f.offset, f.message);
  return out;
}

// One random run: the image, the model, and the history for messages.
class ModelRun {
 public:
  ModelRun(const ModelConfig& config, uint64_t seed) : c_(config), seed_(seed), rng_(seed) {
    model_.assign(c_.virtual_size, 0);
    Open(NewImage(c_));
  }

  // Runs `steps` random operations; stops at the first failure.
  void Run(int steps) {
    for (step_ = 0; step_ < steps && ok(); ++step_) Step();
    if (ok()) CloseAndVerify();
  }

  bool ok() const { return !::testing::Test::HasFailure() && image_ != nullptr; }

 private:
  void Fail(const std::string& what) {
    std::string recent;
    const size_t from = history_.size() > 12 ? history_.size() - 12 : 0;
    for (size_t i = from; i < history_.size(); ++i) recent += "\n    " + history_[i];
    ADD_FAILURE() << "seed " << seed_ << " (" << c_.Describe() << "), step " << step_ << ": "
                  << what << "\n  last operations:" << recent;
    image_.reset();
  }

  void Open(std::unique_ptr<SparseMemoryFile> file) {
    raw_ = file.get();
    auto image = Image::Open(std::move(file), {.read_only = false});
    if (!image.ok()) return Fail("read-write open failed: " + image.status().message());
    image_ = std::move(image).value();
  }

  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  // A random range: small, medium, large, or whole blocks (the only shape
  // that unmaps), sometimes rounded to the logical sector.
  std::pair<uint64_t, uint64_t> RandomRange() {
    const uint64_t size = c_.virtual_size, bs = c_.block_size;
    const uint64_t shape = Below(20);
    if (shape >= 16) {  // whole blocks, up to and including the partial last one
      const uint64_t first = Below((size + bs - 1) / bs);
      const uint64_t off = first * bs;
      return {off, std::min(size, (first + 1 + Below(2)) * bs) - off};
    }
    uint64_t len = 1 + (shape < 7 ? Below(4096) : shape < 12 ? Below(256 * KiB) : Below(bs * 5 / 2));
    len = std::min(len, size);
    uint64_t off = Below(size - len + 1);
    if (Below(10) < 3) {
      const uint64_t s = c_.logical_sector_size;
      off = off / s * s;
      len = std::max<uint64_t>(s, (len + s - 1) / s * s);
      len = std::min(len, size - off);
    }
    return {off, len};
  }

  void Expect(uint64_t off, uint64_t len, const char* what) {
    if (len == 0) return;
    std::vector<uint8_t> got(len, 0xEE);
    Status st = image_->Read(off, got.data(), len);
    if (!st.ok())
      return Fail(
          fmt::format("{}: read of {} bytes at {:#x} failed: {}", what, len, off, st.message()));
    std::string diff = Difference(model_, off, got);
    if (!diff.empty()) Fail(fmt::format("{}: {}", what, diff));
  }

  void Step() {
    const uint64_t pick = Below(100);
    auto [off, len] = RandomRange();
    Status st = Status::Ok();
    std::string op;
    // 47% writes, 14% write-zeroes, 14% discards, 13% flushes, 6% FUA
    // writes, 4% close and reopen, 2% empty requests.
    if (pick < 47 || (pick >= 88 && pick < 94)) {
      const bool fua = pick >= 88;
      const bool zeros = Below(100) < 15;
      std::vector<uint8_t> data = zeros ? std::vector<uint8_t>(len, 0) : PatternBytes(len, rng_());
      op = fmt::format("{}write {:#x}+{:#x}{}", fua ? "fua " : "", off, len,
                       zeros ? " (zeros)" : "");
      st = image_->Write(off, data.data(), data.size(), {.fua = fua});
      std::memcpy(model_.data() + off, data.data(), len);
    } else if (pick < 61) {
      const bool unmap = Below(2) == 0;
      op = fmt::format("write_zeroes {:#x}+{:#x} may_unmap={}", off, len, unmap);
      st = image_->WriteZeroes(off, len, unmap);
      std::memset(model_.data() + off, 0, len);
    } else if (pick < 75) {
      op = fmt::format("discard {:#x}+{:#x}", off, len);
      st = image_->Discard(off, len);
      std::memset(model_.data() + off, 0, len);
    } else if (pick < 88) {
      op = "flush";
      off = len = 0;
      st = image_->Flush();
    } else if (pick < 98) {
      op = "close and reopen";
      history_.push_back(op);
      CloseAndVerify();
      if (!ok()) return;
      auto copy = std::make_unique<SparseMemoryFile>(*raw_, "model.vhdx", true);
      image_.reset();
      Open(std::move(copy));
      if (ok()) ExpectWholeDisk("after reopen");
      return;
    } else {
      // An empty request is accepted and changes nothing.
      op = "empty write and discard";
      uint8_t x = 0x77;
      st = image_->Write(off, &x, 0);
      if (st.ok()) st = image_->Discard(off, 0);
      off = len = 0;
    }
    history_.push_back(op);
    if (!st.ok()) return Fail(op + " failed: " + st.message());
    Expect(off, len, "the range just changed");
    if (!ok()) return;
    auto [r_off, r_len] = RandomRange();
    Expect(r_off, std::min<uint64_t>(r_len, 512 * KiB), "a random range");
  }

  void ExpectWholeDisk(const char* when) { Expect(0, c_.virtual_size, when); }

  // Close, whole disk, Check finds nothing; the image stays open (closed)
  // on raw_.
  void CloseAndVerify() {
    ExpectWholeDisk("before close");
    if (!ok()) return;
    Status st = image_->Close();
    if (!st.ok()) return Fail("close failed: " + st.message());
    const ImageInfo& info = image_->info();
    if (!info.headers[info.current_header].log_guid.IsZero())
      return Fail("LogGuid is set after close");
    std::string findings = CheckFindings(*raw_);
    if (!findings.empty()) return Fail("check after close: " + findings);
    auto ro = Image::Open(std::make_unique<SparseMemoryFile>(*raw_, "model.vhdx", false));
    if (!ro.ok()) return Fail("read-only open after close failed: " + ro.status().message());
    if ((*ro)->info().log.dirty) return Fail("log is dirty after close");
    std::vector<uint8_t> whole(c_.virtual_size);
    st = (*ro)->Read(0, whole.data(), whole.size());
    if (!st.ok()) return Fail("read after close: " + st.message());
    std::string diff = Difference(model_, 0, whole);
    if (!diff.empty()) return Fail("whole disk after close: " + diff);
    if (c_.type == DiskType::kFixed) {
      // A fixed image stays fully allocated whatever was discarded.
      auto counts = (*ro)->CountAllocation();
      if (!counts.ok()) return Fail(counts.status().message());
      const uint64_t blocks = (c_.virtual_size + c_.block_size - 1) / c_.block_size;
      if (counts->payload[format::kPayloadFullyPresent] != blocks)
        Fail(fmt::format("fixed image has {} of {} blocks FULLY_PRESENT",
                         counts->payload[format::kPayloadFullyPresent], blocks));
    }
  }

  ModelConfig c_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  std::vector<uint8_t> model_;
  SparseMemoryFile* raw_ = nullptr;
  std::unique_ptr<Image> image_;
  std::vector<std::string> history_;
  int step_ = 0;
};

TEST(WriteModelTest, RandomSequencesMatchTheModelAfterEveryStep) {
  for (uint64_t seed = 1; seed <= 20 && !HasFailure(); ++seed) {
    ModelRun run(ConfigForSeed(seed), seed);
    run.Run(300);
  }
}

// Blocks are shared out by number modulo 6: writer t owns blocks with
// b % 6 == t; blocks with b % 6 in {4, 5} are written before the threads
// start and never during, so readers may demand their exact content.
constexpr int kWriters = 4;
constexpr int kReaders = 2;
constexpr uint64_t kGroups = 6;

struct SharedDisk {
  ModelConfig c;
  std::unique_ptr<Image> image;
  SparseMemoryFile* raw = nullptr;
  std::vector<uint8_t> model;  // each byte written only by its block's owner
  uint64_t blocks = 0;
  uint64_t UsedBytes(uint64_t b) const {
    return std::min<uint64_t>(c.block_size, c.virtual_size - b * c.block_size);
  }
};

void WriterThread(SharedDisk& d, int t, uint64_t seed, std::atomic<int>& failures) {
  std::mt19937_64 rng(seed * 1000 + t);
  std::vector<uint64_t> mine;
  for (uint64_t b = t; b < d.blocks; b += kGroups) mine.push_back(b);
  for (int step = 0; step < 150 && failures == 0; ++step) {
    const uint64_t b = mine[rng() % mine.size()];
    const uint64_t used = d.UsedBytes(b);
    const uint64_t base = b * d.c.block_size;
    uint64_t in = rng() % used;
    uint64_t len = 1 + rng() % std::min<uint64_t>(used - in, rng() % 2 ? 8 * KiB : used);
    if (rng() % 5 == 0) in = 0, len = used;  // whole block: allocation and release
    const uint64_t off = base + in;
    const int pick = static_cast<int>(rng() % 100);
    Status st = Status::Ok();
    std::string op;
    if (pick < 55) {
      auto data = rng() % 8 == 0 ? std::vector<uint8_t>(len, 0) : PatternBytes(len, rng());
      const bool fua = pick < 5;
      op = fmt::format("{}write {:#x}+{:#x}", fua ? "fua " : "", off, len);
      st = d.image->Write(off, data.data(), len, {.fua = fua});
      std::memcpy(d.model.data() + off, data.data(), len);
    } else if (pick < 70) {
      op = fmt::format("write_zeroes {:#x}+{:#x}", off, len);
      st = d.image->WriteZeroes(off, len, rng() % 2 == 0);
      std::memset(d.model.data() + off, 0, len);
    } else if (pick < 90) {
      op = fmt::format("discard {:#x}+{:#x}", off, len);
      st = d.image->Discard(off, len);
      std::memset(d.model.data() + off, 0, len);
    } else {
      op = "flush";
      st = d.image->Flush();
      len = 0;
    }
    if (!st.ok()) {
      ++failures;
      ADD_FAILURE() << "writer " << t << " step " << step << ": " << op << ": " << st.message();
      return;
    }
    if (len == 0) continue;
    // Nobody else writes this block: the writer reads its own writes back.
    std::vector<uint8_t> got(len);
    st = d.image->Read(off, got.data(), len);
    std::string diff = st.ok() ? Difference(d.model, off, got) : st.message();
    if (!diff.empty()) {
      ++failures;
      ADD_FAILURE() << "writer " << t << " step " << step << " after " << op << ": " << diff;
      return;
    }
  }
}

void ReaderThread(const SharedDisk& d, int r, uint64_t seed, const std::atomic<int>& writers_left,
                  std::atomic<int>& failures, std::atomic<uint64_t>& stable_reads) {
  std::mt19937_64 rng(seed * 2000 + r);
  std::vector<uint8_t> got;
  while (writers_left > 0 && failures == 0) {
    const uint64_t b = rng() % d.blocks;
    const uint64_t used = d.UsedBytes(b);
    const uint64_t in = rng() % used;
    const uint64_t len = 1 + rng() % (used - in);
    const uint64_t off = b * d.c.block_size + in;
    got.assign(len, 0xEE);
    Status st = d.image->Read(off, got.data(), len);
    if (!st.ok()) {
      ++failures;
      ADD_FAILURE() << "reader " << r << ": read " << len << " at " << off << ": " << st.message();
      return;
    }
    if (b % kGroups < kWriters) continue;  // being written: old, new or a mix
    std::string diff = Difference(d.model, off, got);
    if (!diff.empty()) {
      ++failures;
      ADD_FAILURE() << "reader " << r << " of a block nobody writes: " << diff;
      return;
    }
    ++stable_reads;
  }
}

void RunThreaded(const ModelConfig& c, uint64_t seed) {
  SCOPED_TRACE(fmt::format("seed {}, {}", seed, c.Describe()));
  SharedDisk d;
  d.c = c;
  d.blocks = (c.virtual_size + c.block_size - 1) / c.block_size;
  d.model.assign(c.virtual_size, 0);
  auto file = NewImage(c);
  d.raw = file.get();
  auto image = Image::Open(std::move(file), {.read_only = false});
  ASSERT_TRUE(image.ok()) << image.status().message();
  d.image = std::move(image).value();
  // Every block starts with content, committed.
  for (uint64_t b = 0; b < d.blocks; ++b) {
    auto data = PatternBytes(d.UsedBytes(b), seed * 100 + b);
    ASSERT_TRUE(d.image->Write(b * c.block_size, data.data(), data.size()).ok());
    std::memcpy(d.model.data() + b * c.block_size, data.data(), data.size());
  }
  ASSERT_TRUE(d.image->Flush().ok());

  std::atomic<int> failures{0}, writers_left{kWriters};
  std::atomic<uint64_t> stable_reads{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < kReaders; ++r)
    threads.emplace_back(
        [&, r] { ReaderThread(d, r, seed, writers_left, failures, stable_reads); });
  for (int t = 0; t < kWriters; ++t)
    threads.emplace_back([&, t] {
      WriterThread(d, t, seed, failures);
      --writers_left;
    });
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  EXPECT_GT(stable_reads.load(), 0u);

  std::vector<uint8_t> whole(c.virtual_size);
  ASSERT_TRUE(d.image->Read(0, whole.data(), whole.size()).ok());
  EXPECT_EQ(Difference(d.model, 0, whole), "");
  ASSERT_TRUE(d.image->Close().ok());
  EXPECT_EQ(CheckFindings(*d.raw), "");
  auto ro = Image::Open(std::make_unique<SparseMemoryFile>(*d.raw, "model.vhdx", false));
  ASSERT_TRUE(ro.ok()) << ro.status().message();
  ASSERT_TRUE((*ro)->Read(0, whole.data(), whole.size()).ok());
  EXPECT_EQ(Difference(d.model, 0, whole), "");
}

TEST(WriteModelTest, ConcurrentWritersOnDisjointBlocksAndReadersOfStableBlocks) {
  for (uint64_t seed = 1; seed <= 3 && !HasFailure(); ++seed) {
    ModelConfig c;
    c.type = DiskType::kDynamic;
    c.block_size = 1 * MiB;
    c.virtual_size = 24 * MiB + 64 * KiB;  // 25 blocks, the last one partial
    RunThreaded(c, seed);
  }
  ModelConfig fixed;
  fixed.type = DiskType::kFixed;
  fixed.block_size = 2 * MiB;
  fixed.logical_sector_size = 4096;
  fixed.virtual_size = 24 * MiB + 12 * KiB;
  if (!HasFailure()) RunThreaded(fixed, 4);
}

}  // namespace
}  // namespace vhdx::test
