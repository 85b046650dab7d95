// Dirty logs opened read-only (digest §7.3-7.6): the active sequence is
// found, replayed in memory from the head's Tail entry, and the file is
// never written. Hostile logs are ignored or refused, never crash or hang.
#include <fmt/format.h>

#include <random>

#include "core_test_util.h"
#include "format/bat.h"
#include "format/crc32c.h"
#include "io/fault_file.h"
#include "log_reader.h"
#include "support/test_util.h"
#include "util/coding.h"

namespace vhdx::test {
namespace {

using format::kLogSectorSize;
using format::kPayloadFullyPresent;
using format::LogUpdate;

Guid OtherGuid() {
  Guid g;
  g.bytes.fill(0x99);
  return g;
}

// Index of the first differing byte, or -1 (keeps failure output short).
int64_t FirstDifference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  return a.size() == b.size() ? -1 : static_cast<int64_t>(n);
}

class LogReplayTest : public ::testing::Test {
 protected:
  LogReplayTest() : b_({.virtual_size = 16 * MiB, .block_size = 1 * MiB}) {}

  // A payload block written in place at the end of the file (payload writes
  // never go through the log); returns its offset.
  uint64_t NewBlockData(uint64_t seed) {
    uint64_t at = b_.AppendSpace(MiB);
    b_.WriteFile(at, PatternBytes(MiB, seed));
    return at;
  }
  uint64_t BlockOffset(uint64_t block) {
    return format::BatEntry::Decode(b_.bat_entry(b_.geometry().PayloadIndex(block))).file_offset;
  }
  LogUpdate Bat(uint64_t block, uint64_t offset) {
    return b_.BatSectorUpdate(b_.geometry().PayloadIndex(block), kPayloadFullyPresent, offset);
  }
  std::vector<uint8_t> Block(const Image& image, uint64_t block) {
    return ReadImage(image, block * MiB, MiB);
  }
  static std::vector<uint8_t> Zeros(size_t n = MiB) { return std::vector<uint8_t>(n, 0); }

  ImageBuilder b_;
};

TEST_F(LogReplayTest, BatUpdateThatOnlyLivesInTheLogIsReplayedInMemory) {
  uint64_t x = NewBlockData(1);
  b_.WriteLogEntry({.sequence_number = 1000, .updates = {Bat(0, x)}});
  {
    // Clean header: the log is not consulted and block 0 is NOT_PRESENT.
    auto clean = OpenBuilt(b_);
    ASSERT_TRUE(clean);
    EXPECT_FALSE(clean->info().log.dirty);
    EXPECT_EQ(Block(*clean, 0), Zeros());
  }
  b_.MarkLogDirty();
  const std::vector<uint8_t> before = b_.Build();

  // Writable underneath, so a write attempt would succeed and be recorded.
  auto fault = std::make_unique<FaultInjectingFile>(b_.BuildFile(/*writable=*/true));
  FaultInjectingFile* file = fault.get();
  auto opened = Image::Open(std::move(fault));
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  const Image& image = **opened;
  const LogInfo& log = image.info().log;
  EXPECT_TRUE(log.dirty);
  EXPECT_EQ(log.active_entries, 1u);
  EXPECT_EQ(log.active_descriptors, 1u);
  EXPECT_EQ(log.head_sequence_number, 1000u);
  EXPECT_EQ(Block(image, 0), PatternBytes(MiB, 1));
  EXPECT_EQ(Block(image, 1), Zeros());

  EXPECT_TRUE(file->ops().empty());
  std::vector<uint8_t> after(before.size() + 1);
  ASSERT_EQ(*file->ReadAt(0, after.data(), after.size()), before.size());
  after.resize(before.size());
  EXPECT_EQ(FirstDifference(before, after), -1);
}

// The read-write open replays into the file instead; afterwards the file
// is clean and shows what the read-only overlay showed.
TEST_F(LogReplayTest, ReadWriteOpenReplaysIntoTheFileWithTheSameResult) {
  uint64_t x = NewBlockData(1);
  b_.WriteVirtual(2 * MiB, PatternBytes(MiB, 2));
  b_.WriteLogEntry({.sequence_number = 1000,
                    .updates = {Bat(0, x), ImageBuilder::ZeroUpdate(BlockOffset(2) + 4096, 8192)}});
  b_.MarkLogDirty();
  auto overlay_view = OpenBuilt(b_);
  ASSERT_TRUE(overlay_view);
  const std::string expected = Sha256OfImage(*overlay_view);

  std::unique_ptr<SparseMemoryFile> owned = b_.BuildFile(/*writable=*/true);
  SparseMemoryFile* file = owned.get();
  auto rw = Image::Open(std::move(owned), OpenOptions{.read_only = false});
  ASSERT_TRUE(rw.ok()) << rw.status().message();
  EXPECT_EQ(Sha256OfImage(**rw), expected);
  EXPECT_EQ((*rw)->info().log.replayed_entries, 1u);

  auto reopened = Image::Open(std::make_unique<SparseMemoryFile>(*file, "replayed.vhdx", false));
  ASSERT_TRUE(reopened.ok()) << reopened.status().message();
  EXPECT_FALSE((*reopened)->info().log.dirty);
  EXPECT_EQ(Sha256OfImage(**reopened), expected);
}

TEST_F(LogReplayTest, SequenceAndEntryWrappingAroundTheRingEnd) {
  const uint32_t L = b_.log_length();
  uint64_t x = b_.AppendSpace(MiB);  // block space whose bytes come only from the log
  auto s1 = PatternBytes(kLogSectorSize, 5), s2 = PatternBytes(kLogSectorSize, 6);
  // Entry 1: [L-12K, L-4K). Entry 2: descriptor sector at L-4K, its three
  // data sectors at 0, 4K and 8K.
  uint32_t first =
      b_.WriteLogEntry({.sequence_number = 7, .updates = {Bat(0, x)}, .position = L - 12288});
  b_.WriteLogEntry({.sequence_number = 8,
                    .updates = {Bat(0, x), ImageBuilder::DataUpdate(x + 8192, s1),
                                ImageBuilder::DataUpdate(x + 20480, s2)},
                    .tail = first});
  b_.MarkLogDirty();
  auto image = OpenBuilt(b_);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().log.active_entries, 2u);
  std::vector<uint8_t> expected = Zeros();
  std::copy(s1.begin(), s1.end(), expected.begin() + 8192);
  std::copy(s2.begin(), s2.end(), expected.begin() + 20480);
  EXPECT_EQ(FirstDifference(Block(*image, 0), expected), -1);
}

