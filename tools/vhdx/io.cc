// vhdx io: scripted reads and writes with qemu-io's command syntax, its
// number parsing and its output lines, so that one script can be run through
// `qemu-io -f vhdx` and `vhdx io` and the outputs compared. Each command is
// run as qemu-io 7.2 runs it: options are parsed by getopt (which permutes
// them, as qemu-io's does), its messages go to the same stream as qemu-io's,
// a failing command does not stop the script, and the exit status is 1 when
// any command failed.
#include <fmt/format.h>
#include <getopt.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "common.h"

namespace vhdx::cli {
namespace {

// qemu's BDRV_REQUEST_MAX_BYTES: the longest single request qemu-io accepts.
constexpr int64_t kMaxRequestBytes = 2147483136;
// qemu-io checks the vmstate options (-b) against this sector size.
constexpr int64_t kSectorSize = 512;
// What `write` fills its buffer with when no -P is given.
constexpr int kDefaultWritePattern = 0xcd;

// ---- Numbers, as qemu's qemu_strtosz() reads them ------------------------

// Multiplier of a size suffix, or 0 when `c` is not one.
uint64_t SuffixMultiplier(char c) {
  switch (c) {
    case 'b': case 'B': return 1;
    case 'k': case 'K': return uint64_t{1} << 10;
    case 'm': case 'M': return uint64_t{1} << 20;
    case 'g': case 'G': return uint64_t{1} << 30;
    case 't': case 'T': return uint64_t{1} << 40;
    case 'p': case 'P': return uint64_t{1} << 50;
    case 'e': case 'E': return uint64_t{1} << 60;
    default: return 0;
  }
}

// Parses an offset or a length: a decimal integer (a fraction allowed when a
// suffix follows, e.g. "1.5k", rounded to the nearest byte), or a 0x hex
// integer; an optional suffix b/k/m/g/t/p/e (powers of 1024). Returns the
// value, -EINVAL (not a number) or -ERANGE (above INT64_MAX), as qemu-io's
// cvtnum() does.
int64_t ParseQemuNumber(const std::string& text) {
  const char* start = text.c_str();
  char* end = nullptr;
  errno = 0;
  unsigned long long integral = std::strtoull(start, &end, 10);
  if (end == start) return -EINVAL;
  if (errno == ERANGE) return -ERANGE;
  // strtoull accepts a sign; a size has none.
  if (std::memchr(start, '-', static_cast<size_t>(end - start)) != nullptr) return -EINVAL;
  bool hex = false;
  uint64_t fraction = 0;  // 0.64 fixed point
  if (integral == 0 && (*end == 'x' || *end == 'X')) {
    errno = 0;
    integral = std::strtoull(start, &end, 16);
    if (errno == ERANGE) return -ERANGE;
    if (*end == '.') return -EINVAL;
    hex = true;
  } else if (*end == '.') {
    const char* dot = end;
    errno = 0;
    double value = std::strtod(dot, &end);
    if (end == dot || errno != 0) {
      // No digits after the dot ("1.k"): skip it.
      end = const_cast<char*>(dot) + 1;
    } else if (std::memchr(dot, 'e', static_cast<size_t>(end - dot)) != nullptr ||
               std::memchr(dot, 'E', static_cast<size_t>(end - dot)) != nullptr) {
      return -EINVAL;  // an exponent is not a size
    } else if (value < 1.0) {
      fraction = static_cast<uint64_t>(value * 0x1p64);
    }
    // A fraction that strtod rounded up to 1.0 ("0.99999999999999999999k")
    // counts as 0, as it does in qemu.
  }
  uint64_t multiplier = SuffixMultiplier(*end);
  if (multiplier != 0) {
    if (hex)
      fmt::print(stderr, "vhdx: warning: using a multiplier suffix on hex numbers is deprecated: {}\n",
                 text);
    ++end;
  } else {
    multiplier = 1;
  }
  if (*end != '\0') return -EINVAL;
  uint64_t value;
  if (multiplier == 1) {
    if (fraction != 0) return -EINVAL;  // a fraction needs a suffix
    value = integral;
  } else {
    // 64.64 fixed point times the multiplier; half a byte rounds up.
    unsigned __int128 whole = static_cast<unsigned __int128>(integral) * multiplier;
    unsigned __int128 part = static_cast<unsigned __int128>(fraction) * multiplier;
    whole += part >> 64;
    whole += (static_cast<uint64_t>(part) >> 63) & 1;
    if (whole > UINT64_MAX) return -ERANGE;
    value = static_cast<uint64_t>(whole);
  }
  if (value > static_cast<uint64_t>(INT64_MAX)) return -ERANGE;
  return static_cast<int64_t>(value);
}

void PrintNumberError(int64_t rc, const std::string& arg) {
  if (rc == -EINVAL)
    fmt::print("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {}\n", arg);
  else if (rc == -ERANGE)
    fmt::print("Parsing error: argument too large -- {}\n", arg);
  else
    fmt::print("Parsing error: {}\n", arg);
}

// A pattern byte: decimal, 0x hex or 0 octal, 0..255.
int ParsePattern(const char* arg) {
  char* end = nullptr;
  long pattern = std::strtol(arg, &end, 0);
  if (pattern < 0 || pattern > UCHAR_MAX || *end != '\0') {
    fmt::print("{} is not a valid pattern byte\n", arg);
    return -1;
  }
  return static_cast<int>(pattern);
}

// ParseQemuNumber for a command's argument, printing qemu-io's message when
// the argument is bad: the number, or a negative errno to return.
int64_t ParseArgNumber(const char* arg) {
  int64_t value = ParseQemuNumber(arg);
  if (value < 0) PrintNumberError(value, arg);
  return value;
}

// The OFFSET and LENGTH operands, argv[index] and argv[index + 1]: 0, or the
// negative errno to return (qemu-io's message printed). A LENGTH over
// kMaxRequestBytes is refused, with `limit_note` in the message ("" or
// " without -n"), unless limit_note is null (no limit).
int ParseOffsetLength(char** argv, int index, int64_t* offset, int64_t* length,
                      const char* limit_note = "") {
  *offset = ParseArgNumber(argv[index]);
  if (*offset < 0) return static_cast<int>(*offset);
  *length = ParseArgNumber(argv[index + 1]);
  if (*length < 0) return static_cast<int>(*length);
  if (limit_note != nullptr && *length > kMaxRequestBytes) {
    fmt::print("length cannot exceed {}{}, given {}\n", kMaxRequestBytes, limit_note, argv[index + 1]);
    return -EINVAL;
  }
  return 0;
}

// Requests on the VM state area (-b) or compressed (-c) must be whole
// sectors; 0, or -EINVAL with qemu-io's message.
int CheckSectorAligned(int64_t offset, int64_t count) {
  if (offset % kSectorSize != 0) {
    fmt::print("{} is not a sector-aligned value for 'offset'\n", offset);
    return -EINVAL;
  }
  if (count % kSectorSize != 0) {
    fmt::print("{} is not a sector-aligned value for 'count'\n", count);
    return -EINVAL;
  }
  return 0;
}

// ---- Output, in qemu-io's formats --------------------------------------

// "4 KiB", "1.500 MiB", "100 bytes": qemu-io's cvtstr().
std::string QemuSize(double value) {
  static const struct {
    int shift;
    const char* suffix;
  } units[] = {{60, " EiB"}, {50, " PiB"}, {40, " TiB"}, {30, " GiB"}, {20, " MiB"}, {10, " KiB"}};
  std::string text;
  const char* suffix = " bytes";
  for (const auto& u : units) {
    double unit = static_cast<double>(uint64_t{1} << u.shift);
    if (value >= unit) {
      text = fmt::format("{:.3f}", value / unit);
      suffix = u.suffix;
      break;
    }
  }
  if (text.empty()) text = fmt::format("{:f}", value);
  size_t trim = text.find(".000");
  if (trim != std::string::npos) text.resize(trim);
  return text + suffix;
}

timespec Elapsed(const timespec& start, const timespec& end) {
  timespec d{end.tv_sec - start.tv_sec, end.tv_nsec - start.tv_nsec};
  if (d.tv_nsec < 0) {
    d.tv_nsec += 1000000000L;
    --d.tv_sec;
  }
  return d;
}

double PerSecond(double value, const timespec& t) {
  return value / (static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9);
}

std::string QemuTime(const timespec& t, bool verbose) {
  double frac = static_cast<double>(t.tv_nsec) / 1e9;
  auto sec = static_cast<unsigned>(t.tv_sec);
  if (verbose || t.tv_sec != 0)
    return fmt::format("{}:{:02}:{:05.2f}", sec / 3600, (sec % 3600) / 60, (sec % 60) + frac);
  return fmt::format("{:05.2f} sec", frac);
}

// "wrote 4096/4096 bytes at offset 0" and the statistics line, or with -C
// one machine-readable line.
void PrintReport(const char* op, const timespec& t, int64_t offset, int64_t count, int64_t total,
                 bool machine) {
  const int ops = 1;
  if (!machine) {
    fmt::print("{} {}/{} bytes at offset {}\n", op, total, count, offset);
    fmt::print("{}, {} ops; {} ({}/sec and {:.4f} ops/sec)\n", QemuSize(static_cast<double>(total)),
               ops, QemuTime(t, false), QemuSize(PerSecond(static_cast<double>(total), t)),
               PerSecond(ops, t));
  } else {
    fmt::print("{},{},{},{:.3f},{:.3f}\n", total, ops, QemuTime(t, true),
               PerSecond(static_cast<double>(total), t), PerSecond(ops, t));
  }
}

// "00000010:  ab ab ...  ................": qemu-io's read -v dump.
void DumpBuffer(const uint8_t* p, int64_t offset, int64_t len) {
  std::string out;
  for (int64_t i = 0; i < len; i += 16) {
    int64_t n = std::min<int64_t>(16, len - i);
    out += fmt::format("{:08x}:  ", offset + i);
    for (int64_t j = 0; j < n; ++j) out += fmt::format("{:02x} ", p[i + j]);
    out += ' ';
    for (int64_t j = 0; j < n; ++j) {
      unsigned char c = p[i + j];
      bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
      out += alnum ? static_cast<char>(c) : '.';
    }
    out += '\n';
  }
  fmt::print("{}", out);
}

// The errno qemu-io would report for a library error: the library's
// (vhdx::ErrnoOf) but where QEMU's block layer answers otherwise: EPERM for
// a write to a read-only image, EIO for a request past the end.
int ErrnoOf(const Status& st) {
  if (st.code() == Errc::kReadOnly) return EPERM;
  if (st.code() == Errc::kOutOfRange) return EIO;
  return vhdx::ErrnoOf(st.code());
}

timespec Now() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t;
}

// ---- Commands ------------------------------------------------------------

class Session;
using CommandFn = int (Session::*)(int argc, char** argv);

struct CommandInfo {
  const char* name;
  const char* altname;
  int argmin;
  int argmax;  // -1: no limit
  bool writes;  // needs a read-write image (qemu-io's BLK_PERM_WRITE)
  const char* args;
  const char* oneline;
  CommandFn fn;
};

class Session {
 public:
  Session(Image& image, std::string path, bool read_only)
      : image_(image), path_(std::move(path)), read_only_(read_only) {}

