// The nbdkit filter over nbdkit's curl plugin, against a real web server
// (lighttpd, started by the test on 127.0.0.1 and stopped after): every
// corpus image copies to its manifest hash and maps as `vhdx map`; an open
// costs few requests to the plugin (nbdkit's log filter counts them); a 404, a
// truncated file and a server killed in the middle of a copy each give a
// clear error through NBD, never a hang or wrong data.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "corpus/manifest.h"
#include "interop/nbd_util.h"
#include "support/test_util.h"

namespace vhdx::test {

namespace {

namespace fs = std::filesystem;

std::string Missing() {
  if (std::string m = MissingNbdkitFilter({"nbdkit", "nbdinfo", "nbdcopy", "lighttpd"}); !m.empty()) return m;
  if (test::Run("nbdkit curl --version >/dev/null 2>&1").exit_code != 0) return "nbdkit's curl plugin is not installed";
  return "";
}

// A free TCP port on 127.0.0.1 (the kernel's choice, released at once).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}

bool Accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (fd >= 0) close(fd);
  return ok;
}

// lighttpd serving `root` (byte ranges, as for any static file) on a free
// port of 127.0.0.1. Stopped (SIGTERM, then SIGKILL) when destroyed.
class WebServer {
 public:
  WebServer(const std::string& root, const std::string& dir) {
    port_ = FreePort();
    const std::string conf = dir + "/lighttpd.conf";
    std::ofstream(conf) << fmt::format(
        "server.document-root = \"{}\"\nserver.bind = \"127.0.0.1\"\nserver.port = {}\n"
        "server.errorlog = \"{}/error.log\"\nmimetype.assign = (\"\" => \"application/octet-stream\")\n",
        root, port_, dir);
    pid_ = fork();
    if (pid_ == 0) {
      execlp("lighttpd", "lighttpd", "-D", "-f", conf.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 200 && !Accepts(port_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    up_ = Accepts(port_);
  }
  ~WebServer() { Stop(); }
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 200; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  bool up() const { return up_; }
  std::string Url(const std::string& name) const { return fmt::format("http://127.0.0.1:{}/{}", port_, name); }

 private:
  int port_ = -1;
  pid_t pid_ = -1;
  bool up_ = false;
};

// nbdkit with the filter over the curl plugin for `url`, running `client`
// ($uri names the export). Under a timeout: a stuck transfer fails the test.
// `below`: more filters between ours and curl; `params`: their parameters.
CommandResult ServeUrl(const std::string& url, const std::string& client, int seconds = 300,
                       const std::string& below = "", const std::string& params = "") {
  const SanitizerPrefixes& p = NbdkitSanitizerPrefixes();
  return test::Run(p.server + fmt::format("timeout -k 5 {} nbdkit -r -U - --filter={} {} curl {} {} --run {}", seconds,
                                          ShellQuote(NbdkitFilterPath()), below, ShellQuote(url), params,
                                          ShellQuote(p.client + client)));
}

// Reads nbdkit's log filter logged ("Read id=N ...", one per request).
size_t ReadsLogged(const std::string& log) {
  std::ifstream in(log);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += line.find(" Read id=") != std::string::npos;
  return n;
}

class FilterHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    VHDX_REQUIRE(Missing());
    dir_ = ScratchPath(::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ + "/www");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

std::string TestName(const ::testing::TestParamInfo<CorpusImage>& info) { return CorpusStem(info.param); }

class FilterHttpCorpusTest : public ::testing::TestWithParam<CorpusImage> {};

TEST_P(FilterHttpCorpusTest, CopiesAndMapsAsConvertAndMapInFewRequests) {
  VHDX_REQUIRE(MissingCorpus());
  VHDX_REQUIRE(Missing());
  const CorpusImage& m = GetParam();
  const std::string dir = ScratchPath("filter-http-" + CorpusStem(m));
  fs::remove_all(dir);
  fs::create_directories(dir + "/www");
  fs::copy_file(DecompressCorpusImage(m.file), dir + "/www/image.vhdx");
  WebServer web(dir + "/www", dir);
  ASSERT_TRUE(web.up()) << "lighttpd did not start";

  // One open: the size, nothing read of the disk. nbdkit's log filter
  // between ours and curl logs every request we make of the plugin.
  const std::string log = dir + "/requests.log";
  CommandResult r = ServeUrl(web.Url("image.vhdx"), "nbdinfo --size \"$uri\"", 300, "--filter=log",
                             "logfile=" + ShellQuote(log));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(std::stoull(r.output), m.virtual_size);
  const size_t per_open = ReadsLogged(log);
  // The header section and the metadata region, 1 MiB each; the issue
  // allows 6 (for a 16 GiB image: these images are 64 MiB to 10 GiB).
  EXPECT_LE(per_open, 6u) << "requests to the plugin for one open";
  EXPECT_GE(per_open, 1u);

  const std::string copy = dir + "/copy.raw", map = dir + "/map.json";
  r = ServeUrl(web.Url("image.vhdx"), fmt::format("nbdcopy \"$uri\" {} && nbdinfo --map --json \"$uri\" > {}",
                                                 ShellQuote(copy), ShellQuote(map)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(SparseSha256(copy), m.content_sha256) << "nbdcopy through the filter over HTTP";
  const auto ours = test::Run("{ " + CliPath() + " map --output=json " + ShellQuote(dir + "/www/image.vhdx") +
                              " 2>/dev/null; }");
  ASSERT_EQ(ours.exit_code, 0) << ours.output;
  const std::vector<uint8_t> map_text = ReadWholeFile(map);
  EXPECT_EQ(ExtentsOfNbdinfoMap(ParseJson(std::string(map_text.begin(), map_text.end()))),
            ExtentsOfVhdxMap(ParseJson(ours.output)));
  fmt::print("{}: {} requests to the curl plugin per open\n", m.file, per_open);
  web.Stop();
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Manifest, FilterHttpCorpusTest, ::testing::ValuesIn(CorpusImagesOrPlaceholder(/*skip_differencing=*/true)), TestName);

// The stacks the README suggests: nbdkit's readahead, cache and retry
// filters below ours change nothing of what is read.
TEST_F(FilterHttpTest, UnderReadaheadCacheAndRetryFilters) {
  const std::string image = dir_ + "/www/disk.vhdx";
  ASSERT_EQ(test::Run(CliPath() + " create --block-size 1M " + ShellQuote(image) + " 256M").exit_code, 0);
  ASSERT_EQ(test::Run(CliPath() + " io -c 'write -P 0x41 0 3M' -c 'write -P 0x42 100M 5M' -c 'write -P 0x43 255M 1M' " +
                      ShellQuote(image))
                .exit_code,
            0);
  const std::string want = dir_ + "/want.raw";
  ASSERT_EQ(test::Run(CliPath() + " convert -O raw " + ShellQuote(image) + " " + ShellQuote(want)).exit_code, 0);
  WebServer web(dir_ + "/www", dir_);
  ASSERT_TRUE(web.up());
  for (const char* below : {"--filter=readahead", "--filter=cache", "--filter=retry", "--filter=readahead --filter=retry"}) {
    SCOPED_TRACE(below);
    const std::string copy = dir_ + "/copy.raw";
    CommandResult r = ServeUrl(web.Url("disk.vhdx"), "nbdcopy \"$uri\" " + ShellQuote(copy), 120, below);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(Sha256OfFile(copy), Sha256OfFile(want));
    fs::remove(copy);
  }
}

TEST_F(FilterHttpTest, MissingFileIsAClearError) {
  WebServer web(dir_ + "/www", dir_);
  ASSERT_TRUE(web.up());
  CommandResult r = ServeUrl(web.Url("nothing.vhdx"), "nbdinfo --size \"$uri\"", 60);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "timed out: " << r.output;
  EXPECT_NE(r.output.find("404"), std::string::npos) << r.output;
}

// A copy cut short (inside the BAT, then inside the data) is refused at
// open or fails the read that reaches the missing bytes: never zeros in
// their place.
TEST_F(FilterHttpTest, TruncatedFileFailsTheReadNeverReadsZeros) {
  const std::string whole = dir_ + "/whole.vhdx";
  ASSERT_EQ(test::Run(CliPath() + " create --block-size 1M " + ShellQuote(whole) + " 64M").exit_code, 0);
  ASSERT_EQ(test::Run(CliPath() + " io -c 'write -P 0x5a 0 8M' " + ShellQuote(whole)).exit_code, 0);
  const uint64_t full = fs::file_size(whole);
  WebServer web(dir_ + "/www", dir_);
  ASSERT_TRUE(web.up());
  for (const uint64_t size : {uint64_t{3} << 20, full - (2 << 20)}) {
    SCOPED_TRACE(fmt::format("cut at {:#x} of {:#x}", size, full));
    // Each cut from the whole image, under its own name (a second truncate
    // of one file would grow the first cut back with zeros, and the web
    // server may cache what it knows of a name).
    const std::string name = fmt::format("cut-{}.vhdx", size);
    fs::copy_file(whole, dir_ + "/www/" + name);
    ASSERT_EQ(::truncate((dir_ + "/www/" + name).c_str(), static_cast<off_t>(size)), 0);
    CommandResult r = ServeUrl(web.Url(name), "nbdcopy \"$uri\" " + ShellQuote(dir_ + "/out.raw"), 60);
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.exit_code, 124) << "timed out: " << r.output;
    EXPECT_NE(r.output.find("vhdx: "), std::string::npos) << r.output;
  }
}

// The web server killed while nbdcopy reads through the filter: the copy
// fails with an error in reasonable time. nbdkit's delay filter, between
// ours and curl, slows each request (20 ms) so that the copy of 256 MiB of
// data is still running when the server dies.
TEST_F(FilterHttpTest, ServerKilledMidCopyFailsTheCopy) {
  const std::string image = dir_ + "/www/big.vhdx";
  ASSERT_EQ(test::Run(CliPath() + " create --block-size 1M " + ShellQuote(image) + " 1G").exit_code, 0);
  ASSERT_EQ(test::Run(CliPath() + " io -c 'write -P 0x33 0 256M' " + ShellQuote(image)).exit_code, 0);
  WebServer web(dir_ + "/www", dir_);
  ASSERT_TRUE(web.up());
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    web.Kill();
  });
  const auto started = std::chrono::steady_clock::now();
  CommandResult r = ServeUrl(web.Url("big.vhdx"), "nbdcopy \"$uri\" " + ShellQuote(dir_ + "/out.raw"), 120,
                             "--filter=delay", "rdelay=20ms");
  killer.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "timed out: " << r.output;
  EXPECT_LT(seconds, 100) << r.output;
}

// A checkpoint and its parent both on the web server: the child through
// the curl plugin, the parent by vhdx-parent=URL (libcurl). It reads as
// `vhdx convert` reads the local chain; a parent URL that is not there, or
// is another image, is refused with the reason.
TEST_F(FilterHttpTest, DifferencingChildWithItsParentAtAUrl) {
  const std::string www = dir_ + "/www";
  auto vhdx = [](const std::string& args) { return test::Run(CliPath() + " " + args).exit_code; };
  ASSERT_EQ(vhdx("create --block-size 1M " + ShellQuote(www + "/base.vhdx") + " 64M"), 0);
  ASSERT_EQ(vhdx("io -c 'write -P 0x11 0 8M' -c 'write -P 0x12 60M 1M' " + ShellQuote(www + "/base.vhdx")), 0);
  ASSERT_EQ(vhdx("create -b " + ShellQuote(www + "/base.vhdx") + " " + ShellQuote(www + "/child.avhdx")), 0);
  ASSERT_EQ(vhdx("io -c 'write -P 0x22 4M 1M' " + ShellQuote(www + "/child.avhdx")), 0);
  ASSERT_EQ(vhdx("create --block-size 1M " + ShellQuote(www + "/other.vhdx") + " 64M"), 0);
  const std::string want = dir_ + "/want.raw", copy = dir_ + "/copy.raw";
  ASSERT_EQ(vhdx("convert -O raw " + ShellQuote(www + "/child.avhdx") + " " + ShellQuote(want)), 0);
  WebServer web(www, dir_);
  ASSERT_TRUE(web.up());
  CommandResult r = ServeUrl(web.Url("child.avhdx"), "nbdcopy \"$uri\" " + ShellQuote(copy), 120, "",
                             "vhdx-parent=" + web.Url("base.vhdx"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Sha256OfFile(copy), Sha256OfFile(want));
  for (const char* bad : {"missing.vhdx", "other.vhdx"}) {
    SCOPED_TRACE(bad);
    r = ServeUrl(web.Url("child.avhdx"), "nbdinfo --size \"$uri\"", 60, "", "vhdx-parent=" + web.Url(bad));
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.exit_code, 124) << "timed out: " << r.output;
    // The missing one named by its URL, the other by the linkage it breaks.
    EXPECT_NE(r.output.find(std::string(bad) == "other.vhdx" ? "DataWriteGuid" : web.Url(bad)), std::string::npos)
        << r.output;
  }
}

}  // namespace
}  // namespace vhdx::test
