// `vhdx io` against `qemu-io -f vhdx`: the same -c scripts run on copies of
// the same image must print the same lines (timings aside), fail the same
// commands with the same messages, and leave the same virtual disk behind.
// Images written by one tool are then modified by the other and read back
// by both.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
// GCC 12 reports a false -Wmaybe-uninitialized inside std::regex's
// std::function members when built with -O2 and ASan (GCC bug 105562).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#pragma GCC diagnostic pop
#include <sstream>
#include <string>
#include <vector>

#include "support/test_util.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

constexpr uint64_t kDiskSize = 64ull << 20;


std::string ReadText(const std::string& path) {
  std::vector<uint8_t> bytes = ReadWholeFile(path);
  return std::string(bytes.begin(), bytes.end());
}

// The statistics lines carry timings; everything else qemu-io prints is
// deterministic.
std::string NormaliseTimings(const std::string& out) {
  static const std::regex stats(R"(^(.+), (\d+) ops; .*$)");
  static const std::regex machine(R"(^(\d+),(\d+),\d+:\d\d:\d\d\.\d\d,[^,]+,[^,]+$)");
  std::string result;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t nl = out.find('\n', pos);
    if (nl == std::string::npos) nl = out.size();
    std::string line = out.substr(pos, nl - pos);
    line = std::regex_replace(line, stats, "$1, $2 ops; <timing>");
    line = std::regex_replace(line, machine, "$1,$2,<timing>");
    result += line + "\n";
    pos = nl + 1;
  }
  return result;
}

struct ToolRun {
  int exit_code = -1;
  std::string out;  // stdout, as printed
  std::string err;  // stderr
};

enum class Tool { kQemuIo, kVhdxIo };

const char* ToolName(Tool t) { return t == Tool::kQemuIo ? "qemu-io" : "vhdx io"; }

ToolRun RunScript(Tool tool, const std::string& image, const std::vector<std::string>& script,
                  bool read_only = false) {
  std::string command = tool == Tool::kQemuIo ? "qemu-io -f vhdx" : CliPath() + " io";
  if (read_only) command += " -r";
  for (const std::string& c : script) command += fmt::format(" -c {}", ShellQuote(c));
  command += fmt::format(" {}", ShellQuote(image));
  std::string out_file = ScratchPath("io-stdout.txt");
  std::string err_file = ScratchPath("io-stderr.txt");
  CommandResult r = vhdx::test::Run(fmt::format("{{ {} >{} 2>{}; }}", command, ShellQuote(out_file), ShellQuote(err_file)));
  ToolRun t;
  t.exit_code = r.exit_code;
  t.out = ReadText(out_file);
  t.err = ReadText(err_file);
  return t;
}

// SHA-256 of the virtual disk as qemu-img reads it.
std::string QemuDiskDigest(const std::string& image) {
  std::string raw = image + ".raw";
  CommandResult r = vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw {} {}", ShellQuote(image), ShellQuote(raw)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::string digest = Sha256OfFile(raw);
  std::filesystem::remove(raw);
  return digest;
}

// SHA-256 of the virtual disk as libvhdx reads it.
std::string LibraryDiskDigest(const std::string& image) {
  auto opened = Image::Open(image);
  EXPECT_TRUE(opened.ok()) << opened.status().message();
  if (!opened.ok()) return "";
  return Sha256OfImage(**opened);
}

struct BaseImage {
  const char* name;
  const char* create;  // {cli} and {path} are substituted
};

void PrintTo(const BaseImage& b, std::ostream* os) { *os << b.name; }