  // Runs one command line; returns 0 or a negative errno, as qemu-io.
  int Run(const std::string& line);
  bool quit() const { return quit_; }

 private:
  int Read(int argc, char** argv);
  int Write(int argc, char** argv);
  int Discard(int argc, char** argv);
  int Flush(int argc, char** argv);
  int Quit(int argc, char** argv);

  static const CommandInfo kCommands[];
  static const CommandInfo& Command(const char* name);

  int Usage(const char* name) {
    const CommandInfo& c = Command(name);
    fmt::print("{} {} -- {}\n", c.name, c.args, c.oneline);
    return -EINVAL;
  }
  // qemu's blk_check_byte_request(): a request past the end fails with EIO
  // before anything is read or written.
  bool InRange(int64_t offset, int64_t count) const {
    auto size = static_cast<int64_t>(image_.virtual_size());
    return offset <= size && count <= size - offset;
  }
  // "read failed: Input/output error" on stdout as qemu-io prints it, and
  // the library's own message on stderr.
  int Failed(const char* what, const Status& st) {
    int err = ErrnoOf(st);
    fmt::print("{} failed: {}\n", what, std::strerror(err));
    std::fflush(stdout);
    if (!st.ok()) Fail(path_, st);
    return -err;
  }
  int Failed(const char* what, int err) {
    fmt::print("{} failed: {}\n", what, std::strerror(err));
    return -err;
  }

