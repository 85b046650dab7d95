// Killing the server mid-write. nbdkit serving the plugin, and the `vhdx
// mount` daemon, are SIGKILLed while two clients keep issuing durable writes
// (NBD FUA writes and zeroes through libnbd; pwrite/fallocate + fdatasync
// through the FUSE mount). Afterwards the image must:
//   - pass `vhdx check` as it was left (the log replayed in memory);
//   - read every acknowledged write exactly, every write never sent as the
//     old bytes, and each 512-byte sector of the writes in flight at the kill
//     as either its old or its new bytes;
//   - replay its log on disk when opened read-write (`vhdx check -r all`),
//     then be clean, pass `qemu-img check` and read the same bytes (compared
//     by qemu-img too).
// A killed process leaves the host's page cache intact: this is the crash
// of the server, not a power failure (the core crash tests replay every
// write and fsync into a simulated power loss). The kernel serialises
// writes and fsyncs on one FUSE file, so only the NBD half has requests in
// flight concurrently.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if VHDX_HAVE_LIBNBD
#include <libnbd.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/test_util.h"

extern char** environ;

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kDiskSize = 64 * kMiB;
constexpr uint64_t kBaseBytes = 16 * kMiB;  // written (0xab) before the server starts
constexpr uint8_t kBaseByte = 0xab;
constexpr uint64_t kSlot = 64 * 1024;  // each operation owns one slot
constexpr int kOps = 600;
constexpr uint64_t kSector = 512;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

CommandResult Vhdx(const std::string& args) { return Run(CliPath() + " " + args); }

std::string ReadLog(const std::string& path) {
  std::vector<uint8_t> bytes = fs::exists(path) ? ReadWholeFile(path) : std::vector<uint8_t>();
  return std::string(bytes.begin(), bytes.end());
}

// One durable write or zeroing, in its own 64 KiB slot of the disk.
struct Op {
  uint64_t offset = 0;
  uint32_t length = 0;
  bool zero = false;
  uint8_t seed = 0;
};

std::vector<uint8_t> Payload(const Op& op) {
  std::vector<uint8_t> v(op.length, 0);
  if (op.zero) return v;
  // Varies within every sector, so a sector never equals the old content.
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(op.seed + i * 7 + (i >> 9));
  return v;
}

// kOps operations over distinct slots in a shuffled order (fixed seed): the
// first quarter of the disk holds data already (in-place writes), the rest
// is unallocated (each first write there allocates a 1 MiB block through
// the log). A third of those in the written quarter are zeroings.
std::vector<Op> MakeOps(uint32_t seed) {
  std::vector<uint64_t> slots(kDiskSize / kSlot);
  for (size_t i = 0; i < slots.size(); ++i) slots[i] = i;
  std::mt19937 rng(seed);
  std::shuffle(slots.begin(), slots.end(), rng);
  std::vector<Op> ops(kOps);
  for (int i = 0; i < kOps; ++i) {
    Op& op = ops[i];
    op.offset = slots[i] * kSlot + (rng() % 8) * kSector;
    op.length = static_cast<uint32_t>(4096 * (1 + rng() % 15));  // up to 60 KiB: stays in the slot
    // Zeroing only where the old bytes are not zeros, so a lost zeroing
    // shows.
    op.zero = slots[i] * kSlot < kBaseBytes && i % 3 == 0;
    op.seed = static_cast<uint8_t>(i * 13 + 1);
  }
  return ops;
}

enum OpState : int { kNotSent = 0, kSent = 1, kAcknowledged = 2 };

