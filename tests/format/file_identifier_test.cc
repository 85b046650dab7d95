#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "format/constants.h"
#include "format/header.h"

namespace vhdx::format {
namespace {

// A 64 KiB identifier with `units` as the creator's UTF-16 code units.
std::vector<uint8_t> IdentifierWithCreator(const std::vector<uint16_t>& units) {
  std::vector<uint8_t> b(64 * KiB, 0);
  std::memcpy(b.data(), "vhdxfile", 8);
  for (size_t i = 0; i < units.size(); ++i) {
    b[8 + 2 * i] = static_cast<uint8_t>(units[i]);
    b[9 + 2 * i] = static_cast<uint8_t>(units[i] >> 8);
  }
  return b;
}

std::vector<uint16_t> Units(const std::string& ascii) { return {ascii.begin(), ascii.end()}; }

std::string ParsedCreator(const std::vector<uint8_t>& b) {
  FileIdentifier id;
  Status st = ParseFileIdentifier(b.data(), &id);
  EXPECT_TRUE(st.ok()) << st.message();
  return id.creator;
}

TEST(FileIdentifier, DecodesAWindowsCreator) {
  EXPECT_EQ(ParsedCreator(IdentifierWithCreator(Units("Microsoft Windows 10.0.15063.0"))),
            "Microsoft Windows 10.0.15063.0");
}

TEST(FileIdentifier, EmptyCreatorIsAccepted) {
  EXPECT_EQ(ParsedCreator(IdentifierWithCreator({})), "");
}

TEST(FileIdentifier, CreatorDecodesNonAsciiAndSurrogatePairs) {
  // "Ü€😀" = U+00DC, U+20AC, U+1F600 (surrogates D83D DE00).
  EXPECT_EQ(ParsedCreator(IdentifierWithCreator({0x00DC, 0x20AC, 0xD83D, 0xDE00})),
            "\xC3\x9C\xE2\x82\xAC\xF0\x9F\x98\x80");
}

TEST(FileIdentifier, CreatorStopsAtTheFirstNul) {
  auto units = Units("QEMU v7.2.0");
  units.push_back(0);
  for (char c : std::string("junk")) units.push_back(static_cast<uint16_t>(c));
  EXPECT_EQ(ParsedCreator(IdentifierWithCreator(units)), "QEMU v7.2.0");
}

TEST(FileIdentifier, CreatorMayFillAll256Units) {
  EXPECT_EQ(ParsedCreator(IdentifierWithCreator(Units(std::string(256, 'x')))),
            std::string(256, 'x'));
}

TEST(FileIdentifier, CreatorDecodingIsLossyNotFatal) {
  // An unpaired surrogate is diagnostics-only garbage: replaced, not rejected.
  EXPECT_EQ(ParsedCreator(IdentifierWithCreator({'a', 0xD800, 'b', 0xDC00})),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
}

TEST(FileIdentifier, RejectsBadSignature) {
  for (size_t byte = 0; byte < 8; ++byte) {
    auto b = IdentifierWithCreator(Units("x"));
    b[byte] ^= 0x20;
    FileIdentifier id;
    Status st = ParseFileIdentifier(b.data(), &id);
    EXPECT_EQ(st.code(), Errc::kCorrupt) << "byte " << byte;
    EXPECT_NE(st.message().find("not a VHDX image"), std::string::npos) << st.message();
  }
}

TEST(FileIdentifier, SerializeWritesSignatureCreatorAndZeros) {
  std::vector<uint8_t> b(64 * KiB, 0xEE);
  SerializeFileIdentifier(FileIdentifier{"libvhdx \xC3\xBC"}, b.data());
  auto units = Units("libvhdx ");
  units.push_back(0x00FC);                     // ü
  EXPECT_EQ(b, IdentifierWithCreator(units));  // also: every other byte of the 64 KiB zeroed
  EXPECT_EQ(ParsedCreator(b), "libvhdx \xC3\xBC");
}

TEST(FileIdentifier, SerializeTruncatesALongCreatorAndKeepsItTerminated) {
  std::vector<uint8_t> b(64 * KiB);
  SerializeFileIdentifier(FileIdentifier{std::string(300, 'y')}, b.data());
  EXPECT_EQ(b[8 + 510], 0);
  EXPECT_EQ(b[8 + 511], 0);
  EXPECT_EQ(ParsedCreator(b), std::string(255, 'y'));
}

}  // namespace
}  // namespace vhdx::format
