#include "vhdx/guid.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace vhdx {
namespace {

// Spec §0.2: the canonical string and its on-disk bytes (mixed-endian).
constexpr char kBatText[] = "2DC27766-F623-4200-9D64-115E9BFD4A08";
constexpr Guid kBatBytes{{0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E,
                          0x9B, 0xFD, 0x4A, 0x08}};

TEST(Guid, ParseStoresData1To3LittleEndianAndData4AsWritten) {
  auto g = Guid::Parse(kBatText);
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(*g, kBatBytes);
}

TEST(Guid, ToStringIsLowercaseTextOrder) {
  EXPECT_EQ(kBatBytes.ToString(), "2dc27766-f623-4200-9d64-115e9bfd4a08");
}

TEST(Guid, ParseAcceptsBracesAndAnyCase) {
  for (const char* text :
       {"2dc27766-f623-4200-9d64-115e9bfd4a08", "{2DC27766-F623-4200-9D64-115E9BFD4A08}",
        "{2dc27766-F623-4200-9d64-115E9bfd4a08}"}) {
    auto g = Guid::Parse(text);
    ASSERT_TRUE(g.has_value()) << text;
    EXPECT_EQ(*g, kBatBytes) << text;
  }
}

TEST(Guid, ParseRejectsMalformedText) {
  for (const char* text : {
           "",
           "2DC27766F62342009D64115E9BFD4A08",       // no dashes
           "2DC27766F62342009D64115E9BFD4A08ABCD",   // right length, no dashes
           "2DC27766-F623-4200-9D64-115E9BFD4A0",    // one digit short
           "2DC27766-F623-4200-9D64-115E9BFD4A088",  // one digit long
           "2DC2776-6F623-4200-9D64-115E9BFD4A08",   // dash misplaced
           "2DC27766-F623-4200-9D64_115E9BFD4A08",   // wrong separator
           "2DC27766-F623-4200-9D64-115E9BFD4A0G",   // not hex
           "2DC27766-F623-4200-9D64-115E9BFD4A0 ",   // trailing space
           " 2DC27766-F623-4200-9D64-115E9BFD4A0",   // leading space
           "+DC27766-F623-4200-9D64-115E9BFD4A08",   // sign
           "{2DC27766-F623-4200-9D64-115E9BFD4A08",  // unbalanced braces
           "2DC27766-F623-4200-9D64-115E9BFD4A08}",
           "(2DC27766-F623-4200-9D64-115E9BFD4A08)",  // wrong brackets
           "{{2DC27766-F623-4200-9D64-115E9BFD4A08}}",
       }) {
    EXPECT_FALSE(Guid::Parse(text).has_value()) << '"' << text << '"';
  }
}

TEST(Guid, ParseRejectsEmbeddedNul) {
  std::string text(kBatText);
  text[10] = '\0';
  EXPECT_FALSE(Guid::Parse(text).has_value());
}

TEST(Guid, TextRoundTripOfRandomGuids) {
  for (int i = 0; i < 100; ++i) {
    Guid g = Guid::Random();
    auto back = Guid::Parse(g.ToString());
    ASSERT_TRUE(back.has_value()) << g.ToString();
    EXPECT_EQ(*back, g);
  }
}

TEST(Guid, IsZero) {
  EXPECT_TRUE(Guid{}.IsZero());
  EXPECT_EQ(Guid{}.ToString(), "00000000-0000-0000-0000-000000000000");
  for (size_t i = 0; i < 16; ++i) {
    Guid g;
    g.bytes[i] = 1;
    EXPECT_FALSE(g.IsZero()) << "byte " << i;
  }
}

TEST(Guid, RandomIsVersion4WithTheRfc4122Variant) {
  for (int i = 0; i < 100; ++i) {
    Guid g = Guid::Random();
    std::string text = g.ToString();
    EXPECT_EQ(text[14], '4') << text;  // first digit of Data3
    EXPECT_NE(std::string("89ab").find(text[19]), std::string::npos) << text;
  }
}

TEST(Guid, RandomDiffersBetweenCalls) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(Guid::Random().ToString());
  EXPECT_EQ(seen.size(), 1000u);
}

}  // namespace
}  // namespace vhdx
