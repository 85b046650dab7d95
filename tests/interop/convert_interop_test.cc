// Images made by `vhdx convert -O vhdx` are accepted by the peers: qemu-img
// checks them and finds them identical to the raw source, libvhdi opens them
// and (4096-byte sectors, which QEMU cannot open) reads the same bytes
// through vhdimount. The corpus images convert to VHDX with their manifest
// content. The CLI's options and errors behave as documented.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "disk_checks.h"
#include "support/test_util.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kMiB = 1 << 20;


std::vector<uint8_t> Pattern(size_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    for (size_t k = 0; k < 8 && i + k < n; ++k) out[i + k] = static_cast<uint8_t>(v >> (8 * k));
  }
  return out;
}

// The raw source of the scenarios, made once: 300 MiB + 1000 bytes (not a
// sector multiple), data runs of varied sizes across 1, 8, 32 and 256 MiB
// block edges, zeros written explicitly, holes elsewhere.
struct RawSource {
  std::string path;
  uint64_t size = 0;
  std::string padded_sha256;  // of the disk rounded up to 4096 bytes
};

const RawSource& Source() {
  static const RawSource* source = [] {
    auto* s = new RawSource;
    s->path = ScratchPath("convert-source.raw");
    s->size = 300 * kMiB + 1000;
    std::vector<uint8_t> model(s->size, 0);
    int fd = ::open(s->path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(s->size)), 0);
    struct Run {
      uint64_t offset, length;
      bool zero;
    };
    uint64_t seed = 1;
    for (const Run& r : {Run{0, 64 << 10, false}, Run{kMiB - 4096, 8192, false}, Run{8 * kMiB - 100, 5 * kMiB, false},
                         Run{32 * kMiB - 1, 2, false}, Run{40 * kMiB, 4 * kMiB, true}, Run{100 * kMiB + 512, 3, false},
                         Run{200 * kMiB, 7 * kMiB + 300, false}, Run{256 * kMiB - 3 * kMiB, 6 * kMiB, false},
                         Run{s->size - 1000, 1000, false}}) {
      std::vector<uint8_t> bytes = r.zero ? std::vector<uint8_t>(r.length, 0) : Pattern(r.length, seed++);
      EXPECT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(r.offset)),
                static_cast<ssize_t>(bytes.size()));
      std::copy(bytes.begin(), bytes.end(), model.begin() + static_cast<ptrdiff_t>(r.offset));
    }
    ::close(fd);
    model.resize((s->size + 4095) / 4096 * 4096, 0);
    s->padded_sha256 = Sha256Hex(model.data(), model.size());
    return s;
  }();
  return *source;
}

struct Scenario {
  const char* name;
  const char* type;
  uint32_t block_size;
};

class ConvertInteropTest : public ::testing::TestWithParam<Scenario> {
 protected:
  void SetUp() override {
    VHDX_REQUIRE(MissingTools({"qemu-img"}));
  }
};

