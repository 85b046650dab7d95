// CompactImage: the move planner on its own; all-zero blocks released (a
// base's NOT_PRESENT, a child's ZERO), blocks moved down and the file
// truncated, with the content, Check and the DataWriteGuid unchanged;
// dry runs that write nothing and predict the result; refusals; and crash
// consistency: every compaction recorded and replayed with a power failure
// after every file operation (writes after the last flush kept, lost or
// torn), each crashed file checking clean, reading as before, and taking
// the compaction again.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>

#include "compact_plan.h"
#include "compact_test_util.h"
#include "core_test_util.h"
#include "format/bat.h"
#include "resize_test_util.h"
#include "support/crash_file.h"
#include "support/test_util.h"
#include "util/coding.h"
#include "vhdx/compact.h"
#include "vhdx/create.h"

namespace vhdx::test {
namespace {

// ---- The planner ----------------------------------------------------------

// Replays a plan on its extents, checking what each round may do: targets
// free when the round starts (not even freed by the same round), moves only
// downward, no overlap ever. Returns the extents after the plan.
std::vector<CompactExtent> ApplyPlan(std::vector<CompactExtent> extents, uint64_t floor, const CompactPlan& plan) {
  auto overlaps = [](uint64_t a, uint64_t al, uint64_t b, uint64_t bl) { return a < b + bl && b < a + al; };
  for (const auto& round : plan.rounds) {
    const std::vector<CompactExtent> start = extents;
    for (const CompactMove& m : round) {
      EXPECT_LT(m.to, m.from) << "moves go down";
      EXPECT_GE(m.to, floor);
      for (const CompactExtent& e : start)
        EXPECT_FALSE(overlaps(m.to, m.length, e.offset, e.length))
            << "target " << m.to << " not free when the round starts";
      auto it = std::find_if(extents.begin(), extents.end(),
                             [&](const CompactExtent& e) { return e.bat_index == m.bat_index; });
      EXPECT_NE(it, extents.end());
      if (it == extents.end()) continue;
      EXPECT_EQ(it->offset, m.from);
      it->offset = m.to;
    }
    for (size_t i = 0; i < extents.size(); ++i)
      for (size_t j = i + 1; j < extents.size(); ++j)
        EXPECT_FALSE(overlaps(extents[i].offset, extents[i].length, extents[j].offset, extents[j].length));
  }
  return extents;
}

TEST(CompactPlanTest, UniformBlocksEndPackedAfterTheFloor) {
  std::mt19937_64 rng(1);
  for (int trial = 0; trial < 50; ++trial) {
    const uint64_t bs = (uint64_t{1} << (rng() % 4)) * MiB, floor = 8 * MiB;
    std::vector<CompactExtent> extents;
    uint64_t slots = 1 + rng() % 200;
    for (uint64_t s = 0; s < slots; ++s)
      if (rng() % 3 == 0) extents.push_back({floor + s * bs, bs, s});
    const CompactPlan plan = PlanCompaction(extents, floor, 1 + rng() % 10);
    auto after = ApplyPlan(extents, floor, plan);
    EXPECT_EQ(plan.end_after, floor + extents.size() * bs) << "trial " << trial;
    EXPECT_LE(plan.end_after, plan.end_before);
  }
}

TEST(CompactPlanTest, MixedBitmapAndPayloadBlocksNeverOverlapAndOnlyShrink) {
  std::mt19937_64 rng(2);
  for (int trial = 0; trial < 50; ++trial) {
    const uint64_t bs = 2 * MiB, floor = 4 * MiB;
    std::vector<CompactExtent> extents;
    uint64_t at = floor, index = 0;
    for (int i = 0; i < 100; ++i) {
      at += (rng() % 3) * MiB;  // a gap of 0-2 MiB
      const uint64_t len = rng() % 5 == 0 ? MiB : bs;
      if (rng() % 2) extents.push_back({at, len, index++});
      at += len;
    }
    const CompactPlan plan = PlanCompaction(extents, floor, 8);
    ApplyPlan(extents, floor, plan);
    uint64_t live = 0;
    for (const auto& e : extents) live += e.length;
    EXPECT_GE(plan.end_after, floor + live);
    EXPECT_LE(plan.end_after, plan.end_before);
  }
}

TEST(CompactPlanTest, NothingToDoWhenPacked) {
  std::vector<CompactExtent> extents = {{4 * MiB, MiB, 0}, {5 * MiB, MiB, 1}};
  const CompactPlan plan = PlanCompaction(extents, 4 * MiB, 8);
  EXPECT_EQ(plan.moves(), 0u);
  EXPECT_EQ(plan.end_after, 6 * MiB);
}

// ---- Functional -----------------------------------------------------------

Guid DataWriteGuidOf(const File& file) {
  auto image = Image::Open(std::make_unique<ReadOnlyView>(file));
  EXPECT_TRUE(image.ok());
  const ImageInfo& info = (*image)->info();
  return info.headers[info.current_header].data_write_guid;
}

struct Compacted {
  Status status;
  CompactResult result;
};

Compacted CompactIn(File& file, bool dry_run, std::shared_ptr<const Image> parent = nullptr) {
  std::unique_ptr<File> f = dry_run ? std::unique_ptr<File>(std::make_unique<ReadOnlyView>(file))
                                    : std::unique_ptr<File>(std::make_unique<Borrowed>(file));
  auto image = Image::Open(std::move(f), {.read_only = dry_run, .parent = parent});
  if (!image.ok()) return {image.status(), {}};
  auto r = CompactImage(std::move(image).value(), {.dry_run = dry_run});
  if (!r.ok()) return {r.status(), {}};
  return {Status::Ok(), *r};
}

bool SameBytes(const File& a, const File& b) {
  std::vector<uint8_t> x(*a.Size()), y(*b.Size());
  if (x.size() != y.size()) return false;
  EXPECT_TRUE(a.ReadAt(0, x.data(), x.size()).ok());
  EXPECT_TRUE(b.ReadAt(0, y.data(), y.size()).ok());
  return x == y;
}

class CompactShapeTest : public ::testing::TestWithParam<std::pair<uint32_t, uint32_t>> {};

TEST_P(CompactShapeTest, ReleasesZerosMovesBlocksDownAndReadsAsBefore) {
  const auto [block_size, sector] = GetParam();
  uint64_t data_blocks = 0;
  auto file = MakeFragmented(block_size, sector, 24, &data_blocks);
  const std::string sha = ContentSha(*file);
  const Guid guid = DataWriteGuidOf(*file);
  const uint64_t size_before = *file->Size();

  SparseMemoryFile before(*file);
  Compacted dry = CompactIn(*file, /*dry_run=*/true);
  ASSERT_TRUE(dry.status.ok()) << dry.status.message();
  EXPECT_TRUE(SameBytes(*file, before)) << "a dry run wrote";

  Compacted r = CompactIn(*file, /*dry_run=*/false);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.result.blocks_zero, 6u);      // the blocks written as zeros
  EXPECT_EQ(r.result.stale_offsets, 0u);    // discards drop the offset themselves
  EXPECT_GT(r.result.blocks_moved, 0u);
  EXPECT_EQ(r.result.file_size_before, size_before);
  EXPECT_EQ(r.result.file_size_after, *file->Size());
  EXPECT_LT(*file->Size(), size_before);
  // The dry run said all of this.
  EXPECT_EQ(dry.result.blocks_zero, r.result.blocks_zero);
  EXPECT_EQ(dry.result.blocks_moved, r.result.blocks_moved);
  EXPECT_EQ(dry.result.file_size_after, r.result.file_size_after);