// Runs `do_op` over the ops from two threads (op i on thread i % 2), in
// order, until kKillAfter of them are acknowledged; then `kill` runs while
// the threads are still writing. Returns each op's state.
std::vector<OpState> WriteUntilKilled(const std::vector<Op>& ops, int kill_after,
                                      const std::function<bool(int thread, const Op&)>& do_op,
                                      const std::function<void()>& kill) {
  std::vector<std::atomic<int>> state(ops.size());
  for (auto& s : state) s = kNotSent;
  std::atomic<int> acknowledged{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = static_cast<size_t>(t); i < ops.size() && !stop; i += 2) {
        state[i] = kSent;
        if (!do_op(t, ops[i])) return;  // the server is gone
        state[i] = kAcknowledged;
        ++acknowledged;
      }
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (acknowledged < kill_after && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  EXPECT_GE(acknowledged.load(), kill_after) << "the clients stalled";
  kill();
  stop = true;
  for (auto& t : threads) t.join();
  std::vector<OpState> out;
  for (auto& s : state) out.push_back(static_cast<OpState>(s.load()));
  return out;
}

// Checks the disk read back against the ops and their states (see the top
// of the file). Reports the first few differences.
void ExpectDiskMatches(const std::vector<uint8_t>& disk, const std::vector<Op>& ops,
                       const std::vector<OpState>& states) {
  ASSERT_EQ(disk.size(), kDiskSize);
  std::vector<uint8_t> old(kDiskSize, 0);
  std::fill(old.begin(), old.begin() + kBaseBytes, kBaseByte);
  std::vector<uint8_t> expected = old;
  std::vector<bool> uncertain(kDiskSize / kSector, false);
  for (size_t i = 0; i < ops.size(); ++i) {
    if (states[i] == kNotSent) continue;
    const Op& op = ops[i];
    std::vector<uint8_t> data = Payload(op);
    std::copy(data.begin(), data.end(), expected.begin() + static_cast<ptrdiff_t>(op.offset));
    if (states[i] == kSent) {
      for (uint64_t s = op.offset / kSector; s < (op.offset + op.length) / kSector; ++s) uncertain[s] = true;
    }
  }
  int bad = 0;
  for (uint64_t s = 0; s < kDiskSize / kSector && bad < 5; ++s) {
    const auto at = [&](const std::vector<uint8_t>& v) { return v.begin() + static_cast<ptrdiff_t>(s * kSector); };
    const bool is_new = std::equal(at(disk), at(disk) + kSector, at(expected));
    const bool is_old = std::equal(at(disk), at(disk) + kSector, at(old));
    if (is_new || (uncertain[s] && is_old)) continue;
    ADD_FAILURE() << "sector " << s << " (offset " << s * kSector << ") holds neither "
                  << (uncertain[s] ? "its old nor its new bytes" : "the bytes last acknowledged there");
    ++bad;
  }
  // The kill came mid-run: some ops were acknowledged, not all.
  EXPECT_GT(std::count(states.begin(), states.end(), kAcknowledged), 0);
}

// A process started with posix_spawn, output to `log`; SIGKILLed and reaped
// at the latest when this object goes.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env, const std::string& log) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::vector<std::string> env_strings(extra_env);
    for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
    std::vector<char*> env;
    for (std::string& e : env_strings) env.push_back(e.data());
    env.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), env.data()) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Process() { Kill(); }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  bool started() const { return pid_ > 0; }
  // Reaps the process if it has exited (its pid may then be reused: it is
  // forgotten).
  bool running() {
    if (pid_ <= 0) return false;
    if (waitpid(pid_, nullptr, WNOHANG) == 0) return true;
    pid_ = -1;
    return false;
  }
  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

// Detaches a FUSE mount point at scope exit, whatever the test's outcome:
// a dead mount must not be left behind (declared after the daemon's
// Process, so the daemon is killed first).
class LazyUnmount {
 public:
  explicit LazyUnmount(std::string dir) : dir_(std::move(dir)) {}
  ~LazyUnmount() {
    if (!dir_.empty()) vhdx::test::Run("fusermount3 -u -z " + ShellQuote(dir_) + " 2>/dev/null");
  }
  LazyUnmount(const LazyUnmount&) = delete;
  LazyUnmount& operator=(const LazyUnmount&) = delete;
  // Unmounts now; the test sees the result.
  CommandResult Unmount() {
    CommandResult r = vhdx::test::Run("fusermount3 -u -z " + ShellQuote(dir_));
    dir_.clear();
    return r;
  }

 private:
  std::string dir_;
};

class KillTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ScratchPath(::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }

  // A 64 MiB dynamic image, 1 MiB blocks, the first 16 MiB written.
  std::string MakeImage(const std::string& leaf) {
    const std::string image = dir_ + "/" + leaf;
    CommandResult r = Vhdx(fmt::format("create --block-size 1M {} 64M", ShellQuote(image)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    r = Vhdx(fmt::format("io -c 'write -P {} 0 {}' {}", kBaseByte, kBaseBytes, ShellQuote(image)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return image;
  }

  // Everything after the kill: check as left, read back, replay, check,
  // the peer's check and compare.
  void VerifyAfterKill(const std::string& image, const std::vector<Op>& ops, const std::vector<OpState>& states) {
    // Killed with the image open for writing: its log is still live.
    CommandResult info = Vhdx("info --output=json " + ShellQuote(image));
    EXPECT_NE(info.output.find("\"dirty\": true"), std::string::npos) << info.output;
    // No corruption; blocks written after the last commit may have left
    // their space unreferenced: leaks, exit status 3 (as qemu-img check).
    CommandResult check = Vhdx("check " + ShellQuote(image));
    EXPECT_TRUE(check.exit_code == 0 || check.exit_code == 3) << check.output;
    EXPECT_NE(check.output.find("No errors were found on the image"), std::string::npos) << check.output;

    const std::string raw = image + ".raw";
    CommandResult convert = Vhdx(fmt::format("convert -O raw {} {}", ShellQuote(image), ShellQuote(raw)));
    ASSERT_EQ(convert.exit_code, 0) << convert.output;
    ExpectDiskMatches(ReadWholeFile(raw), ops, states);

    // Read-write open: the log is applied to the file.
    CommandResult repair = Vhdx("check -r all " + ShellQuote(image));
    EXPECT_EQ(repair.exit_code, 0) << repair.output;
    info = Vhdx("info --output=json " + ShellQuote(image));
    EXPECT_NE(info.output.find("\"dirty\": false"), std::string::npos) << info.output;
    check = Vhdx("check " + ShellQuote(image));
    EXPECT_EQ(check.exit_code, 0) << check.output;
    if (RunPart("qemu-img check and compare", MissingTools({"qemu-img"}))) {
      CommandResult q = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(image));
      EXPECT_EQ(q.exit_code, 0) << q.output;
      q = vhdx::test::Run(fmt::format("qemu-img compare -f vhdx -F raw {} {}", ShellQuote(image), ShellQuote(raw)));
      EXPECT_EQ(q.exit_code, 0) << q.output;
    }
    const std::string raw_after = image + ".after.raw";
    convert = Vhdx(fmt::format("convert -O raw {} {}", ShellQuote(image), ShellQuote(raw_after)));
    ASSERT_EQ(convert.exit_code, 0) << convert.output;
    EXPECT_EQ(Sha256OfFile(raw_after), Sha256OfFile(raw)) << "replaying the log on disk changed the content";
    fs::remove(raw);
    fs::remove(raw_after);
  }

  std::string dir_;
};

// Two clients write over NBD with FUA through libnbd; nbdkit is SIGKILLed
// after 25, 150 and 400 acknowledged operations of 600.
TEST_F(KillTest, NbdkitKilledMidWrite) {
#if !VHDX_HAVE_LIBNBD
  VHDX_REQUIRE("built without libnbd-dev: the nbdkit kill test is not run");
#else
  VHDX_REQUIRE(MissingTools({"nbdkit"}));
  VHDX_REQUIRE(fs::exists(NbdkitPluginPath()) ? "" : NbdkitPluginPath() + " was not built (no nbdkit-plugin.h)");
  std::vector<std::string> env;
  if (kSanitized) {
    // nbdkit is not instrumented: the plugin needs the ASan runtime first.
    CommandResult lib = vhdx::test::Run("gcc -print-file-name=libasan.so");
    std::string path = lib.output.substr(0, lib.output.find_last_not_of("\n") + 1);
    env = {"LD_PRELOAD=" + path, "ASAN_OPTIONS=detect_leaks=0"};
  }
  int round = 0;
  for (int kill_after : {25, 150, 400}) {
    SCOPED_TRACE(fmt::format("killed after {} acknowledged", kill_after));
    const std::string image = MakeImage(fmt::format("nbd{}.vhdx", round));
    const std::string socket = dir_ + fmt::format("/nbd{}.sock", round);
    const std::vector<Op> ops = MakeOps(100 + round++);
    Process nbdkit({"nbdkit", "-f", "--exit-with-parent", "-U", socket, NbdkitPluginPath(), "file=" + image}, env,
                   dir_ + "/nbdkit.log");
    ASSERT_TRUE(nbdkit.started());

    std::vector<nbd_handle*> handles;
    for (int c = 0; c < 2; ++c) {
      nbd_handle* h = nbd_create();
      ASSERT_NE(h, nullptr);
      // Wait for the socket: nbdkit validates the image first.
      for (int tries = 0; nbd_connect_unix(h, socket.c_str()) == -1; ++tries) {
        ASSERT_TRUE(nbdkit.running()) << "nbdkit exited: " << ReadLog(dir_ + "/nbdkit.log");
        ASSERT_LT(tries, 300) << nbd_get_error();
        nbd_close(h);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        h = nbd_create();
      }
      ASSERT_EQ(nbd_can_fua(h), 1);
      handles.push_back(h);
    }
    const std::vector<OpState> states = WriteUntilKilled(
        ops, kill_after,
        [&](int t, const Op& op) {
          if (op.zero) return nbd_zero(handles[t], op.length, op.offset, LIBNBD_CMD_FLAG_FUA) == 0;
          std::vector<uint8_t> data = Payload(op);
          return nbd_pwrite(handles[t], data.data(), data.size(), op.offset, LIBNBD_CMD_FLAG_FUA) == 0;
        },
        [&] { nbdkit.Kill(); });
    for (nbd_handle* h : handles) nbd_close(h);
    EXPECT_LT(std::count(states.begin(), states.end(), kAcknowledged), kOps) << "the kill came after the last write";
    VerifyAfterKill(image, ops, states);
  }
#endif
}

// Two threads pwrite or fallocate(ZERO_RANGE), each followed by fdatasync,
// on the FUSE disk file; the `vhdx mount -f` daemon is SIGKILLed after 25,
// 150 and 400 acknowledged operations of 600.
TEST_F(KillTest, MountDaemonKilledMidWrite) {
  VHDX_REQUIRE(MissingFuse());
  int round = 0;
  for (int kill_after : {25, 150, 400}) {
    SCOPED_TRACE(fmt::format("killed after {} acknowledged", kill_after));
    const std::string image = MakeImage(fmt::format("fuse{}.vhdx", round));
    const std::string mnt = dir_ + fmt::format("/mnt{}", round);
    fs::create_directories(mnt);
    const std::vector<Op> ops = MakeOps(200 + round++);
    const std::string log = dir_ + "/mount.log";
    Process daemon({CliPath(), "mount", "-f", image, mnt}, {}, log);
    LazyUnmount unmount(mnt);
    ASSERT_TRUE(daemon.started());
    for (int tries = 0; !fs::exists(mnt + "/disk"); ++tries) {
      if (!daemon.running() && ReadLog(log).find("ermission denied") != std::string::npos)
        VHDX_REQUIRE("FUSE mounts are not permitted here: " + ReadLog(log));
      ASSERT_TRUE(daemon.running()) << "vhdx mount exited: " << ReadLog(log);
      ASSERT_LT(tries, 300) << "the mount did not appear";
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    int fds[2];
    for (int& fd : fds) {
      fd = open((mnt + "/disk").c_str(), O_RDWR);
      ASSERT_GE(fd, 0) << std::strerror(errno);
    }
    const std::vector<OpState> states = WriteUntilKilled(
        ops, kill_after,
        [&](int t, const Op& op) {
          const off_t off = static_cast<off_t>(op.offset);
          if (op.zero) {
            if (fallocate(fds[t], FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, op.length) != 0) return false;
          } else {
            std::vector<uint8_t> data = Payload(op);
            if (pwrite(fds[t], data.data(), data.size(), off) != static_cast<ssize_t>(data.size())) return false;
          }
          return fdatasync(fds[t]) == 0;
        },
        [&] { daemon.Kill(); });
    for (int fd : fds) close(fd);
    // The connection is dead; detach the mount point.
    CommandResult u = unmount.Unmount();
    EXPECT_EQ(u.exit_code, 0) << u.output;
    EXPECT_LT(std::count(states.begin(), states.end(), kAcknowledged), kOps) << "the kill came after the last write";
    VerifyAfterKill(image, ops, states);
  }
}

}  // namespace
}  // namespace vhdx::test
