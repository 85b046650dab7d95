// CreateImage: new images open, check clean, read as zeros, have the layout
// Windows writes (digest §11 byte listings), and bad options are refused.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "core_test_util.h"
#include "format/crc32c.h"
#include "util/coding.h"
#include "vhdx/create.h"

namespace vhdx::test {
namespace {

struct CreateCase {
  DiskType type;
  uint64_t virtual_size;
  uint32_t block_size;
  uint32_t logical;
  uint32_t physical;
};

class CreateTest : public ::testing::TestWithParam<CreateCase> {};

TEST_P(CreateTest, OpensChecksCleanAndReadsAsZeros) {
  const CreateCase& c = GetParam();
  SparseMemoryFile file("new.vhdx", true);
  CreateOptions o{c.type, c.virtual_size, c.block_size, c.logical, c.physical};
  ASSERT_TRUE(CreateImage(file, o).ok());

  auto report = Check(file);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_TRUE(report->findings.empty()) << report->findings[0].message;

  auto image = Image::Open(std::make_unique<SparseMemoryFile>(file, "new.vhdx", false));
  ASSERT_TRUE(image.ok()) << image.status().message();
  const ImageInfo& info = (*image)->info();
  EXPECT_EQ(info.type, c.type);
  EXPECT_EQ(info.virtual_size, c.virtual_size);
  EXPECT_EQ(info.block_size, c.block_size);
  EXPECT_EQ(info.logical_sector_size, c.logical);
  EXPECT_EQ(info.physical_sector_size, c.physical);
  EXPECT_FALSE(info.log.dirty);
  EXPECT_EQ(info.headers[0].data_write_guid, info.headers[1].data_write_guid);
  EXPECT_FALSE(info.virtual_disk_id.IsZero());
  for (const auto& r : info.regions) EXPECT_TRUE(r.required) << r.name;

  auto alloc = (*image)->CountAllocation();
  ASSERT_TRUE(alloc.ok());
  uint64_t blocks = (c.virtual_size + c.block_size - 1) / c.block_size;
  if (c.type == DiskType::kFixed) {
    EXPECT_EQ(alloc->payload[format::kPayloadFullyPresent], blocks);
    // Fixed: the file holds every block, back to back after the BAT.
    auto size = file.Size();
    ASSERT_TRUE(size.ok());
    EXPECT_EQ(*size, info.bat_offset + RoundUp(info.bat_entries * 8, MiB) + blocks * c.block_size);
  } else {
    EXPECT_EQ(alloc->payload[format::kPayloadNotPresent], blocks);
  }
  EXPECT_EQ(alloc->sector_bitmap[format::kSectorBitmapPresent], 0u);

  // The first and last MiB (and a block boundary) read as zeros.
  std::vector<uint8_t> buf(std::min<uint64_t>(MiB, c.virtual_size), 0xFF);
  for (uint64_t off : {uint64_t{0}, c.virtual_size - buf.size()}) {
    ASSERT_TRUE((*image)->Read(off, buf.data(), buf.size()).ok());
    EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0; })) << off;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Geometries, CreateTest,
    ::testing::Values(CreateCase{DiskType::kDynamic, 1 * GiB, 32 * MiB, 512, 4096},
                      CreateCase{DiskType::kDynamic, 10 * GiB + 512, 1 * MiB, 512, 512},
                      CreateCase{DiskType::kDynamic, 64 * GiB, 256 * MiB, 4096, 4096},
                      CreateCase{DiskType::kDynamic, 40 * GiB + 4096, 8 * MiB, 4096, 512},
                      CreateCase{DiskType::kFixed, 100 * MiB, 2 * MiB, 512, 4096},
                      CreateCase{DiskType::kFixed, 5 * MiB + 512, 1 * MiB, 512, 4096},
                      CreateCase{DiskType::kFixed, 64 * MiB, 32 * MiB, 4096, 4096}),
    [](const ::testing::TestParamInfo<CreateCase>& i) {
      return fmt::format("{}_{}B_{}MiBblocks_{}_{}", DiskTypeName(i.param.type), i.param.virtual_size,
                         i.param.block_size >> 20, i.param.logical, i.param.physical);
    });