class IoInteropTest : public ::testing::TestWithParam<BaseImage> {
 protected:
  void SetUp() override {
    VHDX_REQUIRE(MissingTools({"qemu-io", "qemu-img"}));
    base_ = ScratchPath(std::string("io-base-") + GetParam().name + ".vhdx");
    std::filesystem::remove(base_);
    CommandResult r = vhdx::test::Run(fmt::format(fmt::runtime(GetParam().create), fmt::arg("cli", CliPath()),
                                      fmt::arg("path", ShellQuote(base_))));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  // A fresh copy of the base image.
  std::string Copy(const std::string& leaf) {
    std::string path = ScratchPath(std::string("io-") + GetParam().name + "-" + leaf + ".vhdx");
    std::filesystem::copy_file(base_, path, std::filesystem::copy_options::overwrite_existing);
    return path;
  }

  // Runs `script` through both tools, each on its own copy, and checks
  // that they print the same and end with the same exit status. Returns the
  // two images (qemu-io's, ours).
  std::pair<std::string, std::string> RunBoth(const std::string& leaf, const std::vector<std::string>& script,
                                              int expected_exit, ToolRun* qemu_run = nullptr,
                                              ToolRun* our_run = nullptr) {
    std::string qemu_image = Copy(leaf + "-qemu");
    std::string our_image = Copy(leaf + "-ours");
    ToolRun q = RunScript(Tool::kQemuIo, qemu_image, script);
    ToolRun v = RunScript(Tool::kVhdxIo, our_image, script);
    EXPECT_EQ(q.exit_code, expected_exit) << q.out << q.err;
    EXPECT_EQ(v.exit_code, expected_exit) << v.out << v.err;
    EXPECT_EQ(NormaliseTimings(v.out), NormaliseTimings(q.out)) << "stderr of vhdx io:\n" << v.err;
    if (qemu_run) *qemu_run = q;
    if (our_run) *our_run = v;
    return {qemu_image, our_image};
  }

  // Both images hold the same virtual disk, read by qemu-img and by us, and
  // both pass qemu-img check and vhdx check.
  void ExpectSameDisk(const std::string& expected, const std::string& actual) {
    std::string qemu_expected = QemuDiskDigest(expected);
    EXPECT_EQ(QemuDiskDigest(actual), qemu_expected) << actual << " differs from " << expected;
    EXPECT_EQ(LibraryDiskDigest(actual), qemu_expected) << actual << " read by libvhdx";
    CommandResult r = vhdx::test::Run(fmt::format("qemu-img compare -f vhdx -F vhdx {} {}", ShellQuote(expected), ShellQuote(actual)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    r = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(actual));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    r = vhdx::test::Run(fmt::format("{} check {}", CliPath(), ShellQuote(actual)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }

  std::string base_;
};

// Pattern writes at sector-aligned and unaligned offsets, across block
// boundaries of 1, 2, 8 and 32 MiB, the default pattern, write -z with and
// without -u, qemu-io's number syntax, reads that verify and dump.
TEST_P(IoInteropTest, WritesPrintAndStoreWhatQemuIoDoes) {
  std::vector<std::string> script = {
      "write -P 0xab 0 4k",
      "write -P 0x11 100 512",      // unaligned inside a sector
      "write -P 0x22 1000 3",
      "write 2M 64k",               // qemu-io's default pattern, 0xcd
      "write -P 0x33 1048000 2000",  // across 1 MiB
      "write -P 0x44 8388000 1000",  // across 8 MiB
      "write -P 0x55 33554000 1000",  // across 32 MiB
      "write -P 0x66 0x3fff000 4k",  // the last 4 KiB of the disk
      "write -P 0x77 20M 3M",
      "write -z 4k 1k",
      "write -z 21M 100",
      "write -z -u 20M 1M",
      "write -P 0x88 40M 1.5k",
      "write -P 012 41m 0x200",     // an octal pattern, a lower-case suffix
      "write -z -u 32M 16M",
      "write -P 0x99 63M 1M",
      "write -f -P 0xee 50M 4k",
      "read -P 0xab 0 100",
      "read -P 0x11 100 512",
      "read -v 990 48",
      "read -v 1048560 32",
      "read -P 0xcd 2M 64k",
      "read -P 0 20M 1M",
      "read -P 0 21M 100",
      "read -P 0x77 22020196 2097052",  // 21M+100 .. 23M
      "read -P 0 32M 16M",
      "flush",
      "read -P 0x99 63M 1M",
      "read -q -P 0xee 50M 4k",
      "write -C -P 0x12 60M 512",
      "read -C 60M 512",
  };
  ToolRun q, v;
  auto [qemu_image, our_image] = RunBoth("writes", script, 0, &q, &v);
  ExpectSameDisk(qemu_image, our_image);
  // The timing lines themselves have qemu-io's shape.
  static const std::regex stats(
      R"(^\d+(\.\d+)? (bytes|KiB|MiB|GiB), 1 ops; \d\d\.\d\d sec \([0-9.]+ (bytes|KiB|MiB|GiB|TiB)/sec and \d+\.\d{4} ops/sec\)$)");
  int stats_lines = 0;
  for (const std::string* out : {&q.out, &v.out}) {
    std::istringstream lines(*out);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.find(" ops; ") == std::string::npos) continue;
      ++stats_lines;
      EXPECT_TRUE(std::regex_match(line, stats)) << line;
    }
  }
  EXPECT_EQ(stats_lines, 2 * 27);
  EXPECT_NE(v.out.find("000003de:  ab ab ab ab ab ab ab ab ab ab 22 22 22 ab ab ab  ................\n"),
            std::string::npos)
      << v.out;
}

// Failing commands: a pattern mismatch, requests past the end, syntax and
// number errors. Each fails as in qemu-io, the script goes on, and the exit
// status is 1.
TEST_P(IoInteropTest, FailuresMatchQemuIoAndTheScriptGoesOn) {
  std::vector<std::string> script = {
      "write -P 0x5a 0 64k",
      "read -P 0x12 0 4k",             // mismatch from the first byte
      "read -P 0x5a -s 512 -l 1k 0 4k",  // a verified sub-range: passes
      "read -P 0x5a 32k 64k",          // mismatch half way
      "write -P 1 64M 1",              // past the end
      "write -P 1 0x3ffff00 512",      // straddles the end
      "read 63M 2M",
      "discard 64M 512",
      "write -z 63M 2M",
      "read 65M 0",
      "read 0 3G",                     // longer than a request may be
      "bogus 1 2",
      "read 0",
      "read -x 0 1",
      "read abc 512",
      "read 0 1.5",                    // a fraction needs a suffix
      "write -P 256 0 1",
      "write -u 0 512",
      "write -z -P 1 0 512",
      "flush 1",
      "write -P 0x5b 64k 512",         // still runs
      "read -P 0x5b 64k 512",
  };
  ToolRun q, v;
  auto [qemu_image, our_image] = RunBoth("failures", script, 1, &q, &v);
  ExpectSameDisk(qemu_image, our_image);
  for (const char* expected : {"Pattern verification failed at offset 0, 4096 bytes\n",
                               "Pattern verification failed at offset 32768, 65536 bytes\n",
                               "write failed: Input/output error\n", "read failed: Input/output error\n",
                               "discard failed: Input/output error\n",
                               "length cannot exceed 2147483136, given 3G\n",
                               "read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of "
                               "bytes at a specified offset\n",
                               "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- abc\n",
                               "256 is not a valid pattern byte\n", "-u requires -z to be specified\n"}) {
    EXPECT_NE(v.out.find(expected), std::string::npos) << expected << " missing in\n" << v.out;
  }
  // The messages qemu-io prints on stderr, ours too.
  for (const char* expected : {"command \"bogus\" not found", "bad argument count 1 to read, expected at least 2 arguments\n",
                               "read: invalid option -- 'x'\n", "bad argument count 1 to flush, expected 0 arguments\n"}) {
    EXPECT_NE(q.err.find(expected), std::string::npos) << expected << " missing in qemu-io's\n" << q.err;
    EXPECT_NE(v.err.find(expected), std::string::npos) << expected << " missing in\n" << v.err;
  }
}

// qemu-io's numbers: suffixes in either case, fractions with a suffix
// (rounded to the nearest byte), 0x hex, decimal with leading zeros; octal
// and hex pattern bytes; options after the operands (getopt permutes).
TEST_P(IoInteropTest, NumbersParseAsInQemuIo) {
  std::vector<std::string> script;
  for (const char* n : {"0x10", "0X10", "0x1k", "1.5k", "0.1k", "0.3K", "1.1m", "1.k", "1b", "+5", "010", "0.00048828125k",
                        "0.00048828124k", "1.0", "9223372036854775807", "1e", "1P", "7E", "8E",
                        "18446744073709551616", "1.5", ".5k", "0x1.8k", "0x", "00x10", "5kk", "1e3", "1.5B",
                        "0.5e1k", "0b1"}) {
    script.push_back(fmt::format("read {} 0", n));
  }
  script.push_back("write -P 0x0A 0 1");
  script.push_back("write -P 012 1 1");
  script.push_back("write -P 10 2 1");
  script.push_back("read 0 3 -v");
  script.push_back("read -P 0x0a 0 3");
  script.push_back("write -P 1 -1 1");  // -1 is an option to getopt
  script.push_back("r 0 1");
  script.push_back("w -P 3 1.5k 0x1");
  script.push_back("read -P 3 1536 1");
  auto [qemu_image, our_image] = RunBoth("numbers", script, 1);
  ExpectSameDisk(qemu_image, our_image);
}

// qemu's VHDX driver ignores discard (the data stays); vhdx io releases the
// space and the range reads as zeros. Both print the same, and our disk is
// qemu-io's with the discarded ranges zeroed.
TEST_P(IoInteropTest, DiscardReadsAsZerosAndPrintsAsQemuIo) {
  std::vector<std::pair<uint64_t, uint64_t>> ranges = {
      {1ull << 20, 1ull << 20}, {8ull << 20, 8ull << 20}, {32ull << 20, 32ull << 20}, {100, 1000}, {3000000, 12345}};
  std::vector<std::string> script = {"write -P 0x3c 0 40M", "write -P 0x3d 60M 4M"};
  for (auto [offset, length] : ranges) script.push_back(fmt::format("discard {} {}", offset, length));
  script.push_back("discard -q 0 0");
  auto [qemu_image, our_image] = RunBoth("discard", script, 0);

  std::vector<std::string> zero_qemu, check_zero;
  for (auto [offset, length] : ranges) {
    zero_qemu.push_back(fmt::format("write -z {} {}", offset, length));
    check_zero.push_back(fmt::format("read -P 0 {} {}", offset, length));
  }
  // Our image reads as zeros there, through qemu-io too.
  ToolRun r = RunScript(Tool::kQemuIo, our_image, check_zero, true);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.find("Pattern verification failed"), std::string::npos) << r.out;
  ToolRun z = RunScript(Tool::kQemuIo, qemu_image, zero_qemu);
  ASSERT_EQ(z.exit_code, 0) << z.out << z.err;
  ExpectSameDisk(qemu_image, our_image);
}

// An image written by qemu-io, then modified by vhdx io, and the reverse:
// both tools read both images identically, and both equal the image that
// qemu-io wrote alone.
TEST_P(IoInteropTest, CrossWrittenImagesReadTheSameInBothTools) {
  std::vector<std::string> first = {"write -P 0xa1 0 3M", "write -P 0xa2 9M 100k", "write -P 0xa3 33M 4k",
                                    "write -P 0xa4 60M 4M"};
  std::vector<std::string> second = {"write -P 0xb1 1M 1M", "write -P 0xb2 9488384 1000",  // 9M + 50k
                                     "write -z 2M 512", "write -z -u 60M 2M", "write -P 0xb3 33M 100",
                                     "write -P 0xb4 5M 7"};
  std::vector<std::string> reads = {
      "read -P 0xa1 0 1M",       "read -P 0xb1 1M 1M",      "read -P 0 2M 512",
      "read -P 0xa1 2097664 1048064",  // 2M+512 .. 3M
      "read -P 0xa2 9M 51200",   "read -P 0xb2 9488384 1000", "read -P 0xa2 9489384 50200",
      "read -P 0xb3 33M 100",    "read -P 0xa3 34603108 3996", "read -P 0 60M 2M",
      "read -P 0xa4 62M 2M",     "read -v 9488374 20",       "read -v 5M 16",
      "read -P 0 3M 2M",
  };
  std::vector<std::string> both = first;
  both.insert(both.end(), second.begin(), second.end());
  std::string reference = Copy("cross-reference");
  ToolRun r = RunScript(Tool::kQemuIo, reference, both);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ToolRun expected_reads = RunScript(Tool::kQemuIo, reference, reads, true);
  ASSERT_EQ(expected_reads.exit_code, 0) << expected_reads.out << expected_reads.err;

  for (Tool first_tool : {Tool::kQemuIo, Tool::kVhdxIo}) {
    Tool second_tool = first_tool == Tool::kQemuIo ? Tool::kVhdxIo : Tool::kQemuIo;
    SCOPED_TRACE(fmt::format("written by {} then by {}", ToolName(first_tool), ToolName(second_tool)));
    std::string image = Copy(first_tool == Tool::kQemuIo ? "cross-qemu-first" : "cross-ours-first");
    r = RunScript(first_tool, image, first);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    r = RunScript(second_tool, image, second);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    for (Tool reader : {Tool::kQemuIo, Tool::kVhdxIo}) {
      ToolRun reads_run = RunScript(reader, image, reads, true);
      EXPECT_EQ(reads_run.exit_code, 0) << ToolName(reader) << "\n" << reads_run.out << reads_run.err;
      EXPECT_EQ(NormaliseTimings(reads_run.out), NormaliseTimings(expected_reads.out)) << ToolName(reader);
    }
    ExpectSameDisk(reference, image);
  }
}

// -r: reads work, every write fails, the file is not touched.
TEST_P(IoInteropTest, ReadOnlyRefusesWritesAndLeavesTheFileAlone) {
  std::string image = Copy("readonly");
  ToolRun w = RunScript(Tool::kVhdxIo, image, {"write -P 0x42 0 8k"});
  ASSERT_EQ(w.exit_code, 0) << w.out << w.err;
  std::string qemu_copy = Copy("readonly-qemu");
  std::filesystem::copy_file(image, qemu_copy, std::filesystem::copy_options::overwrite_existing);
  std::string before = Sha256OfFile(image);

  std::vector<std::string> script = {"read -P 0x42 0 8k", "write -P 1 0 512", "discard 0 4k", "write -z 0 4k",
                                     "flush", "read -v 8180 16"};
  ToolRun q = RunScript(Tool::kQemuIo, qemu_copy, script, true);
  ToolRun v = RunScript(Tool::kVhdxIo, image, script, true);
  EXPECT_EQ(q.exit_code, 1);
  EXPECT_EQ(v.exit_code, 1) << v.out << v.err;
  EXPECT_EQ(NormaliseTimings(v.out), NormaliseTimings(q.out));
  EXPECT_EQ(Sha256OfFile(image), before) << "a read-only run changed the file";
  for (const char* expected : {"write: the image is open read-only (-r)", "discard: the image is open read-only (-r)"})
    EXPECT_NE(v.err.find(expected), std::string::npos) << v.err;
  // Only reads: exit 0, still untouched.
  v = RunScript(Tool::kVhdxIo, image, {"read -P 0x42 0 8k", "flush", "read -P 0 8k 8k"}, true);
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_EQ(Sha256OfFile(image), before);
}

INSTANTIATE_TEST_SUITE_P(
    Images, IoInteropTest,
    ::testing::Values(BaseImage{"QemuImgDefault", "qemu-img create -q -f vhdx {path} 64M"},
                      BaseImage{"QemuImg1M", "qemu-img create -q -f vhdx -o block_size=1M {path} 64M"},
                      BaseImage{"VhdxCreate32M", "{cli} create {path} 64M"},
                      BaseImage{"VhdxCreate1M", "{cli} create --block-size 1M {path} 64M"},
                      BaseImage{"VhdxCreateFixed2M", "{cli} create --type fixed --block-size 2M {path} 64M"}),
    [](const ::testing::TestParamInfo<BaseImage>& i) { return std::string(i.param.name); });

// Errors of vhdx io itself, which need no peer: an image that cannot be
// opened is one line and exit 1; a bad command line is a usage error, 2.
TEST(IoCli, OpenErrorsAndUsage) {
  std::string missing = ScratchPath("io-missing.vhdx");
  std::filesystem::remove(missing);
  CommandResult r = vhdx::test::Run(fmt::format("{} io -c 'read 0 1' {}", CliPath(), ShellQuote(missing)));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output, "vhdx: " + missing + ": cannot open: No such file or directory\n");