TEST_F(LogReplayTest, SecondDescriptorSectorWrapsToRingStart) {
  // 130 descriptors need two descriptor sectors; at L-4K the second one
  // lands at log offset 0, followed by the 130 data sectors.
  const uint32_t L = b_.log_length();
  uint64_t x = b_.AppendSpace(MiB);
  std::vector<LogUpdate> updates = {Bat(0, x)};
  std::vector<uint8_t> expected = Zeros();
  for (uint64_t i = 0; i < 129; ++i) {
    auto s = PatternBytes(kLogSectorSize, 100 + i);
    std::copy(s.begin(), s.end(), expected.begin() + i * kLogSectorSize);
    updates.push_back(ImageBuilder::DataUpdate(x + i * kLogSectorSize, s));
  }
  b_.WriteLogEntry({.sequence_number = 3, .updates = updates, .position = L - 4096});
  b_.MarkLogDirty();
  auto image = OpenBuilt(b_);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().log.active_descriptors, 130u);
  EXPECT_EQ(FirstDifference(Block(*image, 0), expected), -1);
}

TEST_F(LogReplayTest, ZeroDescriptorsAreAppliedInDescriptorOrder) {
  auto data = PatternBytes(MiB, 8);
  b_.WriteVirtual(2 * MiB, data);  // block 2, in place
  uint64_t at = BlockOffset(2);
  auto s = PatternBytes(kLogSectorSize, 9);
  // Zero 128 KiB, then put one sector back inside the zeroed range.
  b_.WriteLogEntry({.sequence_number = 20,
                    .updates = {ImageBuilder::ZeroUpdate(at + 64 * KiB, 128 * KiB),
                                ImageBuilder::DataUpdate(at + 96 * KiB, s)}});
  b_.MarkLogDirty();
  auto image = OpenBuilt(b_);
  ASSERT_TRUE(image);
  std::vector<uint8_t> expected = data;
  std::fill(expected.begin() + 64 * KiB, expected.begin() + 192 * KiB, 0);
  std::copy(s.begin(), s.end(), expected.begin() + 96 * KiB);
  EXPECT_EQ(FirstDifference(Block(*image, 2), expected), -1);
}

