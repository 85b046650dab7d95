// The image builder itself: the layouts it promises, and — because it uses
// the same serialisers as the library — its images checked by the peer
// tools, so builder and library cannot share a misunderstanding unseen.
#include <fmt/format.h>

#include "core_test_util.h"
#include "format/bat.h"
#include "support/test_util.h"

namespace vhdx::test {
namespace {

using format::kPayloadFullyPresent;

TEST(ImageBuilder, WindowsLayout) {
  ImageBuilder b({.virtual_size = 10 * GiB, .block_size = 32 * MiB});
  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  const ImageInfo& info = image->info();
  EXPECT_EQ(info.type, DiskType::kDynamic);
  EXPECT_EQ(info.log.offset, 1 * MiB);
  EXPECT_EQ(info.log.length, 1 * MiB);
  ASSERT_EQ(info.regions.size(), 2u);
  EXPECT_EQ(info.regions[0].name, "bat");
  EXPECT_EQ(info.regions[0].file_offset, 3 * MiB);
  EXPECT_EQ(info.regions[0].length, 1 * MiB);
  EXPECT_TRUE(info.regions[0].required);
  EXPECT_EQ(info.regions[1].name, "metadata");
  EXPECT_EQ(info.regions[1].file_offset, 2 * MiB);
  EXPECT_TRUE(info.regions[1].required);
  ASSERT_EQ(info.metadata_items.size(), 5u);
  const char* order[] = {"file_parameters", "virtual_disk_size", "logical_sector_size",
                         "physical_sector_size", "virtual_disk_id"};
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(info.metadata_items[i].name, order[i]);
  EXPECT_EQ(info.metadata_items[0].offset, 64 * KiB);
  EXPECT_EQ(info.file_size, 4 * MiB);
  EXPECT_EQ(info.bat_entries, 320u + 2);  // 320 blocks, CR 128: two sector-bitmap slots
  EXPECT_EQ(info.current_header, 1);
  EXPECT_FALSE(info.log.dirty);
}

TEST(ImageBuilder, QemuLayoutAndBigBat) {
  // 1 TiB of 1 MiB blocks: 2^20 + 255 entries, a BAT region of 9 MiB.
  ImageBuilder b({.virtual_size = 1 * TiB, .layout = Layout::kQemu});
  EXPECT_EQ(b.bat_offset(), 2 * MiB);
  EXPECT_EQ(b.bat_length(), 9 * MiB);
  EXPECT_EQ(b.metadata_offset(), 11 * MiB);
  auto image = OpenBuilt(b);
  ASSERT_TRUE(image);
  const ImageInfo& info = image->info();
  EXPECT_EQ(info.bat_entries, (uint64_t{1} << 20) + 255);
  for (const auto& r : info.regions) EXPECT_FALSE(r.required) << r.name;
  EXPECT_EQ(info.metadata_items[2].name, "virtual_disk_id");
}

TEST(ImageBuilder, FixedImageIsContiguousAndFileIsSparse) {
  ImageBuilder b({.type = DiskType::kFixed, .virtual_size = 40 * MiB, .block_size = 8 * MiB});
  for (uint64_t blk = 0; blk < 5; ++blk)
    EXPECT_EQ(b.bat_entry(b.geometry().PayloadIndex(blk)),
              (4 * MiB + blk * 8 * MiB) | kPayloadFullyPresent);
  EXPECT_EQ(b.file_size(), 44 * MiB);
  auto file = b.BuildFile();
  // Only the structures were written: a few pages, not 44 MiB.
  EXPECT_LT(*file->AllocatedSize(), 1 * MiB);
}

TEST(ImageBuilder, SparseMemoryFileSemantics) {
  SparseMemoryFile f("sparse", true);
  std::vector<uint8_t> data = PatternBytes(200 * KiB, 1);
  ASSERT_TRUE(f.WriteAt(100 * KiB - 3, data.data(), data.size()).ok());
  EXPECT_EQ(*f.Size(), 300 * KiB - 3);
  std::vector<uint8_t> back(400 * KiB, 0xAA);
  EXPECT_EQ(*f.ReadAt(0, back.data(), back.size()), 300 * KiB - 3);
  EXPECT_TRUE(
      std::all_of(back.begin(), back.begin() + 100 * KiB - 3, [](uint8_t v) { return v == 0; }));
  EXPECT_TRUE(std::equal(data.begin(), data.end(), back.begin() + 100 * KiB - 3));
  ASSERT_TRUE(f.Truncate(150 * KiB).ok());
  ASSERT_TRUE(f.Truncate(1 * MiB).ok());
  EXPECT_EQ(*f.ReadAt(0, back.data(), back.size()), back.size());
  EXPECT_TRUE(std::all_of(back.begin() + 150 * KiB, back.end(), [](uint8_t v) { return v == 0; }));
  EXPECT_EQ(back[150 * KiB - 1], data[50 * KiB + 2]);
  SparseMemoryFile ro(f, "ro", false);
  EXPECT_EQ(ro.WriteAt(0, data.data(), 1).code(), Errc::kReadOnly);
  EXPECT_EQ(ro.Truncate(0).code(), Errc::kReadOnly);
}

// ---------------------------------------------------------------------------
// Peer tools read builder images with the content the builder meant.

struct PeerCase {
  std::string name;
  ImageSpec spec;
};

void PrintTo(const PeerCase& c, std::ostream* os) { *os << c.name; }

class BuilderPeerTest : public ::testing::TestWithParam<PeerCase> {};

// Writes data in a scrambled block order (so file order differs from
// virtual order), including the partial last block, into `b` and `expected`.
void FillScattered(ImageBuilder& b, std::vector<uint8_t>& expected) {
  const uint64_t size = b.spec().virtual_size, block = b.spec().block_size;
  const uint64_t offsets[] = {size - 3 * 512, 5 * block + 512, 0, block - 1024, 2 * block + 4096};
  uint64_t seed = 10;
  for (uint64_t off : offsets) {
    if (off >= size) continue;
    auto data = PatternBytes(std::min<uint64_t>(5000, size - off), seed++);
    b.WriteVirtual(off, data);
    std::copy(data.begin(), data.end(), expected.begin() + off);
  }
}

std::string QemuRawHash(const std::string& image_path) {
  std::string raw = image_path + ".raw";
  auto r =
      vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw '{}' '{}'", image_path, raw));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  if (r.exit_code != 0) return "";
  std::string hash = Sha256OfFile(raw);
  std::remove(raw.c_str());
  return hash;
}

TEST_P(BuilderPeerTest, QemuImgReadsTheIntendedContent) {
  VHDX_REQUIRE(MissingTools({"qemu-img"}));
  const PeerCase& c = GetParam();
  ImageBuilder b(c.spec);
  std::vector<uint8_t> expected(c.spec.virtual_size, 0);
  FillScattered(b, expected);
  std::string path = ScratchPath("peer-" + c.name + ".vhdx");
  b.WriteTo(path);

  auto check = vhdx::test::Run(fmt::format("qemu-img check -f vhdx '{}'", path));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_EQ(QemuRawHash(path), Sha256Hex(expected.data(), expected.size()));

  auto image = Image::Open(path);
  ASSERT_TRUE(image.ok()) << image.status().message();
  EXPECT_EQ(Sha256OfImage(**image), Sha256Hex(expected.data(), expected.size()));
}

TEST_P(BuilderPeerTest, VhdiinfoAcceptsTheImage) {
  VHDX_REQUIRE(MissingTools({"vhdiinfo"}));
  const PeerCase& c = GetParam();
  ImageBuilder b(c.spec);
  std::string path = ScratchPath("vhdi-" + c.name + ".vhdx");
  b.WriteTo(path);
  auto r = vhdx::test::Run(fmt::format("vhdiinfo '{}'", path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(fmt::format("{} bytes", c.spec.virtual_size)), std::string::npos)
      << r.output;
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, BuilderPeerTest,
    ::testing::Values(
        PeerCase{"dynamic_windows", {.virtual_size = 13 * MiB + 512, .block_size = 2 * MiB}},
        PeerCase{"dynamic_qemu_512",
                 {.virtual_size = 13 * MiB,
                  .block_size = 1 * MiB,
                  .physical_sector_size = 512,
                  .layout = Layout::kQemu}},
        PeerCase{"fixed",
                 {.type = DiskType::kFixed, .virtual_size = 12 * MiB, .block_size = 4 * MiB}}),
    [](const auto& p) { return p.param.name; });

// A dirty log written by the builder is replayed by qemu-img check -r all
// to the same content our in-memory replay shows.
TEST(ImageBuilder, QemuReplaysTheBuilderLog) {
  VHDX_REQUIRE(MissingTools({"qemu-img"}));
  ImageBuilder b({.virtual_size = 8 * MiB, .block_size = 1 * MiB, .physical_sector_size = 512});
  std::vector<uint8_t> expected(8 * MiB, 0);
  // Block 3 is written in place but only the log's BAT sector points at it.
  uint64_t where = b.AppendSpace(1 * MiB);
  auto data = PatternBytes(1 * MiB, 77);
  b.WriteFile(where, data);
  std::copy(data.begin(), data.end(), expected.begin() + 3 * MiB);
  b.WriteLogEntry(
      {.sequence_number = 40,
       .updates = {b.BatSectorUpdate(b.geometry().PayloadIndex(3), kPayloadFullyPresent, where)}});
  b.MarkLogDirty();
  std::string path = ScratchPath("peer-dirty.vhdx");
  b.WriteTo(path);
  // QEMU refuses a read-only open while the log needs replay: the log is live.
  auto before =
      vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw '{}' /dev/null", path));
  EXPECT_NE(before.exit_code, 0) << before.output;

  {
    auto ours = Image::Open(path);  // locked for reading until it goes
    ASSERT_TRUE(ours.ok()) << ours.status().message();
    EXPECT_EQ(Sha256OfImage(**ours), Sha256Hex(expected.data(), expected.size()));
  }

  auto repair = vhdx::test::Run(fmt::format("qemu-img check -r all -f vhdx '{}'", path));
  EXPECT_EQ(repair.exit_code, 0) << repair.output;
  EXPECT_EQ(QemuRawHash(path), Sha256Hex(expected.data(), expected.size()));
}

}  // namespace
}  // namespace vhdx::test
