#include "hostile/probes.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "support/test_util.h"
#include "vhdx/image.h"

#if defined(__SANITIZE_ADDRESS__)
#define HOSTILE_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HOSTILE_UNDER_ASAN 1
#endif
#endif

namespace vhdx::hostile {

namespace {

#ifdef HOSTILE_UNDER_ASAN
constexpr bool kAsan = true;
constexpr int kTimeLimitSeconds = 120;
#else
constexpr bool kAsan = false;
constexpr int kTimeLimitSeconds = 20;
#endif
constexpr uint64_t kMemoryLimit = 2ull << 30;
constexpr uint64_t kMaxDataBytes = 256ull << 20;  // data read per image
constexpr uint64_t kZeroSample = 64 << 10;        // bytes checked at each end of a zero extent
constexpr size_t kMaxExtents = 1 << 20;

// What the disk reads as, bounded so that a hostile 64 TiB disk stays
// cheap: the map (start, length, kind of every extent), the bytes of every
// data extent, and for zero extents their first and last 64 KiB, which must
// be zeros.
void ContentDigest(const Image& image, LibraryOutcome* out) {
  std::vector<MapExtent> extents;
  Status st = image.Map(0, image.virtual_size(), [&](const MapExtent& x) {
    extents.push_back(x);
    return extents.size() < kMaxExtents;
  });
  if (!st.ok()) {
    out->map_error = st.message();
    return;
  }
  test::Sha256Stream h;
  std::vector<uint8_t> buf(1 << 20);
  uint64_t data_read = 0;
  auto read = [&](uint64_t off, uint64_t len) -> bool {
    while (len > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(len, buf.size()));
      Status s = image.Read(off, buf.data(), n);
      if (!s.ok()) {
        out->read_error = s.message();
        return false;
      }
      h.Update(buf.data(), n);
      off += n;
      len -= n;
    }
    return true;
  };
  for (const auto& x : extents) {
    h.Update(fmt::format("{}+{}:{}{}{};", x.start, x.length, x.present, x.zero, x.data));
    if (x.data) {
      uint64_t n = std::min(x.length, kMaxDataBytes - data_read);
      if (!read(x.start, n)) return;
      data_read += n;
      continue;
    }
    if (!x.zero) continue;
    for (uint64_t off : {x.start, x.start + x.length - std::min(x.length, kZeroSample)}) {
      size_t n = static_cast<size_t>(std::min(x.length, kZeroSample));
      Status s = image.Read(off, buf.data(), n);
      if (!s.ok()) {
        out->read_error = s.message();
        return;
      }
      if (std::any_of(buf.begin(), buf.begin() + n, [](uint8_t b) { return b != 0; })) {
        out->inconsistency = fmt::format(
            "map reports [{:#x}, +{:#x}) as zeros but it reads non-zero", x.start, x.length);
        return;
      }
    }
  }
  out->digest = h.Final();
  if (image.virtual_size() <= kFullReadLimit) {
    test::Sha256Stream whole;
    std::vector<std::string> mib_hashes;
    for (uint64_t off = 0; off < image.virtual_size();) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), image.virtual_size() - off));
      Status s = image.Read(off, buf.data(), n);
      if (!s.ok()) {
        out->read_error = s.message();
        return;
      }
      whole.Update(buf.data(), n);
      mib_hashes.push_back(test::Sha256Hex(buf.data(), n).substr(0, 16));
      off += n;
    }
    out->full_sha256 = whole.Final();
    out->mib_sha256 = fmt::format("{}", fmt::join(mib_hashes, ","));
  }
}

