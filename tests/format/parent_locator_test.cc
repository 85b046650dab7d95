#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "format/constants.h"
#include "format/metadata.h"
#include "util/coding.h"

namespace vhdx::format {
namespace {

using Bytes = std::vector<uint8_t>;
constexpr uint64_t kItemOffset = 0x210028;

// Shaped like the Hyper-V (Windows Server 2019) locator of spec §4.7: five
// pairs in Hyper-V's order, parent_linkage2 the zero GUID.
ParentLocator HyperVLocator() {
  ParentLocator loc;
  loc.locator_type = kVhdxParentLocatorType;
  loc.entries = {
      {"parent_linkage", "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}"},
      {"absolute_win32_path", "C:\\Users\\Public\\Documents\\Hyper-V\\parent.vhdx"},
      {"relative_path", ".\\parent.vhdx"},
      {"volume_path",
       "\\\\?\\Volume{26A21BDA-A627-11D7-9931-806E6F6E6963}\\Users\\Public\\parent.vhdx"},
      {"parent_linkage2", "{00000000-0000-0000-0000-000000000000}"},
  };
  return loc;
}

ParentLocator Locator(std::vector<std::pair<std::string, std::string>> entries) {
  ParentLocator loc;
  loc.locator_type = kVhdxParentLocatorType;
  loc.entries = std::move(entries);
  return loc;
}

Status Parse(const Bytes& item, ParentLocator* out = nullptr) {
  ParentLocator scratch;
  return ParseParentLocator(item.data(), item.size(), kItemOffset, out ? out : &scratch);
}

void ExpectError(const Status& st, Errc code, const char* fragment) {
  EXPECT_EQ(st.code(), code) << st.message();
  EXPECT_NE(st.message().find("parent locator metadata item at offset 0x210028"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find(fragment), std::string::npos) << st.message();
}

// Field positions of key/value entry k (spec §4.7).
size_t KeyOffsetField(size_t k) { return 20 + 12 * k; }
size_t ValueOffsetField(size_t k) { return 20 + 12 * k + 4; }
size_t KeyLengthField(size_t k) { return 20 + 12 * k + 8; }
size_t ValueLengthField(size_t k) { return 20 + 12 * k + 10; }

TEST(ParentLocator, HyperVLocatorRoundTrips) {
  ParentLocator in = HyperVLocator();
  Bytes item = SerializeParentLocator(in);
  ParentLocator out;
  Status st = Parse(item, &out);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(out.locator_type, kVhdxParentLocatorType);
  EXPECT_EQ(out.entries, in.entries);
  ASSERT_NE(out.Get("parent_linkage2"), nullptr);
  EXPECT_EQ(*out.Get("parent_linkage2"), "{00000000-0000-0000-0000-000000000000}");
  EXPECT_EQ(out.Get("Parent_Linkage"), nullptr);  // keys are case-sensitive
}

TEST(ParentLocator, SerializedLayoutPacksStringsAfterTheEntryTable) {
  Bytes item = SerializeParentLocator(HyperVLocator());
  EXPECT_EQ(std::memcmp(item.data(), kVhdxParentLocatorType.bytes.data(), 16), 0);
  EXPECT_EQ(DecodeFixed16(item.data() + 16), 0);  // reserved
  EXPECT_EQ(DecodeFixed16(item.data() + 18), 5);
  // Like Hyper-V: the first key right after the table, each key followed by its value.
  uint32_t expect_at = 20 + 5 * 12;
  EXPECT_EQ(expect_at, 80u);
  for (size_t k = 0; k < 5; ++k) {
    uint32_t ko = DecodeFixed32(item.data() + KeyOffsetField(k));
    uint32_t vo = DecodeFixed32(item.data() + ValueOffsetField(k));
    uint16_t kl = DecodeFixed16(item.data() + KeyLengthField(k));
    uint16_t vl = DecodeFixed16(item.data() + ValueLengthField(k));
    EXPECT_EQ(ko, expect_at) << k;
    EXPECT_EQ(vo, ko + kl) << k;
    expect_at = vo + vl;
  }
  EXPECT_EQ(item.size(), expect_at);
  // "parent_linkage" in UTF-16LE at offset 80, no terminator.
  const std::string key = "parent_linkage";
  EXPECT_EQ(DecodeFixed16(item.data() + KeyLengthField(0)), 2 * key.size());
  for (size_t i = 0; i < key.size(); ++i) {
    EXPECT_EQ(item[80 + 2 * i], key[i]);
    EXPECT_EQ(item[81 + 2 * i], 0);
  }
}

TEST(ParentLocator, NonAsciiPathsRoundTrip) {
  // "Ünïcødé" and U+1F600 (a surrogate pair in UTF-16).
  ParentLocator in = Locator({{"parent_linkage", "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}"},
                              {"relative_path",
                               "..\\\xC3\x9Cn\xC3\xAF"
                               "c\xC3\xB8"
                               "d\xC3\xA9\\"
                               "\xF0\x9F\x98\x80.vhdx"}});
  ParentLocator out;
  Status st = Parse(SerializeParentLocator(in), &out);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(out.entries, in.entries);
}

TEST(ParentLocator, AnyOnePathKeyIsEnough) {
  for (const char* path_key : {"relative_path", "volume_path", "absolute_win32_path"}) {
    Status st = Parse(SerializeParentLocator(Locator(
        {{path_key, "p.vhdx"}, {"parent_linkage", "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}"}})));
    EXPECT_TRUE(st.ok()) << path_key << ": " << st.message();
  }
}

TEST(ParentLocator, UnknownLocatorTypeIsUnsupported) {
  Bytes item = SerializeParentLocator(HyperVLocator());
  item[0] ^= 0xFF;
  ExpectError(Parse(item), Errc::kUnsupported, "unknown locator type");
}

TEST(ParentLocator, RejectsItemShorterThanItsHeader) {
  Bytes item = SerializeParentLocator(HyperVLocator());
  item.resize(19);
  ExpectError(Parse(item), Errc::kCorrupt, "20-byte header");
}

TEST(ParentLocator, RejectsEntryCountTooLargeForTheItem) {
  Bytes item = SerializeParentLocator(HyperVLocator());
  EncodeFixed16(item.data() + 18, static_cast<uint16_t>((item.size() - 20) / 12 + 1));
  ExpectError(Parse(item), Errc::kCorrupt, "do not fit");
  EncodeFixed16(item.data() + 18, 0xFFFF);
  ExpectError(Parse(item), Errc::kCorrupt, "do not fit");
}

TEST(ParentLocator, RejectsZeroOffsets) {
  for (size_t field : {KeyOffsetField(0), ValueOffsetField(2)}) {
    Bytes item = SerializeParentLocator(HyperVLocator());
    EncodeFixed32(item.data() + field, 0);
    ExpectError(Parse(item), Errc::kCorrupt, "empty, odd or outside the item");
  }
}

TEST(ParentLocator, RejectsZeroOrOddLengths) {
  for (size_t field : {KeyLengthField(1), ValueLengthField(3)})
    for (uint16_t length : {0, 1, 3}) {
      Bytes item = SerializeParentLocator(HyperVLocator());
      EncodeFixed16(item.data() + field, length);
      ExpectError(Parse(item), Errc::kCorrupt, "empty, odd or outside the item");
    }
}

TEST(ParentLocator, RejectsStringsOutsideTheItem) {
  Bytes item = SerializeParentLocator(HyperVLocator());
  // The last value ends exactly at the end of the item; one unit more is out.
  uint16_t vl = DecodeFixed16(item.data() + ValueLengthField(4));
  EncodeFixed16(item.data() + ValueLengthField(4), vl + 2);
  ExpectError(Parse(item), Errc::kCorrupt, "empty, odd or outside the item");

  item = SerializeParentLocator(HyperVLocator());
  EncodeFixed32(item.data() + KeyOffsetField(0), 0xFFFFFFFEu);  // offset + length wraps 32 bits
  ExpectError(Parse(item), Errc::kCorrupt, "empty, odd or outside the item");
}

TEST(ParentLocator, RejectsDuplicateKeys) {
  Bytes item = SerializeParentLocator(Locator(
      {{"parent_linkage", "{x}"}, {"relative_path", "a.vhdx"}, {"relative_path", "b.vhdx"}}));
  ExpectError(Parse(item), Errc::kCorrupt, "key 'relative_path' appears twice");
}

// Overwrites code unit `unit` of entry k's value with `u`.
Bytes WithValueUnit(size_t k, size_t unit, uint16_t u) {
  Bytes item = SerializeParentLocator(HyperVLocator());
  EncodeFixed16(item.data() + DecodeFixed32(item.data() + ValueOffsetField(k)) + 2 * unit, u);
  return item;
}

TEST(ParentLocator, RejectsInvalidUtf16) {
  ExpectError(Parse(WithValueUnit(2, 0, 0xD800)), Errc::kCorrupt, "not valid UTF-16");  // lone high
  ExpectError(Parse(WithValueUnit(2, 3, 0xDC00)), Errc::kCorrupt, "not valid UTF-16");  // lone low
  // A high surrogate ending entry 0's value, and a low one starting the next
  // key: the pair must not be completed across the value's end.
  Bytes item = SerializeParentLocator(HyperVLocator());
  uint32_t vo = DecodeFixed32(item.data() + ValueOffsetField(0));
  uint16_t vl = DecodeFixed16(item.data() + ValueLengthField(0));
  ASSERT_EQ(DecodeFixed32(item.data() + KeyOffsetField(1)), vo + vl);
  EncodeFixed16(item.data() + vo + vl - 2, 0xD83D);
  EncodeFixed16(item.data() + vo + vl, 0xDE00);
  ExpectError(Parse(item), Errc::kCorrupt, "entry 0: key or value is not valid UTF-16");
}

TEST(ParentLocator, RejectsEmbeddedNul) {
  ExpectError(Parse(WithValueUnit(1, 5, 0)), Errc::kCorrupt, "not valid UTF-16");
  Bytes item = SerializeParentLocator(HyperVLocator());
  EncodeFixed16(item.data() + DecodeFixed32(item.data() + KeyOffsetField(2)), 0);
  ExpectError(Parse(item), Errc::kCorrupt, "not valid UTF-16");
}

TEST(ParentLocator, RequiresParentLinkage) {
  ExpectError(Parse(SerializeParentLocator(
                  Locator({{"parent_linkage2", "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}"},
                           {"relative_path", "p.vhdx"}}))),
              Errc::kCorrupt, "no parent_linkage key");
}

TEST(ParentLocator, RequiresAPathKey) {
  ExpectError(Parse(SerializeParentLocator(
                  Locator({{"parent_linkage", "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}"},
                           {"parent_linkage2", "{00000000-0000-0000-0000-000000000000}"},
                           {"Relative_Path", "p.vhdx"}}))),
              Errc::kCorrupt, "no relative_path, volume_path or absolute_win32_path key");
}

}  // namespace
}  // namespace vhdx::format
