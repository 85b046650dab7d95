#include "support/test_util.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
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
  std::string out = ScratchPath("corpus-" + leaf);
  std::string cmd = tool.empty() ? fmt::format("cp '{}' '{}'", src, out)
                                 : fmt::format("{} -dc '{}' > '{}'", tool, src, out);
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("cannot decompress " + src);
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

}  // namespace vhdx::test