TEST_F(LogReplayTest, ZeroDescriptorOverTheBatSectorUnmapsBlocks) {
  b_.WriteVirtual(2 * MiB, PatternBytes(MiB, 8));
  b_.WriteLogEntry({.sequence_number = 20,
                    .updates = {ImageBuilder::ZeroUpdate(b_.bat_offset(), kLogSectorSize)}});
  b_.MarkLogDirty();
  auto image = OpenBuilt(b_);
  ASSERT_TRUE(image);
  EXPECT_EQ(Block(*image, 2), Zeros());
  auto extents = MapAll(*image);
  ASSERT_EQ(extents.size(), 1u);
  EXPECT_FALSE(extents[0].data);
}

TEST_F(LogReplayTest, EntriesWithAnotherLogGuidAreIgnored) {
  uint64_t x = NewBlockData(1), y = NewBlockData(2);
  // A valid entry, then a stale entry of an earlier session right behind it
  // (next sequence number, intact CRC, other LogGuid), then more stale ones
  // with much higher sequence numbers elsewhere.
  b_.WriteLogEntry({.sequence_number = 5, .updates = {Bat(0, x)}, .position = 0});
  b_.WriteLogEntry({.sequence_number = 6, .updates = {Bat(0, y)}, .log_guid = OtherGuid()});
  b_.WriteLogEntry({.sequence_number = 900,
                    .updates = {Bat(0, y)},
                    .position = 128 * KiB,
                    .log_guid = OtherGuid()});
  b_.WriteLogEntry({.sequence_number = 901, .updates = {Bat(0, y)}, .log_guid = OtherGuid()});
  b_.MarkLogDirty();
  auto image = OpenBuilt(b_);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().log.head_sequence_number, 5u);
  EXPECT_EQ(Block(*image, 0), PatternBytes(MiB, 1));
}

class HighestSequenceTest : public LogReplayTest, public ::testing::WithParamInterface<bool> {};

TEST_P(HighestSequenceTest, SequenceWithTheHighestHeadWins) {
  // Two complete sequences; the one placed later in the ring wins only if
  // its head's sequence number is higher.
  const bool later_wins = GetParam();
  uint64_t x = NewBlockData(1), y = NewBlockData(2);
  uint64_t first_seq = later_wins ? 10 : 30, second_seq = later_wins ? 30 : 10;
  uint32_t a =
      b_.WriteLogEntry({.sequence_number = first_seq, .updates = {Bat(1, y)}, .position = 0});
  b_.WriteLogEntry({.sequence_number = first_seq + 1, .updates = {Bat(0, x)}, .tail = a});
  uint32_t c = b_.WriteLogEntry(
      {.sequence_number = second_seq, .updates = {Bat(1, x)}, .position = 256 * KiB});
  b_.WriteLogEntry({.sequence_number = second_seq + 1, .updates = {Bat(0, y)}, .tail = c});
  b_.MarkLogDirty();
  auto image = OpenBuilt(b_);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().log.head_sequence_number, 31u);
  EXPECT_EQ(image->info().log.active_entries, 2u);
  EXPECT_EQ(Block(*image, 0), PatternBytes(MiB, later_wins ? 2 : 1));
}

INSTANTIATE_TEST_SUITE_P(Order, HighestSequenceTest, ::testing::Bool());

// Entry 1 was applied long ago; its target has since been reused for
// payload data written in place. The head (entry 2) names itself as Tail, so
// entry 1 must not be replayed over that data.
TEST_F(LogReplayTest, ReplayStartsAtTheHeadsTailEntry) {
  auto data = PatternBytes(MiB, 4);
  b_.WriteVirtual(1 * MiB, data);
  const uint64_t block1 = BlockOffset(1);
  uint64_t x = NewBlockData(5);
  auto stale = PatternBytes(kLogSectorSize, 6);
  auto run = [&](bool head_tail_is_first) {
    ImageBuilder b = b_;
    uint32_t first = b.WriteLogEntry({.sequence_number = 70,
                                      .updates = {ImageBuilder::DataUpdate(block1 + 8192, stale)},
                                      .position = 0});
    b.WriteLogEntry({.sequence_number = 71,
                     .updates = {b.BatSectorUpdate(0, kPayloadFullyPresent, x)},
                     .tail = head_tail_is_first ? std::optional<uint32_t>(first) : std::nullopt});
    b.MarkLogDirty();
    return OpenBuilt(b);
  };
  auto image = run(false);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().log.active_entries, 1u);
  EXPECT_EQ(Block(*image, 1), data);
  EXPECT_EQ(Block(*image, 0), PatternBytes(MiB, 5));

  // Control: with the Tail at entry 1, its update is part of the replay.
  image = run(true);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().log.active_entries, 2u);
  std::vector<uint8_t> expected = data;
  std::copy(stale.begin(), stale.end(), expected.begin() + 8192);
  EXPECT_EQ(Block(*image, 1), expected);
}

