// Crash consistency of the real `vhdx compact` process, beside the
// in-process CompactCrashTest of compact_test.cc: that one records what
// CompactImage does to a memory File; these run the CLI as users do (POSIX
// file, its own open, flags and syscalls) and see what reached the kernel.
// The image is fragmented (MakeFragmented: data blocks, blocks overwritten
// with zeros, discarded blocks, data at the end), so a compaction releases
// blocks, moves blocks down round by round and truncates the file.
//   - Under strace: every mutating syscall on the image is logged with its
//     data and replayed into a CrashRecorder started from the file as it
//     was (tests/support/strace_replay.h); the replay must reproduce the
//     file the real run left. Then a power failure after every syscall, the
//     writes after the last fdatasync kept, lost or torn at 512-byte sectors
//     under a few policies (cli_crash_util.h). For 1 MiB blocks with
//     512-byte sectors and for 2 MiB blocks with 4096-byte sectors.
//   - Killed with SIGKILL at random moments. A killed process loses nothing
//     that reached the page cache, so this tests the order of the steps at
//     process granularity only, not their durability.
// Either way the image must check without errors, open read-only (the log
// replayed in memory) with the content it had, open read-write alike, and
// the compaction run again by the CLI must complete: the packed size, the
// same content, no check errors.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <random>

#include "cli_crash_util.h"
#include "compact_test_util.h"
#include "core_test_util.h"
#include "resize_test_util.h"
#include "support/strace_replay.h"
#include "support/test_util.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

// An image compacted by the CLI.
struct CliCompact {
  const char* name;
  uint32_t block_size;
  uint32_t sector;
  uint64_t blocks;  // of the virtual disk (the last one short by a sector)
};

const CliCompact kSmallBlocks{"1 MiB blocks, 512-byte sectors", 1 * MiB, 512, 24};
const CliCompact kLargeBlocks{"2 MiB blocks, 4096-byte sectors", 2 * MiB, 4096, 16};

std::vector<std::string> CompactArgv(const std::string& path, bool dry_run = false) {
  if (dry_run) return CliArgv({"compact", "--dry-run", path});
  return CliArgv({"compact", path});
}

// What a compaction starts from and must end at.
struct Expected {
  std::string sha;           // of the content
  uint64_t file_size = 0;    // before
  uint64_t packed_size = 0;  // after
};

// Writes the case's fragmented image to `path`.
void MakeImageAt(const CliCompact& c, const std::string& path, Expected* want) {
  uint64_t data_blocks = 0;
  std::unique_ptr<SparseMemoryFile> image = MakeFragmented(c.block_size, c.sector, c.blocks, &data_blocks);
  ASSERT_FALSE(::testing::Test::HasFailure());
  want->sha = ContentSha(*image);
  want->file_size = *image->Size();
  want->packed_size = PackedSize(*image, data_blocks);
  ASSERT_LT(want->packed_size, want->file_size);
  Status st = SaveFile(*image, path);
  ASSERT_TRUE(st.ok()) << st.message();
}

// "" when the image at `path` checks without errors and opens with the
// content it had; else what is wrong. `file_size` gets the file's size.
std::string VerifyOnDisk(const std::string& path, const Expected& want, uint64_t* file_size = nullptr) {
  {
    auto file = OpenPosixFile(path, false);
    if (!file.ok()) return file.status().message();
    if (file_size) *file_size = *(*file)->Size();
    if (std::string e = CheckErrors(**file); !e.empty()) return "check: " + e;
  }
  auto image = Image::Open(path);
  if (!image.ok()) return "does not open: " + image.status().message();
  if (Sha256OfImage(**image) != want.sha) return "the content changed";
  return "";
}

// Runs the compaction again on `path` and requires it to complete: the
// packed size, the same content, no check errors.
std::string RerunAndVerify(const std::string& path, const Expected& want) {
  const ProcessEnd end = RunProcess(CompactArgv(path), std::nullopt, std::chrono::seconds(60));
  if (end.timed_out) return "the compaction run again did not finish within 60 s";
  if (end.exit_code != 0) return fmt::format("the compaction run again exited {}", end.exit_code);
  uint64_t size = 0;
  if (std::string e = VerifyOnDisk(path, want, &size); !e.empty()) return "after the compaction ran again: " + e;
  if (size != want.packed_size)
    return fmt::format("the compaction run again left {} bytes, not {}", size, want.packed_size);
  return "";
}

