// vhdx::CheckAndRepair on builder images, one kind of damage each: after
// the repair the image checks clean, every undamaged block reads exactly
// as before, and damaged entries read zeros. What cannot be repaired
// safely leaves the file untouched. The BAT repair is also crashed after
// every write and flush: each crash state is the damaged image or the
// repaired one, never worse.
#include <fmt/format.h>

#include <functional>
#include <random>
#include <set>

#include "core_test_util.h"
#include "format/bat.h"
#include "format/constants.h"
#include "image_loader.h"
#include "repair_test_util.h"
#include "support/crash_file.h"
#include "support/test_util.h"
#include "util/coding.h"
#include "vhdx/repair.h"

namespace vhdx::test {
namespace {

using namespace format;

uint64_t RawBat(const File& file, const ImageBuilder& b, uint64_t index) {
  uint8_t raw[8];
  EXPECT_TRUE(ReadExact(file, b.bat_offset() + 8 * index, raw, 8, "BAT").ok());
  return DecodeFixed64(raw);
}

std::vector<uint8_t> FileBytes(const File& file) {
  auto size = file.Size();
  std::vector<uint8_t> out(size.ok() ? *size : 0);
  if (!out.empty()) {
    EXPECT_TRUE(ReadExact(file, 0, out.data(), out.size(), "file").ok());
  }
  return out;
}

RepairReport Repair(File& file, RepairMode mode) {
  auto r = CheckAndRepair(file, mode);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : RepairReport{};
}

// The report and a fresh Check agree that nothing is left.
void ExpectClean(const File& file, const RepairReport& r) {
  EXPECT_EQ(r.corruptions, 0u) << Describe(r);
  EXPECT_EQ(r.leaks, 0u) << Describe(r);
  auto now = Check(file);
  ASSERT_TRUE(now.ok()) << now.status().message();
  EXPECT_TRUE(now->findings.empty()) << Describe(*now);
  EXPECT_TRUE(now->leaks.empty()) << Describe(*now);
  EXPECT_TRUE(now->complete);
}

// Every block reads as `expect`, except `zeroed`, which read zeros.
void ExpectBlocks(const File& file, const std::vector<std::string>& expect, const std::set<uint64_t>& zeroed) {
  auto got = BlockHashes(file);
  ASSERT_EQ(got.size(), expect.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(got[i], zeroed.count(i) ? ZeroBlockHash() : expect[i]) << "block " << i;
}

TEST(Repair, NoneModeAndCleanImagesWriteNothing) {
  ImageBuilder b = RepairBase();
  auto file = b.BuildFile(true);
  const auto bytes = FileBytes(*file);
  for (RepairMode mode : {RepairMode::kNone, RepairMode::kLeaks, RepairMode::kAll}) {
    RepairReport r = Repair(*file, mode);
    EXPECT_TRUE(r.actions.empty()) << Describe(r);
    ExpectClean(*file, r);
  }
  EXPECT_EQ(FileBytes(*file), bytes) << "a repair with nothing to do wrote";
}

TEST(Repair, DamagedHeaderIsRewrittenFromTheValidOne) {
  for (int slot : {0, 1}) {
    SCOPED_TRACE(fmt::format("header {} damaged", slot + 1));
    ImageBuilder b = RepairBase();
    b.DamageHeader(slot);
    auto file = b.BuildFile(true);
    const auto expect = BlockHashes(*file);
    auto before = Check(*file);
    ASSERT_TRUE(before.ok());
    EXPECT_EQ(before->corruptions(), 1u) << Describe(*before);
    EXPECT_EQ(before->errors(), 0u);

    // -r leaks must not repair it (and so writes nothing at all).
    const auto bytes = FileBytes(*file);
    RepairReport leaks_only = Repair(*file, RepairMode::kLeaks);
    EXPECT_TRUE(leaks_only.actions.empty()) << Describe(leaks_only);
    EXPECT_EQ(leaks_only.corruptions, 1u);
    EXPECT_EQ(FileBytes(*file), bytes);

    RepairReport r = Repair(*file, RepairMode::kAll);
    ASSERT_EQ(r.actions.size(), 1u) << Describe(r);
    EXPECT_EQ(r.actions[0].structure, fmt::format("header {}", slot + 1));
    EXPECT_EQ(r.actions[0].offset, kHeaderOffsets[slot]);
    EXPECT_EQ(r.corruptions_fixed, 1u);
    ExpectClean(*file, r);
    auto headers = LoadHeaders(*file);
    ASSERT_TRUE(headers.ok());
    EXPECT_TRUE(headers->problems[0].ok() && headers->problems[1].ok());
    // The data did not change: DataWriteGuid is kept (children stay linked).
    EXPECT_EQ(headers->Current().data_write_guid, b.header(1 - slot).data_write_guid);
    ExpectBlocks(*file, expect, {});
  }
}

TEST(Repair, DamagedRegionTableIsRewrittenFromTheValidCopy) {
  for (int copy : {0, 1}) {
    SCOPED_TRACE(fmt::format("region table {} damaged", copy + 1));
    ImageBuilder b = RepairBase();
    const auto good = b.ReadFile(kRegionTableOffsets[1 - copy], kRegionTableSize);
    b.DamageRegionTable(copy);
    auto file = b.BuildFile(true);
    const auto expect = BlockHashes(*file);
    RepairReport r = Repair(*file, RepairMode::kAll);
    ASSERT_EQ(r.actions.size(), 1u) << Describe(r);
    EXPECT_EQ(r.actions[0].structure, fmt::format("region table {}", copy + 1));
    ExpectClean(*file, r);
    std::vector<uint8_t> now(kRegionTableSize);
    ASSERT_TRUE(ReadExact(*file, kRegionTableOffsets[copy], now.data(), now.size(), "region table").ok());
    EXPECT_EQ(now, good);
    ExpectBlocks(*file, expect, {});
  }
}

TEST(Repair, NothingIsWrittenWhenBothCopiesAreDamaged) {
  for (bool headers : {true, false}) {
    ImageBuilder b = RepairBase();
    b.WriteFile(b.AppendSpace(MiB), PatternBytes(MiB, 7));  // a leak, too
    if (headers) {
      b.DamageHeader(0);
      b.DamageHeader(1);
    } else {
      b.DamageRegionTable(0);
      b.DamageRegionTable(1);
    }
    auto file = b.BuildFile(true);
    const auto bytes = FileBytes(*file);
    RepairReport r = Repair(*file, RepairMode::kAll);
    EXPECT_TRUE(r.actions.empty()) << Describe(r);
    EXPECT_FALSE(r.not_repaired.empty()) << Describe(r);
    EXPECT_GE(r.corruptions, 1u);
    EXPECT_EQ(FileBytes(*file), bytes) << "a repair that could not repair wrote";
  }
}

TEST(Repair, LeaksAreTruncatedAtTheTailAndPunchedInside) {
  ImageBuilder b = RepairBase();
  // Interior: block 2's space, its entry gone (a crash mid-release).
  const uint64_t interior = BatEntry::Decode(b.bat_entry(b.geometry().PayloadIndex(2))).file_offset;
  b.SetBlock(2, kPayloadNotPresent);
  // An unreferenced unit of zeros is not a leak.
  b.AppendSpace(MiB);
  // Tail: data written into new space whose BAT entry never made it.
  const uint64_t tail = b.AppendSpace(2 * MiB);
  b.WriteFile(tail + MiB + 4096, PatternBytes(4096, 9));
  const uint64_t referenced_end = tail - MiB;
  auto file = b.BuildFile(true);
  const auto expect = BlockHashes(*file);

  auto before = Check(*file);
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->corruptions(), 0u) << Describe(*before);
  ASSERT_EQ(before->leaks.size(), 2u) << Describe(*before);
  EXPECT_EQ(before->leaks[0].offset, interior);
  EXPECT_EQ(before->leaks[0].units, 1u);
  EXPECT_EQ(before->leaks[1].offset, tail + MiB);
  EXPECT_EQ(before->image_end_offset, referenced_end);

  RepairReport r = Repair(*file, RepairMode::kLeaks);
  EXPECT_EQ(r.leaks_fixed, 2u) << Describe(r);
  ASSERT_EQ(r.actions.size(), 2u) << Describe(r);
  for (const auto& a : r.actions) EXPECT_TRUE(a.leak);
  ExpectClean(*file, r);
  EXPECT_EQ(*file->Size(), referenced_end);
  std::vector<uint8_t> unit(MiB);
  ASSERT_TRUE(ReadExact(*file, interior, unit.data(), unit.size(), "leak").ok());
  EXPECT_EQ(Sha256Hex(unit.data(), unit.size()), ZeroBlockHash());
  ExpectBlocks(*file, expect, {});
}

// Damage no repair is known to be safe for is listed with its reason and
// left as found: a reserved state (its offset may still lead to the data),
// PARTIALLY_PRESENT without a parent.
TEST(Repair, DamageWithoutASafeRepairIsListedAndLeft) {
  for (uint8_t state : {uint8_t{4}, uint8_t{5}, uint8_t{kPayloadPartiallyPresent}}) {
    SCOPED_TRACE(fmt::format("state {}", state));
    ImageBuilder b = RepairBase();
    b.SetBlock(2, state, OffsetOf(b, 2));
    auto file = b.BuildFile(true);
    const auto bytes = FileBytes(*file);
    for (RepairMode mode : {RepairMode::kLeaks, RepairMode::kAll}) {
      RepairReport r = Repair(*file, mode);
      EXPECT_TRUE(r.actions.empty()) << Describe(r);
      EXPECT_EQ(r.corruptions, 1u) << Describe(r);
      ASSERT_EQ(r.not_repaired.size(), 1u) << Describe(r);
      EXPECT_EQ(r.not_repaired[0].structure, "BAT entry 2");
      EXPECT_NE(r.not_repaired[0].message.find(mode == RepairMode::kAll ? "left as found" : "`-r leaks` reclaims leaks only"),
                std::string::npos)
          << r.not_repaired[0].message;
      EXPECT_EQ(FileBytes(*file), bytes);
    }
  }
}

TEST(Repair, LeaksModeLeavesBatDamageAlone) {
  ImageBuilder b = RepairBase();
  b.SetBlock(7, kPayloadFullyPresent, b.metadata_offset());
  auto file = b.BuildFile(true);
  const auto bytes = FileBytes(*file);
  RepairReport r = Repair(*file, RepairMode::kLeaks);
  EXPECT_TRUE(r.actions.empty()) << Describe(r);
  EXPECT_EQ(r.corruptions, 1u);
  EXPECT_EQ(FileBytes(*file), bytes);
}

struct BatDamage {
  const char* name;
  // Damages `b`; returns the blocks that must read zeros afterwards.
  std::function<std::set<uint64_t>(ImageBuilder&)> damage;
};

const BatDamage kBatDamage[] = {
    {"past_end_of_file",
     [](ImageBuilder& b) {
       b.SetBlock(8, kPayloadFullyPresent, b.file_size() + 64 * MiB);
       return std::set<uint64_t>{8};
     }},
    {"partly_past_end_of_file",
     [](ImageBuilder& b) {
       b.SetFileSize(OffsetOf(b, 5) + MiB / 2);
       return std::set<uint64_t>{5};
     }},
    {"in_metadata_region",
     [](ImageBuilder& b) {
       b.SetBlock(9, kPayloadFullyPresent, b.metadata_offset());
       return std::set<uint64_t>{9};
     }},
    {"in_log",
     [](ImageBuilder& b) {
       b.SetBlock(9, kPayloadFullyPresent, b.log_offset());
       return std::set<uint64_t>{9};
     }},
    {"in_bat_region",
     [](ImageBuilder& b) {
       b.SetBlock(3, kPayloadFullyPresent, b.bat_offset());
       return std::set<uint64_t>{3};
     }},
    {"in_header_section",
     [](ImageBuilder& b) {
       b.SetBlock(3, kPayloadFullyPresent, 0);
       return std::set<uint64_t>{3};
     }},
    // Neither side is known to be the bad one: both read zeros.
    {"overlap",
     [](ImageBuilder& b) {
       b.SetBlock(4, kPayloadFullyPresent, OffsetOf(b, 1));
       return std::set<uint64_t>{1, 4};
     }},
    // Block 4's entry has reserved bits set (garbage): block 1 keeps its data.
    {"overlap_with_garbage_entry",
     [](ImageBuilder& b) {
       const uint64_t value = OffsetOf(b, 1) | 0x1000 | kPayloadFullyPresent;
       std::vector<uint8_t> raw(8);
       EncodeFixed64(raw.data(), value);
       b.WriteFile(b.bat_offset() + 8 * b.geometry().PayloadIndex(4), raw);
       return std::set<uint64_t>{4};
     }},
};

class RepairBatTest : public ::testing::TestWithParam<BatDamage> {};

TEST_P(RepairBatTest, BadEntriesReadZerosAndTheRestIsIntact) {
  ImageBuilder b = RepairBase();
  const auto expect = BlockHashes(*b.BuildFile());
  const std::set<uint64_t> zeroed = GetParam().damage(b);
  auto file = b.BuildFile(true);
  const auto before = Check(*file);
  ASSERT_TRUE(before.ok());
  ASSERT_GE(before->errors(), 1u) << Describe(*before);
  RepairReport r = Repair(*file, RepairMode::kAll);
  ExpectClean(*file, r);
  EXPECT_EQ(r.corruptions_fixed, before->corruptions()) << Describe(r);
  size_t lost = 0;
  for (const auto& a : r.actions) lost += a.data_lost;
  EXPECT_EQ(lost, zeroed.size()) << Describe(r);
  for (uint64_t blk : zeroed)
    EXPECT_EQ(BatEntry::Decode(RawBat(*file, b, b.geometry().PayloadIndex(blk))).state, kPayloadZero);
  ExpectBlocks(*file, expect, zeroed);
  // The change went through the log, which is empty again, and the
  // content change renewed DataWriteGuid.
  auto headers = LoadHeaders(*file);
  ASSERT_TRUE(headers.ok());
  EXPECT_TRUE(headers->Current().log_guid.IsZero());
  EXPECT_NE(headers->Current().data_write_guid, b.header(1).data_write_guid);
}

INSTANTIATE_TEST_SUITE_P(Damage, RepairBatTest, ::testing::ValuesIn(kBatDamage),
                         [](const auto& p) { return std::string(p.param.name); });

TEST(Repair, OverlapFindingNamesBothEntriesAndTheChoice) {
  ImageBuilder b = RepairBase();
  b.SetBlock(4, kPayloadFullyPresent, OffsetOf(b, 1));
  auto report = Check(*b.BuildFile());
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->errors(), 1u) << Describe(*report);
  const std::string& m = report->findings[0].message;
  EXPECT_NE(m.find("payload block 1 (BAT entry 1)"), std::string::npos) << m;
  EXPECT_NE(m.find("nothing shows which entry is right"), std::string::npos) << m;
  ASSERT_EQ(report->bad_bat_entries.size(), 2u);
  for (const auto& e : report->bad_bat_entries) EXPECT_TRUE(e.repair);
}

// A fixed image must stay fully allocated: a bad block gets new zeroed
// space instead of the ZERO state.
TEST(Repair, FixedImageBlocksGetNewZeroedSpace) {
  ImageBuilder b = RepairBase(DiskType::kFixed);
  for (uint64_t blk = 0; blk < 16; ++blk) b.WriteVirtual(blk * MiB, PatternBytes(MiB, 200 + blk));
  const auto expect = BlockHashes(*b.BuildFile());
  b.SetBlock(6, kPayloadFullyPresent, b.metadata_offset());
  auto file = b.BuildFile(true);
  RepairReport r = Repair(*file, RepairMode::kAll);
  ExpectClean(*file, r);
  const BatEntry e = BatEntry::Decode(RawBat(*file, b, b.geometry().PayloadIndex(6)));
  EXPECT_EQ(e.state, kPayloadFullyPresent);
  EXPECT_GE(e.file_offset, b.file_size());
  ExpectBlocks(*file, expect, {6});
}

// Differencing: a sector bitmap over the BAT region becomes NOT_PRESENT,
// and so its chunk's PARTIALLY_PRESENT block cannot stay: it becomes ZERO.
TEST(Repair, BadSectorBitmapTakesItsPartialBlocksToZero) {
  ImageBuilder b = RepairBase(DiskType::kDifferencing);
  const Geometry& g = b.geometry();
  b.SetBlock(10, kPayloadPartiallyPresent, b.AppendSpace(MiB));
  b.SetBatEntry(g.BitmapIndex(0), kSectorBitmapPresent, b.bat_offset());
  auto file = b.BuildFile(true);
  RepairReport r = Repair(*file, RepairMode::kAll);
  ExpectClean(*file, r);
  EXPECT_EQ(BatEntry::Decode(RawBat(*file, b, g.BitmapIndex(0))).state, kSectorBitmapNotPresent);
  EXPECT_EQ(BatEntry::Decode(RawBat(*file, b, g.PayloadIndex(10))).state, kPayloadZero);
  // Fully present blocks of the chunk are untouched.
  EXPECT_EQ(RawBat(*file, b, g.PayloadIndex(3)), b.bat_entry(g.PayloadIndex(3)));
  bool noted = false;
  for (const auto& a : r.actions) noted |= a.data_lost && a.action.find("parent's data") != std::string::npos;
  EXPECT_TRUE(noted) << Describe(r);
}

TEST(Repair, DirtyLogIsReplayedThenTheRestRepaired) {
  ImageBuilder b = RepairBase();
  b.DamageRegionTable(1);
  const uint64_t space = b.AppendSpace(MiB);
  b.WriteFile(space, PatternBytes(MiB, 55));
  b.WriteLogEntry({.sequence_number = 5, .updates = {b.BatSectorUpdate(b.geometry().PayloadIndex(12),
                                                                       kPayloadFullyPresent, space)}});
  b.MarkLogDirty();
  auto file = b.BuildFile(true);
  const auto expect = BlockHashes(*file);  // the replayed view
  EXPECT_EQ(expect[12], Sha256Hex(PatternBytes(MiB, 55).data(), MiB));
  RepairReport r = Repair(*file, RepairMode::kAll);
  EXPECT_EQ(r.log_entries_replayed, 1u) << Describe(r);
  ExpectClean(*file, r);
  ExpectBlocks(*file, expect, {});
}

// Power cut after every write and flush of a BAT repair (and torn or lost
// writes after the last flush): the image is the damaged one or the
// repaired one. Undamaged blocks always read as before, the damaged block
// reads zeros or still fails to read, no new error appears, and a second
// repair leaves it clean.
TEST(RepairCrash, BatRepairIsCrashSafe) {
  ImageBuilder b = RepairBase();
  const auto expect = BlockHashes(*b.BuildFile());
  b.SetBlock(4, kPayloadFullyPresent, OffsetOf(b, 1));  // overlap: blocks 1 and 4
  b.SetBlock(9, kPayloadFullyPresent, b.metadata_offset());
  const std::set<uint64_t> damaged = {1, 4, 9};
  auto start = b.BuildFile(true);
  auto damaged_check = Check(*start);
  ASSERT_TRUE(damaged_check.ok());
  std::set<std::string> damaged_errors;
  for (const auto& f : damaged_check->findings) damaged_errors.insert(f.structure);

  CrashRecorder rec(*start);
  {
    auto live = rec.OpenFile();
    RepairReport r = Repair(*live, RepairMode::kAll);
    ExpectClean(*live, r);
  }
  ASSERT_GT(rec.op_count(), 6u);
  CrashStateBuilder states(rec);
  std::mt19937_64 rng(42);
  size_t repaired = 0, old = 0;
  for (size_t point = 0; point <= rec.op_count(); ++point) {
    for (int variant = 0; variant < 3; ++variant) {
      SCOPED_TRACE(fmt::format("crash after {} of {} ops, variant {}", point, rec.op_count(), variant));
      CrashState cs = states.Build(point, rng, TearPolicy{});
      auto report = Check(*cs.file);
      ASSERT_TRUE(report.ok()) << report.status().message();
      for (const auto& f : report->findings) {
        // Only the original damage, a header torn by its alternating
        // update (the other one is used), or the repair's log entry
        // waiting for replay (a warning: it is replayed on open).
        const bool allowed = damaged_errors.count(f.structure) ||
                             (f.redundant_copy_damaged && f.structure.starts_with("header ")) ||
                             (f.severity == CheckFinding::Severity::kWarning && f.structure == "log");
        EXPECT_TRUE(allowed) << Describe(*report);
      }
      auto got = BlockHashes(*cs.file);
      ASSERT_EQ(got.size(), expect.size());
      bool all_zero = true;
      for (size_t i = 0; i < got.size(); ++i) {
        if (!damaged.count(i)) {
          EXPECT_EQ(got[i], expect[i]) << "undamaged block " << i;
          continue;
        }
        // The old state (block 1 still reads, blocks 4, 9 read garbage or
        // fail), or zeros: never another block's data once repaired.
        if (got[i] != ZeroBlockHash()) all_zero = false;
      }
      if (all_zero) {
        ++repaired;
        for (uint64_t i : damaged) EXPECT_EQ(got[i], ZeroBlockHash());
      } else {
        ++old;
        EXPECT_EQ(got[1], expect[1]) << "block 1 changed without being repaired";
      }
      // Repairing again from here ends clean with the same content.
      RepairReport again = Repair(*cs.file, RepairMode::kAll);
      ExpectClean(*cs.file, again);
      auto final_hashes = BlockHashes(*cs.file);
      for (size_t i = 0; i < final_hashes.size(); ++i)
        EXPECT_EQ(final_hashes[i], damaged.count(i) ? ZeroBlockHash() : expect[i]) << "block " << i;
    }
  }
  EXPECT_GT(repaired, 0u);
  EXPECT_GT(old, 0u);
}

}  // namespace
}  // namespace vhdx::test
