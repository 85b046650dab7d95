#include "format/region_table.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "format/constants.h"
#include "format/crc32c.h"
#include "util/coding.h"

namespace vhdx::format {
namespace {

using Bytes = std::vector<uint8_t>;

// The first 80 bytes of the spec §11 region table, typed in from the spec.
const uint8_t kSpecTableStart[80] = {
    0x72, 0x65, 0x67, 0x69, 0xae, 0x8c, 0x6b, 0xc6, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
    0x00, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
    0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x00, 0x00,
};

RegionEntry Bat(uint64_t offset = 3 * MiB, uint32_t length = MiB, uint32_t required = 1) {
  return {kBatRegionGuid, offset, length, required};
}
RegionEntry Metadata(uint64_t offset = 2 * MiB, uint32_t length = MiB, uint32_t required = 1) {
  return {kMetadataRegionGuid, offset, length, required};
}
RegionEntry Unknown(uint32_t required, uint64_t offset = 8 * MiB, uint8_t tag = 0x42) {
  Guid g;
  g.bytes.fill(tag);
  return {g, offset, MiB, required};
}

Bytes Serialized(const std::vector<RegionEntry>& entries) {
  Bytes b(kRegionTableSize);
  SerializeRegionTable(RegionTable{entries}, b.data());
  return b;
}

Status ParseEntries(const std::vector<RegionEntry>& entries, RegionTable* out = nullptr) {
  RegionTable scratch;
  Bytes b = Serialized(entries);
  return ParseRegionTable(b.data(), kRegionTable1Offset, out ? out : &scratch);
}

void ExpectError(const Status& st, Errc code, const char* fragment) {
  EXPECT_EQ(st.code(), code) << st.message();
  EXPECT_NE(st.message().find("region table at offset 0x30000"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(fragment), std::string::npos) << st.message();
}

TEST(RegionTable, SerializesTheSpecTestVector) {
  Bytes b = Serialized({Bat(), Metadata()});
  EXPECT_EQ(std::memcmp(b.data(), kSpecTableStart, sizeof kSpecTableStart), 0);
  for (size_t i = sizeof kSpecTableStart; i < b.size(); ++i) ASSERT_EQ(b[i], 0) << "byte " << i;
  EXPECT_EQ(DecodeFixed32(b.data() + 4), 0xC66B8CAEu);
  EXPECT_EQ(crc32c::ValueWithZeroedField(b.data(), b.size(), 4), 0xC66B8CAEu);
}

TEST(RegionTable, ParsesTheSpecTestVector) {
  Bytes b(kRegionTableSize, 0);
  std::memcpy(b.data(), kSpecTableStart, sizeof kSpecTableStart);
  RegionTable t;
  Status st = ParseRegionTable(b.data(), kRegionTable1Offset, &t);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(t.entries.size(), 2u);
  const RegionEntry* bat = t.Find(kBatRegionGuid);
  const RegionEntry* meta = t.Find(kMetadataRegionGuid);
  ASSERT_TRUE(bat && meta);
  EXPECT_EQ(bat->file_offset, 3 * MiB);
  EXPECT_EQ(bat->length, MiB);
  EXPECT_EQ(bat->required, 1u);
  EXPECT_EQ(meta->file_offset, 2 * MiB);
  EXPECT_EQ(meta->length, MiB);
  EXPECT_EQ(meta->required, 1u);
  EXPECT_EQ(t.Find(Guid{}), nullptr);
}

TEST(RegionTable, RejectsBadSignature) {
  Bytes b = Serialized({Bat(), Metadata()});
  b[3] = 'I';
  EncodeFixed32(b.data() + 4, crc32c::ValueWithZeroedField(b.data(), b.size(), 4));
  RegionTable t;
  ExpectError(ParseRegionTable(b.data(), kRegionTable1Offset, &t), Errc::kCorrupt, "signature");
}

TEST(RegionTable, ChecksumCoversTheWhole64KiB) {
  Bytes b = Serialized({Bat(), Metadata()});
  b[kRegionTableSize - 1] = 1;  // unused tail, still covered
  RegionTable t;
  ExpectError(ParseRegionTable(b.data(), kRegionTable1Offset, &t), Errc::kCorrupt,
              "checksum mismatch");
}

TEST(RegionTable, AcceptsTheMaximumEntryCount) {
  std::vector<RegionEntry> entries = {Bat(), Metadata()};
  for (uint32_t i = 0; entries.size() < kMaxTableEntries; ++i) {
    RegionEntry r = Unknown(0, (4 + i) * MiB);
    EncodeFixed32(r.guid.bytes.data(), i);  // distinct GUIDs
    entries.push_back(r);
  }
  RegionTable t;
  Status st = ParseEntries(entries, &t);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(t.entries.size(), 2047u);
}

TEST(RegionTable, RejectsEntryCountAbove2047) {
  Bytes b = Serialized({Bat(), Metadata()});
  EncodeFixed32(b.data() + 8, 2048);
  EncodeFixed32(b.data() + 4, crc32c::ValueWithZeroedField(b.data(), b.size(), 4));
  RegionTable t;
  ExpectError(ParseRegionTable(b.data(), kRegionTable1Offset, &t), Errc::kCorrupt,
              "entry count 2048");
}

TEST(RegionTable, RejectsMisalignedOffsets) {
  ExpectError(ParseEntries({Bat(3 * MiB + 4096), Metadata()}), Errc::kCorrupt, "file offset");
  ExpectError(ParseEntries({Bat(), Metadata(2 * MiB + 1)}), Errc::kCorrupt, "file offset");
}

TEST(RegionTable, RejectsMisalignedLengths) {
  ExpectError(ParseEntries({Bat(3 * MiB, MiB + 512), Metadata()}), Errc::kCorrupt, "length");
  ExpectError(ParseEntries({Bat(), Metadata(2 * MiB, 64 * KiB)}), Errc::kCorrupt, "length");
}

TEST(RegionTable, RejectsOffsetsInsideTheHeaderSection) {
  ExpectError(ParseEntries({Bat(0), Metadata()}), Errc::kCorrupt, "header section");
  ExpectError(ParseEntries({Bat(), Metadata(), Unknown(0, 0)}), Errc::kCorrupt, "header section");
}

TEST(RegionTable, RejectsOffsetsBeyondAnyValidFileSize) {
  ExpectError(ParseEntries({Bat(kMaxFileOffset + MiB), Metadata()}), Errc::kCorrupt,
              "beyond any valid file size");
}

TEST(RegionTable, RejectsZeroLengthBatOrMetadata) {
  ExpectError(ParseEntries({Bat(3 * MiB, 0), Metadata()}), Errc::kCorrupt, "length is zero");
  ExpectError(ParseEntries({Bat(), Metadata(2 * MiB, 0)}), Errc::kCorrupt, "length is zero");
}

TEST(RegionTable, RejectsDuplicateGuids) {
  ExpectError(ParseEntries({Bat(), Metadata(), Bat(5 * MiB)}), Errc::kCorrupt, "appears twice");
  ExpectError(ParseEntries({Bat(), Metadata(), Unknown(0, 8 * MiB), Unknown(0, 9 * MiB)}),
              Errc::kCorrupt, "appears twice");
}

TEST(RegionTable, RejectsMissingBatOrMetadata) {
  ExpectError(ParseEntries({Metadata()}), Errc::kCorrupt, "no BAT region");
  ExpectError(ParseEntries({Bat()}), Errc::kCorrupt, "no metadata region");
  ExpectError(ParseEntries({}), Errc::kCorrupt, "no BAT region");
}

TEST(RegionTable, RejectsOverlappingRegions) {
  ExpectError(ParseEntries({Bat(2 * MiB, 2 * MiB), Metadata(3 * MiB)}), Errc::kCorrupt, "overlap");
  ExpectError(ParseEntries({Bat(), Metadata(), Unknown(0, 3 * MiB)}), Errc::kCorrupt, "overlap");
  ExpectError(ParseEntries({Bat(), Metadata(2 * MiB, 3 * MiB)}), Errc::kCorrupt, "overlap");
}

TEST(RegionTable, AcceptsAdjacentRegionsInAnyOrder) {
  RegionTable t;
  Status st = ParseEntries({Metadata(5 * MiB), Unknown(0, 4 * MiB), Bat(1 * MiB, 3 * MiB)}, &t);
  EXPECT_TRUE(st.ok()) << st.message();
}

TEST(RegionTable, UnknownRequiredRegionIsUnsupported) {
  ExpectError(ParseEntries({Bat(), Metadata(), Unknown(1)}), Errc::kUnsupported, "unknown region");
  // Any non-zero Required value counts, not only bit 0 (spec §3.4).
  ExpectError(ParseEntries({Bat(), Metadata(), Unknown(0x80000000u)}), Errc::kUnsupported,
              "unknown region");
}

TEST(RegionTable, UnknownOptionalRegionIsAcceptedAndKept) {
  RegionTable t;
  RegionEntry unknown = Unknown(0, 8 * MiB);
  Status st = ParseEntries({Bat(), unknown, Metadata()}, &t);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(t.entries.size(), 3u);
  const RegionEntry* kept = t.Find(unknown.guid);
  ASSERT_NE(kept, nullptr);
  EXPECT_EQ(kept->file_offset, 8 * MiB);
  EXPECT_EQ(kept->length, MiB);
  EXPECT_EQ(kept->required, 0u);
}

TEST(RegionTable, KnownRegionsMayBeMarkedOptional) {
  // QEMU writes Required = 0 for both BAT and metadata.
  RegionTable t;
  Status st = ParseEntries({Bat(3 * MiB, MiB, 0), Metadata(2 * MiB, MiB, 0)}, &t);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(t.Find(kBatRegionGuid)->required, 0u);
}

TEST(RegionTable, RoundTripsEntriesInOrder) {
  std::vector<RegionEntry> in = {Metadata(7 * MiB, 2 * MiB, 1), Unknown(0, 20 * MiB, 7),
                                 Bat(100 * MiB, 513 * MiB, 1)};
  RegionTable t;
  ASSERT_TRUE(ParseEntries(in, &t).ok());
  ASSERT_EQ(t.entries.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(t.entries[i].guid, in[i].guid);
    EXPECT_EQ(t.entries[i].file_offset, in[i].file_offset);
    EXPECT_EQ(t.entries[i].length, in[i].length);
    EXPECT_EQ(t.entries[i].required, in[i].required);
  }
}

}  // namespace
}  // namespace vhdx::format
