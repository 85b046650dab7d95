// vhdx::Check on builder images: clean images have no findings; each kind
// of damage gives exactly the expected finding, with its severity, the
// structure it names and that structure's file offset.
#include <fmt/format.h>

#include "core_test_util.h"
#include "format/bat.h"
#include "format/constants.h"
#include "format/metadata.h"

namespace vhdx::test {
namespace {

using namespace format;
using Severity = CheckFinding::Severity;

CheckReport CheckBuilt(const ImageBuilder& b) {
  auto report = Check(*b.BuildFile());
  EXPECT_TRUE(report.ok()) << report.status().message();
  return report.ok() ? *report : CheckReport{};
}

std::string Describe(const CheckReport& r) {
  std::string out;
  for (const auto& f : r.findings)
    out +=
        fmt::format("\n  [{}] {} @{:#x}: {}", f.severity == Severity::kError ? "error" : "warning",
                    f.structure, f.offset, f.message);
  return out;
}

TEST(Check, CleanImagesHaveNoFindings) {
  std::vector<ImageBuilder> images;
  images.emplace_back(ImageSpec{.virtual_size = 100 * MiB + 512, .block_size = 2 * MiB});
  images.emplace_back(
      ImageSpec{.virtual_size = 5 * GiB, .block_size = 32 * MiB, .layout = Layout::kQemu});
  images.emplace_back(
      ImageSpec{.type = DiskType::kFixed, .virtual_size = 24 * MiB, .block_size = 8 * MiB});
  images.emplace_back(ImageSpec{.type = DiskType::kDifferencing, .virtual_size = 16 * MiB});
  for (auto& b : images) {
    b.WriteVirtual(0, PatternBytes(3 * MiB, 1));
    b.WriteVirtual(b.spec().virtual_size - 4096, PatternBytes(4096, 2));
    b.SetBlock(b.geometry().payload_blocks / 2, kPayloadZero);
    b.SetBlock(b.geometry().payload_blocks / 2 + 1, kPayloadUnmapped);
  }
  // Differencing: a PARTIALLY_PRESENT block with its chunk's sector bitmap.
  ImageBuilder& diff = images.back();
  diff.SetBlock(5, kPayloadPartiallyPresent, diff.AppendSpace(MiB));
  diff.SetBatEntry(diff.geometry().BitmapIndex(0), kSectorBitmapPresent, diff.AppendSpace(MiB));
  for (const auto& b : images) {
    CheckReport r = CheckBuilt(b);
    EXPECT_TRUE(r.findings.empty()) << DiskTypeName(b.spec().type) << Describe(r);
    EXPECT_EQ(r.bat_entries_checked, b.geometry().total_entries);
  }
}

struct DamageCase {
  const char* name;
  // Damages the image; returns the BAT index involved (for the expected
  // structure name and offset), or -1 when the finding is not a BAT entry.
  std::function<int64_t(ImageBuilder&)> damage;
  Severity severity;
  std::string structure;  // "" = "BAT entry <index>"
  std::string message_part;
};

// 5 GiB of 32 MiB blocks, 512-byte sectors: CR 128, so BAT index 128 is
// chunk 0's sector-bitmap slot. Blocks 0-2 hold data.
ImageBuilder DamageBase() {
  ImageBuilder b({.virtual_size = 5 * GiB, .block_size = 32 * MiB});
  b.WriteVirtual(0, PatternBytes(3 * 32 * MiB / 64, 1));
  b.WriteVirtual(32 * MiB, PatternBytes(4096, 2));
  b.WriteVirtual(64 * MiB, PatternBytes(4096, 3));
  return b;
}

uint64_t OffsetOf(const ImageBuilder& b, uint64_t block) {
  return BatEntry::Decode(b.bat_entry(b.geometry().PayloadIndex(block))).file_offset;
}

const DamageCase kDamageCases[] = {
    {"overlapping_blocks",
     [](ImageBuilder& b) {
       b.SetBlock(1, kPayloadFullyPresent, OffsetOf(b, 0));
       return 1;
     },
     Severity::kError, "", "overlaps another block"},
    {"partly_overlapping_blocks",
     [](ImageBuilder& b) {
       b.SetBlock(2, kPayloadFullyPresent, OffsetOf(b, 1) + 16 * MiB);
       return 2;
     },
     Severity::kError, "", "overlaps another block"},
    {"block_past_end_of_file",
     [](ImageBuilder& b) {
       b.SetBlock(9, kPayloadFullyPresent, b.file_size() + 64 * MiB);
       return 9;
     },
     Severity::kError, "", "past the end of the file"},
    {"block_partly_past_end_of_file",
     [](ImageBuilder& b) {
       b.SetFileSize(OffsetOf(b, 2) + 16 * MiB);
       return 2;
     },
     Severity::kError, "", "past the end of the file"},
    {"block_in_header_section",
     [](ImageBuilder& b) {
       b.SetBlock(7, kPayloadFullyPresent, 0);
       return 7;
     },
     Severity::kError, "", "header section"},
    {"block_in_log",
     [](ImageBuilder& b) {
       b.SetBlock(7, kPayloadFullyPresent, b.log_offset());
       return 7;
     },
     Severity::kError, "", "overlaps the log"},
    {"block_in_metadata",
     [](ImageBuilder& b) {
       b.SetBlock(7, kPayloadFullyPresent, b.metadata_offset());
       return 7;
     },
     Severity::kError, "", "overlaps the metadata region"},
    {"block_in_bat",
     [](ImageBuilder& b) {
       b.SetBlock(7, kPayloadFullyPresent, b.bat_offset());
       return 7;
     },
     Severity::kError, "", "overlaps the BAT region"},
    {"partially_present_in_dynamic",
     [](ImageBuilder& b) {
       b.SetBlock(130, kPayloadPartiallyPresent, b.AppendSpace(32 * MiB));
       return 131;  // block 130 sits after chunk 0's sector-bitmap slot
     },
     Severity::kError, "", "PARTIALLY_PRESENT"},
    {"reserved_state_4",
     [](ImageBuilder& b) {
       b.SetBlock(4, 4);
       return 4;
     },
     Severity::kError, "", "reserved state 4"},
    {"reserved_state_5",
     [](ImageBuilder& b) {
       b.SetBlock(4, 5, b.AppendSpace(32 * MiB));
       return 4;
     },
     Severity::kError, "", "reserved state 5"},
    {"sector_bitmap_in_dynamic",
     [](ImageBuilder& b) {
       b.SetBatEntry(128, kSectorBitmapPresent, b.AppendSpace(MiB));
       return 128;
     },
     Severity::kWarning, "", "sector bitmap"},
    {"invalid_sector_bitmap_state",
     [](ImageBuilder& b) {
       b.SetBatEntry(128, 3);
       return 128;
     },
     Severity::kError, "", "invalid state 3"},
    {"bat_reserved_bits",
     [](ImageBuilder& b) {
       uint64_t at = b.bat_offset() + 8 * 6;
       std::vector<uint8_t> raw(8, 0);
       raw[1] = 0x10;  // bit 12
       b.WriteFile(at, raw);
       return 6;
     },
     Severity::kWarning, "", "reserved bits"},
    {"zero_block_with_offset",
     [](ImageBuilder& b) {
       b.SetBlock(11, kPayloadZero, b.AppendSpace(32 * MiB));
       return 11;
     },
     Severity::kWarning, "", "ZERO block with a non-zero file offset"},
    {"damaged_header_1",
     [](ImageBuilder& b) {
       b.DamageHeader(0);
       return -1;
     },
     Severity::kWarning, "header 1", "checksum"},
    {"damaged_region_table_2",
     [](ImageBuilder& b) {
       b.DamageRegionTable(1);
       return -1;
     },
     Severity::kWarning, "region table 2", "checksum"},
    {"dirty_log",
     [](ImageBuilder& b) {
       b.WriteLogEntry(
           {.sequence_number = 12,
            .updates = {b.BatSectorUpdate(20, kPayloadFullyPresent, b.AppendSpace(32 * MiB))}});
       b.MarkLogDirty();
       return -1;
     },
     Severity::kWarning, "log", "needs replay"},
    {"unknown_optional_region",
     [](ImageBuilder& b) {
       b.AddRegion(*Guid::Parse("aaaaaaaa-1111-2222-3333-444444444444"), MiB, false);
       return -1;
     },
     Severity::kWarning, "region table", "aaaaaaaa-1111-2222-3333-444444444444"},
    {"unknown_optional_metadata_item",
     [](ImageBuilder& b) {
       b.AddMetadataItem(*Guid::Parse("bbbbbbbb-1111-2222-3333-444444444444"), PatternBytes(8, 1),
                         0);
       return -1;
     },
     Severity::kWarning, "metadata table", "bbbbbbbb-1111-2222-3333-444444444444"},
};

void PrintTo(const DamageCase& c, std::ostream* os) { *os << c.name; }

class CheckDamageTest : public ::testing::TestWithParam<DamageCase> {};

TEST_P(CheckDamageTest, ReportsExactlyTheExpectedFinding) {
  const DamageCase& c = GetParam();
  ImageBuilder b = DamageBase();
  ASSERT_TRUE(CheckBuilt(b).findings.empty()) << Describe(CheckBuilt(b));
  int64_t index = c.damage(b);
  CheckReport r = CheckBuilt(b);
  ASSERT_EQ(r.findings.size(), 1u) << Describe(r);
  const CheckFinding& f = r.findings[0];
  EXPECT_EQ(f.severity, c.severity) << Describe(r);
  if (index >= 0) {
    EXPECT_EQ(f.structure, fmt::format("BAT entry {}", index));
    EXPECT_EQ(f.offset, b.bat_offset() + 8 * static_cast<uint64_t>(index));
  } else {
    EXPECT_EQ(f.structure, c.structure);
  }
  EXPECT_NE(f.message.find(c.message_part), std::string::npos) << Describe(r);
  EXPECT_EQ(r.errors() + r.warnings(), 1u);
  EXPECT_EQ(r.errors(), c.severity == Severity::kError ? 1u : 0u);
}

INSTANTIATE_TEST_SUITE_P(Damage, CheckDamageTest, ::testing::ValuesIn(kDamageCases),
                         [](const auto& p) { return std::string(p.param.name); });

TEST(Check, HeaderAndRegionFindingsCarryTheirOffsets) {
  ImageBuilder b = DamageBase();
  b.DamageHeader(0);
  b.DamageRegionTable(1);
  CheckReport r = CheckBuilt(b);
  ASSERT_EQ(r.findings.size(), 2u) << Describe(r);
  EXPECT_EQ(r.findings[0].offset, kHeader1Offset);
  EXPECT_EQ(r.findings[1].offset, kRegionTable2Offset);
}

TEST(Check, PartiallyPresentWithoutSectorBitmapInDifferencingImage) {
  ImageBuilder b({.type = DiskType::kDifferencing, .virtual_size = 16 * MiB});
  b.SetBlock(5, kPayloadPartiallyPresent, b.AppendSpace(MiB));
  CheckReport r = CheckBuilt(b);
  ASSERT_EQ(r.findings.size(), 1u) << Describe(r);
  EXPECT_EQ(r.findings[0].severity, Severity::kError);
  const uint64_t sb = b.geometry().BitmapIndex(0);
  EXPECT_EQ(r.findings[0].structure, fmt::format("BAT entry {}", sb));
  EXPECT_EQ(r.findings[0].offset, b.bat_offset() + 8 * sb);
  EXPECT_NE(r.findings[0].message.find("no sector bitmap"), std::string::npos);
}

TEST(Check, ProblemsThatStopOpeningAreErrors) {
  struct Case {
    const char* name;
    std::function<void(ImageBuilder&)> damage;
    std::string structure;
  } cases[] = {
      {"no valid header",
       [](ImageBuilder& b) {
         b.DamageHeader(0);
         b.DamageHeader(1);
       },
       "header 1"},
      {"no valid region table",
       [](ImageBuilder& b) {
         b.DamageRegionTable(0);
         b.DamageRegionTable(1);
       },
       "region table"},
      {"dirty log without entries", [](ImageBuilder& b) { b.MarkLogDirty(); }, "log"},
  };
  for (const Case& c : cases) {
    ImageBuilder b = DamageBase();
    c.damage(b);
    CheckReport r = CheckBuilt(b);
    EXPECT_GE(r.errors(), 1u) << c.name << Describe(r);
    ASSERT_FALSE(r.findings.empty()) << c.name;
    EXPECT_EQ(r.findings[0].structure, c.structure) << c.name << Describe(r);
    EXPECT_FALSE(Image::Open(b.BuildFile()).ok()) << c.name;
  }
}

}  // namespace
}  // namespace vhdx::test