  EXPECT_EQ(CheckErrors(*file), "");
  EXPECT_EQ(ContentSha(*file), sha);
  EXPECT_EQ(DataWriteGuidOf(*file), guid) << "nothing anyone reads changed";
  // Packed: the structures, then one block per data block.
  EXPECT_EQ(*file->Size(), PackedSize(*file, data_blocks));

  // A second compaction has nothing to do; the image still takes writes.
  Compacted again = CompactIn(*file, false);
  ASSERT_TRUE(again.status.ok());
  EXPECT_EQ(again.result.blocks_zero + again.result.blocks_moved, 0u);
  auto rw = Image::Open(std::make_unique<Borrowed>(*file), {.read_only = false});
  ASSERT_TRUE(rw.ok());
  auto bytes = PatternBytes(3 * block_size, 77);
  ASSERT_TRUE((*rw)->Write(block_size / 2, bytes.data(), bytes.size()).ok());
  ASSERT_TRUE((*rw)->Close().ok());
  EXPECT_EQ(CheckErrors(*file), "");
}

INSTANTIATE_TEST_SUITE_P(Shapes, CompactShapeTest,
                         ::testing::Values(std::make_pair(1u * MiB, 512u), std::make_pair(2u * MiB, 4096u),
                                           std::make_pair(32u * MiB, 512u)),
                         [](const auto& p) { return fmt::format("bs{}M_{}", p.param.first / MiB, p.param.second); });

TEST(CompactTest, StaleOffsetsOfUnmappedBlocksAreDropped) {
  uint64_t data_blocks = 0;
  auto file = MakeFragmented(1 * MiB, 512, 8, &data_blocks);
  // Block 2 was discarded (UNMAPPED, offset 0): give it an offset back, as
  // Windows leaves one, pointing at its old space past the file's blocks.
  auto image = Image::Open(std::make_unique<ReadOnlyView>(*file));
  ASSERT_TRUE(image.ok());
  const uint64_t bat = (*image)->info().bat_offset;
  image->reset();
  const uint64_t stale = (*file->Size() + MiB - 1) / MiB * MiB;
  ASSERT_TRUE(file->Truncate(stale + MiB).ok());
  uint8_t entry[8];
  EncodeFixed64(entry, format::BatEntry{format::kPayloadUnmapped, stale}.Encode());
  ASSERT_TRUE(file->WriteAt(bat + 8 * 2, entry, 8).ok());
  ASSERT_EQ(CheckErrors(*file), "");
  const std::string sha = ContentSha(*file);
  Compacted r = CompactIn(*file, false);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.result.stale_offsets, 1u);
  EXPECT_LE(*file->Size(), stale) << "the space the stale offset pinned is given back";
  EXPECT_EQ(ContentSha(*file), sha);
  EXPECT_EQ(CheckErrors(*file), "");
}

