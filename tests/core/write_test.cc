// The write path through vhdx::Image: content, allocation, batching of BAT
// changes through the log, discard and write-zeroes, header GUIDs, and
// the errors of bad requests.
#include <fmt/format.h>

#include <cstring>

#include "core_test_util.h"
#include "format/bat.h"
#include "format/constants.h"
#include "io/fault_file.h"
#include "util/coding.h"
#include "vhdx/create.h"

namespace vhdx::test {
namespace {

// A fresh image in memory, opened read-write; `file()` stays valid while
// the image lives.
struct RwImage {
  SparseMemoryFile* raw = nullptr;
  std::unique_ptr<Image> image;
};

std::unique_ptr<SparseMemoryFile> NewImageFile(const CreateOptions& o) {
  auto file = std::make_unique<SparseMemoryFile>("w.vhdx", true);
  Status st = CreateImage(*file, o);
  EXPECT_TRUE(st.ok()) << st.message();
  return file;
}

RwImage OpenRw(std::unique_ptr<SparseMemoryFile> file) {
  RwImage r;
  r.raw = file.get();
  auto image = Image::Open(std::move(file), {.read_only = false});
  EXPECT_TRUE(image.ok()) << image.status().message();
  if (image.ok()) r.image = std::move(image).value();
  return r;
}

std::unique_ptr<Image> Reopen(const SparseMemoryFile& f, bool read_only = true) {
  auto image = Image::Open(std::make_unique<SparseMemoryFile>(f, "w.vhdx", !read_only),
                           {.read_only = read_only});
  EXPECT_TRUE(image.ok()) << image.status().message();
  return image.ok() ? std::move(image).value() : nullptr;
}

void ExpectCheckClean(const File& f) {
  auto report = Check(f);
  ASSERT_TRUE(report.ok()) << report.status().message();
  for (const auto& x : report->findings) ADD_FAILURE() << x.structure << ": " << x.message;
}

CreateOptions Dynamic(uint64_t size, uint32_t block = 1 * MiB) {
  CreateOptions o;
  o.virtual_size = size;
  o.block_size = block;
  return o;
}

TEST(WriteTest, WritesReadBackBeforeAndAfterCloseAndLeaveACleanLog) {
  auto rw = OpenRw(NewImageFile(Dynamic(64 * MiB)));
  ASSERT_TRUE(rw.image);
  auto a = PatternBytes(3 * MiB + 777, 1);
  const uint64_t at = 5 * MiB - 300;  // unaligned, spans four blocks
  ASSERT_TRUE(rw.image->Write(at, a.data(), a.size()).ok());
  EXPECT_EQ(ReadImage(*rw.image, at, a.size()), a);
  EXPECT_EQ(ReadImage(*rw.image, at - 1000, 1000), std::vector<uint8_t>(1000, 0));
  ASSERT_TRUE(rw.image->Close().ok());
  const ImageInfo& info = rw.image->info();
  EXPECT_TRUE(info.headers[info.current_header].log_guid.IsZero());

  ExpectCheckClean(*rw.raw);
  auto ro = Reopen(*rw.raw);
  ASSERT_TRUE(ro);
  EXPECT_FALSE(ro->info().log.dirty);
  EXPECT_EQ(ReadImage(*ro, at, a.size()), a);
  std::vector<uint8_t> whole(64 * MiB);
  ASSERT_TRUE(ro->Read(0, whole.data(), whole.size()).ok());
  std::vector<uint8_t> expect(64 * MiB, 0);
  std::memcpy(expect.data() + at, a.data(), a.size());
  EXPECT_TRUE(whole == expect);
  auto counts = ro->CountAllocation();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->payload[format::kPayloadFullyPresent], 5u);  // blocks 4-8
}

TEST(WriteTest, NewBlocksAre1MiBAlignedPastTheStructuresAndPartlyWrittenBlocksReadZeros) {
  auto rw = OpenRw(NewImageFile(Dynamic(256 * MiB, 8 * MiB)));
  ASSERT_TRUE(rw.image);
  uint8_t x = 0x5A;
  ASSERT_TRUE(rw.image->Write(100 * MiB + 12345, &x, 1).ok());
  ASSERT_TRUE(rw.image->Close().ok());
  auto ro = Reopen(*rw.raw);
  std::vector<MapExtent> map = MapRange(*ro, 96 * MiB, 8 * MiB);
  ASSERT_EQ(map.size(), 1u);
  ASSERT_TRUE(map[0].offset.has_value());
  EXPECT_EQ(*map[0].offset % MiB, 0u);
  EXPECT_GE(*map[0].offset, 4 * MiB);  // past log, metadata and BAT
  auto block = ReadImage(*ro, 96 * MiB, 8 * MiB);
  std::vector<uint8_t> expect(8 * MiB, 0);
  expect[4 * MiB + 12345] = 0x5A;
  EXPECT_TRUE(block == expect);
  ExpectCheckClean(*rw.raw);
}

TEST(WriteTest, ZeroWritesToUnallocatedBlocksAllocateNothing) {
  auto rw = OpenRw(NewImageFile(Dynamic(64 * MiB)));
  std::vector<uint8_t> zeros(3 * MiB, 0);
  ASSERT_TRUE(rw.image->Write(MiB, zeros.data(), zeros.size()).ok());
  EXPECT_EQ(rw.image->write_stats().blocks_allocated, 0u);
  auto counts = rw.image->CountAllocation();
  EXPECT_EQ(counts->payload[format::kPayloadFullyPresent], 0u);
}

TEST(WriteTest, AFlushCostsAConstantNumberOfFsyncsHoweverManyBlocksItCommits) {
  for (int blocks : {1, 50, 400}) {
    auto rw = OpenRw(NewImageFile(Dynamic(512 * MiB)));
    uint8_t x = 1;
    ASSERT_TRUE(rw.image->Write(0, &x, 1).ok());
    ASSERT_TRUE(rw.image->Flush().ok());  // session start: headers, first log entry
    WriteStats before = rw.image->write_stats();
    for (int b = 1; b <= blocks; ++b) ASSERT_TRUE(rw.image->Write(uint64_t(b) * MiB, &x, 1).ok());
    ASSERT_TRUE(rw.image->Flush().ok());
    WriteStats after = rw.image->write_stats();
    EXPECT_EQ(after.blocks_allocated - before.blocks_allocated, uint64_t(blocks));
    EXPECT_EQ(after.flushes - before.flushes, 2u) << blocks << " blocks";
    EXPECT_EQ(after.log_entries - before.log_entries, 1u);
    ASSERT_TRUE(rw.image->Close().ok());
    ExpectCheckClean(*rw.raw);
  }
}

TEST(WriteTest, ManyDirtyBatPagesAreSplitOverSeveralEntriesAndWrapTheLog) {
  // 1 MiB blocks, 320 GiB: every block write dirties its own BAT page when
  // blocks are 512 entries apart; 600 pages exceed one 1 MiB log's entry.
  auto rw = OpenRw(NewImageFile(Dynamic(320 * GiB)));
  uint8_t x = 7;
  for (int round = 0; round < 3; ++round) {
    for (uint64_t p = 0; p < 600; ++p) {
      x = static_cast<uint8_t>(p + round);
      ASSERT_TRUE(rw.image->Write((p * 512 + round) * MiB, &x, 1).ok());
    }
    ASSERT_TRUE(rw.image->Flush().ok());
  }
  EXPECT_GE(rw.image->write_stats().log_entries, 6u);
  ASSERT_TRUE(rw.image->Close().ok());
  ExpectCheckClean(*rw.raw);
  auto ro = Reopen(*rw.raw);
  for (int round = 0; round < 3; ++round)
    for (uint64_t p = 0; p < 600; p += 37)
      EXPECT_EQ(ReadImage(*ro, (p * 512 + round) * MiB, 1)[0], static_cast<uint8_t>(p + round));
}

TEST(WriteTest, DiscardUnmapsWholeBlocksZeroesPartsAndReusesTheSpace) {
  auto rw = OpenRw(NewImageFile(Dynamic(64 * MiB)));
  auto a = PatternBytes(8 * MiB, 2);
  ASSERT_TRUE(rw.image->Write(0, a.data(), a.size()).ok());
  ASSERT_TRUE(rw.image->Flush().ok());
  uint64_t end_before = *rw.raw->Size();
  // Blocks 1-2 whole, parts of 0 and 3.
  ASSERT_TRUE(rw.image->Discard(MiB / 2, 3 * MiB).ok());
  std::vector<uint8_t> expect = a;
  std::memset(expect.data() + MiB / 2, 0, 3 * MiB);
  EXPECT_TRUE(ReadImage(*rw.image, 0, 8 * MiB) == expect);
  EXPECT_EQ(rw.image->write_stats().blocks_released, 2u);
  ASSERT_TRUE(rw.image->Flush().ok());
  // The released space is reused before the file grows.
  auto b = PatternBytes(2 * MiB, 3);
  ASSERT_TRUE(rw.image->Write(20 * MiB, b.data(), b.size()).ok());
  EXPECT_EQ(*rw.raw->Size(), end_before);
  ASSERT_TRUE(rw.image->Close().ok());
  ExpectCheckClean(*rw.raw);
  auto ro = Reopen(*rw.raw);
  EXPECT_TRUE(ReadImage(*ro, 0, 8 * MiB) == expect);
  EXPECT_TRUE(ReadImage(*ro, 20 * MiB, 2 * MiB) == b);
  auto counts = ro->CountAllocation();
  EXPECT_EQ(counts->payload[format::kPayloadUnmapped], 2u);
}

TEST(WriteTest, WriteZeroesWithAndWithoutUnmap) {
  auto rw = OpenRw(NewImageFile(Dynamic(16 * MiB)));
  auto a = PatternBytes(16 * MiB, 4);
  ASSERT_TRUE(rw.image->Write(0, a.data(), a.size()).ok());
  ASSERT_TRUE(rw.image->WriteZeroes(2 * MiB, 2 * MiB, /*may_unmap=*/true).ok());
  ASSERT_TRUE(rw.image->WriteZeroes(8 * MiB, 2 * MiB, /*may_unmap=*/false).ok());
  ASSERT_TRUE(rw.image->Close().ok());
  auto ro = Reopen(*rw.raw);
  std::vector<uint8_t> expect = a;
  std::memset(expect.data() + 2 * MiB, 0, 2 * MiB);
  std::memset(expect.data() + 8 * MiB, 0, 2 * MiB);
  EXPECT_TRUE(ReadImage(*ro, 0, 16 * MiB) == expect);
  auto counts = ro->CountAllocation();
  EXPECT_EQ(counts->payload[format::kPayloadZero], 2u);
  EXPECT_EQ(counts->payload[format::kPayloadFullyPresent], 14u);
  ExpectCheckClean(*rw.raw);
}

TEST(WriteTest, FixedImagesStayFullyAllocated) {
  CreateOptions o = Dynamic(16 * MiB);
  o.type = DiskType::kFixed;
  auto rw = OpenRw(NewImageFile(o));
  auto a = PatternBytes(16 * MiB, 5);
  ASSERT_TRUE(rw.image->Write(0, a.data(), a.size()).ok());
  ASSERT_TRUE(rw.image->Discard(0, 8 * MiB).ok());
  EXPECT_EQ(rw.image->write_stats().log_entries, 0u);
  ASSERT_TRUE(rw.image->Close().ok());
  auto ro = Reopen(*rw.raw);
  auto counts = ro->CountAllocation();
  EXPECT_EQ(counts->payload[format::kPayloadFullyPresent], 16u);
  std::vector<uint8_t> expect = a;
  std::memset(expect.data(), 0, 8 * MiB);
  EXPECT_TRUE(ReadImage(*ro, 0, 16 * MiB) == expect);
}

TEST(WriteTest, FirstChangeRenewsFileAndDataWriteGuidsOnceAndOpeningAloneChangesNothing) {
  auto file = NewImageFile(Dynamic(16 * MiB));
  auto before = Reopen(*file);
  const HeaderInfo h0 = before->info().headers[before->info().current_header];
  {
    auto rw = OpenRw(std::make_unique<SparseMemoryFile>(*file));
    ASSERT_TRUE(rw.image->Close().ok());
    auto again = Reopen(*rw.raw);
    const HeaderInfo h1 = again->info().headers[again->info().current_header];
    EXPECT_EQ(h1.sequence_number, h0.sequence_number);  // untouched
  }
  auto rw = OpenRw(std::make_unique<SparseMemoryFile>(*file));
  uint8_t x = 1;
  ASSERT_TRUE(rw.image->Write(0, &x, 1).ok());
  ASSERT_TRUE(rw.image->Write(MiB, &x, 1).ok());
  EXPECT_EQ(rw.image->write_stats().header_updates, 1u);
  ASSERT_TRUE(rw.image->Close().ok());
  auto after = Reopen(*rw.raw);
  const HeaderInfo h2 = after->info().headers[after->info().current_header];
  EXPECT_NE(h2.file_write_guid, h0.file_write_guid);
  EXPECT_NE(h2.data_write_guid, h0.data_write_guid);
  EXPECT_TRUE(h2.log_guid.IsZero());
}

TEST(WriteTest, BadRequestsFailWithClearErrors) {
  auto rw = OpenRw(NewImageFile(Dynamic(16 * MiB)));
  uint8_t x[2] = {1, 2};
  Status st = rw.image->Write(16 * MiB - 1, x, 2);
  EXPECT_EQ(st.code(), Errc::kOutOfRange);
  EXPECT_NE(st.message().find("beyond the virtual disk size"), std::string::npos) << st.message();
  EXPECT_EQ(rw.image->Discard(16 * MiB, 1).code(), Errc::kOutOfRange);
  ASSERT_TRUE(rw.image->Close().ok());
  EXPECT_EQ(rw.image->Write(0, x, 1).code(), Errc::kInvalidArgument);

  auto ro = Reopen(*rw.raw);
  st = ro->Write(0, x, 1);
  EXPECT_EQ(st.code(), Errc::kReadOnly);
  EXPECT_NE(st.message().find("read-only"), std::string::npos);
  EXPECT_EQ(ro->Flush().code(), Errc::kReadOnly);
}

TEST(WriteTest, AFullDiskFailsTheWriteAndLeavesTheImageConsistent) {
  auto file = NewImageFile(Dynamic(64 * MiB));
  auto a = PatternBytes(MiB, 6);
  for (int n = 0; n < 12; ++n) {
    auto copy = std::make_unique<SparseMemoryFile>(*file);
    SparseMemoryFile* base = copy.get();
    auto faulty = std::make_unique<FaultInjectingFile>(std::move(copy));
    FaultInjectingFile* f = faulty.get();
    auto image = Image::Open(std::move(faulty), {.read_only = false});
    ASSERT_TRUE(image.ok());
    ASSERT_TRUE((*image)->Write(0, a.data(), a.size()).ok());
    ASSERT_TRUE((*image)->Flush().ok());
    f->FailWriteAfter(n, Errc::kNoSpace);
    Status st = Status::Ok();
    for (int b = 1; b < 6 && st.ok(); ++b) st = (*image)->Write(b * MiB, a.data(), a.size());
    if (st.ok()) st = (*image)->Flush();
    if (st.ok()) st = (*image)->Close();
    if (!st.ok()) {
      EXPECT_EQ(st.code(), Errc::kNoSpace) << st.message();
    }
    (void)(*image)->Close();
    // Whatever happened, the file opens (replaying its log) and block 0
    // holds what the first flush made durable.
    auto ro = Image::Open(std::make_unique<SparseMemoryFile>(*base, "w.vhdx", false));
    ASSERT_TRUE(ro.ok()) << n << ": " << ro.status().message();
    EXPECT_TRUE(ReadImage(**ro, 0, MiB) == a) << n;
    for (int b = 1; b < 6; ++b) {
      auto got = ReadImage(**ro, b * MiB, MiB);
      EXPECT_TRUE(got == a || got == std::vector<uint8_t>(MiB, 0)) << n << " block " << b;
    }
  }
}

TEST(WriteTest, DirtyLogIsReplayedOnReadWriteOpenAndThenWritable) {
  // An image whose session stopped without Close: its log is active.
  auto file = NewImageFile(Dynamic(64 * MiB));
  auto a = PatternBytes(2 * MiB, 7);
  std::unique_ptr<SparseMemoryFile> crashed_file;
  {
    auto rw = OpenRw(std::move(file));
    ASSERT_TRUE(rw.image->Write(3 * MiB, a.data(), a.size()).ok());
    ASSERT_TRUE(rw.image->Flush().ok());
    // The file as a crash right now leaves it.
    crashed_file = std::make_unique<SparseMemoryFile>(*rw.raw, "c.vhdx", true);
  }
  const SparseMemoryFile& crashed = *crashed_file;
  auto ro = Reopen(crashed);
  EXPECT_TRUE(ro->info().log.dirty);
  EXPECT_TRUE(ReadImage(*ro, 3 * MiB, a.size()) == a);
  auto rw = OpenRw(std::make_unique<SparseMemoryFile>(crashed));
  EXPECT_GE(rw.image->info().log.replayed_entries, 1u);
  uint8_t x = 9;
  ASSERT_TRUE(rw.image->Write(0, &x, 1).ok());
  ASSERT_TRUE(rw.image->Close().ok());
  ExpectCheckClean(*rw.raw);
  auto clean = Reopen(*rw.raw);
  EXPECT_FALSE(clean->info().log.dirty);
  EXPECT_TRUE(ReadImage(*clean, 3 * MiB, a.size()) == a);
  EXPECT_EQ(ReadImage(*clean, 0, 1)[0], 9);
}

TEST(WriteTest, SpaceSharedByTwoBlocksOfADamagedImageIsNeverReleased) {
  ImageSpec spec;
  spec.virtual_size = 8 * MiB;
  spec.block_size = MiB;
  ImageBuilder b(spec);
  uint64_t shared = b.AllocateBlock(0);
  b.SetBlock(1, format::kPayloadFullyPresent, shared);  // blocks 0 and 1 share space
  auto a = PatternBytes(MiB, 8);
  b.WriteVirtual(0, a);
  auto file = b.BuildFile(/*writable=*/true);
  SparseMemoryFile* raw = file.get();
  auto image = Image::Open(std::move(file), {.read_only = false});
  ASSERT_TRUE(image.ok()) << image.status().message();
  ASSERT_TRUE((*image)->Discard(0, MiB).ok());
  ASSERT_TRUE((*image)->Flush().ok());
  auto c = PatternBytes(MiB, 9);
  ASSERT_TRUE((*image)->Write(4 * MiB, c.data(), c.size()).ok());
  ASSERT_TRUE((*image)->Close().ok());
  auto ro = Reopen(*raw);
  EXPECT_TRUE(ReadImage(*ro, MiB, MiB) == a);  // block 1 still has its data
  EXPECT_TRUE(ReadImage(*ro, 4 * MiB, MiB) == c);
  EXPECT_TRUE(ReadImage(*ro, 0, MiB) == std::vector<uint8_t>(MiB, 0));
}

TEST(WriteTest, ADamagedEntryPastTheEndOfTheFileStopsAllocationButNotInPlaceWrites) {
  ImageSpec spec;
  spec.virtual_size = 8 * MiB;
  spec.block_size = MiB;
  ImageBuilder b(spec);
  b.AllocateBlock(1);
  const uint64_t end = b.file_size();
  b.SetBlock(0, format::kPayloadFullyPresent, end);  // where a new block would go
  auto file = b.BuildFile(/*writable=*/true);
  auto image = Image::Open(std::move(file), {.read_only = false});
  ASSERT_TRUE(image.ok()) << image.status().message();
  auto a = PatternBytes(4096, 10);
  Status st = (*image)->Write(5 * MiB, a.data(), a.size());
  EXPECT_EQ(st.code(), Errc::kCorrupt);
  EXPECT_NE(st.message().find("BAT entry 0 (payload block 0)"), std::string::npos) << st.message();
  ASSERT_TRUE((*image)->Write(MiB, a.data(), a.size()).ok());  // block 1, in place
  EXPECT_TRUE(ReadImage(**image, MiB, 4096) == a);
  ASSERT_TRUE((*image)->Close().ok());
}

}  // namespace
}  // namespace vhdx::test
