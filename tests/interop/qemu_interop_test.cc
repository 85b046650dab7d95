// Images written by QEMU 7.2 (qemu-img create + qemu-io writes at seeded
// random places) read back by us and compared with what QEMU reads, with
// what was written, and with the BAT QEMU wrote.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "disk_checks.h"
#include "support/test_util.h"
#include "util/coding.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

using nlohmann::json;

constexpr uint64_t kMiB = 1 << 20;

struct Scenario {
  const char* name;
  uint32_t block_size;
  uint64_t virtual_size;
  bool fixed;
  bool block_state_zero;  // QEMU's default: every new entry PAYLOAD_BLOCK_ZERO
  int random_writes;
  uint64_t max_write;  // bytes
  uint64_t seed;
};

void PrintTo(const Scenario& s, std::ostream* os) { *os << s.name; }

const Scenario kScenarios[] = {
    {"Dynamic1MPartialLastBlock", 1 * kMiB, 37 * kMiB + 512, false, true, 40, 192 << 10, 1},
    {"Dynamic2MNoZeroState", 2 * kMiB, 64 * kMiB, false, false, 30, 256 << 10, 2},
    {"Dynamic8MPartialLastBlock", 8 * kMiB, 3 * 8 * kMiB + 512, false, true, 20, 512 << 10, 3},
    {"Dynamic32M", 32 * kMiB, 4 * 32 * kMiB, false, true, 12, 1 * kMiB, 4},
    {"Dynamic256MPartialLastBlock", 256 * kMiB, 3 * 256 * kMiB + 512, false, true, 3, 64 << 10, 5},
    {"Fixed2MPartialLastBlock", 2 * kMiB, 16 * kMiB + 512, true, true, 10, 128 << 10, 6},
    {"Fixed1MNoZeroState", 1 * kMiB, 12 * kMiB, true, false, 10, 128 << 10, 7},
};

struct Write {
  uint64_t offset = 0;
  uint64_t length = 0;
  int pattern = 0;  // the byte written; 0 means `write -z`
  uint64_t end() const { return offset + length; }
};

// Random writes (every fifth a zero write), then the shapes random ones may
// miss: across a block boundary, the very last sector, a whole small block,
// and zeros over part of earlier data.
std::vector<Write> PlanWrites(const Scenario& s) {
  std::mt19937_64 rng(s.seed);
  auto uniform = [&](uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
  };
  const uint64_t size = s.virtual_size, block = s.block_size;
  std::vector<Write> w;
  for (int i = 0; i < s.random_writes; ++i) {
    uint64_t off = uniform(0, size - 1);
    uint64_t len = uniform(1, std::min(s.max_write, size - off));
    w.push_back({off, len, i % 5 == 4 ? 0 : static_cast<int>(uniform(1, 255))});
  }
  w.push_back({block - 1000, 5000, 0xA1});
  w.push_back({size - 512, 512, 0xB2});
  if (block <= 2 * kMiB) w.push_back({block, block, 0xC3});
  w.push_back({w[0].offset, w[0].length / 2 + 1, 0});
  return w;
}

// The disk QEMU should now hold: zeros overlaid with the writes in order.
DiskReader ModelReader(const std::vector<Write>& writes) {
  return [&writes](uint64_t offset, uint8_t* buf, size_t n) {
    std::fill(buf, buf + n, 0);
    for (const Write& w : writes) {
      uint64_t s = std::max(offset, w.offset), e = std::min(offset + n, w.end());
      if (s < e) std::fill(buf + (s - offset), buf + (e - offset), static_cast<uint8_t>(w.pattern));
    }
    return Status::Ok();
  };
}

std::string Quoted(const std::string& path) { return "'" + path + "'"; }

json ParseJson(const std::string& text) { return json::parse(text, nullptr, /*allow_exceptions=*/false); }

class QemuInteropTest : public ::testing::TestWithParam<Scenario> {
 protected:
  void SetUp() override {
    VHDX_REQUIRE(MissingTools({"qemu-img", "qemu-io"}));
    const Scenario& s = GetParam();
    path_ = ScratchPath(std::string(s.name) + ".vhdx");
    CommandResult r = vhdx::test::Run(
        fmt::format("qemu-img create -q -f vhdx -o subformat={},block_size={},block_state_zero={} {} {}",
                    s.fixed ? "fixed" : "dynamic", s.block_size, s.block_state_zero ? "on" : "off",
                    Quoted(path_), s.virtual_size));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    writes_ = PlanWrites(s);
    std::string cmd = "qemu-io -f vhdx";
    for (const Write& w : writes_)
      cmd += w.pattern ? fmt::format(" -c 'write -P {} {} {}'", w.pattern, w.offset, w.length)
                       : fmt::format(" -c 'write -z {} {}'", w.offset, w.length);
    r = vhdx::test::Run(cmd + " " + Quoted(path_));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    size_t wrote = 0;  // qemu-io reports each write on a "wrote N/N bytes at offset X" line
    std::istringstream lines(r.output);
    for (std::string line; std::getline(lines, line);) wrote += line.starts_with("wrote ");
    ASSERT_EQ(wrote, writes_.size()) << r.output;
    file_digest_ = SparseFileDigest(path_);
  }

