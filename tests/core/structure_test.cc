// Headers, region tables, metadata items and differencing images as Image
// sees them (digest §2.3, §3.4, §4.2, §4.7).
#include "core_test_util.h"
#include "format/bat.h"
#include "format/metadata.h"

namespace vhdx::test {
namespace {

using format::kPayloadFullyPresent;

Guid MakeGuid(const char* text) { return *Guid::Parse(text); }

// --- Headers -----------------------------------------------------------------

TEST(Headers, HigherSequenceNumberIsCurrentAndOnlyItsFieldsCount) {
  // Slot 0 (seq 9) carries a dirty log GUID, slot 1 (seq 8) is clean: the
  // log-only BAT update shows exactly when slot 0 is current.
  ImageBuilder b({.virtual_size = 8 * MiB});
  uint64_t x = b.AppendSpace(MiB);
  b.WriteFile(x, PatternBytes(MiB, 1));
  b.WriteLogEntry(
      {.sequence_number = 4, .updates = {b.BatSectorUpdate(0, kPayloadFullyPresent, x)}});
  format::Header dirty = b.header(0), clean = b.header(1);
  dirty.sequence_number = 9;
  dirty.log_guid = b.log_guid();
  clean.sequence_number = 8;
  b.SetHeader(0, dirty);
  b.SetHeader(1, clean);
  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().current_header, 0);
  EXPECT_TRUE(image->info().log.dirty);
  EXPECT_EQ(ReadImage(*image, 0, MiB), PatternBytes(MiB, 1));

  clean.sequence_number = 10;
  b.SetHeader(1, clean);
  image = OpenBuilt(b);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().current_header, 1);
  EXPECT_FALSE(image->info().log.dirty);
  EXPECT_EQ(ReadImage(*image, 0, MiB), std::vector<uint8_t>(MiB, 0));
}

TEST(Headers, EqualSequenceNumbersWithIdenticalHeadersOpen) {
  // Disk2vhd writes two byte-identical headers with sequence number 1.
  ImageBuilder b;
  b.SetHeader(1, b.header(0));
  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().current_header, 0);
  EXPECT_EQ(image->info().headers[1].sequence_number, 1u);
}

TEST(Headers, EqualSequenceNumbersWithDifferentContentsAreCorrupt) {
  ImageBuilder b;
  format::Header other = b.header(0);
  other.file_write_guid = MakeGuid("01234567-89ab-cdef-0123-456789abcdef");
  b.SetHeader(1, other);
  Status st = OpenStatus(b);
  EXPECT_EQ(st.code(), Errc::kCorrupt);
  EXPECT_NE(st.message().find("sequence number 1"), std::string::npos) << st.message();
}

TEST(Headers, OnlyHeaderTwoValid) {
  // Slot 0 has the higher sequence number but a broken checksum.
  ImageBuilder b;
  format::Header h = b.header(0);
  h.sequence_number = 50;
  b.SetHeader(0, h);
  b.DamageHeader(0);
  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().current_header, 1);
  EXPECT_FALSE(image->info().headers[0].valid);
  EXPECT_NE(image->info().headers[0].problem.find("checksum"), std::string::npos);
  EXPECT_TRUE(image->info().headers[1].valid);
}

TEST(Headers, NoValidHeaderIsCorrupt) {
  ImageBuilder b;
  b.DamageHeader(0);
  b.DamageHeader(1);
  Status st = OpenStatus(b);
  EXPECT_EQ(st.code(), Errc::kCorrupt);
  EXPECT_NE(st.message().find("no valid header"), std::string::npos) << st.message();
}

// --- Region tables -----------------------------------------------------------

TEST(RegionTables, DamagedFirstCopyFallsBackToTheSecond) {
  ImageBuilder b;
  b.DamageRegionTable(0);
  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().region_table_used, 1);
  EXPECT_EQ(image->info().bat_offset, b.bat_offset());
}

TEST(RegionTables, DamagedSecondCopyIsNotNeeded) {
  ImageBuilder b;
  b.DamageRegionTable(1);
  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().region_table_used, 0);
}

TEST(RegionTables, BothCopiesDamagedIsCorrupt) {
  ImageBuilder b;
  b.DamageRegionTable(0);
  b.DamageRegionTable(1);
  Status st = OpenStatus(b);
  EXPECT_EQ(st.code(), Errc::kCorrupt);
  EXPECT_NE(st.message().find("region table"), std::string::npos) << st.message();
}

// --- Unknown regions and metadata items ---------------------------------------

TEST(UnknownStructures, OptionalRegionItemAndUserItemsAreListed) {
  ImageBuilder b({.virtual_size = 8 * MiB});
  const Guid region = MakeGuid("aaaaaaaa-1111-2222-3333-444444444444");
  const Guid item = MakeGuid("bbbbbbbb-1111-2222-3333-444444444444");
  const Guid user = MakeGuid("cccccccc-1111-2222-3333-444444444444");
  uint64_t region_offset = b.AddRegion(region, MiB, /*required=*/false);
  b.AddMetadataItem(item, PatternBytes(100, 1), format::kMetaIsVirtualDisk);
  b.AddMetadataItem(user, PatternBytes(40, 2), format::kMetaIsUser);
  // A user item may reuse a system item's GUID (the pair must be unique).
  b.AddMetadataItem(format::kFileParametersGuid, PatternBytes(8, 3), format::kMetaIsUser);
  b.WriteVirtual(0, PatternBytes(4096, 4));  // allocated after the region: no overlap

  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  const ImageInfo& info = image->info();
  ASSERT_EQ(info.regions.size(), 3u);
  EXPECT_EQ(info.regions[2].guid, region);
  EXPECT_EQ(info.regions[2].name, "unknown");
  EXPECT_EQ(info.regions[2].file_offset, region_offset);
  EXPECT_FALSE(info.regions[2].required);
  ASSERT_EQ(info.metadata_items.size(), 8u);
  EXPECT_EQ(info.metadata_items[5].item_id, item);
  EXPECT_EQ(info.metadata_items[5].name, "unknown");
  EXPECT_TRUE(info.metadata_items[5].is_virtual_disk);
  EXPECT_FALSE(info.metadata_items[5].is_required);
  EXPECT_EQ(info.metadata_items[5].length, 100u);
  EXPECT_EQ(info.metadata_items[6].item_id, user);
  EXPECT_TRUE(info.metadata_items[6].is_user);
  EXPECT_EQ(info.metadata_items[6].name, "user");
  EXPECT_EQ(info.metadata_items[7].name, "user");
  EXPECT_EQ(info.block_size, MiB);  // the system item, not the user item of the same GUID
  EXPECT_EQ(ReadImage(*image, 0, 4096), PatternBytes(4096, 4));
}