  Image& image_;
  std::string path_;
  bool read_only_;
  bool quit_ = false;
};

const CommandInfo Session::kCommands[] = {
    {"read", "r", 2, -1, false, "[-abCqv] [-P pattern [-s off] [-l len]] off len",
     "reads a number of bytes at a specified offset", &Session::Read},
    {"write", "w", 2, -1, true, "[-bcCfnquz] [-P pattern | -s source_file] off len",
     "writes a number of bytes at a specified offset", &Session::Write},
    {"discard", "d", 2, -1, true, "[-Cq] off len", "discards a number of bytes at a specified offset",
     &Session::Discard},
    {"flush", "f", 0, 0, false, "", "flush all in-core file state to disk", &Session::Flush},
    {"quit", "q", 0, 0, false, "", "exit the program", &Session::Quit},
};

const CommandInfo& Session::Command(const char* name) {
  for (const CommandInfo& c : kCommands)
    if (std::strcmp(c.name, name) == 0) return c;
  std::abort();  // only called with the names above
}

int Session::Run(const std::string& line) {
  // qemu-io splits a command on single spaces, nothing else (no quoting).
  std::vector<std::string> words;
  size_t pos = 0;
  while (pos <= line.size()) {
    size_t space = line.find(' ', pos);
    if (space == std::string::npos) space = line.size();
    if (space > pos) words.push_back(line.substr(pos, space - pos));
    pos = space + 1;
  }
  if (words.empty()) return 0;
  const CommandInfo* command = nullptr;
  for (const CommandInfo& c : kCommands)
    if (words[0] == c.name || words[0] == c.altname) command = &c;
  std::fflush(stdout);  // keep stdout and stderr in order on a terminal
  if (command == nullptr) {
    fmt::print(stderr, "command \"{}\" not found (vhdx io runs read, write, discard, flush, quit)\n",
               words[0]);
    return -EINVAL;
  }
  int nargs = static_cast<int>(words.size()) - 1;
  if (nargs < command->argmin || (command->argmax != -1 && nargs > command->argmax)) {
    if (command->argmax == -1)
      fmt::print(stderr, "bad argument count {} to {}, expected at least {} arguments\n", nargs,
                 words[0], command->argmin);
    else if (command->argmin == command->argmax)
      fmt::print(stderr, "bad argument count {} to {}, expected {} arguments\n", nargs, words[0],
                 command->argmin);
    else
      fmt::print(stderr, "bad argument count {} to {}, expected between {} and {} arguments\n", nargs,
                 words[0], command->argmin, command->argmax);
    return -EINVAL;
  }
  if (command->writes && read_only_) {
    Fail(path_, fmt::format("{}: the image is open read-only (-r)", command->name));
    return -EPERM;
  }
  // getopt permutes argv, so it gets its own array of pointers into `words`.
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  optind = 0;  // glibc: start a fresh scan
  return (this->*(command->fn))(static_cast<int>(words.size()), argv.data());
}

int Session::Read(int argc, char** argv) {
  bool machine = false, quiet = false, dump = false, vmstate = false;
  bool check_pattern = false, pattern_start_given = false, pattern_length_given = false;
  int pattern = 0;
  int64_t pattern_offset = 0, pattern_count = 0;
  int c;
  while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
    switch (c) {
      case 'b': vmstate = true; break;
      case 'C': machine = true; break;
      case 'l':
        pattern_length_given = true;
        pattern_count = ParseArgNumber(optarg);
        if (pattern_count < 0) return static_cast<int>(pattern_count);
        break;
      case 'p': break;  // ignored by qemu-io too
      case 'P':
        check_pattern = true;
        pattern = ParsePattern(optarg);
        if (pattern < 0) return -EINVAL;
        break;
      case 'q': quiet = true; break;
      case 's':
        pattern_start_given = true;
        pattern_offset = ParseArgNumber(optarg);
        if (pattern_offset < 0) return static_cast<int>(pattern_offset);
        break;
      case 'v': dump = true; break;
      default: return Usage("read");
    }
  }
  if (optind != argc - 2) return Usage("read");
  int64_t offset = 0, count = 0;
  if (int rc = ParseOffsetLength(argv, optind, &offset, &count); rc != 0) return rc;
  if (!check_pattern && (pattern_length_given || pattern_start_given)) return Usage("read");
  if (!pattern_length_given) pattern_count = count - pattern_offset;
  if (pattern_count < 0 || pattern_offset > count || pattern_count > count - pattern_offset) {
    fmt::print("pattern verification range exceeds end of read data\n");
    return -EINVAL;
  }
  if (vmstate) {
    if (int rc = CheckSectorAligned(offset, count); rc != 0) return rc;
  }

