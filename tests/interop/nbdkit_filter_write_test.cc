// Writing through the nbdkit filter (over nbdkit's file plugin): qemu-io's
// writes, zeroes and discards land as on a local file and the image is
// closed clean (vhdx check and qemu-img check); a write that would need the
// container to grow fails with ENOSPC and a reason, leaving it clean; a
// read-only server offers no writes. And nbdkit SIGKILLed while a client
// writes leaves an image that opens, replays its log and checks clean,
// every sector holding its old bytes or what was written.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <thread>

#include "interop/nbd_util.h"
#include "support/test_util.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kMiB = 1 << 20;

const std::string& kPreload = NbdkitSanitizerPrefixes().server;
const std::string& kClientPrefix = NbdkitSanitizerPrefixes().client;

CommandResult Vhdx(const std::string& args) { return test::Run(CliPath() + " " + args); }

class FilterWriteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    VHDX_REQUIRE(MissingNbdkitFilter({"nbdkit", "nbdinfo", "qemu-io", "qemu-img"}));
    dir_ = ScratchPath(::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    image_ = dir_ + "/image.vhdx";
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Captive nbdkit, the filter over the file plugin, for one client command.
  CommandResult Serve(const std::string& client, const std::string& flags = "") {
    return test::Run(kPreload + "timeout -k 5 120 nbdkit " + flags + " -U - --filter=" + ShellQuote(NbdkitFilterPath()) +
                     " file " + ShellQuote(image_) + " --run " + ShellQuote(kClientPrefix + client));
  }
  void ExpectClean() {
    CommandResult ours = Vhdx("check " + ShellQuote(image_));
    EXPECT_EQ(ours.exit_code, 0) << ours.output;
    CommandResult qemu = test::Run("qemu-img check -f vhdx " + ShellQuote(image_));
    EXPECT_EQ(qemu.exit_code, 0) << qemu.output;
  }

  std::string dir_, image_;
};

TEST_F(FilterWriteTest, WritesAndZeroesLandAndTheImageClosesClean) {
  ASSERT_EQ(Vhdx("create --type fixed --block-size 1M " + ShellQuote(image_) + " 64M").exit_code, 0);
  const std::string ops = "-c 'write -P 0x61 1M 3M' -c 'write -P 0x62 5M 4k' -c 'write -z 2M 512k' -c flush "
                          "-c 'write -P 0x63 40M 1M' -c 'discard 50M 2M'";
  CommandResult r = Serve("qemu-io -f raw \"$uri\" " + ops);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ExpectClean();
  // Closed: the log is empty (no replay left for anyone).
  CommandResult info = test::Run("{ " + CliPath() + " info --output=json " + ShellQuote(image_) + " 2>/dev/null; }");
  EXPECT_EQ(ParseJson(info.output)["dirty"], false) << info.output;
  // The same writes on a raw file read alike (the discarded range aside:
  // what it reads after a discard is the format's business).
  const std::string ref = dir_ + "/ref.raw";
  ASSERT_EQ(test::Run("truncate -s 64M " + ShellQuote(ref) + " && qemu-io -f raw " + ShellQuote(ref) + " " +
                      "-c 'write -P 0x61 1M 3M' -c 'write -P 0x62 5M 4k' -c 'write -z 2M 512k' -c 'write -P 0x63 40M 1M' "
                      "-c 'write -z 50M 2M'")
                .exit_code,
            0);
  CommandResult diff = test::Run("qemu-img compare -f vhdx -F raw " + ShellQuote(image_) + " " + ShellQuote(ref));
  EXPECT_EQ(diff.exit_code, 0) << diff.output;
}

TEST_F(FilterWriteTest, AWriteThatNeedsTheFileToGrowFailsWithTheReason) {
  ASSERT_EQ(Vhdx("create --block-size 1M " + ShellQuote(image_) + " 64M").exit_code, 0);
  ASSERT_EQ(Vhdx("io -c 'write -P 0x11 0 2M' " + ShellQuote(image_)).exit_code, 0);
  // Block 0 exists: overwritten in place. Block 30 would be new space.
  CommandResult r = Serve("qemu-io -f raw \"$uri\" -c 'write -P 0x62 0 1M' -c 'write -P 0x63 30M 1M'");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("No space left on device"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("needs the image file to grow"), std::string::npos) << r.output;
  ExpectClean();
  CommandResult read = Vhdx("io -r -c 'read -P 0x62 0 1M' -c 'read -P 0x11 1M 1M' -c 'read -P 0 30M 1M' " +
                            ShellQuote(image_));
  EXPECT_EQ(read.exit_code, 0) << read.output;
}