// A read-only File over bytes owned by the caller: the forked child reads
// the parent's copy of the image without duplicating it.
class ByteViewFile final : public File {
 public:
  ByteViewFile(const Bytes& bytes, std::string name) : bytes_(bytes), name_(std::move(name)) {}
  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override {
    if (offset >= bytes_.size()) return size_t{0};
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, bytes_.size() - offset));
    std::memcpy(buf, bytes_.data() + offset, k);
    return k;
  }
  Status WriteAt(uint64_t, const void*, size_t) override { return ReadOnly(); }
  Status Flush() override { return Status::Ok(); }
  Result<uint64_t> Size() const override { return static_cast<uint64_t>(bytes_.size()); }
  Status Truncate(uint64_t) override { return ReadOnly(); }
  Status PunchHole(uint64_t, uint64_t) override { return ReadOnly(); }
  Status Allocate(uint64_t, uint64_t) override { return ReadOnly(); }
  bool writable() const override { return false; }
  const std::string& name() const override { return name_; }

 private:
  static Status ReadOnly() { return Status(Errc::kReadOnly, "test image is read-only"); }
  const Bytes& bytes_;
  std::string name_;
};

LibraryOutcome Observe(const Bytes& bytes, const std::string& name) {
  LibraryOutcome out;
  auto file = std::make_unique<ByteViewFile>(bytes, name);
  auto report = Check(*file);
  if (!report.ok()) {
    out.check_error = report.status().message();
  } else {
    out.check_errors = report->errors();
    out.check_warnings = report->warnings();
    out.check_corruptions = report->corruptions();
    out.check_leaks = report->leaked_units();
    for (const auto& f : report->findings)
      if (f.severity == CheckFinding::Severity::kError) {
        out.check_first_error = f.structure + ": " + f.message;
        break;
      }
  }
  auto image = Image::Open(std::move(file));
  if (!image.ok()) {
    out.open_error = image.status().message();
    return out;
  }
  out.opened = true;
  const Image& img = **image;
  out.virtual_size = img.info().virtual_size;
  auto counts = img.CountAllocation();
  if (!counts.ok()) out.count_error = counts.status().message();
  ContentDigest(img, &out);
  return out;
}

// One "key=value" line per field; values escaped so that a message with a
// newline survives the trip (and is then caught by ExpectClean).
std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\')
      o += "\\\\";
    else if (c == '\n')
      o += "\\n";
    else
      o += c;
  }
  return o;
}
std::string Unescape(const std::string& s) {
  std::string o;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      o += s[i + 1] == 'n' ? '\n' : s[i + 1];
      ++i;
    } else {
      o += s[i];
    }
  }
  return o;
}

std::string Serialize(const LibraryOutcome& o) {
  std::string s;
  auto put = [&](const char* k, const std::string& v) {
    s += std::string(k) + "=" + Escape(v) + "\n";
  };
  put("opened", o.opened ? "1" : "0");
  put("open_error", o.open_error);
  put("virtual_size", std::to_string(o.virtual_size));
  put("count_error", o.count_error);
  put("map_error", o.map_error);
  put("read_error", o.read_error);
  put("inconsistency", o.inconsistency);
  put("digest", o.digest);
  put("full_sha256", o.full_sha256);
  put("check_error", o.check_error);
  put("check_errors", std::to_string(o.check_errors));
  put("check_warnings", std::to_string(o.check_warnings));
  put("check_corruptions", std::to_string(o.check_corruptions));
  put("check_leaks", std::to_string(o.check_leaks));
  put("check_first_error", o.check_first_error);
  put("mib_sha256", o.mib_sha256);
  put("end", "1");
  return s;
}

