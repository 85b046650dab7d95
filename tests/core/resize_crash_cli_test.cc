// Crash consistency of the real `vhdx resize` process, beside the
// in-process ResizeCrashTest of resize_test.cc: that one records what
// ResizeImage does to a memory File; these run the CLI as users do (POSIX
// file, its own open, flags and syscalls) and see what reached the kernel.
//   - Under strace: every mutating syscall on the image is logged with its
//     data and replayed into a CrashRecorder started from the file as it
//     was (tests/support/strace_replay.h); the replay must reproduce the
//     file the real run left. Then a power failure after every syscall, the
//     writes after the last fdatasync kept, lost or torn at 512-byte sectors
//     under a few policies. Recorded for a growth that moves the BAT to the
//     end of the file and for a shrink that drops blocks and truncates.
//   - Killed with SIGKILL at random moments. A killed process loses nothing
//     that reached the page cache, so this tests the order of the steps at
//     process granularity only, not their durability.
// Either way the image must open read-only (the log replayed in memory)
// with the old size or the new one and the content that size promises,
// check without errors, open read-write alike, and the resize run again by
// the CLI must complete with the new size and the same content.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <random>

#include "cli_crash_util.h"
#include "core_test_util.h"
#include "resize_test_util.h"
#include "support/crash_file.h"
#include "support/strace_replay.h"
#include "support/test_util.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

// A resize as given to the CLI, and the shape it applies to.
struct CliResize {
  const char* name;
  Spec spec;
  std::string size_arg;  // SIZE as typed: the CLI's own parsing is part of the run
  bool shrink = false;

  std::vector<std::string> Argv(const std::string& path) const {
    std::vector<std::string> args = {"resize"};
    if (shrink) args.push_back("--shrink");
    args.insert(args.end(), {path, size_arg});
    return args;
  }
};

// 40 MiB + 512 of 1 MiB blocks: the BAT region (1 MiB, 131072 entries) is
// too small for 130 GiB, so the growth writes a larger BAT past the end of
// the file and switches the region table to it.
const CliResize kGrowth{"growth moving the BAT",
                        {DiskType::kDynamic, 40 * MiB + 512, 1 * MiB, 512, 130 * GiB},
                        "130G"};
// Data below 9 MiB + 512 (block 0, a partial block at 3 MiB) and past it
// (20 MiB, the last sectors): the blocks past the end are released and the
// file truncated.
const CliResize kShrink{"shrink",
                        {DiskType::kDynamic, 40 * MiB + 512, 1 * MiB, 512, 9 * MiB + 512},
                        std::to_string(9 * MiB + 512),
                        true};

// Writes the case's starting image (MakeImage: data at the start, a partial
// block, the middle and the last sectors) to `path`; `model` gets its content.
void MakeImageAt(const CliResize& c, const std::string& path, std::vector<uint8_t>* model) {
  std::unique_ptr<SparseMemoryFile> image = MakeImage(c.spec, 21, model);
  ASSERT_FALSE(::testing::Test::HasFailure());
  Status st = SaveFile(*image, path);
  ASSERT_TRUE(st.ok()) << st.message();
}

// "" when the image at `path` checks without errors and reads at
// `want_size` (either size when nullopt) with the content `model` promises;
// else what is wrong. `size` gets the size it has.
std::string VerifyOnDisk(const CliResize& c, const std::string& path,
                         const std::vector<uint8_t>& model, std::optional<uint64_t> want_size,
                         uint64_t* size = nullptr) {
  {
    auto file = OpenPosixFile(path, false);
    if (!file.ok()) return file.status().message();
    if (std::string e = CheckErrors(**file); !e.empty()) return "check: " + e;
  }
  auto image = Image::Open(path);
  if (!image.ok()) return "does not open: " + image.status().message();
  const uint64_t got = (*image)->virtual_size();
  if (size) *size = got;
  if (want_size ? got != *want_size : got != c.spec.size && got != c.spec.new_size)
    return fmt::format("virtual size {}", got);
  return CompareContent(**image, model);
}

// Runs the resize again on `path` and requires it to complete: the new size,
// the same content, no check errors.
std::string RerunAndVerify(const CliResize& c, const std::string& path,
                           const std::vector<uint8_t>& model) {
  const ProcessEnd end = RunProcess(CliArgv(c.Argv(path)), std::nullopt, std::chrono::seconds(60));
  if (end.timed_out) return "the resize run again did not finish within 60 s";
  if (end.exit_code != 0) return fmt::format("the resize run again exited {}", end.exit_code);
  if (std::string e = VerifyOnDisk(c, path, model, c.spec.new_size); !e.empty())
    return "after the resize ran again: " + e;
  return "";
}

