// Crash consistency of the real `vhdx check -r leaks|all` process, beside
// the in-process RepairCrash test of repair_test.cc: that one records what
// CheckAndRepair does to a memory File; these run the CLI as users do
// (POSIX file, its own open, lock, flags and syscalls) and see what reached
// the kernel. Three damaged images, one kind of repair each:
//   - BAT damage (-r all): block 4's entry overlaps block 1, block 9's
//     points into the metadata region. Blocks 1, 4 and 9 become ZERO
//     through the log, then the space freed is punched out.
//   - Leaks (-r leaks): an interior unit whose entry went NOT_PRESENT with
//     its data left (punched out) and data past the last referenced unit
//     (truncated).
//   - A damaged header copy and a damaged region table copy (-r all),
//     rewritten from the valid ones.
// Under strace, every mutating syscall on the image is logged with its data
// and replayed into a CrashRecorder started from the file as it was
// (tests/support/strace_replay.h); the replay must reproduce the file the
// real run left. Then a power failure after every syscall, the writes after
// the last fdatasync kept, lost or torn at 512-byte sectors under a few
// policies (cli_crash_util.h). Each crash state must open read-only (the
// log replayed in memory); every block must read as in the damaged image
// or as in the repaired one (the blocks the repair zeroes all together:
// their entries change in one log entry), never another block's data;
// check must find nothing the damage did not explain; and the repair run
// again by the CLI must end clean with the repaired content.
// A SIGKILL test follows: a killed process loses nothing that reached the
// page cache, so it tests the order of the steps at process granularity.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <random>
#include <set>
#include <string_view>

#include "cli_crash_util.h"
#include "core_test_util.h"
#include "repair_test_util.h"
#include "support/crash_file.h"
#include "support/strace_replay.h"
#include "support/test_util.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;
using format::kPayloadFullyPresent;
using format::kPayloadNotPresent;

// A damaged image and what its repair must lead to.
struct Damaged {
  std::unique_ptr<SparseMemoryFile> file;
  std::vector<std::string> before;   // block hashes of the damaged image
  std::vector<std::string> after;    // and of the repaired one
  std::set<std::string> structures;  // that the damaged image's findings name
  std::vector<CheckLeak> leaks;      // of the damaged image
  // File ranges that may be unreferenced in a crash state: the damaged
  // image's leaks, and the space of blocks the repair declares lost.
  std::vector<std::pair<uint64_t, uint64_t>> may_leak;
  uint64_t referenced_end = 0;  // image_end_offset of the damaged image
};

struct CliRepair {
  const char* name;
  const char* mode;  // "all" or "leaks"
  void (*damage)(ImageBuilder& b, std::set<uint64_t>* zeroed, std::vector<std::pair<uint64_t, uint64_t>>* freed);

  std::vector<std::string> Args(const std::string& path) const { return {"check", "-r", mode, path}; }
};

const CliRepair kBat{"BAT damage", "all", [](ImageBuilder& b, std::set<uint64_t>* zeroed, auto* freed) {
                       // Block 1's space: once both entries read zeros, nothing references it.
                       freed->push_back({OffsetOf(b, 1), MiB});
                       b.SetBlock(4, kPayloadFullyPresent, OffsetOf(b, 1));
                       b.SetBlock(9, kPayloadFullyPresent, b.metadata_offset());
                       *zeroed = {1, 4, 9};
                     }};
const CliRepair kLeaks{"leaks", "leaks", [](ImageBuilder& b, std::set<uint64_t>*, auto*) {
                         // Interior: block 2's space, its entry gone (a crash mid-release).
                         b.SetBlock(2, kPayloadNotPresent);
                         b.AppendSpace(MiB);  // zeros: not a leak
                         // Tail: data written into new space whose BAT entry never made it.
                         const uint64_t tail = b.AppendSpace(2 * MiB);
                         b.WriteFile(tail + MiB + 4096, PatternBytes(4096, 9));
                       }};
const CliRepair kCopies{"damaged header and region table copies", "all",
                        [](ImageBuilder& b, std::set<uint64_t>*, auto*) {
                          // Header 1 is the older one (header 2 is current): the session's
                          // first header update rewrites it.
                          b.DamageHeader(0);
                          b.DamageRegionTable(1);
                        }};