TEST_F(LogReplayTest, HeadWhoseTailIsOutsideItsSequenceIsIgnored) {
  uint64_t x = NewBlockData(1), y = NewBlockData(2);
  uint32_t a = b_.WriteLogEntry({.sequence_number = 3, .updates = {Bat(0, x)}, .position = 0});
  // Higher sequence number, but its Tail names entry `a`, which is not part
  // of its sequence (3 is not 49): the sequence is incomplete.
  b_.WriteLogEntry(
      {.sequence_number = 50, .updates = {Bat(0, y)}, .position = 64 * KiB, .tail = a});
  b_.MarkLogDirty();
  auto image = OpenBuilt(b_);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().log.head_sequence_number, 3u);
  EXPECT_EQ(Block(*image, 0), PatternBytes(MiB, 1));

  // Alone, it leaves no valid sequence at all.
  ImageBuilder alone({.virtual_size = 16 * MiB});
  alone.WriteLogEntry({.sequence_number = 50, .updates = {}, .position = 64 * KiB, .tail = 0});
  alone.MarkLogDirty();
  EXPECT_EQ(OpenStatus(alone).code(), Errc::kCorrupt);
}

TEST_F(LogReplayTest, DirtyLogWithoutAValidSequenceIsCorrupt) {
  auto expect_corrupt = [](const ImageBuilder& b, const char* what) {
    Status st = OpenStatus(b);
    EXPECT_EQ(st.code(), Errc::kCorrupt) << what;
    EXPECT_NE(st.message().find("no valid entry sequence"), std::string::npos) << st.message();
    auto report = Check(*b.BuildFile());
    ASSERT_TRUE(report.ok());
    ASSERT_FALSE(report->findings.empty()) << what;
    EXPECT_EQ(report->findings.back().structure, "log");
    EXPECT_EQ(report->findings.back().severity, CheckFinding::Severity::kError);
  };
  {
    ImageBuilder b = b_;
    b.MarkLogDirty();
    expect_corrupt(b, "empty log");
  }
  {
    ImageBuilder b = b_;
    b.WriteLogEntry({.sequence_number = 4, .updates = {Bat(0, 4 * MiB)}, .log_guid = OtherGuid()});
    b.MarkLogDirty();
    expect_corrupt(b, "only another session's entries");
  }
  {
    ImageBuilder b = b_;
    b.WriteLogEntry({.sequence_number = 4, .updates = {Bat(0, 4 * MiB)}});
    auto byte = b.ReadFile(b.log_offset() + 5000, 1);
    byte[0] ^= 1;
    b.WriteFile(b.log_offset() + 5000, byte);  // inside the data sector: CRC mismatch
    b.MarkLogDirty();
    expect_corrupt(b, "bad checksum");
  }
}

TEST_F(LogReplayTest, FileShorterThanTheHeadsFlushedFileOffsetIsCorrupt) {
  const uint64_t size = b_.file_size();
  ImageBuilder ok = b_;
  ok.WriteLogEntry({.sequence_number = 9, .flushed_file_offset = size});
  ok.MarkLogDirty();
  EXPECT_TRUE(OpenStatus(ok).ok()) << OpenStatus(ok).message();

  b_.WriteLogEntry({.sequence_number = 9, .flushed_file_offset = size + MiB});
  b_.MarkLogDirty();
  Status st = OpenStatus(b_);
  EXPECT_EQ(st.code(), Errc::kCorrupt);
  EXPECT_NE(st.message().find("truncated"), std::string::npos) << st.message();
}

