// FindFreeSpace on partitioned disks (sfdisk): GPT and MBR with logical
// partitions. Each ext file system is made in a file of its own, described
// by dumpe2fs, then copied into its partition; the free ranges must be
// exactly theirs, and a partition of another type gets a notice only.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "fs/free_space.h"
#include "fs_test_util.h"
#include "support/test_util.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::vector<fs::FreeRange> Merge(std::vector<fs::FreeRange> v) {
  std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.offset < b.offset; });
  std::vector<fs::FreeRange> out;
  for (const auto& r : v) {
    if (!out.empty() && r.offset == out.back().offset + out.back().length)
      out.back().length += r.length;
    else
      out.push_back(r);
  }
  return out;
}

// An ext file system of `bytes` with files written and some removed, and
// dumpe2fs's account of it.
DumpedExt MakeFilledExt(const std::string& path, uint64_t bytes, const std::string& args,
                        int files) {
  DumpedExt d;
  d.error = MakeExt(path, bytes, "ext4", args);
  if (!d.error.empty()) return d;
  std::string error;
  if (FillAndThin(path, files, error).empty()) {
    d.error = error;
    return d;
  }
  return Dumpe2fs(path);
}

void ExpectInside(const std::vector<fs::FreeRange>& free, const std::vector<PartitionSpec>& parts) {
  for (const fs::FreeRange& r : free) {
    bool inside = false;
    for (const PartitionSpec& p : parts)
      inside |= r.offset >= p.offset && r.offset + r.length <= p.offset + p.length;
    EXPECT_TRUE(inside) << "free range " << r.offset << "+" << r.length << " outside the ext partitions";
  }
}

TEST(Partitions, GptWithTwoExt4AndOneVfat) {
  VHDX_REQUIRE(MissingFsTools());
  VHDX_REQUIRE(MissingTools({"sfdisk", "mkfs.vfat"}));
  const std::string disk = ScratchPath("gpt.raw");
  ASSERT_EQ(vhdx::test::Run("rm -f " + ShellQuote(disk) + " && truncate -s 320M " + ShellQuote(disk))
                .exit_code,
            0);
  ASSERT_EQ(Partition(disk, "label: gpt\n"
                            "size=100MiB, type=L\n"
                            "size=64MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n"
                            "size=120MiB, type=L\n"),
            "");
  const std::map<int, PartitionSpec> parts = ReadBack(disk);
  ASSERT_EQ(parts.size(), 3u);

  const std::string a = ScratchPath("gpt-p1.ext4"), c = ScratchPath("gpt-p3.ext4");
  const DumpedExt da = MakeFilledExt(a, parts.at(1).length, "", 12);
  ASSERT_EQ(da.error, "");
  const DumpedExt dc = MakeFilledExt(c, parts.at(3).length, "-b 4096", 12);
  ASSERT_EQ(dc.error, "");
  const std::string b = ScratchPath("gpt-p2.vfat");
  ASSERT_EQ(vhdx::test::Run("rm -f " + ShellQuote(b) + " && truncate -s " +
                            std::to_string(parts.at(2).length) + " " + ShellQuote(b) +
                            " && mkfs.vfat " + ShellQuote(b))
                .exit_code,
            0);
  ASSERT_EQ(Place(a, disk, parts.at(1).offset), "");
  ASSERT_EQ(Place(b, disk, parts.at(2).offset), "");
  ASSERT_EQ(Place(c, disk, parts.at(3).offset), "");
  const std::string vhdx = ScratchPath("gpt.vhdx");
  ASSERT_EQ(ConvertToVhdx(disk, vhdx), "");

  auto image = Image::Open(vhdx);
  ASSERT_TRUE(image.ok()) << image.status().message();
  auto report = fs::FindFreeSpace(**image);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->file_systems_read, 2u) << NoticesText(*report);

  std::vector<fs::FreeRange> expected = ToDiskRanges(da, parts.at(1).offset);
  for (const fs::FreeRange& r : ToDiskRanges(dc, parts.at(3).offset)) expected.push_back(r);
  EXPECT_TRUE(report->free == Merge(expected));
  ExpectInside(report->free, {parts.at(1), parts.at(3)});

  ASSERT_EQ(report->notices.size(), 1u) << NoticesText(*report);
  EXPECT_EQ(report->notices[0].offset, parts.at(2).offset);
  EXPECT_EQ(report->notices[0].message,
            fmt::format("partition 2 at {:#x}: not a file system we read (vfat); left alone",
                        parts.at(2).offset));
}

