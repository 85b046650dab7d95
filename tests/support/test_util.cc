#include "support/test_util.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <stdexcept>

namespace vhdx::test {

namespace fs = std::filesystem;

std::optional<std::string> CorpusDir() {
  const char* env = std::getenv("VHDX_CORPUS");
  std::string dir = env && *env ? env : VHDX_DEFAULT_CORPUS;
  if (!fs::is_directory(dir) || !fs::exists(fs::path(dir) / "MANIFEST.md")) return std::nullopt;
  return fs::canonical(dir).string();
}

const std::string& ScratchDir() {
  // Never destroyed: the atexit cleanup below runs after static destructors
  // would have freed an ordinary static string.
  static const std::string& dir = *[] {
    std::string tmpl = (fs::temp_directory_path() / "vhdx-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    auto* d = new std::string(tmpl);
    std::atexit([] { std::error_code ec; fs::remove_all(ScratchDir(), ec); });
    return d;
  }();
  return dir;
}

std::string ScratchPath(const std::string& leaf) { return ScratchDir() + "/" + leaf; }

namespace {

// "<size> <mtime ns>" of a file, or "" when it does not exist.
std::string FileStamp(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return fmt::format("{} {}", st.st_size, st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
}

std::string ReadStamp(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

// ctest runs every test in a process of its own, so a per-process copy
// would decompress each image once per test (about 50 times a run). The
// decompressed images are kept in VHDX_TEST_CACHE_DIR (in the build tree)
// across processes instead: made under an exclusive flock, published by
// rename, and redone when the compressed file changed or when the copy is
// not the file that was published (a test that wrote to it by mistake
// changes its size or mtime), so no test ever sees another's leftovers.
std::string DecompressCorpusImage(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::string> done;
  std::lock_guard lock(mu);
  if (auto it = done.find(name); it != done.end()) return it->second;
  auto dir = CorpusDir();
  if (!dir) throw std::runtime_error("corpus not found");
  std::string src = *dir + "/" + name;
  std::string tool = name.ends_with(".gz") ? "gzip" : name.ends_with(".bz2") ? "bzip2" : "";
  std::string leaf = tool.empty() ? name : name.substr(0, name.rfind('.'));

  std::error_code ec;
  fs::create_directories(VHDX_TEST_CACHE_DIR, ec);
  const std::string out = std::string(VHDX_TEST_CACHE_DIR) + "/corpus-" + leaf;
  const std::string stamp_path = out + ".stamp";
  int lock_fd = ::open((out + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX) != 0) throw std::runtime_error("cannot lock " + out + ".lock");
  const std::string source_stamp = FileStamp(src);
  if (source_stamp.empty()) {
    ::close(lock_fd);
    throw std::runtime_error("corpus file missing: " + src);
  }
  // The stamp names the source it came from and the copy as published.
  auto wanted = [&] { return source_stamp + " -> " + FileStamp(out); };
  if (ReadStamp(stamp_path) != wanted() || FileStamp(out).empty()) {
    const std::string tmp = out + ".tmp";
    std::string cmd = tool.empty() ? fmt::format("cp '{}' '{}'", src, tmp)
                                   : fmt::format("{} -dc '{}' > '{}'", tool, src, tmp);
    bool ok = std::system(cmd.c_str()) == 0 && std::rename(tmp.c_str(), out.c_str()) == 0;
    if (ok) {
      std::ofstream(stamp_path, std::ios::trunc) << wanted() << "\n";
    }
    if (!ok) {
      ::unlink(tmp.c_str());
      ::close(lock_fd);
      throw std::runtime_error("cannot decompress " + src);
    }
  }
  ::close(lock_fd);
  done[name] = out;
  return out;
}

std::string Sha256Hex(const void* data, size_t n) {
  Sha256Stream h;
  h.Update(data, n);
  return h.Final();
}

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
Sha256Stream::~Sha256Stream() { EVP_MD_CTX_free(ctx_); }
void Sha256Stream::Update(const void* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
std::string Sha256Stream::Final() {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, md, &len);
  std::string hex;
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

std::string Sha256OfFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  Sha256Stream h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.Update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  return h.Final();
}

std::string Sha256OfImage(const Image& image) {
  Sha256Stream h;
  std::vector<uint8_t> buf(4 << 20);
  uint64_t size = image.virtual_size();
  for (uint64_t off = 0; off < size;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
    Status st = image.Read(off, buf.data(), n);
    if (!st.ok()) throw std::runtime_error("read failed: " + st.message());
    h.Update(buf.data(), n);
    off += n;
  }
  return h.Final();
}

std::vector<uint8_t> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void WriteWholeFile(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

CommandResult Run(const std::string& command) {
  CommandResult r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string CliPath() { return VHDX_CLI_PATH; }

// build/bin/vhdx -> build/lib/nbdkit-vhdx-plugin.so
std::string NbdkitPluginPath() {
  return (std::filesystem::path(CliPath()).parent_path().parent_path() / "lib" / "nbdkit-vhdx-plugin.so").string();
}

bool HaveTool(const std::string& tool) {
  return Run("command -v " + tool + " >/dev/null").exit_code == 0;
}

bool StrictMode() {
  const char* v = std::getenv("VHDX_STRICT");
  return v && *v && std::string(v) != "0";
}

std::string MissingTools(std::initializer_list<const char*> tools) {
  for (const char* tool : tools)
    if (!HaveTool(tool)) return std::string(tool) + " is not installed";
  return "";
}

std::string MissingCorpus() {
  return CorpusDir() ? "" : "no corpus (set VHDX_CORPUS to the folder holding MANIFEST.md)";
}

std::string MissingFuse() {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return "no usable /dev/fuse";
  return MissingTools({"fusermount3"});
}

bool RunPart(const std::string& part, const std::string& missing) {
  if (missing.empty()) return true;
  if (StrictMode())
    ADD_FAILURE() << "missing in strict mode (VHDX_STRICT): " << missing << " (" << part << ")";
  else
    std::cout << "[   NOTE   ] " << part << " not run: " << missing << "\n";
  return false;
}

QemuNbdServer::QemuNbdServer(const std::string& image, bool read_only) : pidfile_(image + ".qemu-nbd.pid") {
  started_ = Run("qemu-nbd " + std::string(read_only ? "-r " : "") + "-f vhdx -k " + ShellQuote(image + ".sock") +
                 " --fork --pid-file " + ShellQuote(pidfile_) + " " + ShellQuote(image));
  if (started_.exit_code != 0) pidfile_.clear();
}

void QemuNbdServer::Stop() {
  if (pidfile_.empty()) return;
  // SIGTERM, then SIGKILL after 10 s: a qemu-nbd that ignores the first
  // (seen once, in the middle of a client's disconnect) must not hang the
  // test that waits for it to let go of the image's lock.
  const std::string pid = "$(cat " + ShellQuote(pidfile_) + ")";
  Run("p=" + pid + "; kill $p && for i in $(seq 200); do kill -0 $p 2>/dev/null || break; sleep 0.05; done; "
      "kill -KILL $p 2>/dev/null; while kill -0 $p 2>/dev/null; do sleep 0.05; done; rm -f " + ShellQuote(pidfile_));
  pidfile_.clear();
}

}  // namespace vhdx::test
