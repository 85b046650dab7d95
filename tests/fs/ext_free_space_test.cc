// FindFreeSpace on a disk without a partition table (WSL's ext4.vhdx): the
// free ranges are exactly the free blocks dumpe2fs lists, and none touches a
// surviving file or the file system's own metadata.
#include <gtest/gtest.h>

#include <algorithm>

#include "fs/free_space.h"
#include "fs_test_util.h"
#include "support/test_util.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

struct WholeDiskCase {
  const char* name;
  const char* mkfs_type;
  const char* mkfs_args;
};

class WholeDiskTest : public ::testing::TestWithParam<WholeDiskCase> {};

TEST_P(WholeDiskTest, FreeRangesAreDumpe2fsFreeBlocks) {
  VHDX_REQUIRE(MissingFsTools());
  const WholeDiskCase& c = GetParam();
  const std::string raw = ScratchPath(std::string(c.name) + ".raw");
  const std::string vhdx = ScratchPath(std::string(c.name) + ".vhdx");
  ASSERT_EQ(MakeExt(raw, 256 << 20, c.mkfs_type, c.mkfs_args), "");
  std::string error;
  const std::vector<std::string> survivors = FillAndThin(raw, 24, error);
  ASSERT_EQ(error, "");
  ASSERT_FALSE(survivors.empty());
  const DumpedExt dumped = Dumpe2fs(raw);
  ASSERT_EQ(dumped.error, "");
  ASSERT_EQ(ConvertToVhdx(raw, vhdx), "");

  auto image = Image::Open(vhdx);
  ASSERT_TRUE(image.ok()) << image.status().message();
  auto report = fs::FindFreeSpace(**image);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->file_systems_read, 1u);
  EXPECT_TRUE(report->notices.empty()) << NoticesText(*report);

  // Exactly dumpe2fs's free blocks, as disk bytes.
  const std::vector<fs::FreeRange> expected = ToDiskRanges(dumped, 0);
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(report->free.size(), expected.size());
  EXPECT_TRUE(report->free == expected);
  for (size_t i = 0; i < std::min(report->free.size(), expected.size()); i++) {
    if (report->free[i] == expected[i]) continue;
    ADD_FAILURE() << "first difference at " << i << ": ours " << report->free[i].offset << "+"
                  << report->free[i].length << ", dumpe2fs " << expected[i].offset << "+"
                  << expected[i].length;
    break;
  }

  // No free range meets a surviving file, the boot block, the superblock or
  // the group descriptors after it.
  for (const std::string& name : survivors) {
    const std::vector<uint64_t> blocks = FileBlocks(raw, name);
    ASSERT_FALSE(blocks.empty()) << name;
    for (uint64_t b : blocks)
      ASSERT_FALSE(Overlaps(report->free, b * dumped.block_size, dumped.block_size))
          << name << " block " << b;
  }
  EXPECT_FALSE(Overlaps(report->free, 0, 3 * dumped.block_size + 2048));
  // Nothing past the file system's end is free.
  for (const fs::FreeRange& r : report->free)
    EXPECT_LE(r.offset + r.length, dumped.block_count * dumped.block_size);

  // min_length drops the short runs only.
  const uint64_t min = 1 << 20;
  auto coarse = fs::FindFreeSpace(**image, {.min_length = min});
  ASSERT_TRUE(coarse.ok()) << coarse.status().message();
  std::vector<fs::FreeRange> long_runs;
  for (const fs::FreeRange& r : expected)
    if (r.length >= min) long_runs.push_back(r);
  EXPECT_TRUE(coarse->free == long_runs);
}

INSTANTIATE_TEST_SUITE_P(
    FileSystems, WholeDiskTest,
    ::testing::Values(WholeDiskCase{"ext4_1k", "ext4", ""},  // 256 MiB: mkfs's "small", 1 KiB blocks
                      WholeDiskCase{"ext4_4k", "ext4", "-b 4096"},
                      WholeDiskCase{"ext3", "ext3", "-b 4096"},
                      WholeDiskCase{"ext2", "ext2", ""},
                      WholeDiskCase{"ext4_bigalloc", "ext4", "-b 4096 -O bigalloc -C 65536"}),
    [](const ::testing::TestParamInfo<WholeDiskCase>& p) { return std::string(p.param.name); });

// A disk of zeros and one with a file system we do not read: notices, no
// ranges.
TEST(WholeDisk, NoFileSystemGivesANoticeOnly) {
  const std::string raw = ScratchPath("zeros.raw");
  const std::string vhdx = ScratchPath("zeros.vhdx");
  ASSERT_EQ(vhdx::test::Run("truncate -s 64M " + ShellQuote(raw)).exit_code, 0);
  ASSERT_EQ(ConvertToVhdx(raw, vhdx), "");
  auto image = Image::Open(vhdx);
  ASSERT_TRUE(image.ok()) << image.status().message();
  auto report = fs::FindFreeSpace(**image);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_TRUE(report->free.empty());
  EXPECT_EQ(report->file_systems_read, 0u);
  ASSERT_EQ(report->notices.size(), 1u);
  EXPECT_EQ(report->notices[0].message,
            "the disk at 0x0 (no partition table): no file system recognised; left alone");
}

}  // namespace
}  // namespace vhdx::test
