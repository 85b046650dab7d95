// Helpers shared by the tests: the real-world corpus, hashing, scratch files
// and running commands (the vhdx CLI and the peer tools).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "vhdx/image.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace vhdx::test {

// The corpus folder: $VHDX_CORPUS, else ../shared/corpus beside the source
// tree. nullopt when it does not exist (a user's fresh clone): callers
// GTEST_SKIP() with a message.
std::optional<std::string> CorpusDir();

// Decompresses corpus file `name` (e.g. "fixed.vhdx.gz") into the build
// tree's test cache, once for all test processes, and returns the path of
// the decompressed image. Callers only read it (copy it before writing).
std::string DecompressCorpusImage(const std::string& name);

// A fresh scratch directory for this process (removed at exit).
const std::string& ScratchDir();
std::string ScratchPath(const std::string& leaf);

// Incremental SHA-256 (OpenSSL), hex digest.
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void Update(const void* p, size_t n);
  void Update(const std::string& s) { Update(s.data(), s.size()); }
  std::string Final();

 private:
  ::evp_md_ctx_st* ctx_;
};

std::string Sha256Hex(const void* data, size_t n);
std::string Sha256OfFile(const std::string& path);
// SHA-256 of the whole virtual disk read through the library.
std::string Sha256OfImage(const Image& image);

std::vector<uint8_t> ReadWholeFile(const std::string& path);
void WriteWholeFile(const std::string& path, const std::vector<uint8_t>& data);

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs a shell command line; captures its output.
CommandResult Run(const std::string& command);
// Shell-quotes `s` for Run (nests: a quoted command can be quoted again).
std::string ShellQuote(const std::string& s);
// Path of the vhdx CLI built alongside the tests.
std::string CliPath();
// Path of the nbdkit plugin built alongside the CLI (it may not exist: it
// is built only where nbdkit-plugin.h is installed).
std::string NbdkitPluginPath();
// True when `tool` is on PATH.
bool HaveTool(const std::string& tool);

// Strict mode ($VHDX_STRICT set and not "0"; .ci/run and scripts/check under
// CI set it): a test whose precondition is missing fails, naming it, instead
// of skipping, so that a machine lacking a peer cannot pass by skipping.
bool StrictMode();

// What a test may need and a machine may lack, each "" when it is there,
// else the reason in a few words ("qemu-img is not installed").
std::string MissingTools(std::initializer_list<const char*> tools);
std::string MissingCorpus();
std::string MissingFuse();  // /dev/fuse and fusermount3

// A part of a test that needs what `missing` names ("" when nothing is
// missing). True when the part can run. Otherwise, in strict mode, a failure
// naming it; outside strict mode a note on stdout that is not gtest's skip
// token, because the rest of the test did run and its failures count.
bool RunPart(const std::string& part, const std::string& missing);

// `qemu-nbd -f vhdx [-r] IMAGE` in the background on a Unix socket beside
// the image, holding QEMU's locks on it, for as long as this object lives
// (stopped and waited for at scope exit, whatever the test's outcome).
class QemuNbdServer {
 public:
  QemuNbdServer(const std::string& image, bool read_only);
  ~QemuNbdServer() { Stop(); }
  QemuNbdServer(const QemuNbdServer&) = delete;
  QemuNbdServer& operator=(const QemuNbdServer&) = delete;
  // How starting it went (exit_code 0: serving).
  const CommandResult& started() const { return started_; }
  // Stops it and waits until it has exited (its locks are gone then).
  void Stop();

 private:
  std::string pidfile_;
  CommandResult started_;
};

}  // namespace vhdx::test

// Ends the test when a precondition is missing (`why`, "" when none is):
// skipped with the reason, or failed with it in strict mode. Use it in the
// test body or SetUp (it returns from the enclosing function).
#define VHDX_REQUIRE(why)                                                             \
  do {                                                                                \
    const std::string vhdx_missing_ = (why);                                          \
    if (!vhdx_missing_.empty()) {                                                     \
      if (::vhdx::test::StrictMode()) {                                               \
        GTEST_FAIL() << "missing in strict mode (VHDX_STRICT): " << vhdx_missing_;    \
      } else {                                                                        \
        GTEST_SKIP() << vhdx_missing_;                                                \
      }                                                                               \
    }                                                                                 \
  } while (0)
