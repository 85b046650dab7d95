#include "format/constants.h"

#include <gtest/gtest.h>

#include <array>

#include "util/coding.h"

namespace vhdx::format {
namespace {

struct KnownGuid {
  const char* name;
  Guid constant;
  const char* text;                 // spec's string form
  std::array<uint8_t, 16> on_disk;  // spec's byte listing
};

// Every GUID of spec §3.3, §4.3 and §4.7, typed in from the spec's tables.
const KnownGuid kKnownGuids[] = {
    {"BAT region", kBatRegionGuid, "2DC27766-F623-4200-9D64-115E9BFD4A08",
     {0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A,
      0x08}},
    {"metadata region", kMetadataRegionGuid, "8B7CA206-4790-4B9A-B8FE-575F050F886E",
     {0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B, 0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88,
      0x6E}},
    {"file parameters", kFileParametersGuid, "CAA16737-FA36-4D43-B3B6-33F0AA44E76B",
     {0x37, 0x67, 0xA1, 0xCA, 0x36, 0xFA, 0x43, 0x4D, 0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7,
      0x6B}},
    {"virtual disk size", kVirtualDiskSizeGuid, "2FA54224-CD1B-4876-B211-5DBED83BF4B8",
     {0x24, 0x42, 0xA5, 0x2F, 0x1B, 0xCD, 0x76, 0x48, 0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4,
      0xB8}},
    {"virtual disk id", kVirtualDiskIdGuid, "BECA12AB-B2E6-4523-93EF-C309E000C746",
     {0xAB, 0x12, 0xCA, 0xBE, 0xE6, 0xB2, 0x23, 0x45, 0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7,
      0x46}},
    {"logical sector size", kLogicalSectorSizeGuid, "8141BF1D-A96F-4709-BA47-F233A8FAAB5F",
     {0x1D, 0xBF, 0x41, 0x81, 0x6F, 0xA9, 0x09, 0x47, 0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB,
      0x5F}},
    {"physical sector size", kPhysicalSectorSizeGuid, "CDA348C7-445D-4471-9CC9-E9885251C556",
     {0xC7, 0x48, 0xA3, 0xCD, 0x5D, 0x44, 0x71, 0x44, 0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5,
      0x56}},
    {"parent locator", kParentLocatorGuid, "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C",
     {0x2D, 0x5F, 0xD3, 0xA8, 0x0B, 0xB3, 0x4D, 0x45, 0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB,
      0x0C}},
    {"VHDX parent locator type", kVhdxParentLocatorType, "B04AEFB7-D19E-4A81-B789-25B8E9445913",
     {0xB7, 0xEF, 0x4A, 0xB0, 0x9E, 0xD1, 0x81, 0x4A, 0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59,
      0x13}},
};

TEST(Constants, KnownGuidsHaveTheSpecsOnDiskBytes) {
  for (const auto& k : kKnownGuids) EXPECT_EQ(k.constant.bytes, k.on_disk) << k.name;
}

TEST(Constants, KnownGuidsParseFromTheSpecsText) {
  for (const auto& k : kKnownGuids) {
    auto parsed = Guid::Parse(k.text);
    ASSERT_TRUE(parsed.has_value()) << k.name;
    EXPECT_EQ(*parsed, k.constant) << k.name;
  }
}

TEST(Constants, KnownGuidsAreDistinct) {
  for (const auto& a : kKnownGuids)
    for (const auto& b : kKnownGuids) {
      if (&a != &b) {
        EXPECT_NE(a.constant, b.constant) << a.name << " vs " << b.name;
      }
    }
}

// Spec §0.3: the signatures read as little-endian integers.
TEST(Constants, SignaturesMatchTheSpecsLittleEndianValues) {
  auto u32 = [](const char* s) { return DecodeFixed32(reinterpret_cast<const uint8_t*>(s)); };
  auto u64 = [](const char* s) { return DecodeFixed64(reinterpret_cast<const uint8_t*>(s)); };
  EXPECT_EQ(u64(kFileSignature), 0x656C696678646876u);
  EXPECT_EQ(u32(kHeaderSignature), 0x64616568u);
  EXPECT_EQ(u32(kRegionSignature), 0x69676572u);
  EXPECT_EQ(u32(kLogEntrySignature), 0x65676F6Cu);
  EXPECT_EQ(u32(kZeroDescriptorSignature), 0x6F72657Au);
  EXPECT_EQ(u32(kDataDescriptorSignature), 0x63736564u);
  EXPECT_EQ(u32(kDataSectorSignature), 0x61746164u);
  EXPECT_EQ(u64(kMetadataSignature), 0x617461646174656Du);
}

// Spec §1.1 layout of the header section and the limits of §3-§5.
TEST(Constants, HeaderSectionLayoutAndLimits) {
  EXPECT_EQ(kFileIdentifierOffset, 0x00000u);
  EXPECT_EQ(kHeader1Offset, 0x10000u);
  EXPECT_EQ(kHeader2Offset, 0x20000u);
  EXPECT_EQ(kRegionTable1Offset, 0x30000u);
  EXPECT_EQ(kRegionTable2Offset, 0x40000u);
  EXPECT_EQ(kHeaderSectionSize, 0x100000u);
  EXPECT_EQ(kHeaderSize, 4096u);
  EXPECT_EQ(kRegionTableSize, 65536u);
  EXPECT_EQ(kMetadataTableSize, 65536u);
  EXPECT_EQ(kLogSectorSize, 4096u);
  EXPECT_EQ(kMaxTableEntries, 2047u);
  EXPECT_EQ(16 + 32 * kMaxTableEntries, 65520u);  // region table entries fit
  EXPECT_EQ(32 + 32 * kMaxTableEntries, 65536u);  // metadata table entries fit exactly
  EXPECT_EQ(kMaxUserMetadataEntries, 1024u);
  EXPECT_EQ(kMaxMetadataItemLength, 1048576u);
  EXPECT_EQ(kMaxVirtualSize, uint64_t{1} << 46);
  EXPECT_EQ(kMinBlockSize, 1u << 20);
  EXPECT_EQ(kMaxBlockSize, 1u << 28);
  EXPECT_EQ(kSectorBitmapBlockSize, 1u << 20);
}

}  // namespace
}  // namespace vhdx::format