TEST_F(LogReplayTest, LastFileOffsetExtendsTheLogicalFile) {
  const uint64_t end = b_.file_size();
  auto s = PatternBytes(kLogSectorSize, 3);
  // Block 0 lives just past the physical end; only one sector of it is in the log.
  auto build = [&](uint64_t last) {
    ImageBuilder b = b_;
    b.WriteLogEntry({.sequence_number = 2,
                     .updates = {b.BatSectorUpdate(0, kPayloadFullyPresent, end),
                                 ImageBuilder::DataUpdate(end + 4096, s)},
                     .last_file_offset = last});
    b.MarkLogDirty();
    return b;
  };
  ImageBuilder extended = build(end + MiB);
  auto image = OpenBuilt(extended);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().file_size, end + MiB);
  EXPECT_EQ(extended.file_size(), end);  // physically unchanged
  std::vector<uint8_t> expected = Zeros();
  std::copy(s.begin(), s.end(), expected.begin() + 4096);
  EXPECT_EQ(Block(*image, 0), expected);

  // Without the extension the block runs past the end of the file.
  image = OpenBuilt(build(end));
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().file_size, end + 8192);  // the data target still extends it
  std::vector<uint8_t> buf(512);
  Status st = image->Read(0, buf.data(), buf.size());
  EXPECT_EQ(st.code(), Errc::kCorrupt);
  EXPECT_NE(st.message().find("past the end of the file"), std::string::npos) << st.message();
}

// ---------------------------------------------------------------------------
// Hostile fields. A valid sequence maps block 0 to X; a later entry with a
// higher sequence number would map it to Y, but one field is hostile (its
// checksum recomputed, so that field alone decides). The entry must be
// ignored: the image opens and block 0 shows X.

struct HostileCase {
  const char* name;
  std::function<void(std::vector<uint8_t>&, const ImageBuilder&)> edit;
};

// Offsets inside a serialised entry (digest §7.2): the header, then
// descriptor k at 64 + 32k; the hostile entry has a data descriptor (0)
// and a zero descriptor (1), so its data sector is the entry's second.
constexpr size_t kDesc0 = 64, kDesc1 = 96, kDataSector = 4096;

const HostileCase kHostileCases[] = {
    {"entry_length_beyond_log", [](auto& e, auto&) { EncodeFixed32(e.data() + 8, 2 * MiB); }},
    {"entry_length_huge", [](auto& e, auto&) { EncodeFixed32(e.data() + 8, 0xFFFFF000u); }},
    {"entry_length_unaligned", [](auto& e, auto&) { EncodeFixed32(e.data() + 8, 8192 + 512); }},
    {"entry_length_zero", [](auto& e, auto&) { EncodeFixed32(e.data() + 8, 0); }},
    {"tail_equals_log_length", [](auto& e, auto&) { EncodeFixed32(e.data() + 12, MiB); }},
    {"tail_huge", [](auto& e, auto&) { EncodeFixed32(e.data() + 12, 0xFFFFF000u); }},
    {"tail_unaligned", [](auto& e, auto&) { EncodeFixed32(e.data() + 12, 64 * KiB + 8); }},
    {"sequence_zero", [](auto& e, auto&) { EncodeFixed64(e.data() + 16, 0); }},
    {"descriptor_count_too_big", [](auto& e, auto&) { EncodeFixed32(e.data() + 24, 200); }},
    {"descriptor_count_max", [](auto& e, auto&) { EncodeFixed32(e.data() + 24, 0xFFFFFFFFu); }},
    {"descriptor_count_needs_data_sector",
     [](auto& e, auto&) {
       // Three descriptors, but the third (a zero-filled slot) is no descriptor.
       EncodeFixed32(e.data() + 24, 3);
     }},
    {"target_file_identifier", [](auto& e, auto&) { EncodeFixed64(e.data() + kDesc0 + 16, 0); }},
    {"target_header", [](auto& e, auto&) { EncodeFixed64(e.data() + kDesc0 + 16, 0x10000); }},
    {"target_second_header",
     [](auto& e, auto&) { EncodeFixed64(e.data() + kDesc1 + 16, 0x2F000); }},
    {"target_inside_log",
     [](auto& e, auto& b) { EncodeFixed64(e.data() + kDesc0 + 16, b.log_offset() + 8192); }},
    {"zero_straddles_log_start",
     [](auto& e, auto& b) {
       EncodeFixed64(e.data() + kDesc1 + 8, 8192);
       EncodeFixed64(e.data() + kDesc1 + 16, b.log_offset() - 4096);
     }},
    {"target_unaligned",
     [](auto& e, auto&) { EncodeFixed64(e.data() + kDesc0 + 16, 5 * MiB + 512); }},
    {"target_beyond_any_file",
     [](auto& e, auto&) { EncodeFixed64(e.data() + kDesc0 + 16, 1ull << 60); }},
    {"zero_length_overflows",
     [](auto& e, auto&) { EncodeFixed64(e.data() + kDesc1 + 8, ~0ull << 12); }},
    {"zero_length_beyond_any_file",
     [](auto& e, auto&) { EncodeFixed64(e.data() + kDesc1 + 8, 1ull << 60); }},
    {"zero_length_unaligned",
     [](auto& e, auto&) { EncodeFixed64(e.data() + kDesc1 + 8, 4096 + 1); }},
    {"descriptor_signature", [](auto& e, auto&) { std::memcpy(e.data() + kDesc0, "junk", 4); }},
    {"descriptor_sequence", [](auto& e, auto&) { EncodeFixed64(e.data() + kDesc0 + 24, 51); }},
    {"zero_descriptor_sequence", [](auto& e, auto&) { EncodeFixed64(e.data() + kDesc1 + 24, 49); }},
    {"data_sector_signature",
     [](auto& e, auto&) { std::memcpy(e.data() + kDataSector, "dada", 4); }},
    {"data_sector_sequence_low",
     [](auto& e, auto&) { EncodeFixed32(e.data() + kDataSector + 4092, 51); }},
    {"data_sector_sequence_high",
     [](auto& e, auto&) { EncodeFixed32(e.data() + kDataSector + 4, 1); }},
    {"entry_signature", [](auto& e, auto&) { std::memcpy(e.data(), "LOGE", 4); }},
};

