#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "vhdx/file.h"

namespace vhdx {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes Pattern(size_t n, uint8_t seed = 1) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 13 + (i >> 9));
  return b;
}

// The whole content, read back through ReadAt.
Bytes Contents(const File& f) {
  Bytes out(*f.Size());
  auto got = f.ReadAt(0, out.data(), out.size());
  EXPECT_TRUE(got.ok());
  EXPECT_EQ(*got, out.size());
  return out;
}

TEST(MemoryFile, ReadsWhatItHolds) {
  auto f = NewMemoryFile("mem", Pattern(1000));
  EXPECT_EQ(*f->Size(), 1000u);
  EXPECT_EQ(f->name(), "mem");
  EXPECT_TRUE(f->writable());
  Bytes buf(100);
  auto got = f->ReadAt(300, buf.data(), buf.size());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 100u);
  Bytes expect = Pattern(1000);
  EXPECT_EQ(buf, Bytes(expect.begin() + 300, expect.begin() + 400));
}

TEST(MemoryFile, ReadPastTheEndIsShort) {
  auto f = NewMemoryFile("mem", Pattern(1000));
  Bytes buf(100, 0xEE);
  EXPECT_EQ(*f->ReadAt(950, buf.data(), buf.size()), 50u);
  Bytes expect = Pattern(1000);
  EXPECT_TRUE(std::equal(buf.begin(), buf.begin() + 50, expect.begin() + 950));
  EXPECT_EQ(buf[50], 0xEE);  // nothing written beyond what was read
  EXPECT_EQ(*f->ReadAt(1000, buf.data(), buf.size()), 0u);
  EXPECT_EQ(*f->ReadAt(UINT64_MAX - 10, buf.data(), buf.size()), 0u);
}

TEST(MemoryFile, WriteOverwritesAndExtends) {
  auto f = NewMemoryFile("mem", Pattern(100));
  Bytes patch = Pattern(20, 77);
  ASSERT_TRUE(f->WriteAt(10, patch.data(), patch.size()).ok());
  ASSERT_TRUE(f->WriteAt(200, patch.data(), patch.size()).ok());  // leaves a gap
  EXPECT_EQ(*f->Size(), 220u);
  Bytes want = Pattern(100);
  std::copy(patch.begin(), patch.end(), want.begin() + 10);
  want.resize(200, 0);  // the gap reads as zeros
  want.insert(want.end(), patch.begin(), patch.end());
  EXPECT_EQ(Contents(*f), want);
  EXPECT_TRUE(f->Flush().ok());
}

TEST(MemoryFile, WriteWhoseEndWouldWrapIsRefused) {
  auto f = NewMemoryFile("mem", Pattern(100));
  const uint8_t four[4] = {1, 2, 3, 4};
  Status st = f->WriteAt(UINT64_MAX - 1, four, sizeof four);
  EXPECT_EQ(st.code(), Errc::kInvalidArgument) << st.message();
  EXPECT_EQ(Contents(*f), Pattern(100));
}

TEST(MemoryFile, TruncateShrinksAndGrowsWithZeros) {
  auto f = NewMemoryFile("mem", Pattern(100));
  ASSERT_TRUE(f->Truncate(40).ok());
  EXPECT_EQ(Contents(*f), Pattern(40));  // a prefix of Pattern(100)
  ASSERT_TRUE(f->Truncate(60).ok());
  Bytes want = Pattern(40);
  want.resize(60, 0);
  EXPECT_EQ(Contents(*f), want);
}

TEST(MemoryFile, PunchHoleZeroesAndKeepsTheSize) {
  auto f = NewMemoryFile("mem", Pattern(100));
  ASSERT_TRUE(f->PunchHole(10, 30).ok());
  ASSERT_TRUE(f->PunchHole(90, 1000).ok());   // across the end
  ASSERT_TRUE(f->PunchHole(5000, 100).ok());  // wholly past the end
  Bytes want = Pattern(100);
  std::fill(want.begin() + 10, want.begin() + 40, 0);
  std::fill(want.begin() + 90, want.end(), 0);
  EXPECT_EQ(Contents(*f), want);
  EXPECT_EQ(*f->AllocatedSize(), 100u);
}

TEST(MemoryFile, ReadOnlyRefusesEveryChange) {
  auto f = NewMemoryFile("ro", Pattern(100), /*writable=*/false);
  EXPECT_FALSE(f->writable());
  Bytes patch(10, 0xAB);
  for (const Status& st :
       {f->WriteAt(0, patch.data(), patch.size()), f->Truncate(10), f->PunchHole(0, 50)}) {
    EXPECT_EQ(st.code(), Errc::kReadOnly);
    EXPECT_NE(st.message().find("read-only"), std::string::npos) << st.message();
  }
  EXPECT_EQ(Contents(*f), Pattern(100));
  EXPECT_TRUE(f->Flush().ok());
}

TEST(MemoryFile, ConcurrentReadersSeeTheSameBytes) {
  const Bytes data = Pattern(64 * 1024);
  auto f = NewMemoryFile("mem", data, /*writable=*/false);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      Bytes buf(4096);
      for (uint64_t i = 0; i < 2000; ++i) {
        uint64_t off = (i * 7919 + t * 131) % (data.size() - buf.size());
        if (!f->ReadAt(off, buf.data(), buf.size()).ok() ||
            !std::equal(buf.begin(), buf.end(), data.begin() + off))
          ++mismatches[t];
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace vhdx

namespace vhdx {
namespace {

TEST(MemoryFileAllocate, ExtendsWithZerosAndKeepsContent) {
  std::vector<uint8_t> start(100, 0xAB);
  auto f = NewMemoryFile("mem", start);
  ASSERT_TRUE(f->Allocate(50, 4000).ok());
  EXPECT_EQ(*f->Size(), 4050u);
  std::vector<uint8_t> got(4050);
  ASSERT_EQ(*f->ReadAt(0, got.data(), got.size()), 4050u);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], i < 100 ? 0xAB : 0) << i;
  ASSERT_TRUE(f->Allocate(0, 10).ok());  // inside: no change
  EXPECT_EQ(*f->Size(), 4050u);
  EXPECT_EQ(f->Allocate(~uint64_t{0} - 5, 10).code(), Errc::kInvalidArgument);
  auto ro = NewMemoryFile("ro", start, /*writable=*/false);
  EXPECT_EQ(ro->Allocate(0, 4096).code(), Errc::kReadOnly);
  EXPECT_EQ(*ro->Size(), 100u);
}

}  // namespace
}  // namespace vhdx