LibraryOutcome Deserialize(const std::string& s) {
  std::map<std::string, std::string> kv;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) {
    size_t eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = Unescape(line.substr(eq + 1));
  }
  LibraryOutcome o;
  if (kv["end"] != "1") {
    o.failure = "the child process did not report an outcome";
    return o;
  }
  o.opened = kv["opened"] == "1";
  o.open_error = kv["open_error"];
  o.virtual_size = std::stoull(kv["virtual_size"]);
  o.count_error = kv["count_error"];
  o.map_error = kv["map_error"];
  o.read_error = kv["read_error"];
  o.inconsistency = kv["inconsistency"];
  o.digest = kv["digest"];
  o.full_sha256 = kv["full_sha256"];
  o.check_error = kv["check_error"];
  o.check_errors = std::stoull(kv["check_errors"]);
  o.check_warnings = std::stoull(kv["check_warnings"]);
  o.check_corruptions = std::stoull(kv["check_corruptions"]);
  o.check_leaks = std::stoull(kv["check_leaks"]);
  o.check_first_error = kv["check_first_error"];
  o.mib_sha256 = kv["mib_sha256"];
  return o;
}

uint64_t CurrentAddressSpace() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (f) {
    if (std::fscanf(f, "%lu", &pages) != 1) pages = 0;
    std::fclose(f);
  }
  return uint64_t{pages} * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

void WriteAll(int fd, const std::string& s) {
  for (size_t done = 0; done < s.size();) {
    ssize_t n = write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

// Lines of `text` (each must end with '\n').
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Whether the file at `path` holds exactly `expected` (read in pieces: no
// second image-sized buffer per check).
bool FileEquals(const std::string& path, const Bytes& expected) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buf(1 << 20);
  size_t pos = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    size_t n = static_cast<size_t>(in.gcount());
    if (n > expected.size() - pos || std::memcmp(buf.data(), expected.data() + pos, n) != 0)
      return false;
    pos += n;
  }
  return pos == expected.size();
}

bool NamesAStructure(const std::string& message) {
  for (const char* word : {"offset", "0x", "header", "region", "metadata", "BAT", "log", "block",
                           "file", "item", "sector", "size"})
    if (message.find(word) != std::string::npos) return true;
  return false;
}

void ExpectGoodMessage(const char* what, const std::string& message) {
  if (message.empty()) return;  // no error
  EXPECT_EQ(message.find('\n'), std::string::npos) << what << " message spans lines: " << message;
  EXPECT_TRUE(NamesAStructure(message)) << what << " message names no structure: " << message;
}

// Reads `fd` until EOF; false if that takes longer than the time limit.
bool ReadUntilEof(int fd, std::string* out) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kTimeLimitSeconds);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return false;
    char buf[4096];
    ssize_t n = r < 0 ? -1 : read(fd, buf, sizeof buf);
    if (n <= 0) return true;
    out->append(buf, static_cast<size_t>(n));
  }
}

// Waits for `pid`; describes how it ended when that was not a normal exit.
std::string Reap(pid_t pid, bool timed_out, int* exit_code) {
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (timed_out) return fmt::format("did not finish within {} s (hang?)", kTimeLimitSeconds);
  if (WIFSIGNALED(status))
    return fmt::format("killed by signal {} (crash, or memory beyond the limit)", WTERMSIG(status));
  return "";
}

// The vfork itself, in a frame of its own that holds no C++ object: the
// child borrows this frame until it execs, and GCC (-Wclobbered, at -O1)
// rightly distrusts any object whose state lives across that. `limit`:
// the address-space limit for the child, or none.
__attribute__((noinline)) pid_t SpawnCli(const char* path, char* const* argv, char* const* envp, int out_fd,
                                         int err_fd, const rlimit* limit) {
  pid_t pid = vfork();
  if (pid == 0) {  // only async-signal-safe calls until exec
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    if (limit) setrlimit(RLIMIT_AS, limit);
    execve(path, argv, envp);
    _exit(127);
  }
  return pid;
}

LibraryOutcome Failed(std::string why) {
  LibraryOutcome o;
  o.failure = std::move(why);
  return o;
}

}  // namespace