  // qemu-io's buffer starts as 0xab; every byte of it is overwritten.
  std::vector<uint8_t> buf(static_cast<size_t>(count), 0xab);
  timespec t1 = Now();
  if (vmstate) return Failed("read", ENOTSUP);  // VHDX has no VM state area
  if (!InRange(offset, count)) return Failed("read", EIO);
  if (count > 0) {
    Status st = image_.Read(static_cast<uint64_t>(offset), buf.data(), buf.size());
    if (!st.ok()) return Failed("read", st);
  }
  timespec t2 = Now();

  int ret = 0;
  if (check_pattern) {
    const uint8_t* p = buf.data() + pattern_offset;
    for (int64_t i = 0; i < pattern_count; ++i) {
      if (p[i] != pattern) {
        fmt::print("Pattern verification failed at offset {}, {} bytes\n", offset + pattern_offset,
                   pattern_count);
        ret = -EINVAL;
        break;
      }
    }
  }
  if (quiet) return ret;
  if (dump) DumpBuffer(buf.data(), offset, count);
  PrintReport("read", Elapsed(t1, t2), offset, count, count, machine);
  return ret;
}

int Session::Write(int argc, char** argv) {
  bool machine = false, quiet = false, vmstate = false, compressed = false;
  bool fua = false, no_fallback = false, may_unmap = false;
  bool pattern_given = false, zeroes = false, from_file = false;
  int pattern = kDefaultWritePattern;
  std::string file_name;
  int c;
  while ((c = getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
    switch (c) {
      case 'b': vmstate = true; break;
      case 'c': compressed = true; break;
      case 'C': machine = true; break;
      case 'f': fua = true; break;
      case 'n': no_fallback = true; break;
      case 'p': break;  // ignored by qemu-io too
      case 'P':
        pattern_given = true;
        pattern = ParsePattern(optarg);
        if (pattern < 0) return -EINVAL;
        break;
      case 'q': quiet = true; break;
      case 's':
        from_file = true;
        file_name = optarg;
        break;
      case 'u': may_unmap = true; break;
      case 'z': zeroes = true; break;
      default: return Usage("write");
    }
  }
  if (optind != argc - 2) return Usage("write");
  if (vmstate && zeroes) {
    fmt::print("-b and -z cannot be specified at the same time\n");
    return -EINVAL;
  }
  if (fua && (vmstate || compressed)) {
    fmt::print("-f and -b or -c cannot be specified at the same time\n");
    return -EINVAL;
  }
  if (no_fallback && !zeroes) {
    fmt::print("-n requires -z to be specified\n");
    return -EINVAL;
  }
  if (may_unmap && !zeroes) {
    fmt::print("-u requires -z to be specified\n");
    return -EINVAL;
  }
  if (int{zeroes} + int{pattern_given} + int{from_file} > 1) {
    fmt::print("Only one of -z, -P, and -s can be specified at the same time\n");
    return -EINVAL;
  }
  int64_t offset = 0, count = 0;
  if (int rc = ParseOffsetLength(argv, optind, &offset, &count, no_fallback ? nullptr : " without -n");
      rc != 0)
    return rc;
  if (vmstate || compressed) {
    if (int rc = CheckSectorAligned(offset, count); rc != 0) return rc;
  }

  std::vector<uint8_t> buf;
  if (!zeroes) {
    buf.assign(static_cast<size_t>(count), static_cast<uint8_t>(pattern));
    if (from_file) {
      // The file's bytes, repeated to fill the buffer.
      std::FILE* f = std::fopen(file_name.c_str(), "rb");
      if (f == nullptr) {
        std::perror(file_name.c_str());
        return -EINVAL;
      }
      size_t got = std::fread(buf.data(), 1, buf.size(), f);
      bool bad = std::ferror(f) != 0;
      std::fclose(f);
      if (bad) {
        std::perror(file_name.c_str());
        return -EINVAL;
      }
      if (got == 0) {
        fmt::print(stderr, "{}: file is empty\n", file_name);
        return -EINVAL;
      }
      for (size_t i = got; i < buf.size(); ++i) buf[i] = buf[i - got];
    }
  }

  timespec t1 = Now();
  // VHDX has no VM state area and no compressed blocks; qemu's driver
  // answers ENOTSUP to both, and to a write-zeroes that may not fall back to
  // writing zeros.
  if (vmstate) return Failed("write", ENOTSUP);
  if (!InRange(offset, count)) return Failed("write", EIO);
  if (compressed || (zeroes && no_fallback)) return Failed("write", ENOTSUP);
  if (count > 0) {
    Status st = zeroes ? image_.WriteZeroes(static_cast<uint64_t>(offset),
                                            static_cast<uint64_t>(count), may_unmap)
                       : image_.Write(static_cast<uint64_t>(offset), buf.data(), buf.size(),
                                      WriteOptions{.fua = fua});
    if (!st.ok()) return Failed("write", st);
  }
  timespec t2 = Now();
  if (quiet) return 0;
  PrintReport("wrote", Elapsed(t1, t2), offset, count, count, machine);
  return 0;
}

int Session::Discard(int argc, char** argv) {
  bool machine = false, quiet = false;
  int c;
  while ((c = getopt(argc, argv, "Cq")) != -1) {
    switch (c) {
      case 'C': machine = true; break;
      case 'q': quiet = true; break;
      default: return Usage("discard");
    }
  }
  if (optind != argc - 2) return Usage("discard");
  int64_t offset = 0, bytes = 0;
  if (int rc = ParseOffsetLength(argv, optind, &offset, &bytes); rc != 0) return rc;
  timespec t1 = Now();
  if (!InRange(offset, bytes)) return Failed("discard", EIO);
  if (bytes > 0) {
    Status st = image_.Discard(static_cast<uint64_t>(offset), static_cast<uint64_t>(bytes));
    if (!st.ok()) return Failed("discard", st);
  }
  timespec t2 = Now();
  if (!quiet) PrintReport("discard", Elapsed(t1, t2), offset, bytes, bytes, machine);
  return 0;
}

int Session::Flush(int, char**) {
  // A read-only image has nothing to flush (qemu-io's flush succeeds there).
  if (read_only_) return 0;
  Status st = image_.Flush();
  if (!st.ok()) {
    // qemu-io's flush prints nothing of its own.
    Fail(path_, st.WithContext("flush"));
    return -ErrnoOf(st);
  }
  return 0;
}

int Session::Quit(int, char**) {
  quit_ = true;
  return 0;
}

}  // namespace