// Builds the case's damaged image and its expectations.
void MakeDamaged(const CliRepair& c, Damaged* d) {
  ImageBuilder b = RepairBase();
  std::set<uint64_t> zeroed;
  c.damage(b, &zeroed, &d->may_leak);
  d->file = b.BuildFile(true);
  d->before = BlockHashes(*d->file);
  // The blocks the repair declares lost read zeros, the rest as before.
  d->after = d->before;
  for (uint64_t blk : zeroed) {
    ASSERT_NE(d->before[blk], ZeroBlockHash()) << c.name << ": block " << blk;
    d->after[blk] = ZeroBlockHash();
  }
  auto report = Check(*d->file);
  ASSERT_TRUE(report.ok()) << report.status().message();
  ASSERT_TRUE(report->complete) << Describe(*report);
  ASSERT_FALSE(report->findings.empty() && report->leaks.empty()) << c.name << ": nothing is damaged";
  for (const auto& f : report->findings) d->structures.insert(f.structure);
  d->leaks = report->leaks;
  for (const auto& l : report->leaks) d->may_leak.push_back({l.offset, l.length});
  d->referenced_end = report->image_end_offset;
}

// "" when the image at `path` checks clean under the plain CLI (exit 0)
// and reads the repaired content; else what is wrong.
std::string VerifyRepairedOnDisk(const CliRepair& c, const std::string& path, const Damaged& d) {
  const ProcessEnd check = RunProcess(CliArgv({"check", path}), std::nullopt, std::chrono::seconds(60));
  if (check.timed_out) return "`vhdx check` did not finish within 60 s";
  if (check.exit_code != 0) return fmt::format("`vhdx check` exited {}", check.exit_code);
  auto image = Image::Open(path);
  if (!image.ok()) return "does not open: " + image.status().message();
  const std::vector<std::string> got = BlockHashes(**image);
  for (size_t i = 0; i < d.after.size(); ++i)
    if (i >= got.size() || got[i] != d.after[i]) return fmt::format("block {} does not read as repaired", i);
  if (std::string_view(c.mode) == "leaks" && fs::file_size(path) != d.referenced_end)
    return fmt::format("{} bytes, not truncated to {}", fs::file_size(path), d.referenced_end);
  return "";
}

// Runs the repair again on `path` and requires it to end clean.
std::string RerunAndVerify(const CliRepair& c, const std::string& path, const Damaged& d) {
  const ProcessEnd end = RunProcess(CliArgv(c.Args(path)), std::nullopt, std::chrono::seconds(60));
  if (end.timed_out) return "the repair run again did not finish within 60 s";
  if (end.exit_code != 0) return fmt::format("the repair run again exited {}", end.exit_code);
  if (std::string e = VerifyRepairedOnDisk(c, path, d); !e.empty()) return "after the repair ran again: " + e;
  return "";
}

// ---- Power failure after every syscall (strace) -----------------------------------------

enum class Stage { kDamaged, kBetween, kRepaired };

struct CrashStats : CliCrashStats {
  size_t damaged = 0, between = 0, repaired = 0;
};

bool Within(const CheckLeak& l, const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  for (const auto& [o, n] : ranges)
    if (l.offset >= o && l.offset + l.length <= o + n) return true;
  return false;
}

