// `vhdx bench` against `qemu-img bench`: the same options print the same
// lines (the run time aside), write the same bytes, and bad options fail the
// same way.
#include <fmt/format.h>
#include <gtest/gtest.h>

// GCC 12 reports a false -Wmaybe-uninitialized inside std::regex's
// std::function members when built with -O2 and ASan (GCC bug 105562).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#pragma GCC diagnostic pop
#include <string>

#include "support/test_util.h"

namespace vhdx::test {
namespace {

std::string WithoutRunTime(const std::string& out) {
  static const std::regex run(R"(Run completed in [0-9.]+ seconds\.)");
  return std::regex_replace(out, run, "Run completed in <time> seconds.");
}

class BenchCliTest : public ::testing::Test {
 protected:
  // Two identical fresh images made by `vhdx create`.
  void MakeImages(const std::string& size) {
    ours_ = ScratchPath("bench-ours.vhdx");
    theirs_ = ScratchPath("bench-qemu.vhdx");
    for (const auto& p : {ours_, theirs_}) {
      std::remove(p.c_str());
      auto r = test::Run(fmt::format("{} create --block-size 1M {} {}", CliPath(), p, size));
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
  }
  std::string ours_, theirs_;
};

TEST_F(BenchCliTest, WritesPrintWhatQemuImgPrintsAndLeaveTheSameDisk) {
  VHDX_REQUIRE(MissingTools({"qemu-img"}));
  MakeImages("64M");
  const std::string opts = "-w -c 3000 -d 8 -s 4k -S 20k -o 3k --flush-interval=100 --pattern=0xa5";
  auto ours = test::Run(fmt::format("{} bench {} {}", CliPath(), opts, ours_));
  auto theirs = test::Run(fmt::format("qemu-img bench -f vhdx {} {}", opts, theirs_));
  ASSERT_EQ(ours.exit_code, 0) << ours.output;
  ASSERT_EQ(theirs.exit_code, 0) << theirs.output;
  EXPECT_EQ(WithoutRunTime(ours.output), WithoutRunTime(theirs.output));
  EXPECT_NE(ours.output.find("Sending 3000 write requests, 4096 bytes each, 8 in parallel"),
            std::string::npos)
      << ours.output;
  // 3000 requests 20 KiB apart wrap past 64 MiB: both tools wrap the same way.
  auto cmp = test::Run(fmt::format("qemu-img compare -f vhdx -F vhdx {} {}", ours_, theirs_));
  EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
  auto check = test::Run(fmt::format("qemu-img check -f vhdx {}", ours_));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  auto read = test::Run(fmt::format("{} io -r -c 'read -P 0xa5 3k 4k' -c 'read -P 0 7k 16k' {}", CliPath(), ours_));
  EXPECT_EQ(read.exit_code, 0) << read.output;
}

TEST_F(BenchCliTest, ReadsAndStatsCountFsyncsPerFlush) {
  MakeImages("16M");
  auto r = test::Run(fmt::format("{} bench -c 500 -s 8k {}", CliPath(), ours_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Sending 500 read requests, 8192 bytes each, 64 in parallel"), std::string::npos)
      << r.output;
  // One allocating write per block then a flush each time: every flush
  // commits one BAT change with 2 fsyncs (the session start costs a few more).
  r = test::Run(fmt::format("{} bench -w -c 16 -d 1 -s 4k -S 1M --flush-interval=1 --pattern=1 --stats {}",
                      CliPath(), ours_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::smatch m;
  std::regex stats(R"((\d+) fsyncs?,? .*?(\d+) log entr.*?(\d+) blocks? allocated)");
  ASSERT_TRUE(std::regex_search(r.output, m, stats)) << r.output;
  const int fsyncs = std::stoi(m[1]), entries = std::stoi(m[2]), blocks = std::stoi(m[3]);
  EXPECT_EQ(blocks, 16);
  EXPECT_EQ(entries, 16);
  EXPECT_LE(fsyncs, 2 * 16 + 8) << r.output;
}

TEST_F(BenchCliTest, BadOptionsFailLikeQemuImg) {
  VHDX_REQUIRE(MissingTools({"qemu-img"}));
  MakeImages("16M");
  for (const char* bad : {"-c x", "-t bogus", "--flush-interval=5"}) {
    auto ours = test::Run(fmt::format("{} bench {} {}", CliPath(), bad, ours_));
    auto theirs = test::Run(fmt::format("qemu-img bench -f vhdx {} {}", bad, theirs_));
    EXPECT_NE(ours.exit_code, 0) << bad << ": " << ours.output;
    EXPECT_EQ(ours.exit_code != 0, theirs.exit_code != 0) << bad;
  }
  auto missing = test::Run(fmt::format("{} bench -w {}", CliPath(), ScratchPath("no-such.vhdx")));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("vhdx: "), std::string::npos) << missing.output;
}

}  // namespace
}  // namespace vhdx::test