  void ExpectFileUnchanged(const std::string& after) {
    EXPECT_EQ(SparseFileDigest(path_), file_digest_) << "the image was modified by " << after;
  }

  std::unique_ptr<Image> OpenImage() {
    auto image = Image::Open(path_);
    EXPECT_TRUE(image.ok()) << image.status().message();
    return image.ok() ? std::move(image).value() : nullptr;
  }

  // Blocks QEMU allocates: every block a write touches, zero writes
  // included (its VHDX driver has no write-zeroes, so the block layer writes
  // a buffer of zeros). A fixed file without ZERO entries has all its blocks.
  std::set<uint64_t> ExpectedDataBlocks() const {
    const Scenario& s = GetParam();
    std::set<uint64_t> blocks;
    uint64_t count = (s.virtual_size + s.block_size - 1) / s.block_size;
    if (s.fixed && !s.block_state_zero) {
      for (uint64_t b = 0; b < count; ++b) blocks.insert(b);
      return blocks;
    }
    for (const Write& w : writes_)
      for (uint64_t b = w.offset / s.block_size; b <= (w.end() - 1) / s.block_size; ++b) blocks.insert(b);
    return blocks;
  }

  std::string path_;
  std::string file_digest_;
  std::vector<Write> writes_;
};

TEST_P(QemuInteropTest, ConvertMatchesQemuAndWhatWasWritten) {
  const Scenario& s = GetParam();
  std::string ours = ScratchPath(std::string(s.name) + "-ours.raw");
  std::string theirs = ScratchPath(std::string(s.name) + "-qemu.raw");
  CommandResult r =
      vhdx::test::Run(fmt::format("{} convert -O raw {} {}", CliPath(), Quoted(path_), Quoted(ours)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw {} {}", Quoted(path_), Quoted(theirs)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = vhdx::test::Run(fmt::format("cmp {} {}", Quoted(ours), Quoted(theirs)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(CompareRawFile(ours, s.virtual_size, ModelReader(writes_)), "");

  auto image = OpenImage();
  ASSERT_TRUE(image);
  EXPECT_EQ(Sha256OfImage(*image), Sha256OfFile(theirs));
  ExpectFileUnchanged("vhdx convert and the library");
}

TEST_P(QemuInteropTest, MapDataIsExactlyTheWrittenBlocksAtTheirBatOffsets) {
  const Scenario& s = GetParam();
  CommandResult r = vhdx::test::Run(fmt::format("{} map --output=json {}", CliPath(), Quoted(path_)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string problem;
  auto ranges = ParseMapJson(r.output, s.virtual_size, &problem);
  ASSERT_TRUE(ranges) << problem;

  std::set<uint64_t> data_blocks;
  for (const MapRange& x : *ranges) {
    if (!x.data) continue;
    EXPECT_EQ(x.start % s.block_size, 0u) << "data range inside a block at " << x.start;
    uint64_t end = x.start + x.length;
    EXPECT_TRUE(end % s.block_size == 0 || end == s.virtual_size)
        << "data range ends inside a block at " << end;
    for (uint64_t b = x.start / s.block_size; b <= (end - 1) / s.block_size; ++b) data_blocks.insert(b);
  }
  EXPECT_EQ(data_blocks, ExpectedDataBlocks());

  // Each block's entry in the BAT QEMU wrote: FULLY_PRESENT at the mapped
  // offset for data, the creation state (ZERO or NOT_PRESENT) otherwise.
  auto image = OpenImage();
  ASSERT_TRUE(image);
  const ImageInfo& info = image->info();
  auto file = OpenPosixFile(path_, /*writable=*/false);
  ASSERT_TRUE(file.ok()) << file.status().message();
  for (const MapRange& x : *ranges) {
    for (uint64_t pos = x.start; pos < x.start + x.length; pos = (pos / s.block_size + 1) * s.block_size) {
      uint64_t b = pos / s.block_size;
      uint8_t raw[8];
      ASSERT_TRUE(ReadExact(**file, info.bat_offset + 8 * (b + b / info.chunk_ratio), raw, 8, "BAT").ok());
      uint64_t entry = DecodeFixed64(raw);
      if (x.data) {
        EXPECT_EQ(entry & 7, 6u) << "block " << b;
        EXPECT_EQ((entry & ~((1ull << 20) - 1)) + pos % s.block_size, *x.offset + (pos - x.start))
            << "block " << b;
      } else {
        EXPECT_EQ(entry & 7, s.block_state_zero ? 2u : 0u) << "block " << b;
      }
    }
  }

  // Where a write still shows (nothing later covers its first byte), QEMU
  // reads its pattern at that virtual offset and the file holds it at the
  // mapped offset.
  int crosschecked = 0;
  for (size_t k = writes_.size(); k-- > 0 && crosschecked < 4;) {
    const Write& w = writes_[k];
    if (w.pattern == 0) continue;
    uint64_t end = w.end();
    for (size_t later = k + 1; later < writes_.size(); ++later) {
      const Write& l = writes_[later];
      if (l.offset <= w.offset && l.end() > w.offset)
        end = w.offset;  // first byte overwritten
      else if (l.offset > w.offset && l.offset < end)
        end = l.offset;
    }
    if (end == w.offset) continue;
    uint64_t len = std::min<uint64_t>(end - w.offset, 64 << 10);
    r = vhdx::test::Run(
        fmt::format("qemu-io -r -f vhdx -c 'read -P {} {} {}' {}", w.pattern, w.offset, len, Quoted(path_)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output.find("failed"), std::string::npos) << r.output;
    auto x = std::find_if(ranges->begin(), ranges->end(), [&](const MapRange& m) {
      return m.start <= w.offset && w.offset < m.start + m.length;
    });
    ASSERT_TRUE(x != ranges->end() && x->data) << "written offset " << w.offset << " is not mapped as data";
    uint64_t in_range = std::min(len, x->start + x->length - w.offset);
    std::vector<uint8_t> bytes(in_range);
    ASSERT_TRUE(ReadExact(**file, *x->offset + (w.offset - x->start), bytes.data(), in_range, "data").ok());
    EXPECT_TRUE(std::all_of(bytes.begin(), bytes.end(), [&](uint8_t c) { return c == w.pattern; }))
        << "file bytes at mapped offset " << *x->offset + (w.offset - x->start) << " are not pattern "
        << w.pattern;
    ++crosschecked;
  }
  EXPECT_GT(crosschecked, 0);
  ExpectFileUnchanged("vhdx map");
}

TEST_P(QemuInteropTest, RawOutputIsSparse) {
  const Scenario& s = GetParam();
  std::string ours = ScratchPath(std::string(s.name) + "-sparse.raw");
  CommandResult r =
      vhdx::test::Run(fmt::format("{} convert -O raw {} {}", CliPath(), Quoted(path_), Quoted(ours)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Bound: the non-zero writes, merged and rounded out to 4 KiB, plus room
  // for the host filesystem's extent-tree blocks.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const Write& w : writes_)
    if (w.pattern) spans.push_back({w.offset / 4096 * 4096, (w.end() + 4095) / 4096 * 4096});
  std::sort(spans.begin(), spans.end());
  uint64_t bound = 64 << 10, covered_to = 0;
  for (auto [a, b] : spans) {
    a = std::max(a, covered_to);
    if (b > a) bound += b - a;
    covered_to = std::max(covered_to, b);
  }
  EXPECT_LE(AllocatedBytes(ours), bound) << "virtual size " << s.virtual_size;
  ExpectFileUnchanged("vhdx convert");
}

TEST_P(QemuInteropTest, InfoAgreesWithQemu) {
  const Scenario& s = GetParam();
  CommandResult ours = vhdx::test::Run(fmt::format("{} info --output=json {}", CliPath(), Quoted(path_)));
  ASSERT_EQ(ours.exit_code, 0) << ours.output;
  CommandResult theirs =
      vhdx::test::Run(fmt::format("qemu-img info -f vhdx --output=json {}", Quoted(path_)));
  ASSERT_EQ(theirs.exit_code, 0) << theirs.output;
  json a = ParseJson(ours.output), b = ParseJson(theirs.output);
  ASSERT_TRUE(a.is_object()) << ours.output;
  ASSERT_TRUE(b.is_object()) << theirs.output;
  for (const char* key : {"virtual-size", "cluster-size", "format"}) {
    ASSERT_TRUE(a.contains(key) && b.contains(key)) << key;
    EXPECT_EQ(a[key], b[key]) << key;
  }
  EXPECT_EQ(a["virtual-size"], s.virtual_size);
  EXPECT_EQ(a["cluster-size"], s.block_size);
  EXPECT_EQ(a["format"], "vhdx");
  EXPECT_EQ(a["type"], s.fixed ? "fixed" : "dynamic");
  ExpectFileUnchanged("vhdx info");
}

TEST_P(QemuInteropTest, BothChecksPass) {
  CommandResult ours = vhdx::test::Run(fmt::format("{} check --output=json {}", CliPath(), Quoted(path_)));
  EXPECT_EQ(ours.exit_code, 0) << ours.output;
  json a = ParseJson(ours.output);
  ASSERT_TRUE(a.is_object()) << ours.output;
  EXPECT_EQ(a["check-errors"], 0) << ours.output;
  CommandResult theirs = vhdx::test::Run(fmt::format("qemu-img check -f vhdx {}", Quoted(path_)));
  EXPECT_EQ(theirs.exit_code, 0) << theirs.output;
  ExpectFileUnchanged("vhdx check");
}

INSTANTIATE_TEST_SUITE_P(Qemu, QemuInteropTest, ::testing::ValuesIn(kScenarios),
                         [](const ::testing::TestParamInfo<Scenario>& i) {
                           return std::string(i.param.name);
                         });

}  // namespace
}  // namespace vhdx::test