// What one crash state must be (see the file comment). `disk_path`
// receives the state for the CLI's re-run; `stage` gets how far it is.
std::string VerifyCrashState(const CliRepair& c, File& crashed, const std::string& disk_path, const Damaged& d,
                             Stage* stage) {
  std::vector<std::string> got;
  {
    auto ro = Image::Open(std::make_unique<ReadOnlyView>(crashed));
    if (!ro.ok()) return "does not open read-only: " + ro.status().message();
    got = BlockHashes(**ro);
  }
  if (got.size() != d.before.size()) return fmt::format("{} blocks", got.size());
  size_t at_before = 0, at_after = 0, changing = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (d.before[i] == d.after[i]) {
      if (got[i] != d.before[i]) return fmt::format("block {}, which the repair leaves alone, changed", i);
      continue;
    }
    ++changing;
    // Its damaged state (for block 4: block 1's data, the overlap), or
    // zeros: never anything else.
    if (got[i] == d.before[i]) ++at_before;
    else if (got[i] == d.after[i]) ++at_after;
    else return fmt::format("block {} reads neither its damaged content nor zeros", i);
  }
  if (at_before != changing && at_after != changing)
    return fmt::format("{} of the {} blocks the repair zeroes read zeros, the others not", at_after, changing);

  auto report = Check(crashed);
  if (!report.ok()) return "check failed: " + report.status().message();
  for (const auto& f : report->findings) {
    // The original damage, a header torn by its alternating update (the
    // other one is used), or the repair's log entry waiting for replay (a
    // warning: it is replayed on open).
    const bool allowed = d.structures.count(f.structure) ||
                         (f.redundant_copy_damaged && f.structure.starts_with("header ")) ||
                         (f.severity == CheckFinding::Severity::kWarning && f.structure == "log");
    if (!allowed) return "check finds what the damage does not explain:" + Describe(*report);
  }
  for (const auto& l : report->leaks)
    if (!Within(l, d.may_leak)) return "a leak the damage does not explain:" + Describe(*report);
  // Referenced data is never cut off (the blocks above read it, and the
  // file still reaches the last referenced unit).
  if (auto size = crashed.Size(); !size.ok() || *size < d.referenced_end)
    return fmt::format("the file is shorter than its last referenced unit at {:#x}", d.referenced_end);

  const bool same_findings = [&] {
    std::set<std::string> now;
    for (const auto& f : report->findings) now.insert(f.structure);
    return now == d.structures && report->leaks.size() == d.leaks.size();
  }();
  const bool clean = report->findings.empty() && report->leaks.empty();
  *stage = at_before == changing && same_findings ? Stage::kDamaged
           : at_after == changing && clean       ? Stage::kRepaired
                                                  : Stage::kBetween;
  // The re-run must cope with the state as the crash left it.
  if (Status st = SaveFile(crashed, disk_path); !st.ok()) return st.message();
  return RerunAndVerify(c, disk_path, d);
}

// Records `vhdx check -r MODE` on the case's image under strace and checks
// every crash point of it under three tear policies.
void CheckEveryCrashPointOfTheCli(const CliRepair& c, const std::string& dir, CrashStats* stats) {
  const auto strace = UsableStrace();
  ASSERT_TRUE(strace);  // callers VHDX_REQUIRE it
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  const std::string path = dir + "/image.vhdx";
  Damaged d;
  MakeDamaged(c, &d);
  ASSERT_FALSE(::testing::Test::HasFailure());
  ASSERT_TRUE(SaveFile(*d.file, path).ok());
  RecordedRun r;
  // Exit 0: a repair that fixed everything (qemu-img check's status).
  RecordCliRun(*strace, c.Args(path), {path}, dir + "/repair.strace", &r);
  ASSERT_FALSE(::testing::Test::HasFailure());
  // The run recorded was a complete repair.
  ASSERT_EQ(VerifyRepairedOnDisk(c, path, d), "");
  const std::string crashed_path = dir + "/crashed.vhdx";
  CheckEveryCrashState(r, c.name, stats, [&](File& crashed) {
    Stage stage = Stage::kBetween;
    std::string problem = VerifyCrashState(c, crashed, crashed_path, d, &stage);
    if (problem.empty())
      (stage == Stage::kDamaged ? stats->damaged : stage == Stage::kRepaired ? stats->repaired : stats->between)++;
    return problem;
  });
  ASSERT_FALSE(::testing::Test::HasFailure());
  // Both ends were reached: the points span the repair.
  EXPECT_GT(stats->damaged, 0u) << "no crash state was still the damaged image";
  EXPECT_GT(stats->repaired, 0u) << "no crash state was already repaired";
}

void CheckCase(const CliRepair& c, const std::string& leaf) {
  const auto started = std::chrono::steady_clock::now();
  CrashStats s;
  CheckEveryCrashPointOfTheCli(c, ScratchPath(leaf), &s);
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  fmt::print(
      "repair CLI (check -r {}), {}: {} syscalls recorded ({} flushes); {} crash points x 3 tear policies = {} "
      "crash states ({} still damaged, {} part-way, {} repaired; pending ops kept {}, torn {}, lost {}), each "
      "repaired again by the CLI, {:.1f} s\n",
      c.mode, c.name, s.syscalls, s.flushes, s.points, s.states, s.damaged, s.between, s.repaired, s.kept, s.torn,
      s.lost, took.count());
}

TEST(RepairCliCrashTest, PowerFailureDuringABatRepair) {
  VHDX_REQUIRE(MissingStrace("repair"));
  CheckCase(kBat, "repair-cli-bat");
}

TEST(RepairCliCrashTest, PowerFailureDuringALeakRepair) {
  VHDX_REQUIRE(MissingStrace("repair"));
  CheckCase(kLeaks, "repair-cli-leaks");
}