void PrintTo(const HostileCase& c, std::ostream* os) { *os << c.name; }

class HostileLogTest : public LogReplayTest, public ::testing::WithParamInterface<HostileCase> {};

TEST_P(HostileLogTest, HostileEntryIsIgnored) {
  uint64_t x = NewBlockData(1), y = NewBlockData(2);
  b_.WriteLogEntry({.sequence_number = 1, .updates = {Bat(0, x)}, .position = 0});
  const ImageBuilder& builder = b_;
  b_.WriteLogEntry({.sequence_number = 50,
                    .updates = {Bat(0, y), ImageBuilder::ZeroUpdate(5 * MiB, 4096)},
                    .position = 64 * KiB,
                    .edit = [&](std::vector<uint8_t>& e) { GetParam().edit(e, builder); }});
  b_.MarkLogDirty();
  auto image = OpenBuilt(b_);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->info().log.head_sequence_number, 1u);
  EXPECT_EQ(Block(*image, 0), PatternBytes(MiB, 1));
}

INSTANTIATE_TEST_SUITE_P(Fields, HostileLogTest, ::testing::ValuesIn(kHostileCases),
                         [](const auto& p) { return std::string(p.param.name); });

TEST_F(LogReplayTest, HugeZeroFillWithinTheCapDoesNotAllocate) {
  // 64 TiB of zeros is a legal-looking update (within the sanity cap): the
  // in-memory replay must describe it, not materialise it.
  uint64_t x = NewBlockData(1);
  b_.WriteLogEntry(
      {.sequence_number = 1, .updates = {Bat(0, x), ImageBuilder::ZeroUpdate(16 * MiB, 64 * TiB)}});
  b_.MarkLogDirty();
  auto image = Image::Open(b_.BuildFile());
  if (!image.ok()) {
    EXPECT_EQ(image.status().code(), Errc::kCorrupt) << image.status().message();
    return;
  }
  EXPECT_EQ(Block(**image, 0), PatternBytes(MiB, 1));
  EXPECT_GE((*image)->info().file_size, 64 * TiB);
}

// A read-write open replays into the file: the zero range past the end of
// the file must become a (sparse) extension, not 64 TiB of zero writes.
TEST_F(LogReplayTest, ReadWriteReplayOfHugeZeroFillExtendsWithoutWriting) {
  uint64_t x = NewBlockData(1);
  b_.WriteLogEntry({.sequence_number = 1,
                    .updates = {Bat(0, x), ImageBuilder::ZeroUpdate(x + 4096, 8192),
                                ImageBuilder::ZeroUpdate(16 * MiB, 64 * TiB)}});
  b_.MarkLogDirty();
  std::unique_ptr<SparseMemoryFile> owned = b_.BuildFile(/*writable=*/true);
  SparseMemoryFile* file = owned.get();
  const uint64_t allocated_before = *file->AllocatedSize();
  auto image = Image::Open(std::move(owned), OpenOptions{.read_only = false});
  ASSERT_TRUE(image.ok()) << image.status().message();
  EXPECT_EQ(*file->Size(), 16 * MiB + 64 * TiB);
  EXPECT_LE(*file->AllocatedSize(), allocated_before + MiB);
  std::vector<uint8_t> expected = PatternBytes(MiB, 1);
  std::fill(expected.begin() + 4096, expected.begin() + 12288, 0);
  EXPECT_EQ(FirstDifference(Block(**image, 0), expected), -1);
}

