// Allocation failure: `vhdx convert` and `vhdx bench` under address-space
// limits (RLIMIT_AS, the shell's `ulimit -v`) from the least the CLI starts
// with up to what the run needs. At every limit the command either does
// its whole job or fails with exit status 1 and one line on stderr; it never
// aborts (an exception escaping a worker thread or main is std::terminate).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "support/test_util.h"
#include "vhdx/image.h"

#if defined(__SANITIZE_ADDRESS__)
#define MEMORY_LIMIT_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MEMORY_LIMIT_UNDER_ASAN 1
#endif
#endif

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

#ifdef MEMORY_LIMIT_UNDER_ASAN
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif

// `vhdx ARGS` with RLIMIT_AS at `kib` KiB; stderr captured.
CommandResult RunLimited(uint64_t kib, const std::string& args) {
  // Run adds 2>&1 after the braces: stderr is captured, stdout dropped.
  return Run(fmt::format("{{ ulimit -v {}; exec {} {} >/dev/null; }}", kib, ShellQuote(CliPath()), args));
}

// The least limit (KiB, to 256 KiB) at which `vhdx --version` runs.
uint64_t StartupLimit() {
  uint64_t lo = 1024, hi = 1024 * 1024;  // fails at lo (assumed), runs at hi
  EXPECT_EQ(RunLimited(hi, "--version").exit_code, 0) << "vhdx does not start under 1 GiB";
  while (hi - lo > 256) {
    const uint64_t mid = (lo + hi) / 2;
    (RunLimited(mid, "--version").exit_code == 0 ? hi : lo) = mid;
  }
  return hi;
}

struct Sweep {
  int out_of_memory = 0;  // clean failures that said so
  bool succeeded = false;
};

// Runs `args` at rising limits from `from` KiB in `step` KiB until it
// succeeds; `ok` checks the result of a success. Every failure must be clean.
Sweep SweepUp(uint64_t from, uint64_t step, const std::string& args, const std::function<void()>& ok) {
  Sweep sweep;
  for (uint64_t kib = from; kib <= from + 512 * 1024; kib += step) {
    SCOPED_TRACE(fmt::format("ulimit -v {}; vhdx {}", kib, args));
    CommandResult r = RunLimited(kib, args);
    if (r.exit_code == 0) {
      sweep.succeeded = true;
      ok();
      break;
    }
    EXPECT_EQ(r.exit_code, 1) << "not a clean failure (-1: killed by a signal): " << r.output;
    EXPECT_TRUE(r.output.starts_with("vhdx: ")) << r.output;
    EXPECT_TRUE(r.output.ends_with("\n") && r.output.find('\n') == r.output.size() - 1)
        << "expected exactly one line: " << r.output;
    if (r.output.find("out of memory") != std::string::npos) ++sweep.out_of_memory;
    if (::testing::Test::HasFailure()) break;
  }
  return sweep;
}

class MemoryLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kAsan) GTEST_SKIP() << "AddressSanitizer reserves terabytes up front: it cannot run under RLIMIT_AS";
    dir_ = ScratchPath(::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    // 24 MiB of random bytes: every 1 MiB piece holds data, so convert runs
    // all its workers.
    source_.resize(24 << 20);
    std::mt19937_64 rng(7);
    for (size_t i = 0; i < source_.size(); i += 8) {
      const uint64_t v = rng();
      std::memcpy(source_.data() + i, &v, 8);
    }
    raw_ = dir_ + "/source.raw";
    WriteWholeFile(raw_, source_);
    startup_ = StartupLimit();
  }

  std::string dir_, raw_;
  std::vector<uint8_t> source_;
  uint64_t startup_ = 0;
};

TEST_F(MemoryLimitTest, ConvertToVhdxFailsCleanlyUntilItHasEnough) {
  const std::string out = dir_ + "/out.vhdx";
  const std::string want = Sha256Hex(source_.data(), source_.size());
  Sweep sweep = SweepUp(startup_, 1024, fmt::format("convert -O vhdx {} {}", ShellQuote(raw_), ShellQuote(out)), [&] {
    auto image = Image::Open(out);
    ASSERT_TRUE(image.ok()) << image.status().message();
    EXPECT_EQ(Sha256OfImage(**image), want);
  });
  EXPECT_TRUE(sweep.succeeded);
  EXPECT_GT(sweep.out_of_memory, 0) << "no limit made an allocation fail: the test tested nothing";
}

TEST_F(MemoryLimitTest, ConvertToRawFailsCleanlyUntilItHasEnough) {
  const std::string vhdx = dir_ + "/source.vhdx", out = dir_ + "/out.raw";
  ASSERT_EQ(vhdx::test::Run(fmt::format("{} convert -O vhdx {} {}", ShellQuote(CliPath()), ShellQuote(raw_), ShellQuote(vhdx))).exit_code, 0);
  const std::string want = Sha256Hex(source_.data(), source_.size());
  Sweep sweep = SweepUp(startup_, 1024, fmt::format("convert -O raw {} {}", ShellQuote(vhdx), ShellQuote(out)),
                        [&] { EXPECT_EQ(Sha256OfFile(out), want); });
  EXPECT_TRUE(sweep.succeeded);
  EXPECT_GT(sweep.out_of_memory, 0) << "no limit made an allocation fail: the test tested nothing";
}

// bench starts a worker thread per request in flight (up to 64 here).
TEST_F(MemoryLimitTest, BenchFailsCleanlyUntilItHasEnough) {
  const std::string image = dir_ + "/bench.vhdx";
  ASSERT_EQ(vhdx::test::Run(fmt::format("{} create --block-size 1M {} 64M", ShellQuote(CliPath()), ShellQuote(image))).exit_code, 0);
  Sweep sweep = SweepUp(startup_, 4096, fmt::format("bench -w -d 64 -c 256 -s 64k {}", ShellQuote(image)), [] {});
  EXPECT_TRUE(sweep.succeeded);
  EXPECT_GT(sweep.out_of_memory, 0) << "no limit made an allocation fail: the test tested nothing";
}

}  // namespace
}  // namespace vhdx::test
