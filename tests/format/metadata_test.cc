#include "format/metadata.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "format/constants.h"
#include "util/coding.h"

namespace vhdx::format {
namespace {

using Bytes = std::vector<uint8_t>;

// The spec §11 metadata table (a fresh Windows 1 GiB dynamic disk), typed in.
const uint8_t kSpecTable[0xC0] = {
    0x6d, 0x65, 0x74, 0x61, 0x64, 0x61, 0x74, 0x61, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b,
    0x00, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8,
    0x08, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f,
    0x10, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44, 0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56,
    0x14, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46,
    0x18, 0x00, 0x01, 0x00, 0x10, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

// The spec §11 items at region offset 0x10000 (disk id illustrative).
const uint8_t kSpecItems[0x28] = {
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,  // BlockSize 32 MiB, flags 0
    0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00,  // VirtualDiskSize 1 GiB
    0x00, 0x02, 0x00, 0x00,                          // LogicalSectorSize 512
    0x00, 0x10, 0x00, 0x00,                          // PhysicalSectorSize 4096
    0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87,  // Virtual Disk ID
    0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f,
};

constexpr uint64_t kRegionOffset = 2 * MiB;

Bytes SpecTable() {
  Bytes b(kMetadataTableSize, 0);
  std::memcpy(b.data(), kSpecTable, sizeof kSpecTable);
  return b;
}

MetadataEntry Item(const Guid& id, uint32_t offset, uint32_t length, uint32_t flags) {
  return {id, offset, length, flags};
}
Guid Tagged(uint32_t tag) {
  Guid g;
  g.bytes.fill(0x5C);
  EncodeFixed32(g.bytes.data(), tag);
  return g;
}

Status ParseEntries(const std::vector<MetadataEntry>& entries, uint64_t region_length = MiB,
                    MetadataTable* out = nullptr) {
  Bytes b(kMetadataTableSize);
  SerializeMetadataTable(MetadataTable{entries}, b.data());
  MetadataTable scratch;
  return ParseMetadataTable(b.data(), kRegionOffset, region_length, out ? out : &scratch);
}

void ExpectError(const Status& st, Errc code, const char* fragment) {
  EXPECT_EQ(st.code(), code) << st.message();
  EXPECT_NE(st.message().find("metadata table at offset 0x200000"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find(fragment), std::string::npos) << st.message();
}

TEST(MetadataTable, ParsesTheSpecTable) {
  Bytes b = SpecTable();
  MetadataTable t;
  Status st = ParseMetadataTable(b.data(), kRegionOffset, MiB, &t);
  ASSERT_TRUE(st.ok()) << st.message();
  struct Want {
    Guid id;
    const char* name;
    uint32_t offset, length, flags;
  };
  const Want want[] = {
      {kFileParametersGuid, "file_parameters", 0x10000, 8, 0x4},
      {kVirtualDiskSizeGuid, "virtual_disk_size", 0x10008, 8, 0x6},
      {kLogicalSectorSizeGuid, "logical_sector_size", 0x10010, 4, 0x6},
      {kPhysicalSectorSizeGuid, "physical_sector_size", 0x10014, 4, 0x6},
      {kVirtualDiskIdGuid, "virtual_disk_id", 0x10018, 16, 0x6},
  };
  ASSERT_EQ(t.entries.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    const MetadataEntry& e = t.entries[i];
    EXPECT_EQ(e.item_id, want[i].id) << i;
    EXPECT_EQ(e.offset, want[i].offset) << i;
    EXPECT_EQ(e.length, want[i].length) << i;
    EXPECT_EQ(e.flags, want[i].flags) << i;
    EXPECT_FALSE(e.is_user()) << i;
    EXPECT_TRUE(e.is_required()) << i;
    EXPECT_STREQ(SystemItemName(e.item_id), want[i].name);
    EXPECT_EQ(t.FindSystem(want[i].id), &e);
  }
  EXPECT_EQ(t.FindSystem(kParentLocatorGuid), nullptr);
  EXPECT_STREQ(SystemItemName(kParentLocatorGuid), "parent_locator");
  EXPECT_EQ(SystemItemName(kBatRegionGuid), nullptr);
}

TEST(MetadataTable, SerializeReproducesTheSpecTable) {
  Bytes in = SpecTable();
  MetadataTable t;
  ASSERT_TRUE(ParseMetadataTable(in.data(), kRegionOffset, MiB, &t).ok());
  Bytes out(kMetadataTableSize, 0xEE);
  SerializeMetadataTable(t, out.data());
  EXPECT_EQ(out, in);
}

TEST(MetadataItems, ParseTheSpecItems) {
  const uint8_t* p = kSpecItems;
  FileParameters fp;
  ASSERT_TRUE(ParseFileParameters(p, 8, 0x210000, &fp).ok());
  EXPECT_EQ(fp.block_size, 32 * MiB);
  EXPECT_FALSE(fp.leave_block_allocated);
  EXPECT_FALSE(fp.has_parent);
  uint64_t size = 0;
  ASSERT_TRUE(ParseVirtualDiskSize(p + 8, 8, 0x210008, &size).ok());
  EXPECT_EQ(size, GiB);
  uint32_t logical = 0, physical = 0;
  ASSERT_TRUE(ParseSectorSize(p + 16, 4, 0x210010, "logical sector size", &logical).ok());
  ASSERT_TRUE(ParseSectorSize(p + 20, 4, 0x210014, "physical sector size", &physical).ok());
  EXPECT_EQ(logical, 512u);
  EXPECT_EQ(physical, 4096u);
  Guid id;
  ASSERT_TRUE(ParseVirtualDiskId(p + 24, 16, 0x210018, &id).ok());
  EXPECT_EQ(id.ToString(), "c3d2e1f0-a5b4-8796-7869-5a4b3c2d1e0f");
}

// --- item parsers ---

Status ParseBlockSize(uint32_t block_size, uint32_t flags = 0) {
  uint8_t item[8];
  EncodeFixed32(item, block_size);
  EncodeFixed32(item + 4, flags);
  FileParameters fp;
  return ParseFileParameters(item, sizeof item, 0x210000, &fp);
}

TEST(MetadataItems, FileParametersAcceptEveryPowerOfTwoBlockSizeFrom1To256MiB) {
  for (uint32_t bs = MiB; bs <= 256 * MiB; bs *= 2) {
    Status st = ParseBlockSize(bs);
    EXPECT_TRUE(st.ok()) << bs << ": " << st.message();
  }
}

TEST(MetadataItems, FileParametersRejectOtherBlockSizes) {
  for (uint32_t bs : {0u, 1u, 512u * 1024, 3u * 1024 * 1024, 1024u * 1024 + 1, 512u * 1024 * 1024,
                      0x80000000u, 0xFFFFFFFFu}) {
    Status st = ParseBlockSize(bs);
    EXPECT_EQ(st.code(), Errc::kCorrupt) << bs;
    EXPECT_NE(st.message().find("block size"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("0x210000"), std::string::npos) << st.message();
  }
}

TEST(MetadataItems, FileParametersDecodeFlagsAndRejectReservedBits) {
  uint8_t item[8];
  FileParameters fp;
  for (uint32_t flags : {0u, 1u, 2u, 3u}) {
    EncodeFixed32(item, MiB);
    EncodeFixed32(item + 4, flags);
    ASSERT_TRUE(ParseFileParameters(item, 8, 0, &fp).ok()) << flags;
    EXPECT_EQ(fp.leave_block_allocated, (flags & 1) != 0);
    EXPECT_EQ(fp.has_parent, (flags & 2) != 0);
  }
  for (uint32_t flags : {4u, 5u, 0x80000000u, 0xFFFFFFFFu}) {
    Status st = ParseBlockSize(MiB, flags);
    EXPECT_EQ(st.code(), Errc::kCorrupt) << flags;
    EXPECT_NE(st.message().find("reserved flag bits"), std::string::npos) << st.message();
  }
}

TEST(MetadataItems, FileParametersRoundTrip) {
  for (bool leave : {false, true})
    for (bool parent : {false, true}) {
      uint8_t item[8];
      SerializeFileParameters(FileParameters{64 * MiB, leave, parent}, item);
      FileParameters fp;
      ASSERT_TRUE(ParseFileParameters(item, 8, 0, &fp).ok());
      EXPECT_EQ(fp.block_size, 64 * MiB);
      EXPECT_EQ(fp.leave_block_allocated, leave);
      EXPECT_EQ(fp.has_parent, parent);
    }
}

TEST(MetadataItems, VirtualDiskSizeRange) {
  uint8_t item[8];
  uint64_t size = 0;
  for (uint64_t ok : {uint64_t{512}, GiB, kMaxVirtualSize}) {
    EncodeFixed64(item, ok);
    ASSERT_TRUE(ParseVirtualDiskSize(item, 8, 0, &size).ok()) << ok;
    EXPECT_EQ(size, ok);
  }
  for (uint64_t bad : {uint64_t{0}, kMaxVirtualSize + 512, UINT64_MAX}) {
    EncodeFixed64(item, bad);
    Status st = ParseVirtualDiskSize(item, 8, 0x210008, &size);
    EXPECT_EQ(st.code(), Errc::kCorrupt) << bad;
    EXPECT_NE(st.message().find("virtual disk size"), std::string::npos) << st.message();
  }
}

TEST(MetadataItems, SectorSizesAreOnly512Or4096) {
  uint8_t item[4];
  uint32_t value = 0;
  for (uint32_t ok : {512u, 4096u}) {
    EncodeFixed32(item, ok);
    ASSERT_TRUE(ParseSectorSize(item, 4, 0, "logical sector size", &value).ok());
    EXPECT_EQ(value, ok);
  }
  for (uint32_t bad : {0u, 256u, 520u, 1024u, 2048u, 8192u, 65536u}) {
    EncodeFixed32(item, bad);
    Status st = ParseSectorSize(item, 4, 0x210014, "physical sector size", &value);
    EXPECT_EQ(st.code(), Errc::kCorrupt) << bad;
    EXPECT_NE(st.message().find("physical sector size"), std::string::npos) << st.message();
  }
}

TEST(MetadataItems, ShortItemsAreRejected) {
  uint8_t item[16] = {};
  EncodeFixed32(item, MiB);
  FileParameters fp;
  uint64_t size;
  uint32_t sector;
  Guid id;
  for (const Status& st :
       {ParseFileParameters(item, 7, 0x10, &fp), ParseVirtualDiskSize(item, 7, 0x10, &size),
        ParseSectorSize(item, 3, 0x10, "logical sector size", &sector),
        ParseVirtualDiskId(item, 15, 0x10, &id)}) {
    EXPECT_EQ(st.code(), Errc::kCorrupt);
    EXPECT_NE(st.message().find("is less than"), std::string::npos) << st.message();
  }
  // Longer than needed is tolerated (readers: "Length ≥ their fixed size").
  EncodeFixed32(item, 4096);
  EXPECT_TRUE(ParseSectorSize(item, 8, 0x10, "physical sector size", &sector).ok());
}

// --- table rules ---

TEST(MetadataTable, RejectsBadSignature) {
  Bytes b = SpecTable();
  b[7] = 'A';
  MetadataTable t;
  ExpectError(ParseMetadataTable(b.data(), kRegionOffset, MiB, &t), Errc::kCorrupt, "signature");
}

TEST(MetadataTable, RejectsRegionSmallerThanTheTable) {
  Bytes b = SpecTable();
  MetadataTable t;
  ExpectError(ParseMetadataTable(b.data(), kRegionOffset, 64 * KiB - 1, &t), Errc::kCorrupt,
              "smaller than the 64 KiB table");
}

TEST(MetadataTable, RejectsEntryCountAbove2047) {
  Bytes b = SpecTable();
  EncodeFixed16(b.data() + 10, 2048);
  MetadataTable t;
  ExpectError(ParseMetadataTable(b.data(), kRegionOffset, MiB, &t), Errc::kCorrupt,
              "entry count 2048");
}

TEST(MetadataTable, RejectsItemOffsetInsideTheTable) {
  ExpectError(ParseEntries({Item(kFileParametersGuid, 0x8000, 8, 4)}), Errc::kCorrupt,
              "inside the table");
  ExpectError(ParseEntries({Item(kFileParametersGuid, 0xFFFF, 8, 4)}), Errc::kCorrupt,
              "inside the table");
}

TEST(MetadataTable, ItemLengthIsAtMost1MiB) {
  EXPECT_TRUE(ParseEntries({Item(Tagged(1), 0x10000, MiB, kMetaIsUser)}, 2 * MiB).ok());
  ExpectError(ParseEntries({Item(Tagged(1), 0x10000, MiB + 1, kMetaIsUser)}, 4 * MiB),
              Errc::kCorrupt, "exceeds 1 MiB");
}

TEST(MetadataTable, ItemsMustEndInsideTheRegion) {
  EXPECT_TRUE(ParseEntries({Item(kVirtualDiskIdGuid, MiB - 16, 16, 6)}).ok());
  ExpectError(ParseEntries({Item(kVirtualDiskIdGuid, MiB - 8, 16, 6)}), Errc::kCorrupt,
              "past the region end");
  ExpectError(ParseEntries({Item(kVirtualDiskIdGuid, 0xFFFFFFF0u, 16, 6)}), Errc::kCorrupt,
              "past the region end");
}

TEST(MetadataTable, RejectsOverlappingItems) {
  ExpectError(ParseEntries({Item(kFileParametersGuid, 0x10000, 8, 4),
                            Item(kVirtualDiskSizeGuid, 0x10004, 8, 6)}),
              Errc::kCorrupt, "overlap");
  // Listed in the other order, and one item inside another.
  ExpectError(ParseEntries({Item(kVirtualDiskIdGuid, 0x10010, 4, 6),
                            Item(kFileParametersGuid, 0x10000, 0x100, 4)}),
              Errc::kCorrupt, "overlap");
}

TEST(MetadataTable, AdjacentItemsDoNotOverlap) {
  Status st = ParseEntries(
      {Item(kVirtualDiskSizeGuid, 0x10008, 8, 6), Item(kFileParametersGuid, 0x10000, 8, 4)});
  EXPECT_TRUE(st.ok()) << st.message();
}

TEST(MetadataTable, RejectsTheSameItemTwice) {
  ExpectError(ParseEntries({Item(kFileParametersGuid, 0x10000, 8, 4),
                            Item(kFileParametersGuid, 0x10008, 8, 4)}),
              Errc::kCorrupt, "appears twice");
  ExpectError(ParseEntries({Item(Tagged(9), 0x10000, 8, kMetaIsUser),
                            Item(Tagged(9), 0x10008, 8, kMetaIsUser)}),
              Errc::kCorrupt, "appears twice");
}

TEST(MetadataTable, SameGuidAsSystemAndAsUserItemIsFine) {
  MetadataTable t;
  Status st = ParseEntries({Item(kFileParametersGuid, 0x10000, 8, 4),
                            Item(kFileParametersGuid, 0x10008, 8, kMetaIsUser)},
                           MiB, &t);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(t.entries.size(), 2u);
  EXPECT_EQ(t.FindSystem(kFileParametersGuid), &t.entries[0]);
}

TEST(MetadataTable, AtMost1024UserItems) {
  std::vector<MetadataEntry> entries;
  for (uint32_t i = 0; i < 1024; ++i) entries.push_back(Item(Tagged(i), 0, 0, kMetaIsUser));
  entries.push_back(Item(kFileParametersGuid, 0x10000, 8, 4));  // system items do not count
  EXPECT_TRUE(ParseEntries(entries).ok());
  entries.push_back(Item(Tagged(1024), 0, 0, kMetaIsUser));
  ExpectError(ParseEntries(entries), Errc::kCorrupt, "more than 1024 user metadata items");
}

TEST(MetadataTable, EmptyItemMustHaveOffsetZero) {
  MetadataTable t;
  ASSERT_TRUE(ParseEntries({Item(kVirtualDiskIdGuid, 0, 0, 6)}, MiB, &t).ok());
  EXPECT_EQ(t.FindSystem(kVirtualDiskIdGuid)->length, 0u);
  ExpectError(ParseEntries({Item(kVirtualDiskIdGuid, 0x10000, 0, 6)}), Errc::kCorrupt,
              "empty item with non-zero offset");
}

TEST(MetadataTable, UnknownRequiredSystemItemIsUnsupported) {
  ExpectError(ParseEntries({Item(Tagged(1), 0x10000, 8, kMetaIsRequired)}), Errc::kUnsupported,
              "unknown system item");
}

TEST(MetadataTable, UnknownRequiredUserItemIsUnsupported) {
  // Spec §4.2: IsRequired on an item the implementation does not know -
  // and no user item is known - means the file must not be opened.
  ExpectError(ParseEntries({Item(Tagged(1), 0x10000, 8, kMetaIsUser | kMetaIsRequired)}),
              Errc::kUnsupported, "unknown user item");
  ExpectError(ParseEntries({Item(kFileParametersGuid, 0x10000, 8, kMetaIsUser | kMetaIsRequired)}),
              Errc::kUnsupported, "unknown user item");
}

TEST(MetadataTable, UnknownOptionalItemsAreAcceptedAndKept) {
  MetadataTable t;
  Status st = ParseEntries(
      {Item(Tagged(1), 0x10000, 8, kMetaIsVirtualDisk), Item(Tagged(2), 0x10008, 8, kMetaIsUser)},
      MiB, &t);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(t.entries.size(), 2u);
  EXPECT_EQ(t.entries[0].item_id, Tagged(1));
  EXPECT_EQ(t.entries[1].flags, kMetaIsUser);
  EXPECT_EQ(t.FindSystem(Tagged(2)), nullptr);  // a user item is not a system item
}

}  // namespace
}  // namespace vhdx::format