// What `timeout 20 prlimit --as=2G vhdx ...` would do, without a shell and
// two more execs. vfork: the test binary holds the images, and copying its
// page tables on every run adds up.
CliRun RunCli(const std::vector<std::string>& args, const std::string& stdout_path) {
  CliRun run;
  const std::string cli = test::CliPath();
  std::vector<char*> argv{const_cast<char*>(cli.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // Under ASan, RLIMIT_AS is impossible; its own limits bound memory instead.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e)
    if (!std::string_view(*e).starts_with("ASAN_OPTIONS=")) env_strings.push_back(*e);
  if (kAsan) {
    const char* old = std::getenv("ASAN_OPTIONS");
    env_strings.push_back(fmt::format(
        "ASAN_OPTIONS={}{}hard_rss_limit_mb={}:max_allocation_size_mb={}", old ? old : "",
        old && *old ? ":" : "", kMemoryLimit >> 20, kMemoryLimit >> 20));
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const rlimit limit{kMemoryLimit, kMemoryLimit};

  int fds[2];
  int null = stdout_path.empty() ? open("/dev/null", O_WRONLY | O_CLOEXEC)
                                 : open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (null < 0 || pipe2(fds, O_CLOEXEC) != 0) {
    run.failure = "cannot set up the child's output";
    return run;
  }
  pid_t pid = SpawnCli(cli.c_str(), argv.data(), envp.data(), null, fds[1], kAsan ? nullptr : &limit);
  close(null);
  close(fds[1]);
  if (pid < 0) {
    close(fds[0]);
    run.failure = "vfork() failed";
    return run;
  }
  const bool timed_out = !ReadUntilEof(fds[0], &run.stderr_text);
  close(fds[0]);
  run.failure = Reap(pid, timed_out, &run.exit_code);
  return run;
}

std::string LibraryOutcome::Describe() const {
  if (!failure.empty()) return "FAILURE: " + failure;
  std::string s = opened ? "opened" : "rejected at open: " + open_error;
  for (const auto& [name, err] : {std::pair<const char*, const std::string&>{"count", count_error},
                                  {"map", map_error},
                                  {"read", read_error}})
    if (!err.empty()) s += fmt::format("; {} failed: {}", name, err);
  s += fmt::format("; check: {} errors, {} warnings, {} corruptions, {} leaked units{}", check_errors,
                   check_warnings, check_corruptions, check_leaks,
                   check_first_error.empty() ? "" : " (first: " + check_first_error + ")");
  return s;
}

LibraryOutcome ProbeLibrary(const Bytes& image, const std::string& name) {
  int fds[2];
  if (pipe(fds) != 0) return Failed("pipe() failed");
  // The child inherits the test binary's mappings (base images, gtest), so
  // its allowance is on top of those.
  const uint64_t limit = std::max<uint64_t>(kMemoryLimit, CurrentAddressSpace() + (1ull << 30));
  pid_t pid = fork();
  if (pid < 0) return Failed("fork() failed");
  if (pid == 0) {
    close(fds[0]);
    // ASan reserves terabytes of address space up front; it cannot run under
    // RLIMIT_AS (its own allocation limits bound memory there).
    if (!kAsan) {
      rlimit rl{limit, limit};
      setrlimit(RLIMIT_AS, &rl);
    }
    // Never return into the test runner from the child, whatever happens;
    // and no atexit handlers: the parent owns the scratch folder.
    try {
      WriteAll(fds[1], Serialize(Observe(image, name)));
    } catch (const std::exception& e) {
      WriteAll(fds[1], "exception=" + Escape(e.what()) + "\n");
      _exit(3);
    }
    _exit(0);
  }
  close(fds[1]);
  std::string report;
  const bool timed_out = !ReadUntilEof(fds[0], &report);
  close(fds[0]);
  int exit_code = -1;
  std::string failure = Reap(pid, timed_out, &exit_code);
  if (!failure.empty()) return Failed("child " + failure);
  if (exit_code != 0)
    return Failed(fmt::format("child exited with status {}: {}", exit_code, report));
  return Deserialize(report);
}

void ExpectClean(const LibraryOutcome& o) {
  ASSERT_EQ(o.failure, "") << "the library crashed, hung or ran out of memory";
  EXPECT_EQ(o.inconsistency, "");
  EXPECT_EQ(o.check_error, "") << "Check() must report damage as findings, not fail";
  if (!o.opened) {
    EXPECT_NE(o.open_error, "") << "open failed without a message";
  }
  ExpectGoodMessage("open", o.open_error);
  ExpectGoodMessage("CountAllocation", o.count_error);
  ExpectGoodMessage("Map", o.map_error);
  ExpectGoodMessage("Read", o.read_error);
  ExpectGoodMessage("Check finding", o.check_first_error);
}

ImageFile::~ImageFile() {
  if (created_) std::filesystem::remove(path_);
}

void ImageFile::Write(const Bytes& image) {
  int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << "cannot create " << path_;
  created_ = true;
  constexpr size_t kChunk = 64 << 10;
  const size_t old_size = on_disk_.size();
  on_disk_.resize(image.size());
  for (size_t off = 0; off < image.size(); off += kChunk) {
    size_t n = std::min(kChunk, image.size() - off);
    if (off + n <= old_size && std::memcmp(image.data() + off, on_disk_.data() + off, n) == 0)
      continue;
    ASSERT_EQ(pwrite(fd, image.data() + off, n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
    std::memcpy(on_disk_.data() + off, image.data() + off, n);
  }
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(image.size())), 0);
  close(fd);
}

void ExpectCliAgrees(const ImageFile& file, const LibraryOutcome& o,
                     const std::optional<std::string>& raw_sha256) {
  const std::string& path = file.path();
  const std::string raw = path + ".raw";
  struct Command {
    std::vector<std::string> args;
    bool should_fail;
    int exit_code = 1;  // when it fails
  };
  // check exits as qemu-img check: 1 when it cannot run, 2 for
  // corruptions, 3 when only leaks are left.
  const int check_exit = !o.check_error.empty() ? 1 : o.check_corruptions > 0 ? 2 : o.check_leaks > 0 ? 3 : 0;
  const Command commands[] = {
      {{"info"}, !o.opened || !o.count_error.empty()},
      {{"map"}, !o.opened || !o.map_error.empty()},
      {{"check"}, check_exit != 0, check_exit},
      {{"convert", "-O", "raw"}, !o.ReadsFine()},
  };
  for (const auto& c : commands) {
    std::vector<std::string> args = c.args;
    args.push_back(path);
    if (args[0] == "convert") args.push_back(raw);
    const CliRun r = RunCli(args);
    const std::string& err = r.stderr_text;
    SCOPED_TRACE(fmt::format("vhdx {} {}\nstderr: {}", fmt::join(c.args, " "), path, err));
    ASSERT_EQ(r.failure, "") << "the CLI crashed, hung or ran out of memory";
    if (c.should_fail) {
      EXPECT_EQ(r.exit_code, c.exit_code) << "expected a clean failure (library: " << o.Describe() << ")";
      auto lines = Lines(err);
      EXPECT_EQ(lines.size(), 1u) << "expected exactly one line on stderr";
      EXPECT_TRUE(err.ends_with("\n"));
      const std::string prefix = "vhdx: " + path + ": ";
      if (!lines.empty()) {
        EXPECT_TRUE(lines[0].starts_with(prefix)) << lines[0];
        EXPECT_GT(lines[0].size(), prefix.size()) << "empty error message";
      }
    } else {
      EXPECT_EQ(r.exit_code, 0) << "expected success (library: " << o.Describe() << ")";
      EXPECT_EQ(err, "");
      if (args[0] == "convert" && raw_sha256 && r.exit_code == 0) {
        EXPECT_EQ(test::Sha256OfFile(raw), *raw_sha256) << "convert wrote different content";
      }
    }
    std::filesystem::remove(raw);
  }
  EXPECT_TRUE(FileEquals(path, file.contents())) << "the image file was modified";
}

}  // namespace vhdx::hostile
