// The nbdkit plugin (tools/nbdkit) served by the real nbdkit and read and
// written by the NBD peers: nbdinfo (size, flags, block status), nbdcopy
// (the whole disk) and qemu-io (writes, discards, zeroes). Every nbdkit here
// is captive (`--run`): it serves a Unix socket for one command and exits,
// closing the image.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "interop/nbd_util.h"
#include "support/test_util.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kDiskSize = 64 * kMiB;


std::string PluginPath() { return NbdkitPluginPath(); }

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// Runs nbdkit serving the plugin with `params` for one `client` command, in
// which $uri names the export. In a sanitizer build the plugin needs the
// ASan runtime loaded first in (uninstrumented) nbdkit; the clients run
// without it.
CommandResult Serve(const std::string& params, const std::string& client,
                    const std::string& nbdkit_flags = "") {
  const SanitizerPrefixes& p = NbdkitSanitizerPrefixes();
  // A hung server must fail the test, never stall the suite.
  return Run(p.server + "timeout -k 5 120 nbdkit " + nbdkit_flags + " -U - " + ShellQuote(PluginPath()) + " " + params +
             " --run " + ShellQuote(p.client + client));
}

CommandResult Vhdx(const std::string& args) { return Run(CliPath() + " " + args); }
// stdout only, for output that is parsed.
CommandResult VhdxStdout(const std::string& args) {
  return Run("{ " + CliPath() + " " + args + " 2>/dev/null; }");
}

class NbdkitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    VHDX_REQUIRE(MissingTools({"nbdkit", "nbdinfo", "nbdcopy"}));
    VHDX_REQUIRE(fs::exists(PluginPath()) ? "" : PluginPath() + " was not built (no nbdkit-plugin.h)");
    dir_ = ScratchPath(::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    disk_ = dir_ + "/disk.vhdx";
  }

  // A dynamic disk with 1 MiB blocks: data, a ZERO block, a partly written
  // block and unallocated space between.
  void MakeDisk() {
    ASSERT_EQ(Vhdx(fmt::format("create --block-size 1M {} 64M", ShellQuote(disk_))).exit_code, 0);
    CommandResult r = Vhdx(fmt::format(
        "io -c 'write -P 0x11 2M 1M' -c 'write -P 0x22 10M 4k' -c 'write -P 0x33 40M 3M' "
        "-c 'write -z -u 41M 1M' {}",
        ShellQuote(disk_)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  std::string dir_, disk_;
};

TEST_F(NbdkitTest, InfoAndBlockStatusMatchVhdxMap) {
  MakeDisk();
  CommandResult info = Serve("file=" + ShellQuote(disk_), "nbdinfo --json \"$uri\"");
  ASSERT_EQ(info.exit_code, 0) << info.output;
  json j = ParseJson(info.output);
  ASSERT_TRUE(j.contains("exports")) << info.output;
  const json& e = j["exports"][0];
  EXPECT_EQ(e["export-size"], kDiskSize);
  EXPECT_EQ(e["is_read_only"], false);
  for (const char* flag : {"can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"})
    EXPECT_EQ(e[flag], true) << flag;

  CommandResult map = Serve("file=" + ShellQuote(disk_), "nbdinfo --map --json \"$uri\"");
  ASSERT_EQ(map.exit_code, 0) << map.output;
  const std::vector<NbdExtent> served = ExtentsOfNbdinfoMap(ParseJson(map.output));
  CommandResult ours = VhdxStdout("map --output=json " + ShellQuote(disk_));
  ASSERT_EQ(ours.exit_code, 0) << ours.output;
  const std::vector<NbdExtent> expected = ExtentsOfVhdxMap(ParseJson(ours.output));
  EXPECT_EQ(served, expected);
  // The disk has both kinds, so the comparison above means something.
  std::vector<NbdExtent> want = {{0, 2 * kMiB, 3},        {2 * kMiB, kMiB, 0},  {3 * kMiB, 7 * kMiB, 3},
                                 {10 * kMiB, kMiB, 0},    {11 * kMiB, 29 * kMiB, 3},
                                 {40 * kMiB, kMiB, 0},    {41 * kMiB, kMiB, 3}, {42 * kMiB, kMiB, 0},
                                 {43 * kMiB, 21 * kMiB, 3}};
  EXPECT_EQ(served, want);
}

// qemu-img map over NBD (what `qemu-img convert` from nbd:// consults to
// skip holes): data only where the image has data.
TEST_F(NbdkitTest, QemuImgMapOverNbdShowsTheHoles) {
  VHDX_REQUIRE(MissingTools({"qemu-img"}));
  MakeDisk();
  CommandResult map = Serve("file=" + ShellQuote(disk_), "qemu-img map --output=json -f raw \"$uri\"", "-r");
  ASSERT_EQ(map.exit_code, 0) << map.output;
  std::vector<NbdExtent> served;
  for (const json& x : ParseJson(map.output)) {
    const bool data = x["data"].get<bool>(), zero = x["zero"].get<bool>();
    AppendMerged(&served, {x["start"].get<uint64_t>(), x["length"].get<uint64_t>(), (data ? 0 : 1) | (zero ? 2 : 0)});
  }
  // Unallocated and ZERO blocks are holes reading as zeros; the partly
  // written block (10M) is data as a whole.
  std::vector<NbdExtent> want = {{0, 2 * kMiB, 3},        {2 * kMiB, kMiB, 0},  {3 * kMiB, 7 * kMiB, 3},
                                 {10 * kMiB, kMiB, 0},    {11 * kMiB, 29 * kMiB, 3},
                                 {40 * kMiB, kMiB, 0},    {41 * kMiB, kMiB, 3}, {42 * kMiB, kMiB, 0},
                                 {43 * kMiB, 21 * kMiB, 3}};
  EXPECT_EQ(served, want) << map.output;
}

TEST_F(NbdkitTest, NbdcopyMatchesConvert) {
  MakeDisk();
  const std::string copy = dir_ + "/copy.raw", ref = dir_ + "/ref.raw";
  CommandResult r = Serve("file=" + ShellQuote(disk_), "nbdcopy \"$uri\" " + copy);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(Vhdx(fmt::format("convert -O raw {} {}", ShellQuote(disk_), ShellQuote(ref))).exit_code, 0);
  EXPECT_EQ(fs::file_size(copy), kDiskSize);
  EXPECT_EQ(Sha256OfFile(copy), Sha256OfFile(ref));
  std::vector<uint8_t> bytes = ReadWholeFile(copy);
  ASSERT_EQ(bytes.size(), kDiskSize);
  EXPECT_EQ(bytes[2 * kMiB], 0x11);
  EXPECT_EQ(bytes[10 * kMiB + 4095], 0x22);
  EXPECT_EQ(bytes[10 * kMiB + 4096], 0);
  EXPECT_EQ(bytes[41 * kMiB], 0);
  EXPECT_EQ(bytes[42 * kMiB], 0x33);
}

TEST_F(NbdkitTest, QemuIoWritesDiscardsAndZeroesLand) {
  VHDX_REQUIRE(MissingTools({"qemu-io", "qemu-img"}));
  MakeDisk();
  CommandResult r = Serve("file=" + ShellQuote(disk_),
                          "qemu-io -f raw -c 'write -P 0x5a 1M 64k' -c 'write -f -P 0x66 30M 4k' "
                          "-c 'discard 2M 1M' -c 'write -z 40M 1M' -c 'flush' \"$uri\"");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("error"), std::string::npos) << r.output;

  // nbdkit has exited: the image was closed, its log applied.
  CommandResult check = vhdx::test::Run("qemu-img check " + ShellQuote(disk_));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  CommandResult info = VhdxStdout("info --output=json " + ShellQuote(disk_));
  EXPECT_EQ(ParseJson(info.output)["dirty"], false) << info.output;
  CommandResult read = Vhdx(
      "io -r -c 'read -P 0x5a 1M 64k' -c 'read -P 0 1088k 960k' -c 'read -P 0x66 30M 4k' "
      "-c 'read -P 0 2M 1M' -c 'read -P 0 40M 2M' -c 'read -P 0x33 42M 1M' -c 'read -P 0x22 10M 4k' " +
      ShellQuote(disk_));
  EXPECT_EQ(read.exit_code, 0) << read.output;
  EXPECT_EQ(read.output.find("Pattern verification failed"), std::string::npos) << read.output;
  // QEMU reads what we wrote through NBD.
  CommandResult qread = vhdx::test::Run("qemu-io -r -f vhdx -c 'read -P 0x5a 1M 64k' -c 'read -P 0 2M 1M' " + ShellQuote(disk_));
  EXPECT_EQ(qread.exit_code, 0) << qread.output;
  EXPECT_EQ(qread.output.find("Pattern verification failed"), std::string::npos) << qread.output;
  // The discarded whole block no longer holds data.
  CommandResult map = VhdxStdout("map --output=json " + ShellQuote(disk_));
  for (const json& x : ParseJson(map.output)) {
    const uint64_t start = x["start"].get<uint64_t>(), end = start + x["length"].get<uint64_t>();
    if (start <= 2 * kMiB && 2 * kMiB < end) {
      EXPECT_FALSE(x["data"].get<bool>()) << map.output;
    }
  }
}

// nbdcopy writes over several connections at once (multi-conn) and skips
// or zeroes the source's holes: the image ends up with the source's bytes.
TEST_F(NbdkitTest, NbdcopyIntoTheImage) {
  const std::string source = dir_ + "/source.raw", back = dir_ + "/back.raw";
  constexpr uint64_t kSize = 24 * kMiB;
  std::vector<uint8_t> bytes(kSize, 0);
  uint32_t x = 12345;
  for (uint64_t i = 0; i < kSize; ++i) {
    x = x * 1103515245 + 12345;
    // Zero runs (whole and partial blocks) between the random data.
    const uint64_t mib = i / kMiB;
    if (mib % 3 == 1 || (mib == 6 && i % kMiB < 300 * 1024)) continue;
    bytes[i] = static_cast<uint8_t>(x >> 24);
  }
  WriteWholeFile(source, bytes);
  ASSERT_EQ(Vhdx(fmt::format("create --block-size 1M {} 24M", ShellQuote(disk_))).exit_code, 0);
  CommandResult r = Serve("file=" + ShellQuote(disk_), "nbdcopy --connections=4 --requests=8 " + ShellQuote(source) + " \"$uri\"");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(Vhdx(fmt::format("convert -O raw {} {}", ShellQuote(disk_), ShellQuote(back))).exit_code, 0);
  EXPECT_EQ(Sha256OfFile(back), Sha256Hex(bytes.data(), bytes.size()));
  CommandResult check = Vhdx("check " + ShellQuote(disk_));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  if (RunPart("qemu-img check", MissingTools({"qemu-img"}))) {
    CommandResult qcheck = vhdx::test::Run("qemu-img check " + ShellQuote(disk_));
    EXPECT_EQ(qcheck.exit_code, 0) << qcheck.output;
  }
}

TEST_F(NbdkitTest, DifferencingChainReadsLikeConvert) {
  const std::string parents = dir_ + "/parents";
  fs::create_directories(parents);
  const std::string parent = dir_ + "/base.vhdx", child = dir_ + "/child.vhdx";
  ASSERT_EQ(Vhdx(fmt::format("create --block-size 1M {} 16M", ShellQuote(parent))).exit_code, 0);
  ASSERT_EQ(Vhdx(fmt::format("io -c 'write -P 0x11 0 4M' {}", ShellQuote(parent))).exit_code, 0);
  ASSERT_EQ(Vhdx(fmt::format("create -b {} {}", ShellQuote(parent), ShellQuote(child))).exit_code, 0);
  ASSERT_EQ(Vhdx(fmt::format("io -c 'write -P 0x22 1M 512k' -c 'write -P 0x33 8M 1M' {}", ShellQuote(child))).exit_code, 0);
  // Only --parent-dir finds the parent now.
  fs::rename(parent, parents + "/base.vhdx");

  CommandResult lost = Serve("file=" + ShellQuote(child), "nbdinfo \"$uri\"");
  EXPECT_NE(lost.exit_code, 0) << lost.output;

  const std::string copy = dir_ + "/copy.raw", ref = dir_ + "/ref.raw";
  CommandResult r = Serve("file=" + ShellQuote(child) + " parent-dir=" + ShellQuote(parents), "nbdcopy \"$uri\" " + copy);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  CommandResult c = Vhdx(fmt::format("convert --parent-dir {} -O raw {} {}", ShellQuote(parents), ShellQuote(child), ShellQuote(ref)));
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_EQ(Sha256OfFile(copy), Sha256OfFile(ref));
  std::vector<uint8_t> bytes = ReadWholeFile(copy);
  ASSERT_EQ(bytes.size(), 16 * kMiB);
  EXPECT_EQ(bytes[0], 0x11);             // the parent's
  EXPECT_EQ(bytes[kMiB], 0x22);          // the child's over the parent's
  EXPECT_EQ(bytes[kMiB + 512 * 1024], 0x11);
  EXPECT_EQ(bytes[8 * kMiB], 0x33);
  EXPECT_EQ(bytes[12 * kMiB], 0);
  // Served read-write and closed: the child is still a clean, valid
  // image of its parent.
  EXPECT_EQ(Vhdx("check " + ShellQuote(child) + " --parent-dir " + ShellQuote(parents)).exit_code, 0);
}

TEST_F(NbdkitTest, ReadonlyRefusesWrites) {
  VHDX_REQUIRE(MissingTools({"qemu-io"}));
  MakeDisk();
  const std::string before = Sha256OfFile(disk_);
  for (const std::string& how : {std::string("readonly=true"), std::string("-r")}) {
    SCOPED_TRACE(how);
    const bool flag = how == "-r";
    const std::string params = "file=" + ShellQuote(disk_) + (flag ? "" : " " + how);
    const std::string flags = flag ? how : "";
    CommandResult info = Serve(params, "nbdinfo --json \"$uri\"", flags);
    ASSERT_EQ(info.exit_code, 0) << info.output;
    EXPECT_EQ(ParseJson(info.output)["exports"][0]["is_read_only"], true) << info.output;
    CommandResult w = Serve(params, "qemu-io -f raw -c 'write -P 0x5a 0 64k' \"$uri\"", flags);
    // qemu opens a read-only export read-write with EACCES.
    EXPECT_NE(w.exit_code, 0) << w.output;
    EXPECT_NE(w.output.find("Permission denied"), std::string::npos) << w.output;
    // Reads still work.
    CommandResult rd = Serve(params, "qemu-io -r -f raw -c 'read -P 0x11 2M 1M' \"$uri\"", flags);
    EXPECT_EQ(rd.exit_code, 0) << rd.output;
    EXPECT_EQ(rd.output.find("Pattern verification failed"), std::string::npos) << rd.output;
    EXPECT_EQ(Sha256OfFile(disk_), before);
  }
}

// The plugin's image is locked as QEMU locks its images (the library's
// locks): an image qemu-nbd serves read-write is not served at all, one it
// serves read-only is served read-only only; and while nbdkit serves an
// image read-write, qemu-img, qemu-io and vhdx keep off it unless told to
// share (-U).
TEST_F(NbdkitTest, ImageLocksKeepQemuAndThePluginApart) {
  VHDX_REQUIRE(MissingTools({"qemu-nbd", "qemu-img"}));
  MakeDisk();
  const std::string busy = "disk.vhdx: in use: another process has it open";
  for (bool qemu_read_only : {false, true}) {
    SCOPED_TRACE(qemu_read_only ? "qemu-nbd -r" : "qemu-nbd read-write");
    QemuNbdServer qemu(disk_, qemu_read_only);
    ASSERT_EQ(qemu.started().exit_code, 0) << qemu.started().output;
    CommandResult rw = Serve("file=" + ShellQuote(disk_), "nbdinfo --size \"$uri\"");
    CommandResult ro = Serve("file=" + ShellQuote(disk_), "nbdinfo --size \"$uri\"", "-r");
    qemu.Stop();
    EXPECT_EQ(rw.exit_code, 1) << rw.output;
    EXPECT_NE(rw.output.find(busy), std::string::npos) << rw.output;
    if (qemu_read_only) {
      EXPECT_EQ(ro.exit_code, 0) << ro.output;
      EXPECT_NE(ro.output.find(std::to_string(kDiskSize)), std::string::npos) << ro.output;
    } else {
      EXPECT_EQ(ro.exit_code, 1) << ro.output;
      EXPECT_NE(ro.output.find(busy + " for writing"), std::string::npos) << ro.output;
    }
  }
  const std::string before = Sha256OfFile(disk_);
  // While served read-write: the peers are refused, -U reads.
  CommandResult r = Serve("file=" + ShellQuote(disk_),
                          fmt::format("nbdinfo --size \"$uri\"; "
                                      "qemu-img info -f vhdx {0}; echo qemu-img=$?; "
                                      "qemu-img info -U -f vhdx {0} >/dev/null; echo qemu-img-U=$?; "
                                      "qemu-io -f vhdx -c 'write 0 4k' {0}; echo qemu-io=$?; "
                                      "{1} io -c 'write 0 4k' {0}; echo vhdx-io=$?; "
                                      "{1} map {0}; echo vhdx-map=$?; "
                                      "{1} map -U {0} >/dev/null; echo vhdx-map-U=$?",
                                      ShellQuote(disk_), CliPath()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* want : {"qemu-img=1", "qemu-img-U=0", "qemu-io=1", "vhdx-io=1", "vhdx-map=1", "vhdx-map-U=0",
                           "Failed to get shared \"write\" lock", "Failed to get \"write\" lock",
                           "disk.vhdx: in use: another process has it open for writing"})
    EXPECT_NE(r.output.find(want), std::string::npos) << want << "\n" << r.output;
  EXPECT_EQ(Sha256OfFile(disk_), before) << "a refused writer changed the image";
  // nbdkit has exited: the image is free again.
  CommandResult free_again = vhdx::test::Run("qemu-io -f vhdx -c 'write 0 4k' " + ShellQuote(disk_));
  EXPECT_EQ(free_again.exit_code, 0) << free_again.output;
}

TEST_F(NbdkitTest, BadParametersFailWithAMessage) {
  MakeDisk();
  struct Case {
    std::string params, message;
  };
  for (const Case& c : std::vector<Case>{
           {"readonly=true", "you must supply the file="},
           {"file=" + ShellQuote(dir_ + "/missing.vhdx"), "missing.vhdx"},
           {"file=" + ShellQuote(disk_) + " readonly=perhaps", "perhaps"},
           {"file=" + ShellQuote(disk_) + " colour=blue", "unknown parameter 'colour'"},
       }) {
    // Under ASan (runtime preloaded into nbdkit), nbdkit exiting after this
    // error deadlocks in p11-kit's exit handler (freelocale waits for the
    // setlocale lock): not our code, and the Release run covers the case.
    if (kSanitized && c.message == "missing.vhdx") continue;
    CommandResult r = Serve(c.params, "nbdinfo \"$uri\"");
    EXPECT_EQ(r.exit_code, 1) << c.params << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.params << "\n" << r.output;
  }
  // Not a VHDX file, or a child whose parent is missing: nbdkit refuses to
  // start (the image is opened once before serving), with the library's
  // message naming the file.
  const std::string junk = dir_ + "/junk.vhdx";
  WriteWholeFile(junk, std::vector<uint8_t>(1 << 20, 0x41));
  CommandResult r = Serve("file=" + ShellQuote(junk), "echo served");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.find("served"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("junk.vhdx: file type identifier at offset 0x0"), std::string::npos) << r.output;
}

// The corpus image whose log QEMU left unreplayed: served read-only it reads
// as the replayed content (the manifest's hash), and the file is not
// touched.
TEST_F(NbdkitTest, DirtyLogCorpusImageServedReadOnly) {
  VHDX_REQUIRE(MissingCorpus());
  auto corpus = CorpusDir();
  const std::string name = "iotest-dirtylog-10G-4M.vhdx.bz2";
  // Its row in the manifest: "| NAME | ... | CONTENT SHA-256 |".
  std::ifstream manifest(*corpus + "/MANIFEST.md");
  std::string line, content_sha;
  while (std::getline(manifest, line)) {
    if (line.rfind("| " + name + " |", 0) != 0) continue;
    const size_t end = line.find_last_not_of(" |");
    if (end != std::string::npos && end >= 63) content_sha = line.substr(end - 63, 64);
  }
  ASSERT_EQ(content_sha.size(), 64u) << "no row for " << name << " in MANIFEST.md";
  ASSERT_EQ(content_sha.find_first_not_of("0123456789abcdef"), std::string::npos) << content_sha;

  // A private copy: the decompressed corpus image is shared by this process.
  const std::string image = dir_ + "/dirty.vhdx";
  fs::copy_file(DecompressCorpusImage(name), image);
  const std::string before = Sha256OfFile(image);
  const std::string copy = dir_ + "/copy.raw";
  CommandResult r = Serve("file=" + ShellQuote(image), "nbdinfo --json \"$uri\" && nbdcopy \"$uri\" " + copy, "-r");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fs::file_size(copy), 10ull << 30);
  EXPECT_EQ(SparseSha256(copy), content_sha);
  EXPECT_EQ(Sha256OfFile(image), before);
  // Still dirty: a read-only open replays in memory only.
  CommandResult info = VhdxStdout("info --output=json " + ShellQuote(image));
  EXPECT_EQ(ParseJson(info.output)["dirty"], true) << info.output;
}

// `cmake --install` (into a staging DESTDIR here) puts the CLI under the
// prefix and the plugin in the folder nbdkit searches for plugins by name,
// so after a real install `nbdkit vhdx file=...` works.
TEST_F(NbdkitTest, InstallPutsThePluginWhereNbdkitLooks) {
  VHDX_REQUIRE(MissingTools({"cmake"}));
  MakeDisk();
  const std::string build = fs::path(CliPath()).parent_path().parent_path().string();
  const std::string dest = dir_ + "/dest";
  CommandResult install = vhdx::test::Run(fmt::format("DESTDIR={} cmake --install {} --prefix /opt/vhdx-test",
                                                      ShellQuote(dest), ShellQuote(build)));
  ASSERT_EQ(install.exit_code, 0) << install.output;
  // The plugin folder nbdkit was built with.
  CommandResult config = vhdx::test::Run("nbdkit --dump-config");
  ASSERT_EQ(config.exit_code, 0) << config.output;
  const size_t at = config.output.find("plugindir=");
  ASSERT_NE(at, std::string::npos) << config.output;
  const std::string plugindir = config.output.substr(at + 10, config.output.find('\n', at) - at - 10);
  const std::string plugin = dest + plugindir + "/nbdkit-vhdx-plugin.so";
  ASSERT_TRUE(fs::exists(plugin)) << install.output;
  const std::string cli = dest + "/opt/vhdx-test/bin/vhdx";
  CommandResult version = vhdx::test::Run(ShellQuote(cli) + " --version");
  EXPECT_EQ(version.exit_code, 0) << version.output;
  EXPECT_EQ(version.output, vhdx::test::Run(CliPath() + " --version").output);
  // The installed plugin serves the disk.
  std::string prefix;
  if (kSanitized) prefix = "LD_PRELOAD=\"$(gcc -print-file-name=libasan.so)\" ASAN_OPTIONS=detect_leaks=0 ";
  CommandResult dump = vhdx::test::Run(prefix + "nbdkit --dump-plugin " + ShellQuote(plugin));
  EXPECT_EQ(dump.exit_code, 0) << dump.output;
  EXPECT_NE(dump.output.find("name=vhdx"), std::string::npos) << dump.output;
  EXPECT_NE(dump.output.find("thread_model=parallel"), std::string::npos) << dump.output;
  const std::string copy = dir_ + "/copy.raw";
  CommandResult r = vhdx::test::Run(prefix + "timeout -k 5 120 nbdkit -r -U - " + ShellQuote(plugin) + " file=" +
                                    ShellQuote(disk_) + " --run " + ShellQuote("unset LD_PRELOAD; nbdcopy \"$uri\" " + copy));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<uint8_t> bytes = ReadWholeFile(copy);
  ASSERT_EQ(bytes.size(), kDiskSize);
  EXPECT_EQ(bytes[2 * kMiB], 0x11);
  EXPECT_EQ(bytes[42 * kMiB], 0x33);
}

}  // namespace
}  // namespace vhdx::test