void RegisterIo(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand(
      "io", "Run qemu-io style commands (read, write, discard, flush) on an image");
  static std::string path;
  static std::vector<std::string> commands;
  static std::vector<std::string> parent_dirs;
  static bool read_only = false;
  sub->add_flag("-r,--read-only", read_only, "Open the image read-only (writes then fail)");
  AddParentDirOption(sub, parent_dirs);
  AddForceShareOption(sub);
  sub->add_option("-c,--cmd", commands,
                  "A qemu-io command, e.g. 'write -P 0xab 0 4k'; repeat -c for more, run in order")
      ->required()
      ->expected(1)
      ->allow_extra_args(false)  // one command per -c: IMAGE may follow or sit between them
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("IMAGE", path, "Image to open")->required();
  sub->footer(
      "Commands (qemu-io 7.2 syntax; numbers take k/M/G/T suffixes, or 0x hex):\n"
      "  read [-Cqv] [-P pattern [-s off] [-l len]] off len\n"
      "  write [-Cfquz] [-P pattern | -s source_file] off len\n"
      "  discard [-Cq] off len\n"
      "  flush\n"
      "  quit\n"
      "Exit status: 0 when every command succeeded, 1 when any failed or the image could not be\n"
      "opened or closed, 2 for a usage error of vhdx io itself.\n");
  sub->callback([&result] {
    // A differencing image is opened with its chain; writes go into it
    // only, its parents are opened read-only.
    auto image = Image::Open(path, ChainOpenOptions(parent_dirs, read_only));
    if (!image.ok()) {
      result = Fail(path, image.status());
      return;
    }
    Session session(**image, path, read_only);
    bool failed = false;
    for (const std::string& command : commands) {
      if (session.Run(command) < 0) failed = true;
      if (session.quit()) break;
    }
    std::fflush(stdout);
    Status st = (*image)->Close();
    if (!st.ok()) failed = (Fail(path, st), true);
    result = failed ? kExitError : kExitOk;
  });
}

}  // namespace vhdx::cli