  std::string junk = ScratchPath("io-junk.img");
  WriteWholeFile(junk, std::vector<uint8_t>(1 << 20, 0));
  std::string before = Sha256OfFile(junk);
  r = vhdx::test::Run(fmt::format("{} io -c 'write -P 1 0 1' {}", CliPath(), ShellQuote(junk)));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output.rfind("vhdx: " + junk + ": ", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_EQ(Sha256OfFile(junk), before);

  std::string image = ScratchPath("io-usage.vhdx");
  std::filesystem::remove(image);
  ASSERT_EQ(vhdx::test::Run(fmt::format("{} create {} 16M", CliPath(), ShellQuote(image))).exit_code, 0);
  EXPECT_EQ(vhdx::test::Run(fmt::format("{} io {}", CliPath(), ShellQuote(image))).exit_code, 2);          // no -c
  EXPECT_EQ(vhdx::test::Run(fmt::format("{} io -c 'read 0 1'", CliPath())).exit_code, 2);       // no IMAGE
  EXPECT_EQ(vhdx::test::Run(fmt::format("{} io --bogus -c 'read 0 1' {}", CliPath(), ShellQuote(image))).exit_code, 2);
  // IMAGE may come before, between or after the -c options.
  r = vhdx::test::Run(fmt::format("{} io -c 'write -P 0x61 0 3' {} -c 'read -v 0 3'", CliPath(), ShellQuote(image)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("00000000:  61 61 61  aaa\n"), std::string::npos) << r.output;
  // quit ends the script.
  r = vhdx::test::Run(fmt::format("{} io -c quit -c 'write -P 0x62 0 3' {}", CliPath(), ShellQuote(image)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = vhdx::test::Run(fmt::format("{} io -r -c 'read -P 0x61 0 3' {}", CliPath(), ShellQuote(image)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

}  // namespace
}  // namespace vhdx::test