TEST(RepairCliCrashTest, PowerFailureDuringAHeaderAndRegionTableRepair) {
  VHDX_REQUIRE(MissingStrace("repair"));
  CheckCase(kCopies, "repair-cli-copies");
}

// ---- SIGKILL at random moments ----------------------------------------------------------

// Fresh copies of the three damaged images in turn, each repair killed
// after a random delay (seeded) within the part of a whole run that writes.
TEST(RepairCliCrashTest, KilledRepairLeavesTheDamagedImageOrTheRepairedOne) {
  const auto started = std::chrono::steady_clock::now();
  const std::string dir = ScratchPath("repair-cli-kill");
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  const CliRepair* cases[3] = {&kBat, &kLeaks, &kCopies};
  Damaged damaged[3];
  std::string pristine[3];
  KillWindow window[3];
  const std::string path = dir + "/image.vhdx";
  for (int i = 0; i < 3; ++i) {
    MakeDamaged(*cases[i], &damaged[i]);
    ASSERT_FALSE(HasFailure());
    pristine[i] = fmt::format("{}/pristine{}.vhdx", dir, i);
    ASSERT_TRUE(SaveFile(*damaged[i].file, pristine[i]).ok());
    // How long a whole run takes here, and its part that writes nothing
    // (starting the process, opening and checking the image), measured by
    // a plain check of the damaged image. Each timed thrice (KillWindow).
    double whole = 1e9, quiet = 1e9;
    for (int k = 0; k < 3; ++k) {
      fs::copy_file(pristine[i], path, fs::copy_options::overwrite_existing);
      const ProcessEnd check = RunProcess(CliArgv({"check", path}), std::nullopt, std::chrono::seconds(60));
      ASSERT_NE(check.exit_code, 0) << cases[i]->name << ": the damaged image checks clean";
      ASSERT_TRUE(ReadWholeFile(path) == ReadWholeFile(pristine[i])) << "a plain check changed the file";
      const ProcessEnd run = RunProcess(CliArgv(cases[i]->Args(path)), std::nullopt, std::chrono::seconds(60));
      ASSERT_EQ(run.exit_code, 0) << cases[i]->name;
      ASSERT_EQ(VerifyRepairedOnDisk(*cases[i], path, damaged[i]), "") << cases[i]->name;
      quiet = std::min(quiet, check.seconds);
      whole = std::min(whole, run.seconds);
    }
    window[i] = KillWindow(quiet, whole);
  }
  std::mt19937_64 rng(24);
  const int trials = kSanitized ? 15 : 30;
  int killed = 0, midway = 0;
  size_t stages[3] = {};
  for (int t = 0; t < trials; ++t) {
    const int i = t % 3;
    const CliRepair& c = *cases[i];
    fs::copy_file(pristine[i], path, fs::copy_options::overwrite_existing);
    const auto delay = window[i].Pick(rng);
    const ProcessEnd end = RunProcess(CliArgv(c.Args(path)), delay, std::chrono::seconds(60));
    ASSERT_FALSE(end.timed_out) << "trial " << t;
    ASSERT_TRUE(end.killed || end.exit_code == 0) << "trial " << t << ": exit code " << end.exit_code;
    // The same requirements as a power failure's state, the repair run
    // again on a copy of what the kill left.
    Stage stage = Stage::kBetween;
    std::unique_ptr<SparseMemoryFile> left = LoadFile(path);
    ASSERT_EQ(VerifyCrashState(c, *left, dir + "/rerun.vhdx", damaged[i], &stage), "")
        << "trial " << t << ": " << c.name << " killed after " << delay.count() << " us";
    if (end.killed) {
      ++killed;
      ++stages[static_cast<int>(stage)];
      // Killed after its first write (the session's header update).
      midway += ReadWholeFile(path) != ReadWholeFile(pristine[i]);
    }
  }
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  fmt::print(
      "repair CLI killed: {} of {} runs killed ({} after changing the file; {} still damaged, {} part-way, {} "
      "repaired; kills {:.1f}-{:.1f} ms into a BAT repair), each repaired again, {:.1f} s\n",
      killed, trials, midway, stages[0], stages[1], stages[2], window[0].first_ms(), window[0].end_ms(),
      took.count());
  EXPECT_GT(killed, 0);
}

}  // namespace
}  // namespace vhdx::test