// ---- Power failure after every syscall (strace) -----------------------------------------

struct CrashStats : CliCrashStats {
  size_t old_size = 0, new_size = 0;  // crash states opening at each size
};

// What one crash state must be (see the file comment). `disk_path` receives
// the state for the CLI's re-run; `size` gets the size it opened with.
std::string VerifyCrashState(const CliResize& c, File& crashed, const std::string& disk_path,
                             const std::vector<uint8_t>& model, uint64_t* size) {
  {
    auto ro = Image::Open(std::make_unique<ReadOnlyView>(crashed));
    if (!ro.ok()) return "does not open read-only: " + ro.status().message();
    *size = (*ro)->virtual_size();
    if (*size != c.spec.size && *size != c.spec.new_size)
      return fmt::format("opens read-only at virtual size {}", *size);
    if (std::string e = CompareContent(**ro, model); !e.empty()) return "read-only: " + e;
  }
  if (std::string e = CheckErrors(crashed); !e.empty()) return "check: " + e;
  // Saved before the read-write open replays the log into it: the re-run
  // must cope with the state as the crash left it.
  if (Status st = SaveFile(crashed, disk_path); !st.ok()) return st.message();
  {
    auto rw = Image::Open(std::make_unique<Borrowed>(crashed), {.read_only = false});
    if (!rw.ok()) return "does not open read-write: " + rw.status().message();
    if ((*rw)->virtual_size() != *size)
      return fmt::format("opens read-write at virtual size {}, read-only at {}",
                         (*rw)->virtual_size(), *size);
    if (std::string e = CompareContent(**rw, model); !e.empty()) return "read-write: " + e;
    if (Status st = (*rw)->Close(); !st.ok()) return "read-write close: " + st.message();
  }
  return RerunAndVerify(c, disk_path, model);
}

// Records `vhdx resize` on the case's image under strace and checks every
// crash point of it under three tear policies.
void CheckEveryCrashPointOfTheCli(const CliResize& c, const std::string& dir, CrashStats* stats) {
  const auto strace = UsableStrace();
  ASSERT_TRUE(strace);  // callers VHDX_REQUIRE it
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  const std::string path = dir + "/image.vhdx";
  std::vector<uint8_t> model;
  MakeImageAt(c, path, &model);
  ASSERT_FALSE(::testing::Test::HasFailure());
  RecordedRun r;
  RecordCliRun(*strace, c.Argv(path), {path}, dir + "/resize.strace", &r);
  ASSERT_FALSE(::testing::Test::HasFailure());
  // The run recorded was a complete resize.
  ASSERT_EQ(VerifyOnDisk(c, path, model, c.spec.new_size), "");
  const std::string crashed_path = dir + "/crashed.vhdx";
  CheckEveryCrashState(r, c.name, stats, [&](File& crashed) {
    uint64_t size = 0;
    std::string problem = VerifyCrashState(c, crashed, crashed_path, model, &size);
    if (problem.empty()) (size == c.spec.new_size ? stats->new_size : stats->old_size)++;
    return problem;
  });
  ASSERT_FALSE(::testing::Test::HasFailure());
  // Both outcomes were reached: the points cover the switch from old to new.
  EXPECT_GT(stats->old_size, 0u) << "no crash state had the old size";
  EXPECT_GT(stats->new_size, 0u) << "no crash state had the new size";
}

void PrintStats(const CliResize& c, const CrashStats& s, double seconds) {
  fmt::print(
      "resize CLI, {}: {} syscalls recorded ({} flushes); {} crash points x 3 tear policies = {} "
      "crash states ({} at the old size, {} at the new; pending ops kept {}, torn {}, lost {}), "
      "each resized again by the CLI, {:.1f} s\n",
      c.name, s.syscalls, s.flushes, s.points, s.states, s.old_size, s.new_size, s.kept, s.torn,
      s.lost, seconds);
}

