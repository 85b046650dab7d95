#include "disk_checks.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "support/test_util.h"

namespace vhdx::test {
namespace {

constexpr size_t kBuffer = 4u << 20;

// First offset where a and b differ, or nullopt.
std::optional<size_t> FirstMismatch(const uint8_t* a, const uint8_t* b, size_t n) {
  if (std::memcmp(a, b, n) == 0) return std::nullopt;
  return static_cast<size_t>(std::mismatch(a, a + n, b).first - a);
}

std::string Describe(uint64_t at, uint8_t got, uint8_t want) {
  return fmt::format("byte at virtual offset {} is {:#04x}, expected {:#04x}", at, got, want);
}

// Compares `n` bytes of `got` at virtual `offset` with the reference.
std::string CompareChunk(const DiskReader& reference, uint64_t offset, const uint8_t* got, size_t n,
                         std::vector<uint8_t>& want) {
  Status st = reference(offset, want.data(), n);
  if (!st.ok()) return fmt::format("reference read at {} failed: {}", offset, st.message());
  if (auto i = FirstMismatch(got, want.data(), n)) return Describe(offset + *i, got[*i], want[*i]);
  return "";
}

// Checks that the reference reads as zeros over [start, end).
std::string CheckReferenceZero(const DiskReader& reference, uint64_t start, uint64_t end,
                               std::vector<uint8_t>& want) {
  for (uint64_t off = start; off < end;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(want.size(), end - off));
    Status st = reference(off, want.data(), n);
    if (!st.ok()) return fmt::format("reference read at {} failed: {}", off, st.message());
    if (!AllZero(want.data(), n)) {
      size_t i = static_cast<size_t>(
          std::find_if(want.begin(), want.begin() + n, [](uint8_t c) { return c != 0; }) - want.begin());
      return fmt::format("hole in the output at virtual offset {}, expected {:#04x}", off + i, want[i]);
    }
    off += n;
  }
  return "";
}

struct ScopedFd {
  int fd;
  ~ScopedFd() {
    if (fd >= 0) ::close(fd);
  }
};

struct PipeCloser {
  void operator()(FILE* f) const {
    if (f) pclose(f);
  }
};

std::string StderrPath() {
  static std::atomic<int> counter{0};
  return ScratchPath(fmt::format("stderr-{}", counter++));
}

std::string ExitText(int status) {
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
  return "abnormal termination";
}

std::string ReadStderr(const std::string& path) {
  std::string text;
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
  }
  return text;
}

std::string Quoted(const std::string& s) { return "'" + s + "'"; }

// A vhdimount (libvhdi's FUSE driver) mount of `image` on the folder
// `image + ".mnt"`, unmounted and the folder removed when it goes out of scope.
class VhdiMount {
 public:
  explicit VhdiMount(const std::string& image) : dir_(image + ".mnt") {
    std::filesystem::create_directories(dir_);
    CommandResult r = Run(fmt::format("vhdimount {} {}", Quoted(image), Quoted(dir_)));
    mounted_ = r.exit_code == 0 && std::filesystem::exists(disk());
    output_ = r.output;
  }
  ~VhdiMount() {
    const char* unmount = HaveTool("fusermount") ? "fusermount -u" : "umount";
    if (mounted_) Run(fmt::format("{} {}", unmount, Quoted(dir_)));
    std::error_code ec;
    std::filesystem::remove(dir_, ec);
  }
  VhdiMount(const VhdiMount&) = delete;
  VhdiMount& operator=(const VhdiMount&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& output() const { return output_; }
  std::string disk() const { return dir_ + "/vhdi1"; }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string output_;
};

}  // namespace

bool AllZero(const uint8_t* p, size_t n) {
  static const std::vector<uint8_t> zeros(kBuffer, 0);
  while (n > 0) {
    size_t k = std::min(n, zeros.size());
    if (std::memcmp(p, zeros.data(), k) != 0) return false;
    p += k;
    n -= k;
  }
  return true;
}

DiskReader ImageReader(const Image& image) {
  return [&image](uint64_t offset, uint8_t* buf, size_t n) { return image.Read(offset, buf, n); };
}

std::optional<std::vector<MapRange>> ParseMapJson(const std::string& text, uint64_t virtual_size,
                                                  std::string* problem) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array()) {
    *problem = "not a JSON array: " + text.substr(0, 200);
    return std::nullopt;
  }
  std::vector<MapRange> ranges;
  uint64_t next = 0;
  for (const auto& x : j) {
    auto is_u64 = [&](const char* k) { return x.contains(k) && x[k].is_number_unsigned(); };
    auto is_bool = [&](const char* k) { return x.contains(k) && x[k].is_boolean(); };
    if (!x.is_object() || !is_u64("start") || !is_u64("length") || !is_bool("present") || !is_bool("zero") ||
        !is_bool("data") || !x.contains("depth")) {
      *problem = "map entry lacks start/length/depth/present/zero/data: " + x.dump();
      return std::nullopt;
    }
    MapRange r;
    r.start = x["start"].get<uint64_t>();
    r.length = x["length"].get<uint64_t>();
    r.present = x["present"].get<bool>();
    r.zero = x["zero"].get<bool>();
    r.data = x["data"].get<bool>();
    if (x.contains("offset")) {
      if (!is_u64("offset")) {
        *problem = "map entry has a non-numeric offset: " + x.dump();
        return std::nullopt;
      }
      r.offset = x["offset"].get<uint64_t>();
    }
    if (r.start != next || r.length == 0) {
      *problem = fmt::format("map entry {} does not continue at {} with a non-empty range", x.dump(), next);
      return std::nullopt;
    }
    if (r.data != r.offset.has_value()) {
      *problem = "map entry has data without offset or offset without data: " + x.dump();
      return std::nullopt;
    }
    if (r.data && r.zero) {
      *problem = "map entry is both data and zero: " + x.dump();
      return std::nullopt;
    }
    next = r.start + r.length;
    ranges.push_back(r);
  }
  if (next != virtual_size) {
    *problem = fmt::format("map ranges end at {}, virtual size is {}", next, virtual_size);
    return std::nullopt;
  }
  return ranges;
}