TEST(UnknownStructures, RequiredUnknownRegionIsUnsupported) {
  ImageBuilder b;
  const Guid region = MakeGuid("dddddddd-1111-2222-3333-444444444444");
  b.AddRegion(region, MiB, /*required=*/true);
  Status st = OpenStatus(b);
  EXPECT_EQ(st.code(), Errc::kUnsupported);
  EXPECT_NE(st.message().find(region.ToString()), std::string::npos) << st.message();
}

TEST(UnknownStructures, RequiredUnknownMetadataItemIsUnsupported) {
  ImageBuilder b;
  const Guid item = MakeGuid("eeeeeeee-1111-2222-3333-444444444444");
  b.AddMetadataItem(item, PatternBytes(16, 1),
                    format::kMetaIsRequired | format::kMetaIsVirtualDisk);
  Status st = OpenStatus(b);
  EXPECT_EQ(st.code(), Errc::kUnsupported);
  EXPECT_NE(st.message().find(item.ToString()), std::string::npos) << st.message();
}

// --- Differencing images -------------------------------------------------------

const std::vector<std::pair<std::string, std::string>> kLocator = {
    {"parent_linkage", "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}"},
    {"absolute_win32_path", "C:\\VMs\\base\\parent.vhdx"},
    {"relative_path", "..\\base\\parent.vhdx"},
    {"volume_path", "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\VMs\\base\\parent.vhdx"},
    {"parent_linkage2", "{00000000-0000-0000-0000-000000000000}"},
};

TEST(Differencing, InfoExposesTheParentLocator) {
  ImageBuilder b({.type = DiskType::kDifferencing,
                  .virtual_size = 8 * GiB,
                  .block_size = 2 * MiB,
                  .parent_locator = kLocator});
  auto image = OpenBuilt(b, {.skip_parent = true});
  ASSERT_TRUE(image);
  const ImageInfo& info = image->info();
  EXPECT_EQ(info.type, DiskType::kDifferencing);
  EXPECT_EQ(info.bat_entries, 2u * (2048 + 1));  // S × (CR + 1): ends with an SB entry
  ASSERT_TRUE(info.parent.has_value());
  EXPECT_EQ(info.parent->entries, kLocator);
  EXPECT_EQ(info.parent->Get("relative_path"), "..\\base\\parent.vhdx");
  EXPECT_FALSE(info.parent->Get("no_such_key").has_value());
}

// Opened alone (skip_parent), a child describes itself but cannot be read.
TEST(Differencing, ReadAndMapRefuseNamingTheParent) {
  ImageBuilder b({.type = DiskType::kDifferencing,
                  .virtual_size = 8 * MiB,
                  .block_size = 2 * MiB,
                  .parent_locator = kLocator});
  b.WriteVirtual(0, PatternBytes(4096, 1));  // even a block this file holds is not served alone
  auto image = OpenBuilt(b, {.skip_parent = true});
  ASSERT_TRUE(image);
  std::vector<uint8_t> buf(4096);
  Status st = image->Read(0, buf.data(), buf.size());
  EXPECT_EQ(st.code(), Errc::kUnsupported);
  EXPECT_NE(st.message().find("..\\base\\parent.vhdx"), std::string::npos) << st.message();
  st = image->Map(0, image->virtual_size(), [](const MapExtent&) { return true; });
  EXPECT_EQ(st.code(), Errc::kUnsupported);
  EXPECT_NE(st.message().find("..\\base\\parent.vhdx"), std::string::npos) << st.message();
}

TEST(Differencing, MessageUsesWhicheverPathTheLocatorHas) {
  ImageBuilder b({.type = DiskType::kDifferencing,
                  .virtual_size = 8 * MiB,
                  .parent_locator = {{"parent_linkage", "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}"},
                                     {"absolute_win32_path", "D:\\only\\this.vhdx"}}});
  auto image = OpenBuilt(b, {.skip_parent = true});
  ASSERT_TRUE(image);
  std::vector<uint8_t> buf(512);
  Status st = image->Read(0, buf.data(), buf.size());
  EXPECT_EQ(st.code(), Errc::kUnsupported);
  EXPECT_NE(st.message().find("D:\\only\\this.vhdx"), std::string::npos) << st.message();
}

// With its chain (the default), a child whose parent is nowhere fails to open
// and says where it looked.
TEST(Differencing, MissingParentFailsTheOpenNamingWhereItLooked) {
  ImageBuilder b({.type = DiskType::kDifferencing,
                  .virtual_size = 8 * MiB,
                  .block_size = 2 * MiB,
                  .parent_locator = kLocator});
  Status st = OpenStatus(b);
  EXPECT_EQ(st.code(), Errc::kNotFound);
  EXPECT_NE(st.message().find("base/parent.vhdx (relative_path)"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace vhdx::test