TEST(CompactTest, RefusesFixedReadOnlyAndDamagedImagesUnchanged) {
  auto fixed = std::make_unique<SparseMemoryFile>("fixed.vhdx", true);
  ASSERT_TRUE(CreateImage(*fixed, {.type = DiskType::kFixed, .virtual_size = 8 * MiB, .block_size = MiB}).ok());
  SparseMemoryFile fixed_before(*fixed);
  Compacted r = CompactIn(*fixed, false);
  EXPECT_EQ(r.status.code(), Errc::kUnsupported);
  EXPECT_NE(r.status.message().find("convert -O vhdx"), std::string::npos) << r.status.message();
  EXPECT_TRUE(SameBytes(*fixed, fixed_before));

  uint64_t data_blocks = 0;
  auto file = MakeFragmented(1 * MiB, 512, 8, &data_blocks);
  auto ro = Image::Open(std::make_unique<ReadOnlyView>(*file));
  ASSERT_TRUE(ro.ok());
  auto refused = CompactImage(std::move(ro).value());
  EXPECT_EQ(refused.status().code(), Errc::kReadOnly);

  auto image = Image::Open(std::make_unique<ReadOnlyView>(*file));
  ASSERT_TRUE(image.ok());
  const uint64_t bat = (*image)->info().bat_offset;
  image->reset();
  uint8_t entry[8];
  EncodeFixed64(entry, format::BatEntry{format::kPayloadFullyPresent, 4096 * MiB}.Encode());
  ASSERT_TRUE(file->WriteAt(bat + 8 * 3, entry, 8).ok());
  SparseMemoryFile damaged(*file);
  r = CompactIn(*file, false);
  EXPECT_EQ(r.status.code(), Errc::kCorrupt);
  EXPECT_NE(r.status.message().find("BAT entry 3"), std::string::npos) << r.status.message();
  EXPECT_TRUE(SameBytes(*file, damaged));
}

// ---- Differencing ---------------------------------------------------------