TEST_P(ConvertInteropTest, QemuFindsItIdenticalToTheRawSourceAndLibvhdiOpensIt) {
  const Scenario& s = GetParam();
  const RawSource& src = Source();
  std::string dst = ScratchPath(std::string("converted-") + s.name + ".vhdx");
  CommandResult r = vhdx::test::Run(fmt::format("{} convert -O vhdx --type {} --block-size {} {} {} 2>&1", CliPath(),
                                                s.type, s.block_size, ShellQuote(src.path), ShellQuote(dst)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "");

  r = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(dst));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = vhdx::test::Run(fmt::format("qemu-img compare -f raw -F vhdx {} {}", ShellQuote(src.path), ShellQuote(dst)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Images are identical"), std::string::npos) << r.output;
  r = vhdx::test::Run("qemu-img info --output=json -f vhdx " + ShellQuote(dst));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto info = nlohmann::json::parse(r.output);
  const uint64_t virtual_size = (src.size + 511) / 512 * 512;  // rounded up to the sector, as qemu-img does
  EXPECT_EQ(info["virtual-size"], virtual_size);
  EXPECT_EQ(info["cluster-size"], s.block_size);

  struct stat st;
  ASSERT_EQ(::stat(dst.c_str(), &st), 0);
  const uint64_t allocated = static_cast<uint64_t>(st.st_blocks) * 512;
  if (std::string(s.type) == "fixed") {
    EXPECT_GE(allocated, static_cast<uint64_t>(st.st_size)) << "a fixed image is fully allocated";
  } else {
    // ~22 MiB of non-zero data: a dynamic image holds only the blocks it touches.
    EXPECT_LT(allocated, 22 * kMiB + 11 * uint64_t{s.block_size} + 8 * kMiB);
  }

  if (RunPart("vhdiinfo part", MissingTools({"vhdiinfo"}))) {
    r = vhdx::test::Run("vhdiinfo " + ShellQuote(dst));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(fmt::format("({} bytes)", virtual_size)), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(std::string("Disk type\t\t: ") + (s.type[0] == 'd' ? "Dynamic" : "Fixed")),
              std::string::npos)
        << r.output;
  }
  fs::remove(dst);
}

INSTANTIATE_TEST_SUITE_P(Targets, ConvertInteropTest,
                         ::testing::Values(Scenario{"Dynamic1M", "dynamic", 1u << 20},
                                           Scenario{"Dynamic8M", "dynamic", 8u << 20},
                                           Scenario{"Dynamic32M", "dynamic", 32u << 20},
                                           Scenario{"Dynamic256M", "dynamic", 256u << 20},
                                           Scenario{"Fixed1M", "fixed", 1u << 20},
                                           Scenario{"Fixed8M", "fixed", 8u << 20},
                                           Scenario{"Fixed32M", "fixed", 32u << 20},
                                           Scenario{"Fixed256M", "fixed", 256u << 20}),
                         [](const ::testing::TestParamInfo<Scenario>& i) { return std::string(i.param.name); });

// 4096-byte logical sectors: QEMU refuses them, libvhdi reads them.
TEST(ConvertInterop, FourKSectorTargetsReadIdenticallyThroughLibvhdi) {
  VHDX_REQUIRE(MissingTools({"vhdiinfo", "vhdimount"}));
  const RawSource& src = Source();
  const uint64_t virtual_size = (src.size + 4095) / 4096 * 4096;
  for (const char* args : {"--type dynamic --block-size 1M", "--type dynamic", "--type fixed --block-size 8M"}) {
    SCOPED_TRACE(args);
    std::string dst = ScratchPath("converted-4k.vhdx");
    fs::remove(dst);
    CommandResult r = vhdx::test::Run(fmt::format("{} convert -O vhdx --logical-sector-size 4096 {} {} {}", CliPath(),
                                                  args, ShellQuote(src.path), ShellQuote(dst)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::string unmountable = ExpectLibvhdiReads(dst, virtual_size, 4096, src.padded_sha256);
    VHDX_REQUIRE(unmountable);
    auto image = Image::Open(dst);
    ASSERT_TRUE(image.ok()) << image.status().message();
    EXPECT_EQ(Sha256OfImage(**image), src.padded_sha256);
    fs::remove(dst);
  }
}

// The corpus manifest's file, type and content hash columns.
struct CorpusEntry {
  std::string file, type, sha256;
};

std::vector<CorpusEntry> ReadManifest(const std::string& dir) {
  std::ifstream in(dir + "/MANIFEST.md");
  std::vector<CorpusEntry> entries;
  std::vector<std::string> header;
  std::string line;
  auto cells = [](const std::string& row) {
    std::vector<std::string> out;
    std::stringstream ss(row.substr(1));
    std::string cell;
    while (std::getline(ss, cell, '|')) {
      size_t a = cell.find_first_not_of(' '), b = cell.find_last_not_of(' ');
      out.push_back(a == std::string::npos ? "" : cell.substr(a, b - a + 1));
    }
    return out;
  };
  while (std::getline(in, line)) {
    if (!line.starts_with("|")) continue;
    std::vector<std::string> row = cells(line);
    if (header.empty()) {
      header = row;
      continue;
    }
    if (row.empty() || row[0].starts_with("---")) continue;
    auto column = [&](const std::string& name) -> std::string {
      for (size_t i = 0; i < header.size() && i < row.size(); ++i)
        if (header[i] == name) return row[i];
      return "";
    };
    entries.push_back({row[0], column("type"), column("content sha256")});
  }
  return entries;
}

TEST(ConvertInterop, CorpusImagesConvertToVhdxWithTheirManifestContent) {
  VHDX_REQUIRE(MissingCorpus());
  auto dir = CorpusDir();
  std::vector<CorpusEntry> entries = ReadManifest(*dir);
  ASSERT_FALSE(entries.empty()) << "MANIFEST.md lists no images";
  const bool qemu = RunPart("qemu-img check of each output", MissingTools({"qemu-img"}));
  for (const CorpusEntry& e : entries) {
    SCOPED_TRACE(e.file);
    ASSERT_EQ(e.sha256.size(), 64u) << "no content hash in the manifest";
    if (e.type == "differencing") continue;  // its content depends on a parent
    std::string path = DecompressCorpusImage(e.file);
    std::string before = Sha256OfFile(path);
    std::string dst = ScratchPath("corpus-converted.vhdx");
    CommandResult r = vhdx::test::Run(fmt::format("{} convert -O vhdx {} {}", CliPath(), ShellQuote(path), ShellQuote(dst)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto image = Image::Open(dst);
    ASSERT_TRUE(image.ok()) << image.status().message();
    EXPECT_EQ(Sha256OfImage(**image), e.sha256);
    EXPECT_EQ((*image)->info().type, DiskType::kDynamic);
    EXPECT_EQ(Sha256OfFile(path), before) << "the source was modified";
    if (qemu) {
      r = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(dst));
      EXPECT_EQ(r.exit_code, 0) << r.output;
    }
    fs::remove(dst);
  }
}

// Options and errors of the CLI, and the -O raw paths next to the new one.
TEST(ConvertInterop, CliOptionsAndErrors) {
  const RawSource& src = Source();
  std::string dst = ScratchPath("cli.vhdx");
  fs::remove(dst);
  // -p: qemu-img's progress line on stderr, nothing on stdout.
  CommandResult r = vhdx::test::Run(
      fmt::format("({} convert -p -t writeback -O vhdx {} {} 2>{})", CliPath(), ShellQuote(src.path), ShellQuote(dst),
                  ShellQuote(ScratchPath("cli-progress.txt"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "");
  std::vector<uint8_t> progress = ReadWholeFile(ScratchPath("cli-progress.txt"));
  std::string progress_text(progress.begin(), progress.end());
  EXPECT_NE(progress_text.find("(100.00/100%)"), std::string::npos) << progress_text;
  {
    auto image = Image::Open(dst);
    ASSERT_TRUE(image.ok()) << image.status().message();
    EXPECT_EQ((*image)->info().block_size, 32u << 20);  // the default
    EXPECT_EQ((*image)->info().logical_sector_size, 512u);
    EXPECT_EQ((*image)->info().type, DiskType::kDynamic);
  }

  // -O raw of the VHDX gives back the source, and `-f raw` copies a raw disk.
  std::string back = ScratchPath("cli-back.raw");
  r = vhdx::test::Run(fmt::format("{} convert -O raw {} {}", CliPath(), ShellQuote(dst), ShellQuote(back)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(vhdx::test::Run(fmt::format("cmp -n {} {} {}", src.size, ShellQuote(src.path), ShellQuote(back))).exit_code, 0);
  std::string copy = ScratchPath("cli-copy.raw");
  r = vhdx::test::Run(fmt::format("{} convert -f raw -O raw {} {}", CliPath(), ShellQuote(src.path), ShellQuote(copy)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(vhdx::test::Run(fmt::format("cmp {} {}", ShellQuote(src.path), ShellQuote(copy))).exit_code, 0);
  fs::remove(back);
  fs::remove(copy);

  const std::string dst_sha = Sha256OfFile(dst);
  const std::string src_sha = Sha256OfFile(src.path);
  struct Case {
    std::string args;
    int exit_code;
    std::string words;
  };
  std::string fresh = ScratchPath("cli-never.vhdx");
  for (const Case& c : std::vector<Case>{
           {"-O vhdx " + ShellQuote(ScratchPath("no-such.raw")) + " " + ShellQuote(fresh), 1, "No such file"},
           {"-O vhdx " + ShellQuote(src.path) + " " + ShellQuote(ScratchPath("no-dir/x.vhdx")), 1, "No such file"},
           {"-O vhdx " + ShellQuote(dst) + " " + ShellQuote(dst), 1, "source"},
           {"-O vhdx " + ShellQuote(src.path) + " " + ShellQuote(src.path), 1, "source"},
           {"-O vhdx --block-size 3M " + ShellQuote(src.path) + " " + ShellQuote(fresh), 1, "block size"},
           {"-O vhdx --block-size lots " + ShellQuote(src.path) + " " + ShellQuote(fresh), 1, "block size"},
           {"-O raw " + ShellQuote(src.path) + " " + ShellQuote(fresh), 1, "vhdxfile"},  // -O raw reads VHDX unless -f raw
           {"-O vhdx -f vhdx " + ShellQuote(src.path) + " " + ShellQuote(fresh), 1, "vhdxfile"},
           {"--type fixed " + ShellQuote(dst) + " " + ShellQuote(fresh), 2, "-O vhdx"},
           {"-O vhdx " + ShellQuote(src.path) + " -", 2, "stream"},
           {"-O qcow2 " + ShellQuote(src.path) + " " + ShellQuote(fresh), 2, ""},
           {"-O vhdx --logical-sector-size 1024 " + ShellQuote(src.path) + " " + ShellQuote(fresh), 2, ""},
       }) {
    r = vhdx::test::Run(fmt::format("{} convert {}", CliPath(), c.args));
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << ": " << r.output;
    if (!c.words.empty()) {
      EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << c.args << ": " << r.output;
      EXPECT_EQ(r.output.rfind("vhdx: ", 0), 0u) << r.output;
      EXPECT_NE(r.output.find(c.words), std::string::npos) << c.args << ": " << r.output;
    }
    EXPECT_FALSE(fs::exists(fresh)) << c.args;
  }
  EXPECT_EQ(Sha256OfFile(dst), dst_sha);
  EXPECT_EQ(Sha256OfFile(src.path), src_sha);
  fs::remove(dst);
}

}  // namespace
}  // namespace vhdx::test
