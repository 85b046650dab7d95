#include "support/strace_replay.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/test_util.h"

namespace vhdx::test {

namespace fs = std::filesystem;

namespace {
constexpr uint64_t kMiB = 1024 * 1024;
}  // namespace

// ---- Running a process ------------------------------------------------------

ProcessEnd RunProcess(const std::vector<std::string>& argv,
                      std::optional<std::chrono::microseconds> kill_after,
                      std::chrono::seconds timeout) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // LeakSanitizer cannot run under ptrace (strace) and fails the exit of a
  // sanitized CLI there; leaks are not what these runs are about.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "ASAN_OPTIONS=", 13) != 0) env_strings.emplace_back(*e);
  const char* asan = getenv("ASAN_OPTIONS");
  env_strings.push_back(std::string("ASAN_OPTIONS=") + (asan ? asan : "") +
                        (asan && *asan ? ":" : "") + "detect_leaks=0");
  std::vector<char*> env;
  for (std::string& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);
  const auto started = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execve(args[0], args.data(), env.data());
    _exit(127);
  }
  ProcessEnd end;
  if (pid < 0) return end;
  if (kill_after) {
    std::this_thread::sleep_for(*kill_after);
    ::kill(pid, SIGKILL);
  }
  // Polled, so that the wait has a deadline. The naps stay short (at most
  // 1 ms) because `seconds` is only as precise as they are, and the kill
  // tests spread their kills over a run's measured length.
  int status = 0;
  auto nap = std::chrono::microseconds(50);
  for (;;) {
    const pid_t got = waitpid(pid, &status, WNOHANG);
    if (got == pid) break;
    if (got < 0 && errno != EINTR) return end;  // not ours to wait for: no exit code
    if (std::chrono::steady_clock::now() - started > timeout) {
      ::kill(pid, SIGKILL);
      waitpid(pid, &status, 0);  // SIGKILL cannot be caught: this returns
      end.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(nap);
    nap = std::min<std::chrono::microseconds>(nap * 2, std::chrono::milliseconds(1));
  }
  end.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  // strace, its tracee killed, kills itself the same way (or exits 137).
  // A timed-out run does not count as killed: callers that accept a kill
  // (theirs) must not accept a hang.
  end.killed = !end.timed_out && ((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ||
                                  (WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGKILL));
  end.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return end;
}

std::optional<std::string> UsableStrace() {
  if (!HaveTool("strace")) return std::nullopt;
  CommandResult where = Run("command -v strace");
  std::string path = where.output.substr(0, where.output.find('\n'));
  if (RunProcess({path, "-o", "/dev/null", "/bin/true"}).exit_code != 0) return std::nullopt;
  return path;
}

// ---- strace's log as file operations -------------------------------------------

bool ParseDumpLine(const std::string& line, size_t want, std::vector<uint8_t>* data) {
  auto hex = [](char ch) {
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
  };
  size_t i = 3;  // past " | "
  while (i < line.size() && hex(line[i]) >= 0) ++i;  // the offset in the buffer
  for (size_t k = 0; k < want; ++k) {
    while (i < line.size() && line[i] == ' ') ++i;
    if (i + 1 >= line.size() || hex(line[i]) < 0 || hex(line[i + 1]) < 0) return false;
    data->push_back(static_cast<uint8_t>(hex(line[i]) * 16 + hex(line[i + 1])));
    i += 2;
  }
  return true;
}

Status ParseTrace(const std::string& trace_path, const std::vector<std::string>& paths,
                  std::vector<TracedOp>* out) {
  std::ifstream in(trace_path);
  if (!in) return Status(Errc::kIoError, "cannot read " + trace_path);
  std::string line;
  long pending = -1;  // index in *out of the write whose dump follows
  auto finish_pending = [&]() -> Status {
    if (pending >= 0 && (*out)[pending].op.data.size() != (*out)[pending].op.length)
      return Status(Errc::kCorrupt,
                    fmt::format("strace dumped {} of the {} bytes of a write",
                                (*out)[pending].op.data.size(), (*out)[pending].op.length));
    pending = -1;
    return Status::Ok();
  };
  while (std::getline(in, line)) {
    if (line.rfind(" | ", 0) == 0) {
      if (pending < 0) continue;  // a write to another descriptor
      FileOp& op = (*out)[pending].op;
      const size_t want = std::min<size_t>(16, op.length - op.data.size());
      if (!ParseDumpLine(line, want, &op.data))
        return Status(Errc::kCorrupt, "cannot parse strace dump line: " + line);
      continue;
    }
    VHDX_RETURN_IF_ERROR(finish_pending());
    const size_t paren = line.find('(');
    const size_t lt = line.find('<');
    if (paren == std::string::npos || lt == std::string::npos || lt < paren) continue;
    const size_t gt = line.find('>', lt);
    const size_t eq = line.rfind(") = ");
    if (gt == std::string::npos || eq == std::string::npos || eq < gt) continue;
    const std::string name = line.substr(0, paren);
    const std::string path = line.substr(lt + 1, gt - lt - 1);
    const auto which = std::find(paths.begin(), paths.end(), path);
    if (which == paths.end()) continue;
    const std::string ret = line.substr(eq + 4);
    if (ret.rfind("-1", 0) == 0) return Status(Errc::kIoError, "a traced syscall failed: " + line);
    std::vector<std::string> args;  // after the descriptor
    std::istringstream rest(line.substr(gt + 1, eq - gt - 1));
    for (std::string a; std::getline(rest, a, ',');)
      if (!a.empty()) args.push_back(a.substr(a.find_first_not_of(' ')));
    auto number = [&](size_t from_end) {
      return std::stoull(args.at(args.size() - 1 - from_end));
    };
    TracedOp t;
    t.file = static_cast<int>(which - paths.begin());
    if (name == "pwrite64") {
      t.op.kind = FileOp::Kind::kWrite;
      t.op.length = number(1);
      t.op.offset = number(0);
      if (std::stoull(ret) != t.op.length) return Status(Errc::kIoError, "short write: " + line);
      t.op.data.reserve(t.op.length);
      pending = static_cast<long>(out->size());
    } else if (name == "fdatasync" || name == "fsync") {
      t.op.kind = FileOp::Kind::kFlush;
    } else if (name == "fallocate") {
      const std::string mode = args.at(args.size() - 3);
      t.op.kind = mode.find("PUNCH_HOLE") != std::string::npos ? FileOp::Kind::kPunchHole
                  : mode == "0"                                ? FileOp::Kind::kAllocate
                                                               : FileOp::Kind::kWrite;
      if (t.op.kind == FileOp::Kind::kWrite)
        return Status(Errc::kUnsupported, "fallocate mode not modelled: " + line);
      t.op.offset = number(1);
      t.op.length = number(0);
    } else if (name == "ftruncate") {
      t.op.kind = FileOp::Kind::kTruncate;
      t.op.offset = number(0);
    } else {
      return Status(Errc::kUnsupported, "syscall not modelled: " + line);
    }
    out->push_back(std::move(t));
  }
  return finish_pending();
}

// ---- Files between disk and memory ------------------------------------------------

std::unique_ptr<SparseMemoryFile> LoadFile(const std::string& path) {
  auto bytes = ReadWholeFile(path);
  auto f = std::make_unique<SparseMemoryFile>(path, true);
  EXPECT_TRUE(f->Truncate(bytes.size()).ok());
  static const std::vector<uint8_t> kZeros(64 * 1024, 0);
  for (size_t at = 0; at < bytes.size(); at += kZeros.size()) {
    const size_t n = std::min(kZeros.size(), bytes.size() - at);
    if (std::memcmp(bytes.data() + at, kZeros.data(), n) != 0) {
      EXPECT_TRUE(f->WriteAt(at, bytes.data() + at, n).ok());
    }
  }
  return f;
}

std::vector<uint8_t> FileBytes(const File& f) {
  std::vector<uint8_t> out(*f.Size());
  EXPECT_EQ(*f.ReadAt(0, out.data(), out.size()), out.size());
  return out;
}

Status SaveFile(const File& f, const std::string& path) {
  VHDX_ASSIGN_OR_RETURN(std::unique_ptr<File> out, CreatePosixFile(path));
  VHDX_ASSIGN_OR_RETURN(const uint64_t size, f.Size());
  VHDX_RETURN_IF_ERROR(out->Truncate(size));
  std::vector<uint8_t> buf(kMiB);
  static const std::vector<uint8_t> kZeros(kMiB, 0);
  for (uint64_t at = 0; at < size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kMiB, size - at));
    VHDX_RETURN_IF_ERROR(ReadExact(f, at, buf.data(), n, "crash state"));
    if (std::memcmp(buf.data(), kZeros.data(), n) != 0)
      VHDX_RETURN_IF_ERROR(out->WriteAt(at, buf.data(), n));
    at += n;
  }
  return Status::Ok();
}