TEST_F(FilterWriteTest, ReadOnlyServerOffersNoWrites) {
  ASSERT_EQ(Vhdx("create --type fixed --block-size 1M " + ShellQuote(image_) + " 16M").exit_code, 0);
  const std::string before = Sha256OfFile(image_);
  CommandResult r = Serve("nbdinfo --json \"$uri\"", "-r");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ParseJson(r.output)["exports"][0]["is_read_only"], true) << r.output;
  r = Serve("nbdinfo --json \"$uri\"");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ParseJson(r.output)["exports"][0]["is_read_only"], false) << r.output;
  EXPECT_EQ(ParseJson(r.output)["exports"][0]["can_flush"], true) << r.output;
  r = Serve("qemu-io -f raw \"$uri\" -c 'write 0 4k'", "-r");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_EQ(Sha256OfFile(image_), before) << "a read-only server wrote";
}

// nbdkit SIGKILLed at random moments while qemu-io writes through the
// filter into a dynamic image whose first 48 MiB already hold data (0x10):
// every third 1 MiB block is zeroed whole (a BAT change, through the log),
// the others overwritten with a pattern of their own (in place), a flush
// now and then. Afterwards the image opens read-only (a log replayed in
// memory), `vhdx check -r all` replays it into the file, qemu-img checks
// it clean, and every 4 KiB reads its old bytes or what was written there.
TEST_F(FilterWriteTest, KilledServerLeavesAnImageThatReplays) {
  const int trials = 8;
  std::mt19937 rng(27);
  int dirty_after_kill = 0, midway = 0;
  for (int t = 0; t < trials; ++t) {
    SCOPED_TRACE(fmt::format("trial {}", t));
    fs::remove(image_);
    ASSERT_EQ(Vhdx("create --block-size 1M " + ShellQuote(image_) + " 64M").exit_code, 0);
    ASSERT_EQ(Vhdx("io -c 'write -P 0x10 0 48M' " + ShellQuote(image_)).exit_code, 0);
    const std::string sock = dir_ + "/nbd.sock";
    fs::remove(sock);
    const pid_t server = fork();
    if (server == 0) {
      execl("/bin/sh", "sh", "-c",
            (kPreload + "exec nbdkit -f -U " + ShellQuote(sock) + " --filter=" + ShellQuote(NbdkitFilterPath()) + " file " +
             ShellQuote(image_))
                .c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 400 && !fs::exists(sock); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(fs::exists(sock)) << "nbdkit did not start";
    std::string cmds;
    for (int k = 0; k < 48; ++k)
      cmds += (k % 3 == 0 ? fmt::format(" -c 'write -z {}M 1M'", k) : fmt::format(" -c 'write -P {} {}M 1M'", 0x20 + k, k)) +
              (k % 8 == 7 ? " -c flush" : "");
    const std::string client = "timeout -k 5 60 qemu-io -f raw 'nbd+unix:///?socket=" + sock + "'" + cmds;
    // The kill lands a random moment after the client's connection opened
    // the image read-write (its first write to the file, the header update,
    // changes the mtime): counted from there, not from the fork, so that a
    // slow start on a loaded machine does not move every kill before the
    // writes.
    const auto opened_before = fs::last_write_time(image_);
    std::thread writer([&] { test::Run(client + " >/dev/null 2>&1"); });
    for (int i = 0; i < 10000 && fs::last_write_time(image_) == opened_before; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 40));
    kill(server, SIGKILL);
    waitpid(server, nullptr, 0);
    writer.join();

    CommandResult info = test::Run("{ " + CliPath() + " info --output=json " + ShellQuote(image_) + " 2>/dev/null; }");
    ASSERT_EQ(info.exit_code, 0) << "the killed image does not open: " << info.output;
    dirty_after_kill += ParseJson(info.output)["dirty"] == true;
    CommandResult repair = Vhdx("check -r all " + ShellQuote(image_));
    ASSERT_EQ(repair.exit_code, 0) << repair.output;
    ExpectClean();
    const std::string raw = dir_ + "/out.raw";
    ASSERT_EQ(Vhdx("convert -O raw " + ShellQuote(image_) + " " + ShellQuote(raw)).exit_code, 0);
    const std::vector<uint8_t> disk = ReadWholeFile(raw);
    ASSERT_EQ(disk.size(), 64 * kMiB);
    size_t changed = 0;
    for (uint64_t at = 0; at < 48 * kMiB; at += 4096) {
      const uint64_t k = at / kMiB;
      const uint8_t want = k % 3 == 0 ? 0 : static_cast<uint8_t>(0x20 + k);
      const uint8_t got = disk[at];
      ASSERT_TRUE(got == 0x10 || got == want) << fmt::format("offset {:#x} reads {:#x}", at, got);
      for (size_t i = 1; i < 4096; ++i) ASSERT_EQ(disk[at + i], got) << fmt::format("torn sector at {:#x}", at);
      changed += got != 0x10;
    }
    // Killed while writing: some sectors written, some not yet.
    midway += changed > 0 && changed < 48 * kMiB / 4096;
  }
  fmt::print(
      "nbdkit with the filter killed {} times while writing: {} in the middle of the writes, {} left a log to "
      "replay; all clean after\n",
      trials, midway, dirty_after_kill);
  EXPECT_GT(midway, 0) << "no kill landed while the client wrote";
}

}  // namespace
}  // namespace vhdx::test