TEST(CompactTest, ChildZerosHideTheParentAndItsBitmapsMove) {
  const std::string dir = ScratchPath("compact-child");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string parent = dir + "/parent.vhdx", child = dir + "/child.avhdx";
  const uint64_t size = 32 * MiB;
  ASSERT_TRUE(CreateImage(parent, {.virtual_size = size, .block_size = MiB}).ok());
  {
    auto p = Image::Open(parent, {.read_only = false});
    ASSERT_TRUE(p.ok());
    auto bytes = PatternBytes(size, 5);
    ASSERT_TRUE((*p)->Write(0, bytes.data(), size).ok());  // the parent is full
    ASSERT_TRUE((*p)->Close().ok());
  }
  const std::string parent_sha = Sha256OfFile(parent);
  ASSERT_TRUE(CreateImage(child, {.block_size = MiB, .parent_path = parent}).ok());
  {
    auto c = Image::Open(child, {.read_only = false});
    ASSERT_TRUE(c.ok());
    std::vector<uint8_t> zeros(MiB, 0);
    for (uint64_t b = 0; b < 32; b += 3) {
      if (b % 2) {
        // FULLY_PRESENT, then all zeros in place: they hide the parent.
        auto bytes = PatternBytes(MiB, b);
        ASSERT_TRUE((*c)->Write(b * MiB, bytes.data(), MiB).ok());
        ASSERT_TRUE((*c)->Write(b * MiB, zeros.data(), MiB).ok());
      } else {
        auto bytes = PatternBytes(MiB / 2 + 512, b);
        ASSERT_TRUE((*c)->Write(b * MiB + 512, bytes.data(), bytes.size()).ok());  // PARTIALLY_PRESENT
      }
    }
    ASSERT_TRUE((*c)->Close().ok());
  }
  std::string sha;
  {
    auto c = Image::Open(child);
    ASSERT_TRUE(c.ok());
    sha = Sha256OfImage(**c);
  }
  const uint64_t child_size = std::filesystem::file_size(child);
  auto r = CompactImage(child);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->blocks_zero, 5u);  // blocks 3, 9, 15, 21, 27
  EXPECT_GT(r->blocks_moved, 0u);
  EXPECT_LT(std::filesystem::file_size(child), child_size);
  auto report = Check(child);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->errors(), 0u);
  auto c = Image::Open(child);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(Sha256OfImage(**c), sha) << "zeros must still hide the parent's data";
  EXPECT_EQ(Sha256OfFile(parent), parent_sha) << "the parent is never written";
}

// ---- Crash consistency ----------------------------------------------------

TEST(CompactCrashTest, PowerFailureAtAnyPointLosesNothing) {
  for (uint32_t block_size : {1u * MiB, 2u * MiB}) {
    uint64_t data_blocks = 0;
    auto start = MakeFragmented(block_size, 512, 20, &data_blocks);
    const std::string sha = ContentSha(*start);
    CrashRecorder rec(*start);
    {
      auto image = Image::Open(rec.OpenFile(), {.read_only = false});
      ASSERT_TRUE(image.ok());
      auto r = CompactImage(std::move(image).value());
      ASSERT_TRUE(r.ok()) << r.status().message();
      ASSERT_GT(r->blocks_moved, 2u);
    }
    const size_t ops = rec.op_count();
    CrashStateBuilder builder(rec);
    size_t smaller = 0, states = 0;
    for (size_t point = 0; point <= ops; ++point) {
      for (int attempt = 0; attempt < 3; ++attempt) {
        std::mt19937_64 rng(point * 11 + attempt);
        static constexpr TearPolicy kPolicies[] = {{0.5, 0.3}, {1.0, 0.0}, {0.2, 0.8}};
        CrashState state = builder.Build(point, rng, kPolicies[attempt]);
        ++states;
        const std::string where = fmt::format("{} MiB blocks: crash after {} of {} ops ({} durable, {} pending)",
                                              block_size / MiB, point, ops, state.durable_ops, state.pending_ops);
        ASSERT_EQ(ContentSha(*state.file), sha) << where;
        ASSERT_EQ(CheckErrors(*state.file), "") << where;
        smaller += *state.file->Size() < *start->Size();
        {
          auto rw = Image::Open(std::make_unique<Borrowed>(*state.file), {.read_only = false});
          ASSERT_TRUE(rw.ok()) << where << ": " << rw.status().message();
          auto again = CompactImage(std::move(rw).value());
          ASSERT_TRUE(again.ok()) << where << ": " << again.status().message();
        }
        ASSERT_EQ(ContentSha(*state.file), sha) << where << " (compacted again)";
        ASSERT_EQ(CheckErrors(*state.file), "") << where << " (compacted again)";
      }
    }
    EXPECT_GT(smaller, 0u);
    EXPECT_LT(smaller, states);
  }
}

}  // namespace
}  // namespace vhdx::test
