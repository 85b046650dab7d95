// Helpers shared by the tests that crash the real CLI process (resize,
// compact): the crash points of a run strace recorded, every crash state
// of it under three tear policies, and the moments at which a SIGKILL
// should land.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "support/crash_file.h"
#include "support/strace_replay.h"
#include "support/test_util.h"

namespace vhdx::test {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// The CLI's argv: its path, then `args`.
inline std::vector<std::string> CliArgv(std::vector<std::string> args) {
  args.insert(args.begin(), CliPath());
  return args;
}

// ---- Power failure after every syscall (strace) -----------------------------------------

struct CliCrashStats {
  size_t syscalls = 0, flushes = 0, points = 0, states = 0;
  size_t kept = 0, torn = 0, lost = 0;  // ops pending at the crash
};

// A run this short is checked at every point; a cap only matters if the
// CLI ever issues thousands of syscalls (then an even sample plus the
// points on either side of every flush, where durability changes).
inline constexpr size_t kMaxCrashPoints = 600;

inline std::vector<size_t> CrashPoints(const RecordedRun& r) {
  const size_t total = r.ops.size();
  std::vector<size_t> points;
  if (total + 1 <= kMaxCrashPoints) {
    for (size_t p = 0; p <= total; ++p) points.push_back(p);
    return points;
  }
  for (size_t k = 0; k < kMaxCrashPoints; ++k) points.push_back(k * total / (kMaxCrashPoints - 1));
  for (size_t p = 0; p < total; ++p)
    if (r.ops[p].op.kind == FileOp::Kind::kFlush) points.insert(points.end(), {p, p + 1});
  std::sort(points.begin(), points.end());
  points.erase(std::unique(points.begin(), points.end()), points.end());
  return points;
}

// A power failure at every crash point of `r` (one traced file), the
// writes after the last fdatasync kept, lost or torn at 512-byte sectors
// under three policies. `verify` gets each crash state (valid until it
// returns) and returns "" or what is wrong; the first problem fails the
// test, naming `what`, the point, the policy and the syscalls before it.
inline void CheckEveryCrashState(const RecordedRun& r, const std::string& what, CliCrashStats* stats,
                                 const std::function<std::string(File&)>& verify) {
  ASSERT_EQ(r.files.size(), 1u);
  stats->syscalls = r.ops.size();
  for (const TracedOp& t : r.ops) stats->flushes += t.op.kind == FileOp::Kind::kFlush;
  ASSERT_GT(stats->flushes, 0u) << what << ": a run that never flushes cannot be crash safe";
  CrashStateBuilder builder(*r.files[0]);
  static constexpr TearPolicy kPolicies[] = {{0.5, 0.3}, {1.0, 0.0}, {0.2, 0.8}};
  for (const size_t point : CrashPoints(r)) {
    ++stats->points;
    for (size_t attempt = 0; attempt < std::size(kPolicies); ++attempt) {
      std::mt19937_64 rng(point * 7 + attempt);
      const TearPolicy& policy = kPolicies[attempt];
      CrashState state = builder.Build(point, rng, policy);
      ++stats->states;
      stats->kept += state.kept;
      stats->torn += state.torn;
      stats->lost += state.pending_ops - state.kept;
      const std::string problem = verify(*state.file);
      if (!problem.empty()) {
        std::string s = fmt::format(
            "{}: power failure after {} of {} syscalls (keep {}, tear {}; {} durable, {} pending: "
            "{} kept, {} torn): {}",
            what, point, r.ops.size(), policy.keep, policy.tear, state.durable_ops,
            state.pending_ops, state.kept, state.torn, problem);
        for (size_t i = point > 8 ? point - 8 : 0; i < point; ++i)
          s += fmt::format("\n    syscall {}: {} {:#x}+{:#x}", i, FileOpKindName(r.ops[i].op.kind),
                           r.ops[i].op.offset, r.ops[i].op.length);
        FAIL() << s;
      }
    }
  }
}

// ---- SIGKILL at random moments ----------------------------------------------------------

// When the kills of a command should land: from a little before the end of
// its part that writes nothing (`quiet`: starting the process, opening the
// image, measured by a run that has nothing to write) to the end of a whole
// run, so that most land while the file changes. Give the fastest of a few
// timings: on a shared machine a run is only ever slowed down.
struct KillWindow {
  std::chrono::microseconds first{0}, span{1000};  // kills land in [first, first + span)

  KillWindow() = default;
  KillWindow(double quiet_seconds, double whole_seconds)
      : first(static_cast<int64_t>(quiet_seconds * 0.8e6)),
        span(std::max<int64_t>(1000, static_cast<int64_t>(whole_seconds * 1e6) - first.count())) {}

  std::chrono::microseconds Pick(std::mt19937_64& rng) const {
    return first + std::chrono::microseconds(rng() % span.count());
  }
  double first_ms() const { return first.count() / 1e3; }
  double end_ms() const { return (first + span).count() / 1e3; }
};

}  // namespace vhdx::test