// ---- Recording a CLI run ------------------------------------------------------------

void RecordCliRun(const std::string& strace, const std::vector<std::string>& cli_args,
                  const std::vector<std::string>& files, const std::string& trace_path,
                  RecordedRun* r) {
  std::vector<std::string> canonical;
  for (const std::string& path : files) {
    r->files.push_back(std::make_unique<CrashRecorder>(*LoadFile(path)));
    canonical.push_back(fs::canonical(path).string());
  }
  std::vector<std::string> argv = {strace, "-y", "-s", "0", "-o", trace_path, "-e",
                                   "trace=pwrite64,pwritev,pwritev2,write,writev,fdatasync,"
                                   "fsync,fallocate,ftruncate,copy_file_range,sync_file_range",
                                   "-e", "write=all", CliPath()};
  argv.insert(argv.end(), cli_args.begin(), cli_args.end());
  ProcessEnd end = RunProcess(argv);
  ASSERT_EQ(end.exit_code, 0) << "vhdx " << fmt::format("{}", fmt::join(cli_args, " "))
                              << " under strace";
  Status st = ParseTrace(trace_path, canonical, &r->ops);
  ASSERT_TRUE(st.ok()) << st.message();
  std::error_code ec;
  fs::remove(trace_path, ec);
  std::vector<std::unique_ptr<File>> live;
  for (const auto& rec : r->files) live.push_back(rec->OpenFile());
  for (const TracedOp& t : r->ops) {
    st = ApplyFileOp(*live[t.file], t.op);
    ASSERT_TRUE(st.ok()) << st.message();
    r->order.push_back(t.file);
  }
  for (size_t i = 0; i < files.size(); ++i)
    ASSERT_TRUE(FileBytes(r->files[i]->live()) == ReadWholeFile(files[i]))
        << "the replayed trace does not reproduce " << files[i];
}

std::string MissingStrace(const std::string& what) {
  return UsableStrace() ? "" : "strace is not installed or cannot trace here (ptrace refused): " + what + " not recorded";
}

}  // namespace vhdx::test
