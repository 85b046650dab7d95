#include "format/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string_view>
#include <vector>

namespace vhdx::crc32c {
namespace {

// CRC-32C one bit at a time, straight from its definition (spec §0.4). It
// shares nothing with the library's table and SSE4.2 paths, so agreement
// with it checks whichever path this CPU takes.
uint32_t BitwiseCrc32c(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int bit = 0; bit < 8; ++bit) c = (c >> 1) ^ ((c & 1) ? 0x82F63B78u : 0);
  }
  return c ^ 0xFFFFFFFFu;
}

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(Crc32c, CheckValueOf123456789) {
  constexpr std::string_view kText = "123456789";
  EXPECT_EQ(Value(kText.data(), kText.size()), 0xE3069283u);
  EXPECT_EQ(BitwiseCrc32c(reinterpret_cast<const uint8_t*>(kText.data()), kText.size()),
            0xE3069283u);
}

TEST(Crc32c, FourKiBOfZeros) {
  std::vector<uint8_t> zeros(4096, 0);
  EXPECT_EQ(Value(zeros.data(), zeros.size()), 0x98F94189u);
}

TEST(Crc32c, EmptyInputLeavesTheCrcUnchanged) {
  EXPECT_EQ(Value(nullptr, 0), 0u);
  EXPECT_EQ(Extend(0xE3069283u, nullptr, 0), 0xE3069283u);
}

TEST(Crc32c, ExtendSplitAtEveryPositionEqualsOneShot) {
  auto data = RandomBytes(333, 1);
  const uint32_t whole = Value(data.data(), data.size());
  for (size_t split = 0; split <= data.size(); ++split) {
    uint32_t first = Value(data.data(), split);
    EXPECT_EQ(Extend(first, data.data() + split, data.size() - split), whole) << "split " << split;
  }
}

TEST(Crc32c, ExtendInThreePiecesEqualsOneShot) {
  auto data = RandomBytes(100, 2);
  const uint32_t whole = Value(data.data(), data.size());
  for (size_t a = 0; a <= data.size(); a += 7)
    for (size_t b = a; b <= data.size(); b += 5) {
      uint32_t c = Extend(0, data.data(), a);
      c = Extend(c, data.data() + a, b - a);
      c = Extend(c, data.data() + b, data.size() - b);
      EXPECT_EQ(c, whole) << "pieces at " << a << " and " << b;
    }
}

// Every length 0..300 (all tails of the 8-byte loops) at every alignment
// 0..15, plus a few sizes the format checksums (4 KiB, 64 KiB).
TEST(Crc32c, MatchesBitwiseReferenceAtManyLengthsAndAlignments) {
  auto data = RandomBytes(64 * 1024 + 64, 3);
  for (size_t align = 0; align < 16; ++align) {
    for (size_t len = 0; len <= 300; ++len) {
      const uint8_t* p = data.data() + align;
      ASSERT_EQ(Value(p, len), BitwiseCrc32c(p, len)) << "len " << len << " align " << align;
      // The table-driven path too, which CPUs without SSE4.2 take.
      ASSERT_EQ(SoftwareExtend(0, p, len), BitwiseCrc32c(p, len)) << "len " << len << " align " << align;
    }
    for (size_t len : {4095u, 4096u, 4097u, 8191u, 65535u, 65536u}) {
      const uint8_t* p = data.data() + align;
      ASSERT_EQ(Value(p, len), BitwiseCrc32c(p, len)) << "len " << len << " align " << align;
    }
  }
}

TEST(Crc32c, ValueWithZeroedFieldEqualsCrcOfTheZeroedCopy) {
  auto data = RandomBytes(4096, 4);
  for (size_t off : {size_t{0}, size_t{4}, size_t{5}, size_t{2047}, size_t{4092}}) {
    std::vector<uint8_t> zeroed = data;
    std::memset(zeroed.data() + off, 0, 4);
    EXPECT_EQ(ValueWithZeroedField(data.data(), data.size(), off),
              BitwiseCrc32c(zeroed.data(), zeroed.size()))
        << "field at " << off;
    // The field's own bytes are excluded, so rewriting them changes nothing.
    std::vector<uint8_t> rewritten = data;
    std::memset(rewritten.data() + off, 0xA5, 4);
    EXPECT_EQ(ValueWithZeroedField(rewritten.data(), rewritten.size(), off),
              ValueWithZeroedField(data.data(), data.size(), off));
  }
}

TEST(Crc32c, ValueWithZeroedFieldStillCoversEveryOtherByte) {
  auto data = RandomBytes(512, 5);
  const uint32_t base = ValueWithZeroedField(data.data(), data.size(), 4);
  for (size_t i = 0; i < data.size(); ++i) {
    if (i >= 4 && i < 8) continue;
    std::vector<uint8_t> flipped = data;
    flipped[i] ^= 0x01;
    EXPECT_NE(ValueWithZeroedField(flipped.data(), flipped.size(), 4), base) << "byte " << i;
  }
}

}  // namespace
}  // namespace vhdx::crc32c