std::string CompareRawFile(const std::string& path, uint64_t size, const DiskReader& reference) {
  ScopedFd owner{::open(path.c_str(), O_RDONLY)};
  int fd = owner.fd;
  if (fd < 0) return fmt::format("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) return fmt::format("{}: cannot stat", path);
  if (static_cast<uint64_t>(st.st_size) != size)
    return fmt::format("{}: size is {}, expected {}", path, st.st_size, size);
  std::vector<uint8_t> got(kBuffer), want(kBuffer);
  uint64_t pos = 0;
  while (pos < size) {
    off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    uint64_t data_start = data < 0 ? size : static_cast<uint64_t>(data);
    if (data_start > pos) {
      if (auto diff = CheckReferenceZero(reference, pos, data_start, want); !diff.empty()) return diff;
      pos = data_start;
      if (pos >= size) break;
    }
    off_t hole = ::lseek(fd, static_cast<off_t>(pos), SEEK_HOLE);
    uint64_t data_end = hole < 0 ? size : std::min<uint64_t>(size, static_cast<uint64_t>(hole));
    while (pos < data_end) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kBuffer, data_end - pos));
      ssize_t r = ::pread(fd, got.data(), n, static_cast<off_t>(pos));
      if (r != static_cast<ssize_t>(n)) return fmt::format("{}: short read at {}", path, pos);
      if (auto diff = CompareChunk(reference, pos, got.data(), n, want); !diff.empty()) return diff;
      pos += n;
    }
  }
  return "";
}

std::string CompareCommandOutput(const std::string& command, uint64_t size, const DiskReader& reference) {
  std::string err_path = StderrPath();
  std::unique_ptr<FILE, PipeCloser> pipe(popen((command + " 2>'" + err_path + "'").c_str(), "r"));
  if (!pipe) return "cannot run: " + command;
  std::vector<uint8_t> got(kBuffer), want(kBuffer);
  uint64_t pos = 0;
  std::string diff;
  // A 1 MiB pipe (the unprivileged maximum) instead of 64 KiB cuts the
  // syscalls and context switches of streaming gigabytes 16-fold.
  int fd = fileno(pipe.get());
  fcntl(fd, F_SETPIPE_SZ, 1 << 20);
  for (;;) {
    size_t n = 0;
    while (n < got.size()) {  // fill the buffer: pipe reads return at most the pipe size
      ssize_t r = ::read(fd, got.data() + n, got.size() - n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      n += static_cast<size_t>(r);
    }
    if (n == 0) break;
    if (pos + n > size) {
      diff = fmt::format("output is longer than the virtual size {}", size);
      break;
    }
    diff = CompareChunk(reference, pos, got.data(), n, want);
    if (!diff.empty()) break;
    pos += n;
  }
  int status = pclose(pipe.release());
  if (!diff.empty()) return diff;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return fmt::format("{}: {}: {}", command, ExitText(status), ReadStderr(err_path));
  if (pos != size) return fmt::format("output has {} bytes, expected {}", pos, size);
  return "";
}

std::string SparseFileDigest(const std::string& path) {
  ScopedFd owner{::open(path.c_str(), O_RDONLY)};
  struct stat st;
  if (owner.fd < 0 || fstat(owner.fd, &st) != 0) return "cannot read " + path;
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<uint8_t> buf(kBuffer);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  for (uint64_t pos = 0; pos < size;) {
    off_t data = ::lseek(owner.fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) break;  // only a hole remains
    off_t hole = ::lseek(owner.fd, data, SEEK_HOLE);
    uint64_t end = hole < 0 ? size : static_cast<uint64_t>(hole);
    std::string segment = fmt::format("[{},{})", data, end);
    EVP_DigestUpdate(ctx.get(), segment.data(), segment.size());
    for (pos = static_cast<uint64_t>(data); pos < end;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - pos));
      if (::pread(owner.fd, buf.data(), n, static_cast<off_t>(pos)) != static_cast<ssize_t>(n))
        return "short read of " + path;
      EVP_DigestUpdate(ctx.get(), buf.data(), n);
      pos += n;
    }
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  std::string hex = fmt::format("size {} sha256 ", size);
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

std::string ExpectLibvhdiReads(const std::string& path, uint64_t virtual_size, uint32_t sector_size,
                               const std::string& sha256) {
  CommandResult r = Run("vhdiinfo " + Quoted(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  if (r.exit_code != 0) return "";  // the failure is recorded; nothing to mount
  EXPECT_NE(r.output.find(fmt::format("Bytes per sector\t: {} bytes", sector_size)), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(fmt::format("({} bytes)", virtual_size)), std::string::npos) << r.output;
  VhdiMount mount(path);
  if (!mount.mounted()) return "vhdimount cannot mount here (FUSE unavailable?): " + mount.output();
  EXPECT_EQ(std::filesystem::file_size(mount.disk()), virtual_size);
  EXPECT_EQ(Sha256OfFile(mount.disk()), sha256) << "libvhdi reads other bytes";
  return "";
}

}  // namespace vhdx::test