// ---- Power failure after every syscall (strace) -----------------------------------------

struct CrashStats : CliCrashStats {
  size_t original = 0, smaller = 0;  // crash states at the file's size before, and below it
};

// What one crash state must be (see the file comment). `disk_path` receives
// the state for the CLI's re-run.
std::string VerifyCrashState(File& crashed, const std::string& disk_path, const Expected& want) {
  if (std::string e = CheckErrors(crashed); !e.empty()) return "check: " + e;
  if (std::string sha = ContentSha(crashed); sha != want.sha)
    return sha.starts_with("open: ") ? "read-only " + sha : "read-only: the content changed";
  // Saved before the read-write open replays the log into it: the re-run
  // must cope with the state as the crash left it (and reads the content
  // after the replay on disk).
  if (Status st = SaveFile(crashed, disk_path); !st.ok()) return st.message();
  {
    auto rw = Image::Open(std::make_unique<Borrowed>(crashed), {.read_only = false});
    if (!rw.ok()) return "does not open read-write: " + rw.status().message();
    if (Status st = (*rw)->Close(); !st.ok()) return "read-write close: " + st.message();
  }
  return RerunAndVerify(disk_path, want);
}

// Records `vhdx compact` on the case's image under strace and checks every
// crash point of it under three tear policies.
void CheckEveryCrashPointOfTheCli(const CliCompact& c, const std::string& dir, CrashStats* stats) {
  const auto strace = UsableStrace();
  ASSERT_TRUE(strace);  // callers VHDX_REQUIRE it
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  const std::string path = dir + "/image.vhdx";
  Expected want;
  MakeImageAt(c, path, &want);
  ASSERT_FALSE(::testing::Test::HasFailure());
  RecordedRun r;
  RecordCliRun(*strace, {"compact", path}, {path}, dir + "/compact.strace", &r);
  ASSERT_FALSE(::testing::Test::HasFailure());
  // The run recorded was a complete compaction.
  uint64_t size = 0;
  ASSERT_EQ(VerifyOnDisk(path, want, &size), "");
  ASSERT_EQ(size, want.packed_size);
  const std::string crashed_path = dir + "/crashed.vhdx";
  CheckEveryCrashState(r, c.name, stats, [&](File& crashed) {
    const uint64_t crashed_size = *crashed.Size();
    if (crashed_size > want.file_size || (crashed_size < want.file_size && crashed_size != want.packed_size))
      return fmt::format("a file of {} bytes, neither {} (before) nor {} (packed)", crashed_size,
                         want.file_size, want.packed_size);
    std::string problem = VerifyCrashState(crashed, crashed_path, want);
    if (problem.empty()) (crashed_size < want.file_size ? stats->smaller : stats->original)++;
    return problem;
  });
  ASSERT_FALSE(::testing::Test::HasFailure());
  // Both outcomes were reached: the points cover the truncation.
  EXPECT_GT(stats->original, 0u) << "no crash state had the file's size before";
  EXPECT_GT(stats->smaller, 0u) << "no crash state had the packed size";
}

void PrintStats(const CliCompact& c, const CrashStats& s, double seconds) {
  fmt::print(
      "compact CLI, {}: {} syscalls recorded ({} flushes); {} crash points x 3 tear policies = {} "
      "crash states ({} at the size before, {} truncated; pending ops kept {}, torn {}, lost {}), "
      "each compacted again by the CLI, {:.1f} s\n",
      c.name, s.syscalls, s.flushes, s.points, s.states, s.original, s.smaller, s.kept, s.torn, s.lost,
      seconds);
}