// The 1 GiB / 32 MiB / 512 / 4096 image is the digest's worked example: its
// region table and metadata table are Windows' bytes exactly.
TEST(CreateLayout, MatchesTheWindowsWorkedExample) {
  SparseMemoryFile file("example.vhdx", true);
  ASSERT_TRUE(CreateImage(file, CreateOptions{DiskType::kDynamic, 1 * GiB, 32 * MiB, 512, 4096}).ok());
  auto size = file.Size();
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 4 * MiB);  // §11: file length 4 MiB

  std::vector<uint8_t> rt(64 * KiB);
  ASSERT_TRUE(ReadExact(file, 192 * KiB, rt.data(), rt.size(), "region table").ok());
  const uint8_t kRegionHead[80] = {
      0x72, 0x65, 0x67, 0x69, 0xae, 0x8c, 0x6b, 0xc6, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
      0x00, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x00, 0x00,
      0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
      0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x00, 0x00};
  EXPECT_EQ(0, std::memcmp(rt.data(), kRegionHead, 80));
  EXPECT_TRUE(std::all_of(rt.begin() + 80, rt.end(), [](uint8_t b) { return b == 0; }));
  std::vector<uint8_t> rt2(64 * KiB);
  ASSERT_TRUE(ReadExact(file, 256 * KiB, rt2.data(), rt2.size(), "region table 2").ok());
  EXPECT_EQ(rt, rt2);

  // Metadata table at 2 MiB: "metadata", 5 entries, FP/VDS/LSS/PSS/VDID at
  // 0x10000/08/10/14/18 with flags 4/6/6/6/6.
  std::vector<uint8_t> mt(0x10000 + 40);
  ASSERT_TRUE(ReadExact(file, 2 * MiB, mt.data(), mt.size(), "metadata").ok());
  EXPECT_EQ(0, std::memcmp(mt.data(), "metadata\0\0\x05\0", 12));
  const uint32_t offsets[5] = {0x10000, 0x10008, 0x10010, 0x10014, 0x10018};
  const uint32_t lengths[5] = {8, 8, 4, 4, 16};
  const uint32_t flags[5] = {4, 6, 6, 6, 6};
  const Guid* ids[5] = {&format::kFileParametersGuid, &format::kVirtualDiskSizeGuid,
                        &format::kLogicalSectorSizeGuid, &format::kPhysicalSectorSizeGuid,
                        &format::kVirtualDiskIdGuid};
  for (int i = 0; i < 5; ++i) {
    const uint8_t* e = mt.data() + 32 + 32 * i;
    EXPECT_EQ(0, std::memcmp(e, ids[i]->bytes.data(), 16)) << i;
    EXPECT_EQ(DecodeFixed32(e + 16), offsets[i]) << i;
    EXPECT_EQ(DecodeFixed32(e + 20), lengths[i]) << i;
    EXPECT_EQ(DecodeFixed32(e + 24), flags[i]) << i;
  }
  const uint8_t kItems[24] = {0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,   // 32 MiB, dynamic
                              0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00,   // 1 GiB
                              0x00, 0x02, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00};  // 512, 4096
  EXPECT_EQ(0, std::memcmp(mt.data() + 0x10000, kItems, 24));

  // Headers: signature, version 1, log 1 MiB at 1 MiB, zero log GUID,
  // consecutive sequence numbers.
  std::vector<uint8_t> h(4096);
  for (uint64_t at : {64 * KiB, 128 * KiB}) {
    ASSERT_TRUE(ReadExact(file, at, h.data(), h.size(), "header").ok());
    EXPECT_EQ(0, std::memcmp(h.data(), "head", 4));
    EXPECT_EQ(DecodeFixed32(h.data() + 4), crc32c::ValueWithZeroedField(h.data(), 4096, 4));
    EXPECT_EQ(DecodeFixed16(h.data() + 66), 1);
    EXPECT_EQ(DecodeFixed32(h.data() + 68), MiB);
    EXPECT_EQ(DecodeFixed64(h.data() + 72), MiB);
    EXPECT_TRUE(std::all_of(h.begin() + 48, h.begin() + 64, [](uint8_t b) { return b == 0; }));
  }
}

TEST(CreateLayout, RefusesBadOptionsAndNonEmptyFiles) {
  const CreateOptions good{DiskType::kDynamic, 1 * GiB, 32 * MiB, 512, 4096};
  auto expect_refused = [](CreateOptions o, const std::string& words) {
    SparseMemoryFile file("bad.vhdx", true);
    Status st = CreateImage(file, o);
    EXPECT_EQ(st.code(), Errc::kInvalidArgument) << words;
    EXPECT_NE(st.message().find(words), std::string::npos) << st.message();
    EXPECT_EQ(*file.Size(), 0u) << "nothing written for: " << words;
  };
  CreateOptions o = good;
  o.virtual_size = 0;
  expect_refused(o, "size 0");
  o.virtual_size = 64 * TiB + 512;
  expect_refused(o, "64 TiB");
  o.virtual_size = GiB + 100;
  expect_refused(o, "multiple of the logical sector size");
  o = good;
  o.logical_sector_size = 4096;
  o.virtual_size = GiB + 512;
  expect_refused(o, "multiple of the logical sector size 4096");
  o = good;
  o.block_size = 3 * MiB;
  expect_refused(o, "block size");
  o.block_size = 512 * MiB;
  expect_refused(o, "block size");
  o.block_size = 512 * KiB;
  expect_refused(o, "block size");
  o = good;
  o.logical_sector_size = 1024;
  expect_refused(o, "logical sector size");
  o = good;
  o.physical_sector_size = 2048;
  expect_refused(o, "physical sector size");
  o = good;
  o.type = DiskType::kDifferencing;
  expect_refused(o, "dynamic and fixed");

  SparseMemoryFile used("used.vhdx", true);
  uint8_t byte = 1;
  ASSERT_TRUE(used.WriteAt(0, &byte, 1).ok());
  EXPECT_EQ(CreateImage(used, good).code(), Errc::kInvalidArgument);
}

TEST(CreateLayout, LargestImageHasTheLargestBat) {
  // 64 TiB with 1 MiB blocks: 67,125,247 BAT entries in a 513 MiB region.
  SparseMemoryFile file("huge.vhdx", true);
  ASSERT_TRUE(CreateImage(file, CreateOptions{DiskType::kDynamic, 64 * TiB, 1 * MiB, 512, 4096}).ok());
  auto image = Image::Open(std::make_unique<SparseMemoryFile>(file, "huge.vhdx", false));
  ASSERT_TRUE(image.ok()) << image.status().message();
  EXPECT_EQ((*image)->info().bat_entries, 67125247u);
  EXPECT_EQ(*file.Size(), 3 * MiB + 513 * MiB);
  uint8_t last[512];
  ASSERT_TRUE((*image)->Read(64 * TiB - 512, last, sizeof last).ok());
}

}  // namespace
}  // namespace vhdx::test