// Random damage to a dirty log's bytes: opening, reading and checking
// either work or fail with a message; nothing crashes or hangs.
TEST_F(LogReplayTest, RandomlyDamagedLogsNeverCrash) {
  uint64_t x = NewBlockData(1);
  uint32_t first = b_.WriteLogEntry({.sequence_number = 77, .updates = {Bat(0, x)}, .position = 0});
  b_.WriteLogEntry({.sequence_number = 78,
                    .updates = {Bat(1, x), ImageBuilder::ZeroUpdate(x + 8192, 64 * KiB),
                                ImageBuilder::DataUpdate(x, PatternBytes(4096, 2))},
                    .tail = first});
  b_.MarkLogDirty();
  const uint64_t log = b_.log_offset();
  const uint32_t entry_bytes = 5 * 4096;  // both entries
  std::mt19937_64 rng(99);
  int opened = 0;
  for (int iter = 0; iter < 300; ++iter) {
    auto file = b_.BuildFile(/*writable=*/true);
    for (int k = 1 + rng() % 4; k > 0; --k) {
      uint64_t at = log + rng() % entry_bytes;
      uint8_t v = static_cast<uint8_t>(rng());
      if (rng() % 2 && (at - log) % 4096 < 64)
        v = static_cast<uint8_t>(rng() % 4);  // small field values
      ASSERT_TRUE(file->WriteAt(at, &v, 1).ok());
    }
    if (rng() % 2) {  // re-seal entry 1 so its fields, not its CRC, are tested
      std::vector<uint8_t> e(2 * 4096);
      ASSERT_TRUE(file->ReadAt(log, e.data(), e.size()).ok());
      EncodeFixed32(e.data() + 4, crc32c::ValueWithZeroedField(e.data(), e.size(), 4));
      ASSERT_TRUE(file->WriteAt(log, e.data(), 8).ok());
    }
    auto report = Check(*file);
    ASSERT_TRUE(report.ok()) << report.status().message();
    auto image = Image::Open(std::unique_ptr<File>(std::move(file)));
    if (!image.ok()) {
      EXPECT_FALSE(image.status().message().empty());
      continue;
    }
    ++opened;
    std::vector<uint8_t> buf(MiB);
    for (uint64_t off = 0; off < 16 * MiB; off += MiB) {
      Status st = (*image)->Read(off, buf.data(), buf.size());
      EXPECT_TRUE(st.ok() || !st.message().empty());
    }
  }
  EXPECT_GT(opened, 0);  // some damage lands in ignored bytes
}

// ---------------------------------------------------------------------------
// The in-memory overlay (read-only opens) and ApplyActiveLog (read-write
// opens) must produce the same file, and both must match a model that
// replays the updates from the head's Tail entry.

void ApplyToModel(const LogUpdate& u, std::vector<uint8_t>& model) {
  uint64_t len = u.is_zero ? u.zero_length : kLogSectorSize;
  if (model.size() < u.file_offset + len) model.resize(u.file_offset + len, 0);
  if (u.is_zero)
    std::fill(model.begin() + u.file_offset, model.begin() + u.file_offset + len, 0);
  else
    std::copy(u.data.begin(), u.data.end(), model.begin() + u.file_offset);
}

std::vector<uint8_t> ReadAll(const File& f) {
  std::vector<uint8_t> out(*f.Size());
  EXPECT_EQ(*f.ReadAt(0, out.data(), out.size()), out.size());
  return out;
}