void RunPowerFailureCase(const CliCompact& c, const std::string& leaf) {
  const auto started = std::chrono::steady_clock::now();
  CrashStats stats;
  CheckEveryCrashPointOfTheCli(c, ScratchPath(leaf), &stats);
  PrintStats(c, stats, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

TEST(CompactCliCrashTest, PowerFailureDuringACompactionOf1MiBBlocks) {
  VHDX_REQUIRE(MissingStrace("compact"));
  RunPowerFailureCase(kSmallBlocks, "compact-cli-1m");
}

TEST(CompactCliCrashTest, PowerFailureDuringACompactionOf2MiBBlocksAnd4KSectors) {
  VHDX_REQUIRE(MissingStrace("compact"));
  RunPowerFailureCase(kLargeBlocks, "compact-cli-2m");
}

// ---- SIGKILL at random moments ----------------------------------------------------------

// Fresh copies of both cases' images, alternately, each compaction killed
// after a random delay (seeded) within the part of a whole run that writes.
TEST(CompactCliCrashTest, KilledCompactionLeavesAConsistentImage) {
  const auto started = std::chrono::steady_clock::now();
  const std::string dir = ScratchPath("compact-cli-kill");
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  const CliCompact* cases[2] = {&kSmallBlocks, &kLargeBlocks};
  std::string pristine[2];
  Expected want[2];
  KillWindow window[2];
  const std::string path = dir + "/image.vhdx";
  for (int i = 0; i < 2; ++i) {
    pristine[i] = fmt::format("{}/pristine{}.vhdx", dir, i);
    MakeImageAt(*cases[i], pristine[i], &want[i]);
    ASSERT_FALSE(HasFailure());
    // How long a whole run takes here, and its part that writes nothing:
    // starting the process, opening the image and reading its blocks,
    // measured by a dry run (which writes nothing; a real run writes the
    // header when it opens, then its changes after the scan). Each timed
    // thrice (KillWindow).
    double whole = 1e9, quiet = 1e9;
    for (int k = 0; k < 3; ++k) {
      fs::copy_file(pristine[i], path, fs::copy_options::overwrite_existing);
      const ProcessEnd dry = RunProcess(CompactArgv(path, true), std::nullopt, std::chrono::seconds(60));
      ASSERT_EQ(dry.exit_code, 0) << cases[i]->name << ": dry run";
      ASSERT_TRUE(ReadWholeFile(path) == ReadWholeFile(pristine[i])) << "a dry run changed the file";
      const ProcessEnd run = RunProcess(CompactArgv(path), std::nullopt, std::chrono::seconds(60));
      ASSERT_EQ(run.exit_code, 0) << cases[i]->name;
      uint64_t size = 0;
      ASSERT_EQ(VerifyOnDisk(path, want[i], &size), "");
      ASSERT_EQ(size, want[i].packed_size);
      quiet = std::min(quiet, dry.seconds);
      whole = std::min(whole, run.seconds);
    }
    window[i] = KillWindow(quiet, whole);
  }
  std::mt19937_64 rng(29);
  const int trials = kSanitized ? 10 : 20;
  int killed = 0, midway = 0, truncated = 0;
  for (int t = 0; t < trials; ++t) {
    const CliCompact& c = *cases[t % 2];
    fs::copy_file(pristine[t % 2], path, fs::copy_options::overwrite_existing);
    const auto delay = window[t % 2].Pick(rng);
    const ProcessEnd end = RunProcess(CompactArgv(path), delay, std::chrono::seconds(60));
    ASSERT_FALSE(end.timed_out) << "trial " << t;
    ASSERT_TRUE(end.killed || end.exit_code == 0) << "trial " << t << ": exit code " << end.exit_code;
    uint64_t size = 0;
    ASSERT_EQ(VerifyOnDisk(path, want[t % 2], &size), "")
        << "trial " << t << ": " << c.name << " killed after " << delay.count() << " us";
    ASSERT_TRUE(size == want[t % 2].file_size || size == want[t % 2].packed_size)
        << "trial " << t << ": a file of " << size << " bytes";
    if (end.killed) {
      ++killed;
      truncated += size < want[t % 2].file_size;
      // Killed after its first write (even a read-write open writes a header).
      midway += ReadWholeFile(path) != ReadWholeFile(pristine[t % 2]);
    }
    ASSERT_EQ(RerunAndVerify(path, want[t % 2]), "")
        << "trial " << t << ": " << c.name << " killed after " << delay.count() << " us";
  }
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  fmt::print(
      "compact CLI killed: {} of {} runs killed ({} after changing the file, {} of them after the "
      "truncation; kills {:.1f}-{:.1f} ms into a compaction of {}, {:.1f}-{:.1f} ms into one of {}), "
      "each compacted again, {:.1f} s\n",
      killed, trials, midway, truncated, window[0].first_ms(), window[0].end_ms(), cases[0]->name,
      window[1].first_ms(), window[1].end_ms(), cases[1]->name, took.count());
  EXPECT_GT(killed, 0);
}

}  // namespace
}  // namespace vhdx::test