TEST(ResizeCliCrashTest, PowerFailureDuringAGrowthThatMovesTheBat) {
  VHDX_REQUIRE(MissingStrace("resize"));
  const auto started = std::chrono::steady_clock::now();
  CrashStats stats;
  CheckEveryCrashPointOfTheCli(kGrowth, ScratchPath("resize-cli-grow"), &stats);
  PrintStats(kGrowth, stats,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

TEST(ResizeCliCrashTest, PowerFailureDuringAShrink) {
  VHDX_REQUIRE(MissingStrace("resize"));
  const auto started = std::chrono::steady_clock::now();
  CrashStats stats;
  CheckEveryCrashPointOfTheCli(kShrink, ScratchPath("resize-cli-shrink"), &stats);
  PrintStats(kShrink, stats,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

// ---- SIGKILL at random moments ----------------------------------------------------------

// Fresh copies of both cases' images, alternately, each resize killed after
// a random delay (seeded) within the part of a whole run that writes.
TEST(ResizeCliCrashTest, KilledResizeProcessLeavesTheOldSizeOrTheNew) {
  const auto started = std::chrono::steady_clock::now();
  const std::string dir = ScratchPath("resize-cli-kill");
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  const CliResize* cases[2] = {&kGrowth, &kShrink};
  std::string pristine[2];
  std::vector<uint8_t> models[2];
  KillWindow window[2];
  const std::string path = dir + "/image.vhdx";
  for (int i = 0; i < 2; ++i) {
    pristine[i] = fmt::format("{}/pristine{}.vhdx", dir, i);
    MakeImageAt(*cases[i], pristine[i], &models[i]);
    ASSERT_FALSE(HasFailure());
    // How long a whole run takes here, and its part that writes nothing:
    // starting the process and opening the image, measured by a resize to
    // the size the image has (nothing to do, no byte written). Each timed
    // thrice (KillWindow).
    std::vector<std::string> argv = CliArgv(cases[i]->Argv(path));
    double whole = 1e9, noop = 1e9;
    for (int k = 0; k < 3; ++k) {
      fs::copy_file(pristine[i], path, fs::copy_options::overwrite_existing);
      argv.back() = std::to_string(cases[i]->spec.size);
      const ProcessEnd same = RunProcess(argv, std::nullopt, std::chrono::seconds(60));
      ASSERT_EQ(same.exit_code, 0) << cases[i]->name << ": resize to the same size";
      ASSERT_TRUE(ReadWholeFile(path) == ReadWholeFile(pristine[i]))
          << "a resize to the same size changed the file";
      argv.back() = cases[i]->size_arg;
      const ProcessEnd run = RunProcess(argv, std::nullopt, std::chrono::seconds(60));
      ASSERT_EQ(run.exit_code, 0) << cases[i]->name;
      ASSERT_EQ(VerifyOnDisk(*cases[i], path, models[i], cases[i]->spec.new_size), "");
      noop = std::min(noop, same.seconds);
      whole = std::min(whole, run.seconds);
    }
    window[i] = KillWindow(noop, whole);
  }
  std::mt19937_64 rng(23);
  const int trials = kSanitized ? 10 : 20;
  int killed = 0, midway = 0, at_old = 0, at_new = 0;
  for (int t = 0; t < trials; ++t) {
    const CliResize& c = *cases[t % 2];
    fs::copy_file(pristine[t % 2], path, fs::copy_options::overwrite_existing);
    const auto delay = window[t % 2].Pick(rng);
    const ProcessEnd end = RunProcess(CliArgv(c.Argv(path)), delay, std::chrono::seconds(60));
    ASSERT_FALSE(end.timed_out) << "trial " << t;
    ASSERT_TRUE(end.killed || end.exit_code == 0) << "trial " << t << ": exit code " << end.exit_code;
    uint64_t size = 0;
    ASSERT_EQ(VerifyOnDisk(c, path, models[t % 2], std::nullopt, &size), "")
        << "trial " << t << ": " << c.name << " killed after " << delay.count() << " us";
    if (end.killed) {
      ++killed;
      (size == c.spec.new_size ? at_new : at_old)++;
      // Killed after its first write (even a read-write open writes a header).
      midway += ReadWholeFile(path) != ReadWholeFile(pristine[t % 2]);
    }
    ASSERT_EQ(RerunAndVerify(c, path, models[t % 2]), "")
        << "trial " << t << ": " << c.name << " killed after " << delay.count() << " us";
  }
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  fmt::print(
      "resize CLI killed: {} of {} runs killed ({} after changing the file; {} left at the old "
      "size, {} at the new; kills {:.1f}-{:.1f} ms into a growth, {:.1f}-{:.1f} ms into a "
      "shrink), each resized again, {:.1f} s\n",
      killed, trials, midway, at_old, at_new, window[0].first_ms(), window[0].end_ms(),
      window[1].first_ms(), window[1].end_ms(), took.count());
  EXPECT_GT(killed, 0);
}

}  // namespace
}  // namespace vhdx::test
