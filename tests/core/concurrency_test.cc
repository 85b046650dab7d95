// Image's const members are documented safe to call from many threads at
// once. Eight threads read random ranges (many crossing blocks) and every
// byte must match the model. Runs under the ASan build too (scripts/check).
#include <random>
#include <thread>

#include "core_test_util.h"
#include "format/bat.h"
#include "support/test_util.h"

namespace vhdx::test {
namespace {

class ConcurrentReadTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kBlock = 1 * MiB;
  static constexpr uint64_t kBlocks = 40;

  ConcurrentReadTest()
      : b_({.virtual_size = kBlocks * kBlock, .block_size = kBlock}), model_(kBlocks * kBlock, 0) {
    std::mt19937_64 rng(5);
    std::vector<uint64_t> order(kBlocks);
    for (uint64_t i = 0; i < kBlocks; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);  // file order differs from virtual order
    for (uint64_t blk : order) {
      if (blk % 5 == 4) {
        b_.SetBlock(blk, format::kPayloadZero);
        continue;
      }
      if (blk % 7 == 3) continue;  // NOT_PRESENT
      auto data = PatternBytes(kBlock, blk);
      b_.WriteVirtual(blk * kBlock, data);
      std::copy(data.begin(), data.end(), model_.begin() + blk * kBlock);
    }
  }

  // Runs 8 threads of random reads against `image`; returns mismatches.
  int Hammer(const Image& image) {
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(100 + t);
        std::vector<uint8_t> buf;
        for (int i = 0; i < 300; ++i) {
          uint64_t len = 1 + rng() % (rng() % 8 == 0 ? 3 * kBlock : 64 * KiB);
          uint64_t off = rng() % (model_.size() - len + 1);
          buf.assign(len, 0xEE);
          if (!image.Read(off, buf.data(), len).ok() ||
              !std::equal(buf.begin(), buf.end(), model_.begin() + off))
            ++bad;
        }
      });
    for (auto& th : threads) th.join();
    return bad.load();
  }

  ImageBuilder b_;
  std::vector<uint8_t> model_;
};

TEST_F(ConcurrentReadTest, EightThreadsOnMemoryFile) {
  auto image = OpenBuilt(b_);
  ASSERT_TRUE(image);
  EXPECT_EQ(Hammer(*image), 0);
}

TEST_F(ConcurrentReadTest, EightThreadsOnHostFile) {
  std::string path = ScratchPath("concurrent.vhdx");
  b_.WriteTo(path);
  auto image = Image::Open(path);
  ASSERT_TRUE(image.ok()) << image.status().message();
  EXPECT_EQ(Hammer(**image), 0);
}

TEST_F(ConcurrentReadTest, EightThreadsThroughDirtyLogOverlay) {
  // Move block 0's BAT entry into the log: every read of block 0 then goes
  // through the replay overlay.
  uint64_t where = b_.AppendSpace(kBlock);
  auto data = PatternBytes(kBlock, 999);
  b_.WriteFile(where, data);
  std::copy(data.begin(), data.end(), model_.begin());
  b_.WriteLogEntry({.sequence_number = 3,
                    .updates = {b_.BatSectorUpdate(0, format::kPayloadFullyPresent, where)}});
  b_.MarkLogDirty();
  auto image = OpenBuilt(b_);
  ASSERT_TRUE(image);
  ASSERT_TRUE(image->info().log.dirty);
  EXPECT_EQ(Hammer(*image), 0);
}

}  // namespace
}  // namespace vhdx::test