TEST(LogReplayModel, OverlayAndApplyMatchTheModelForRandomLogs) {
  std::mt19937_64 rng(2024);
  for (int iter = 0; iter < 40; ++iter) {
    SCOPED_TRACE(fmt::format("iteration {}", iter));
    ImageBuilder b({.virtual_size = 8 * MiB});
    for (int k = 0; k < 4; ++k)
      b.WriteFile(192 * KiB + rng() % (3 * MiB), PatternBytes(4096 + rng() % 60000, rng()));
    const uint64_t size = b.file_size();
    const uint32_t L = b.log_length();
    // Random target of `len` bytes: between the headers and the log (region
    // tables, reserved area), or past the log up to beyond the end of the
    // file; never the headers or the log itself.
    auto target = [&](uint64_t len) -> uint64_t {
      uint64_t low_slots = (MiB - 192 * KiB - len) / 4096 + 1;
      return rng() % 4 == 0 ? 192 * KiB + (rng() % low_slots) * 4096
                            : 2 * MiB + (rng() % 1536) * 4096;
    };
    const int entries = 1 + rng() % 5;
    std::vector<std::vector<LogUpdate>> updates(entries);
    for (auto& list : updates)
      for (int n = rng() % 7; n > 0; --n) {
        if (rng() % 3 == 0) {
          uint64_t len = 4096 * (1 + rng() % 64);
          list.push_back(ImageBuilder::ZeroUpdate(target(len), len));
        } else {
          list.push_back(ImageBuilder::DataUpdate(target(4096), PatternBytes(4096, rng())));
        }
      }
    if (rng() % 3 == 0)  // a stale entry somewhere, partly overwritten or not
      b.WriteLogEntry({.sequence_number = 5,
                       .updates = updates[0],
                       .position = static_cast<uint32_t>(rng() % 256) * 4096,
                       .log_guid = OtherGuid()});
    const int tail_index = rng() % entries;
    const uint64_t seq0 = (rng() >> 1) + 1;
    const uint64_t last = size - MiB + (rng() % 12) * MiB;
    std::vector<uint32_t> pos(entries);
    pos[0] = static_cast<uint32_t>(rng() % 256) * 4096;
    for (int i = 0; i < entries; ++i) {
      bool head = i == entries - 1;
      uint32_t at = b.WriteLogEntry({.sequence_number = seq0 + i,
                                     .updates = updates[i],
                                     .position = pos[i],
                                     .tail = pos[head ? tail_index : 0],
                                     .flushed_file_offset = rng() % 2 ? size : 0,
                                     .last_file_offset = head ? last : size});
      EXPECT_EQ(at, pos[i]);
      if (!head) {
        uint64_t d = (updates[i].size() + 2 + 127) / 128, data = 0;
        for (const auto& u : updates[i]) data += !u.is_zero;
        pos[i + 1] = static_cast<uint32_t>((pos[i] + (d + data) * 4096) % L);
      }
    }
    b.MarkLogDirty();
    const std::vector<uint8_t> bytes = b.Build();
    std::vector<uint8_t> model = bytes;
    for (int i = tail_index; i < entries; ++i)
      for (const auto& u : updates[i]) ApplyToModel(u, model);
    if (model.size() < last) model.resize(last, 0);

    auto file = NewMemoryFile("log.vhdx", bytes, /*writable=*/false);
    LogReader reader(*file, b.log_offset(), L, b.log_guid());
    auto active = reader.FindActiveSequence();
    ASSERT_TRUE(active.ok()) << active.status().message();
    ASSERT_TRUE(active->has_value());
    EXPECT_EQ((*active)->entries.size(), static_cast<size_t>(entries - tail_index));
    EXPECT_EQ((*active)->entries.back().header.sequence_number, seq0 + entries - 1);

    ReplayOverlayFile overlay(*file, b.log_offset(), **active, bytes.size());
    ASSERT_EQ(*overlay.Size(), model.size());
    std::vector<uint8_t> shown(model.size());
    for (uint64_t off = 0; off < shown.size();) {  // odd-sized pieces cross overlay segments
      size_t n = std::min<uint64_t>(1 + rng() % (300 * KiB), shown.size() - off);
      ASSERT_EQ(*overlay.ReadAt(off, shown.data() + off, n), n);
      off += n;
    }
    EXPECT_EQ(FirstDifference(shown, model), -1);

    auto copy = NewMemoryFile("copy.vhdx", bytes, /*writable=*/true);
    ASSERT_TRUE(ApplyActiveLog(*copy, b.log_offset(), **active).ok());
    EXPECT_EQ(FirstDifference(ReadAll(*copy), model), -1);
  }
}

}  // namespace
}  // namespace vhdx::test
