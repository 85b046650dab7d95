// File systems FindFreeSpace must leave alone: a journal that needs
// recovery, errors flagged, not cleanly unmounted, unknown features; and
// hostile ones: absurd superblock fields, truncated disks, partition entries
// past the disk's end, random damage. Each gives a notice (or an error),
// never a free range, a crash or a hang.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "fs/free_space.h"
#include "fs_test_util.h"
#include "support/test_util.h"
#include "vhdx/create.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

struct RefusedCase {
  const char* name;
  const char* mkfs_args;
  std::vector<std::string> debugfs;  // commands that make it untrustworthy
  const char* expected;              // part of the notice
};

class RefusedTest : public ::testing::TestWithParam<RefusedCase> {};

TEST_P(RefusedTest, LeftAloneWithANotice) {
  VHDX_REQUIRE(MissingFsTools());
  const RefusedCase& c = GetParam();
  const std::string raw = ScratchPath(std::string(c.name) + ".raw");
  const std::string vhdx = ScratchPath(std::string(c.name) + ".vhdx");
  ASSERT_EQ(MakeExt(raw, 64 << 20, "ext4", c.mkfs_args), "");
  ASSERT_EQ(DebugfsWrite(raw, c.debugfs), "");
  ASSERT_EQ(ConvertToVhdx(raw, vhdx), "");
  auto image = Image::Open(vhdx);
  ASSERT_TRUE(image.ok()) << image.status().message();
  auto report = fs::FindFreeSpace(**image);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_TRUE(report->free.empty());
  EXPECT_EQ(report->file_systems_read, 0u);
  ASSERT_EQ(report->notices.size(), 1u) << NoticesText(*report);
  const std::string& message = report->notices[0].message;
  std::printf("notice: %s\n", message.c_str());
  EXPECT_EQ(message.rfind("the disk at 0x0 (no partition table): ext2/3/4 file system not read: ", 0), 0u)
      << message;
  EXPECT_NE(message.find(c.expected), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

INSTANTIATE_TEST_SUITE_P(
    Unclean, RefusedTest,
    ::testing::Values(
        RefusedCase{"needs_recovery", "", {"feature needs_recovery"}, "journal needs recovery"},
        RefusedCase{"error_state", "", {"ssv state 3"}, "errors are flagged"},
        RefusedCase{"not_clean", "", {"ssv state 0"}, "not cleanly unmounted"},
        RefusedCase{"unknown_ro_compat", "", {"ssv feature_ro_compat 0x80000000"},
                    "read-only-compatible features 0x80000000 unknown"},
        RefusedCase{"unknown_incompat", "", {"ssv feature_incompat 0x80000000"}, "libext2fs: "}),
    [](const ::testing::TestParamInfo<RefusedCase>& p) { return std::string(p.param.name); });

INSTANTIATE_TEST_SUITE_P(
    HostileSuperblock, RefusedTest,
    ::testing::Values(
        RefusedCase{"blocks_past_disk", "-b 4096", {"ssv blocks_count 100000000"}, "libext2fs: "},
        // Consistent with the inode count, so only our bound catches it.
        RefusedCase{"blocks_past_disk_consistent",
                    "-b 4096 -g 8192 -N 2048",
                    {"ssv blocks_count 24576", "ssv inodes_count 3072"},
                    "past the end of its 67108864 bytes"},
        RefusedCase{"blocks_per_group_8", "", {"ssv blocks_per_group 8"}, "libext2fs: "},
        RefusedCase{"blocks_per_group_0", "", {"ssv blocks_per_group 0"}, "libext2fs: "},
        RefusedCase{"huge_inode_size", "", {"ssv inode_size 32768"}, "libext2fs: "},
        RefusedCase{"huge_log_block_size", "", {"ssv log_block_size 30"}, "libext2fs: "},
        RefusedCase{"first_data_block_past_end", "", {"ssv first_data_block 4000000000"},
                    "libext2fs: "}),
    [](const ::testing::TestParamInfo<RefusedCase>& p) { return std::string(p.param.name); });

// The first `keep` bytes of a 256 MiB ext4, as a disk of that size.
TEST(Hostile, TruncatedDisks) {
  VHDX_REQUIRE(MissingFsTools());
  const std::string raw = ScratchPath("whole.raw");
  ASSERT_EQ(MakeExt(raw, 256 << 20, "ext4", "-b 4096"), "");
  for (uint64_t keep : {uint64_t{4096}, uint64_t{1} << 20, uint64_t{32} << 20, uint64_t{255} << 20}) {
    SCOPED_TRACE(keep);
    const std::string cut = ScratchPath("cut.raw");
    const std::string vhdx = ScratchPath("cut.vhdx");
    ASSERT_EQ(vhdx::test::Run("cp --sparse=always " + ShellQuote(raw) + " " + ShellQuote(cut) +
                              " && truncate -s " + std::to_string(keep) + " " + ShellQuote(cut))
                  .exit_code,
              0);
    ASSERT_EQ(ConvertToVhdx(cut, vhdx), "");
    auto image = Image::Open(vhdx);
    ASSERT_TRUE(image.ok()) << image.status().message();
    auto report = fs::FindFreeSpace(**image);
    ASSERT_TRUE(report.ok()) << report.status().message();
    EXPECT_TRUE(report->free.empty());
    ASSERT_EQ(report->notices.size(), 1u) << NoticesText(*report);
  }
}

// An MBR written for a 320 MiB disk, the disk cut to 150 MiB: the partition
// that still fits is read, the ones past the end get notices.
TEST(Hostile, PartitionEntriesPastTheDiskEnd) {
  VHDX_REQUIRE(MissingFsTools());
  VHDX_REQUIRE(MissingTools({"sfdisk"}));
  const std::string disk = ScratchPath("past.raw");
  ASSERT_EQ(vhdx::test::Run("rm -f " + ShellQuote(disk) + " && truncate -s 320M " + ShellQuote(disk) +
                            " && printf %s " +
                            ShellQuote("label: dos\nsize=100MiB, type=83\nsize=100MiB, type=83\n"
                                       "size=100MiB, type=83\n") +
                            " | sfdisk -q " + ShellQuote(disk))
                .exit_code,
            0);
  const std::string p1 = ScratchPath("past-p1.ext4");
  ASSERT_EQ(MakeExt(p1, 100 << 20, "ext4", "-b 4096"), "");
  const DumpedExt d = Dumpe2fs(p1);
  ASSERT_EQ(d.error, "");
  ASSERT_EQ(vhdx::test::Run("dd status=none bs=1M conv=notrunc,sparse seek=1 if=" + ShellQuote(p1) +
                            " of=" + ShellQuote(disk) + " && truncate -s 150M " + ShellQuote(disk))
                .exit_code,
            0);
  const std::string vhdx = ScratchPath("past.vhdx");
  ASSERT_EQ(ConvertToVhdx(disk, vhdx), "");
  auto image = Image::Open(vhdx);
  ASSERT_TRUE(image.ok()) << image.status().message();
  auto report = fs::FindFreeSpace(**image);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->file_systems_read, 1u);
  EXPECT_TRUE(report->free == ToDiskRanges(d, 1 << 20));
  ASSERT_EQ(report->notices.size(), 2u) << NoticesText(*report);
  for (const fs::FsNotice& n : report->notices)
    EXPECT_NE(n.message.find("past the disk's end (157286400 bytes); left alone"), std::string::npos)
        << n.message;
}

// Superblocks that fit a 64 TiB disk but would make libext2fs allocate
// tens of GiB (2^31 group descriptors; a 2 GiB block bitmap): refused from
// the superblock alone, before anything is allocated.
TEST(Hostile, HugeClaimsOnA64TiBDisk) {
  VHDX_REQUIRE(MissingFsTools());
  struct Claim {
    std::vector<std::string> debugfs;
    const char* expected;
  };
  const Claim claims[] = {
      {{"ssv blocks_count 17179869184", "ssv blocks_per_group 8", "ssv clusters_per_group 8",
        "ssv inodes_per_group 1", "ssv inodes_count 2147483648"},
       "block groups would need"},
      {{"ssv blocks_count 17179869184", "ssv inodes_count 4194304", "ssv inodes_per_group 8"},
       "its block bitmap would need 2147483648 bytes"},
  };
  int i = 0;
  for (const Claim& claim : claims) {
    SCOPED_TRACE(i);
    const std::string raw = ScratchPath("huge" + std::to_string(i) + ".raw");
    ASSERT_EQ(MakeExt(raw, 64 << 20, "ext4", "-b 4096 -O 64bit"), "");
    ASSERT_EQ(DebugfsWrite(raw, claim.debugfs), "");
    std::vector<uint8_t> head = ReadWholeFile(raw);
    head.resize(64 << 10);
    const std::string vhdx = ScratchPath("huge" + std::to_string(i++) + ".vhdx");
    ASSERT_TRUE(CreateImage(vhdx, {.virtual_size = uint64_t{64} << 40}).ok());
    {
      auto rw = Image::Open(vhdx, {.read_only = false});
      ASSERT_TRUE(rw.ok()) << rw.status().message();
      ASSERT_TRUE((*rw)->Write(0, head.data(), head.size()).ok());
      ASSERT_TRUE((*rw)->Close().ok());
    }
    auto image = Image::Open(vhdx);
    ASSERT_TRUE(image.ok()) << image.status().message();
    auto report = fs::FindFreeSpace(**image);
    ASSERT_TRUE(report.ok()) << report.status().message();
    EXPECT_TRUE(report->free.empty());
    ASSERT_EQ(report->notices.size(), 1u) << NoticesText(*report);
    EXPECT_NE(report->notices[0].message.find(claim.expected), std::string::npos)
        << report->notices[0].message;
  }
}

// Random damage to the first 64 KiB (superblock, group descriptors,
// bitmaps) of a file system without metadata checksums, so that most
// damage gets past libext2fs's own checks: every outcome is an answer, free
// ranges stay inside the disk, and nothing takes long.
TEST(Hostile, RandomDamageNeverCrashesOrHangs) {
  VHDX_REQUIRE(MissingFsTools());
  const std::string raw = ScratchPath("fuzz.raw");
  ASSERT_EQ(MakeExt(raw, 16 << 20, "ext4", "-O ^metadata_csum"), "");
  std::string error;
  ASSERT_FALSE(FillAndThin(raw, 3, error).empty()) << error;
  const std::string vhdx = ScratchPath("fuzz.vhdx");
  ASSERT_EQ(ConvertToVhdx(raw, vhdx), "");
  const std::vector<uint8_t> pristine = [&] {
    std::vector<uint8_t> all = ReadWholeFile(raw);
    all.resize(64 << 10);
    return all;
  }();

  std::mt19937_64 rng(20240611);
  int read = 0, left_alone = 0, errors = 0;
  for (int round = 0; round < 300; round++) {
    std::vector<uint8_t> damaged = pristine;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < flips; i++) {
      // Mostly the superblock's fields, sometimes anywhere in the 64 KiB.
      const size_t at = rng() % 4 ? 1024 + rng() % 256 : rng() % damaged.size();
      damaged[at] = static_cast<uint8_t>(rng());
    }
    {
      auto rw = Image::Open(vhdx, {.read_only = false});
      ASSERT_TRUE(rw.ok()) << rw.status().message();
      ASSERT_TRUE((*rw)->Write(0, damaged.data(), damaged.size()).ok());
      ASSERT_TRUE((*rw)->Close().ok());
    }
    auto image = Image::Open(vhdx);
    ASSERT_TRUE(image.ok()) << image.status().message();
    const auto start = std::chrono::steady_clock::now();
    auto report = fs::FindFreeSpace(**image);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(seconds, 5.0) << "round " << round;
    if (!report.ok()) {
      errors++;
      EXPECT_EQ(report.status().message().find('\n'), std::string::npos);
      continue;
    }
    if (report->file_systems_read == 1) read++;
    left_alone += static_cast<int>(report->notices.size());
    for (const fs::FreeRange& r : report->free)
      ASSERT_LE(r.offset + r.length, uint64_t{16} << 20) << "round " << round;
    for (const fs::FsNotice& n : report->notices)
      EXPECT_EQ(n.message.find('\n'), std::string::npos) << n.message;
  }
  std::printf("random damage: %d read, %d left alone, %d errors\n", read, left_alone, errors);
  EXPECT_GT(left_alone, 0);
}

}  // namespace
}  // namespace vhdx::test
