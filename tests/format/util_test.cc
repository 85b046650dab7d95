// src/util: little-endian coding, checked arithmetic, string conversions.
#include <gtest/gtest.h>

#include <cstring>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "util/coding.h"
#include "util/strings.h"

namespace vhdx {
namespace {

TEST(Coding, FixedWidthIntegersAreLittleEndianAtAnyAlignment) {
  uint8_t buf[9 + 8] = {};
  for (size_t at = 0; at < 9; ++at) {
    uint8_t* p = buf + at;
    EncodeFixed16(p, 0x1234);
    EXPECT_EQ(p[0], 0x34);
    EXPECT_EQ(p[1], 0x12);
    EXPECT_EQ(DecodeFixed16(p), 0x1234);
    EncodeFixed32(p, 0x89ABCDEFu);
    const uint8_t le32[4] = {0xEF, 0xCD, 0xAB, 0x89};
    EXPECT_EQ(std::memcmp(p, le32, 4), 0);
    EXPECT_EQ(DecodeFixed32(p), 0x89ABCDEFu);
    EncodeFixed64(p, 0x0102030405060708ull);
    const uint8_t le64[8] = {8, 7, 6, 5, 4, 3, 2, 1};
    EXPECT_EQ(std::memcmp(p, le64, 8), 0);
    EXPECT_EQ(DecodeFixed64(p), 0x0102030405060708ull);
  }
}

TEST(Coding, HighBitsSurviveDecoding) {
  const uint8_t ones[8] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  EXPECT_EQ(DecodeFixed16(ones), 0xFFFFu);
  EXPECT_EQ(DecodeFixed32(ones), 0xFFFFFFFFu);
  EXPECT_EQ(DecodeFixed64(ones), UINT64_MAX);
}

TEST(Coding, CheckedArithmetic) {
  uint64_t out = 0;
  EXPECT_FALSE(AddOverflows(UINT64_MAX - 1, 1, &out));
  EXPECT_EQ(out, UINT64_MAX);
  EXPECT_TRUE(AddOverflows(UINT64_MAX, 1, &out));
  EXPECT_FALSE(MulOverflows(uint64_t{1} << 43, uint64_t{1} << 20, &out));
  EXPECT_EQ(out, uint64_t{1} << 63);
  // FileOffsetMB x 1 MiB overflows from 2^44 on (spec §9).
  EXPECT_TRUE(MulOverflows(uint64_t{1} << 44, uint64_t{1} << 20, &out));
}

TEST(Coding, PowersOfTwoAndRounding) {
  EXPECT_FALSE(IsPowerOfTwo(0));
  EXPECT_TRUE(IsPowerOfTwo(1));
  EXPECT_TRUE(IsPowerOfTwo(uint64_t{1} << 63));
  EXPECT_FALSE(IsPowerOfTwo(3 << 20));
  EXPECT_FALSE(IsPowerOfTwo(UINT64_MAX));
  EXPECT_EQ(RoundUp(0, 1 << 20), 0u);
  EXPECT_EQ(RoundUp(256, 1 << 20), 1u << 20);
  EXPECT_EQ(RoundUp(1 << 20, 1 << 20), 1u << 20);
  EXPECT_EQ(DivCeil(0, 7), 0u);
  EXPECT_EQ(DivCeil(32, 128), 1u);
  EXPECT_EQ(DivCeil(128, 128), 1u);
  EXPECT_EQ(DivCeil(129, 128), 2u);
  EXPECT_EQ(DivCeil(UINT64_MAX, 2), uint64_t{1} << 63);  // no overflow in a + b - 1
}

TEST(Strings, Hex) {
  EXPECT_EQ(Hex(0), "0x0");
  EXPECT_EQ(Hex(0x1f000), "0x1f000");
  EXPECT_EQ(Hex(UINT64_MAX), "0xffffffffffffffff");
}

std::string Bytes(std::initializer_list<uint8_t> b) { return std::string(b.begin(), b.end()); }

std::optional<std::string> Decode(const std::string& utf16, bool reject_nul = true) {
  return Utf16LeToUtf8(reinterpret_cast<const uint8_t*>(utf16.data()), utf16.size(), reject_nul);
}

TEST(Strings, Utf8ToUtf16LeEncodesEveryLength) {
  EXPECT_EQ(Utf8ToUtf16Le(""), "");
  EXPECT_EQ(Utf8ToUtf16Le("A"), Bytes({0x41, 0x00}));
  EXPECT_EQ(Utf8ToUtf16Le("\xC3\xA9"), Bytes({0xE9, 0x00}));      // U+00E9
  EXPECT_EQ(Utf8ToUtf16Le("\xE2\x82\xAC"), Bytes({0xAC, 0x20}));  // U+20AC
  EXPECT_EQ(Utf8ToUtf16Le("\xEF\xBF\xBF"), Bytes({0xFF, 0xFF}));  // U+FFFF
  EXPECT_EQ(Utf8ToUtf16Le("\xF0\x9F\x98\x80"),                    // U+1F600
            Bytes({0x3D, 0xD8, 0x00, 0xDE}));
  EXPECT_EQ(Utf8ToUtf16Le("\xF4\x8F\xBF\xBF"),  // U+10FFFF
            Bytes({0xFF, 0xDB, 0xFF, 0xDF}));
}

TEST(Strings, Utf16LeToUtf8DecodesEveryLength) {
  EXPECT_EQ(Decode(""), "");
  EXPECT_EQ(Decode(Bytes({0x41, 0x00, 0xE9, 0x00, 0xAC, 0x20, 0x3D, 0xD8, 0x00, 0xDE})),
            "A\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
  EXPECT_EQ(Decode(Bytes({0xFF, 0xDB, 0xFF, 0xDF})), "\xF4\x8F\xBF\xBF");
}

TEST(Strings, Utf16RoundTrip) {
  for (const char* s : {"parent_linkage", "C:\\Users\\\xC3\x9C\\x.vhdx",
                        "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", "a\xF0\x9F\x98\x80z"}) {
    EXPECT_EQ(Decode(Utf8ToUtf16Le(s)), s);
  }
}

TEST(Strings, Utf16LeToUtf8RejectsInvalidInput) {
  EXPECT_FALSE(Decode(Bytes({0x41})).has_value());                    // odd byte count
  EXPECT_FALSE(Decode(Bytes({0x3D, 0xD8})).has_value());              // high at the end
  EXPECT_FALSE(Decode(Bytes({0x3D, 0xD8, 0x41, 0x00})).has_value());  // high, then not low
  EXPECT_FALSE(Decode(Bytes({0x3D, 0xD8, 0x3D, 0xD8})).has_value());  // high, high
  EXPECT_FALSE(Decode(Bytes({0x00, 0xDE, 0x41, 0x00})).has_value());  // lone low
  EXPECT_FALSE(Decode(Bytes({0x41, 0x00, 0x00, 0x00})).has_value());  // NUL rejected
  EXPECT_EQ(Decode(Bytes({0x41, 0x00, 0x00, 0x00}), false), std::string("A\0", 2));
}

std::string Lossy(const std::string& utf16) {
  return Utf16LeZToUtf8Lossy(reinterpret_cast<const uint8_t*>(utf16.data()), utf16.size());
}

TEST(Strings, LossyCreatorDecoding) {
  EXPECT_EQ(Lossy(Bytes({'d', 0, '2', 0, 'v', 0, 0, 0, 'x', 0})), "d2v");  // stops at NUL
  EXPECT_EQ(Lossy(Bytes({'a', 0, 0x00, 0xD8, 'b', 0})),
            "a\xEF\xBF\xBD"
            "b");                                                         // lone high
  EXPECT_EQ(Lossy(Bytes({0x00, 0xDC})), "\xEF\xBF\xBD");                  // lone low
  EXPECT_EQ(Lossy(Bytes({0x3D, 0xD8, 0x00, 0xDE})), "\xF0\x9F\x98\x80");  // valid pair
  EXPECT_EQ(Lossy(Bytes({'o', 0, 'k', 0, 'z'})), "ok");                   // odd tail byte
  EXPECT_EQ(Lossy(""), "");
}

}  // namespace
}  // namespace vhdx