// An MBR with a primary ext4 and an extended partition holding two logical
// ones: libblkid follows the EBR chain through the mirror's extra windows.
TEST(Partitions, MbrWithLogicalPartitions) {
  VHDX_REQUIRE(MissingFsTools());
  VHDX_REQUIRE(MissingTools({"sfdisk"}));
  const std::string disk = ScratchPath("mbr.raw");
  ASSERT_EQ(vhdx::test::Run("rm -f " + ShellQuote(disk) + " && truncate -s 320M " + ShellQuote(disk))
                .exit_code,
            0);
  ASSERT_EQ(Partition(disk, "label: dos\n"
                            "size=100MiB, type=83\n"
                            "type=5\n"
                            "size=60MiB, type=83\n"
                            "size=70MiB, type=83\n"),
            "");
  const std::map<int, PartitionSpec> parts = ReadBack(disk);
  ASSERT_EQ(parts.size(), 4u);
  ASSERT_TRUE(parts.count(5) && parts.count(6));

  std::vector<fs::FreeRange> expected;
  for (int n : {1, 5, 6}) {
    const std::string path = ScratchPath("mbr-p" + std::to_string(n) + ".ext4");
    const DumpedExt d = MakeFilledExt(path, parts.at(n).length, n == 6 ? "-b 4096" : "", 8);
    ASSERT_EQ(d.error, "");
    ASSERT_EQ(Place(path, disk, parts.at(n).offset), "");
    for (const fs::FreeRange& r : ToDiskRanges(d, parts.at(n).offset)) expected.push_back(r);
  }
  const std::string vhdx = ScratchPath("mbr.vhdx");
  ASSERT_EQ(ConvertToVhdx(disk, vhdx), "");
  auto image = Image::Open(vhdx);
  ASSERT_TRUE(image.ok()) << image.status().message();
  auto report = fs::FindFreeSpace(**image);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->file_systems_read, 3u) << NoticesText(*report);
  EXPECT_TRUE(report->notices.empty()) << NoticesText(*report);
  EXPECT_TRUE(report->free == Merge(expected));
  ExpectInside(report->free, {parts.at(1), parts.at(5), parts.at(6)});
  // The EBR before the second logical partition is never free.
  EXPECT_FALSE(Overlaps(report->free, parts.at(5).offset + parts.at(5).length,
                        parts.at(6).offset - (parts.at(5).offset + parts.at(5).length)));
}

// A 4096-byte-sector disk: GPT in 4 KiB LBAs, a VHDX with 4 KiB logical
// sectors, so libblkid must be told the sector size.
TEST(Partitions, GptOn4KSectors) {
  VHDX_REQUIRE(MissingFsTools());
  VHDX_REQUIRE(MissingTools({"fdisk"}));
  const std::string disk = ScratchPath("gpt4k.raw");
  ASSERT_EQ(vhdx::test::Run("rm -f " + ShellQuote(disk) + " && truncate -s 160M " + ShellQuote(disk))
                .exit_code,
            0);
  // sfdisk 2.38 has no --sector-size; fdisk -b does (g: new GPT, n: one
  // partition of 100 MiB at the default start, LBA 256 = 1 MiB; w: write).
  CommandResult r = vhdx::test::Run("printf %s " + ShellQuote("g\nn\n\n\n+100M\nw\n") +
                                    " | fdisk -b 4096 " + ShellQuote(disk));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = vhdx::test::Run("fdisk -b 4096 -l " + ShellQuote(disk));
  ASSERT_NE(r.output.find("   256 25855   25600  100M"), std::string::npos) << r.output;
  const uint64_t offset = kMiB, length = 100 * kMiB;
  const std::string path = ScratchPath("gpt4k-p1.ext4");
  const DumpedExt d = MakeFilledExt(path, length, "-b 4096", 6);
  ASSERT_EQ(d.error, "");
  ASSERT_EQ(Place(path, disk, offset), "");
  const std::string vhdx = ScratchPath("gpt4k.vhdx");
  r = vhdx::test::Run("rm -f " + ShellQuote(vhdx) + " && " + ShellQuote(CliPath()) +
                      " convert -O vhdx --block-size 1M --logical-sector-size 4096 " +
                      ShellQuote(disk) + " " + ShellQuote(vhdx));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto image = Image::Open(vhdx);
  ASSERT_TRUE(image.ok()) << image.status().message();
  ASSERT_EQ((*image)->info().logical_sector_size, 4096u);
  auto report = fs::FindFreeSpace(**image);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->file_systems_read, 1u) << NoticesText(*report);
  EXPECT_TRUE(report->notices.empty()) << NoticesText(*report);
  EXPECT_TRUE(report->free == Merge(ToDiskRanges(d, offset)));
}

}  // namespace
}  // namespace vhdx::test
