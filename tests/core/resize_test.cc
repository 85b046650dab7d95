// ResizeImage: growth and shrinking of dynamic, fixed and differencing
// images, with 512 and 4096-byte sectors, with and without the BAT moving
// to a larger region; the refusals; and crash consistency: every resize is
// recorded (tests/support/crash_file.h) and replayed with a power failure
// after every file operation (and writes after the last flush kept, lost or
// torn at random), and every crashed file must check clean, open read-only
// and read-write alike, have the old size or the new one with the content
// that size promises, and take the resize again.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include "core_test_util.h"
#include "format/bat.h"
#include "resize_test_util.h"
#include "support/crash_file.h"
#include "util/coding.h"
#include "support/test_util.h"
#include "vhdx/create.h"
#include "vhdx/resize.h"

namespace vhdx::test {
namespace {

Guid DataWriteGuid(const Image& image) {
  return image.info().headers[image.info().current_header].data_write_guid;
}

struct Resized {
  Status status;
  ResizeResult result;
};

Resized ResizeIn(File& file, uint64_t new_size, bool shrink, std::shared_ptr<const Image> parent = nullptr) {
  auto image = Image::Open(std::make_unique<Borrowed>(file), {.read_only = false, .parent = parent});
  if (!image.ok()) return {image.status(), {}};
  auto r = ResizeImage(std::move(image).value(), new_size, {.shrink = shrink});
  if (!r.ok()) return {r.status(), {}};
  return {Status::Ok(), *r};
}

// ---- Functional -----------------------------------------------------------

class ResizeSpecTest : public ::testing::TestWithParam<Spec> {};

TEST_P(ResizeSpecTest, ResizedImageChecksCleanAndReadsAsPromised) {
  const Spec spec = GetParam();
  std::vector<uint8_t> model;
  auto file = MakeImage(spec, 7, &model);
  Guid before;
  {
    auto image = Image::Open(std::make_unique<ReadOnlyView>(*file));
    ASSERT_TRUE(image.ok());
    before = DataWriteGuid(**image);
  }
  const uint64_t bat_before = [&] {
    auto image = Image::Open(std::make_unique<ReadOnlyView>(*file));
    return (*image)->info().bat_offset;
  }();
  Resized r = ResizeIn(*file, spec.new_size, spec.new_size < spec.size);
  ASSERT_TRUE(r.status.ok()) << spec.Describe() << ": " << r.status.message();
  EXPECT_EQ(r.result.old_size, spec.size);
  EXPECT_EQ(r.result.new_size, spec.new_size);
  EXPECT_EQ(CheckErrors(*file), "") << spec.Describe();
  auto image = Image::Open(std::make_unique<ReadOnlyView>(*file));
  ASSERT_TRUE(image.ok()) << image.status().message();
  const ImageInfo& info = (*image)->info();
  EXPECT_EQ(info.virtual_size, spec.new_size);
  EXPECT_TRUE(info.headers[info.current_header].log_guid.IsZero()) << "the log is emptied on close";
  EXPECT_NE(DataWriteGuid(**image), before) << "a resize changes the DataWriteGuid";
  EXPECT_EQ(CompareContent(**image, model), "") << spec.Describe();
  EXPECT_EQ(info.bat_offset, r.result.bat_offset);
  EXPECT_EQ(r.result.bat_relocated, info.bat_offset != bat_before);
  const uint64_t entries_room = [&] {
    for (const auto& reg : info.regions)
      if (reg.name == "bat") return uint64_t{reg.length} / 8;
    return uint64_t{0};
  }();
  EXPECT_GE(entries_room, info.bat_entries);
  if (spec.type == DiskType::kFixed) {
    // Every block of a fixed image stays allocated.
    auto summary = (*image)->CountAllocation();
    ASSERT_TRUE(summary.ok());
    uint64_t data = 0;
    ASSERT_TRUE((*image)->Map(0, spec.new_size, [&](const MapExtent& x) {
      if (x.data) data += x.length;
      return true;
    }).ok());
    EXPECT_EQ(data, spec.new_size) << "a fixed image's blocks are all FULLY_PRESENT";
    if (spec.new_size > spec.size) {
      EXPECT_EQ(r.result.blocks_allocated, info.payload_blocks - (spec.size + spec.block_size - 1) / spec.block_size);
    }
  }
  image->reset();

  // The resized image takes writes everywhere, past the old end too.
  auto rw = Image::Open(std::make_unique<Borrowed>(*file), {.read_only = false});
  ASSERT_TRUE(rw.ok()) << rw.status().message();
  const uint64_t at = spec.new_size - 3 * spec.sector;
  auto bytes = PatternBytes(3 * spec.sector, 99);
  ASSERT_TRUE((*rw)->Write(at, bytes.data(), bytes.size()).ok());
  ASSERT_TRUE((*rw)->Close().ok());
  EXPECT_EQ(CheckErrors(*file), "");
  auto again = Image::Open(std::make_unique<ReadOnlyView>(*file));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(ReadImage(**again, at, bytes.size()), bytes);
  if (spec.new_size > spec.size && spec.new_size <= 256 * MiB) {
    model.resize(spec.new_size, 0);
    std::copy(bytes.begin(), bytes.end(), model.begin() + at);
    EXPECT_EQ(CompareContent(**again, model), "");
  } else if (spec.new_size > spec.size) {
    EXPECT_EQ(ReadImage(**again, 0, model.size()), model) << "content below the old end";
  }
}

constexpr uint64_t kBig = 130 * GiB;  // > 131072 one-MiB blocks: the 1 MiB BAT region overflows

INSTANTIATE_TEST_SUITE_P(
    Shapes, ResizeSpecTest,
    ::testing::Values(
        // Growth inside the BAT region, from a partial last block.
        Spec{DiskType::kDynamic, 40 * MiB + 512, 1 * MiB, 512, 100 * MiB},
        Spec{DiskType::kDynamic, 40 * MiB + 4096, 1 * MiB, 4096, 64 * MiB + 8192},
        Spec{DiskType::kDynamic, 48 * MiB, 32 * MiB, 512, 1 * GiB},
        // Growth that moves the BAT.
        Spec{DiskType::kDynamic, 40 * MiB + 512, 1 * MiB, 512, kBig},
        Spec{DiskType::kDynamic, 40 * MiB, 1 * MiB, 4096, kBig + 4096},
        // Fixed: new blocks allocated.
        Spec{DiskType::kFixed, 20 * MiB + 512, 1 * MiB, 512, 50 * MiB},
        Spec{DiskType::kFixed, 20 * MiB, 2 * MiB, 4096, kBig},
        // Shrinking, to a partial block and to a block boundary.
        Spec{DiskType::kDynamic, 40 * MiB + 512, 1 * MiB, 512, 10 * MiB + 1024},
        Spec{DiskType::kDynamic, 64 * MiB, 32 * MiB, 4096, 32 * MiB},
        Spec{DiskType::kFixed, 20 * MiB, 1 * MiB, 512, 9 * MiB + 512}),
    [](const ::testing::TestParamInfo<Spec>& p) { return fmt::format("case{}", p.index); });

TEST(ResizeTest, ShrinkReleasesBlocksAndTruncatesTheFile) {
  std::vector<uint8_t> model;
  Spec spec{DiskType::kDynamic, 40 * MiB, 1 * MiB, 512, 8 * MiB};
  auto file = MakeImage(spec, 3, &model);
  const uint64_t before = *file->Size();
  Resized r = ResizeIn(*file, 8 * MiB, true);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  // Written blocks past 8 MiB: the one at 20 MiB (size/2) and the last two.
  EXPECT_EQ(r.result.blocks_freed, 2u);
  EXPECT_LT(*file->Size(), before);
  EXPECT_EQ(r.result.file_size_after, *file->Size());
  EXPECT_EQ(CheckErrors(*file), "");
  // Growing back reads zeros where the dropped data was.
  ASSERT_TRUE(ResizeIn(*file, 40 * MiB, false).status.ok());
  auto image = Image::Open(std::make_unique<ReadOnlyView>(*file));
  ASSERT_TRUE(image.ok());
  model.resize(8 * MiB);
  EXPECT_EQ(CompareContent(**image, model), "");
}

TEST(ResizeTest, RefusesWhatItMustAndChangesNothing) {
  std::vector<uint8_t> model;
  Spec spec{DiskType::kDynamic, 16 * MiB, 1 * MiB, 4096, 0};
  auto file = MakeImage(spec, 5, &model);
  SparseMemoryFile pristine(*file);
  auto expect_refused = [&](uint64_t size, bool shrink, const std::string& words) {
    Resized r = ResizeIn(*file, size, shrink);
    EXPECT_EQ(r.status.code(), Errc::kInvalidArgument) << size;
    EXPECT_NE(r.status.message().find(words), std::string::npos) << r.status.message();
    // Not a byte changed (the open for writing changed nothing either: the
    // refusal comes before the first change).
    std::vector<uint8_t> a(*file->Size()), b(*pristine.Size());
    ASSERT_EQ(a.size(), b.size());
    ASSERT_TRUE(file->ReadAt(0, a.data(), a.size()).ok());
    ASSERT_TRUE(pristine.ReadAt(0, b.data(), b.size()).ok());
    EXPECT_TRUE(a == b) << "refused resize to " << size << " changed the file";
  };
  expect_refused(8 * MiB, false, "--shrink");
  expect_refused(16 * MiB + 512, false, "multiple of the logical sector size");
  expect_refused(0, true, "0 bytes");
  expect_refused(65 * TiB, false, "64 TiB");
  // Same size: nothing to do, nothing written.
  ASSERT_TRUE(ResizeIn(*file, 16 * MiB, false).status.ok());
  std::vector<uint8_t> a(*file->Size()), b(*pristine.Size());
  ASSERT_TRUE(file->ReadAt(0, a.data(), a.size()).ok());
  ASSERT_TRUE(pristine.ReadAt(0, b.data(), b.size()).ok());
  EXPECT_TRUE(a == b);
}

// A damaged BAT entry (a block past the end of the file): refused, with the
// first error named, and not a byte changed.
TEST(ResizeTest, DamagedImageIsRefusedUnchanged) {
  std::vector<uint8_t> model;
  Spec spec{DiskType::kDynamic, 16 * MiB, 1 * MiB, 512, 0};
  auto file = MakeImage(spec, 9, &model);
  uint64_t bat = 0;
  {
    auto image = Image::Open(std::make_unique<ReadOnlyView>(*file));
    ASSERT_TRUE(image.ok());
    bat = (*image)->info().bat_offset;
  }
  uint8_t entry[8];
  EncodeFixed64(entry, format::BatEntry{format::kPayloadFullyPresent, 1024 * MiB}.Encode());
  ASSERT_TRUE(file->WriteAt(bat + 8 * 2, entry, 8).ok());  // block 2
  SparseMemoryFile pristine(*file);
  for (uint64_t size : {uint64_t{64 * MiB}, uint64_t{4 * MiB}}) {
    Resized r = ResizeIn(*file, size, true);
    EXPECT_EQ(r.status.code(), Errc::kCorrupt) << r.status.message();
    EXPECT_NE(r.status.message().find("BAT entry 2"), std::string::npos) << r.status.message();
    EXPECT_NE(r.status.message().find("nothing was resized"), std::string::npos) << r.status.message();
    std::vector<uint8_t> a(*file->Size()), b(*pristine.Size());
    ASSERT_EQ(a.size(), b.size());
    ASSERT_TRUE(file->ReadAt(0, a.data(), a.size()).ok());
    ASSERT_TRUE(pristine.ReadAt(0, b.data(), b.size()).ok());
    EXPECT_TRUE(a == b) << "a refused resize changed the file";
  }
}

// An image open read-only is never written: ResizeImage says so.
TEST(ResizeTest, ReadOnlyImageIsRefused) {
  std::vector<uint8_t> model;
  Spec spec{DiskType::kDynamic, 16 * MiB, 1 * MiB, 512, 0};
  auto file = MakeImage(spec, 4, &model);
  auto image = Image::Open(std::make_unique<ReadOnlyView>(*file));
  ASSERT_TRUE(image.ok());
  auto r = ResizeImage(std::move(image).value(), 32 * MiB);
  EXPECT_EQ(r.status().code(), Errc::kReadOnly) << r.status().message();
}

// ---- Differencing ---------------------------------------------------------

struct Chain {
  std::string dir, parent, child;
  std::vector<uint8_t> model;  // the chain's content
};

Chain MakeChain(const std::string& name, uint32_t sector) {
  Chain c;
  c.dir = ScratchPath(name);
  std::filesystem::remove_all(c.dir);
  std::filesystem::create_directories(c.dir);
  c.parent = c.dir + "/parent.vhdx";
  c.child = c.dir + "/child.avhdx";
  const uint64_t size = 24 * MiB + 4 * sector;
  EXPECT_TRUE(CreateImage(c.parent, {.virtual_size = size, .block_size = 1 * MiB, .logical_sector_size = sector}).ok());
  c.model.assign(size, 0);
  auto write = [&](const std::string& path, uint64_t offset, uint64_t n, uint64_t seed) {
    auto image = Image::Open(path, {.read_only = false});
    ASSERT_TRUE(image.ok()) << image.status().message();
    auto bytes = PatternBytes(n, seed);
    ASSERT_TRUE((*image)->Write(offset, bytes.data(), n).ok());
    ASSERT_TRUE((*image)->Close().ok());
    std::copy(bytes.begin(), bytes.end(), c.model.begin() + offset);
  };
  write(c.parent, 0, size, 1);  // the parent is full: its data past the child's end would show
  EXPECT_TRUE(CreateImage(c.child, {.parent_path = c.parent}).ok());
  write(c.child, 2 * MiB + sector, 3 * sector, 2);   // partial block
  write(c.child, 5 * MiB, 1 * MiB, 3);               // whole block
  write(c.child, size - sector, sector, 4);          // the last (partial) block, partly
  return c;
}

TEST(ResizeTest, ChildGrowsPastItsParentAndReadsZerosThere) {
  for (uint32_t sector : {512u, 4096u}) {
    Chain c = MakeChain(fmt::format("resize-child-{}", sector), sector);
    const std::string parent_sha = Sha256OfFile(c.parent);
    auto r = ResizeImage(c.child, 40 * MiB, {});
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(Sha256OfFile(c.parent), parent_sha) << "the parent is never written";
    auto report = Check(c.child);
    ASSERT_TRUE(report.ok());
    EXPECT_EQ(report->errors(), 0u);
    auto image = Image::Open(c.child);
    ASSERT_TRUE(image.ok()) << image.status().message();
    EXPECT_EQ((*image)->virtual_size(), 40 * MiB);
    EXPECT_EQ(CompareContent(**image, c.model), "") << sector;
    // Shrinking back below the parent's size is refused; to it, allowed.
    auto small = ResizeImage(c.child, 8 * MiB, {.shrink = true});
    EXPECT_EQ(small.status().code(), Errc::kInvalidArgument);
    EXPECT_NE(small.status().message().find("parent's size"), std::string::npos);
    ASSERT_TRUE(ResizeImage(c.child, c.model.size(), {.shrink = true}).ok());
    auto back = Image::Open(c.child);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(CompareContent(**back, c.model), "");
  }
}

TEST(ResizeTest, ResizingAParentInvalidatesItsChildrenAndAChildNeverGrowsIntoParentData) {
  Chain c = MakeChain("resize-child-small", 512);
  // The parent resized on its own: a new DataWriteGuid, so the child's
  // linkage no longer matches and its chain does not open (as with Hyper-V).
  ASSERT_TRUE(ResizeImage(c.parent, 64 * MiB, {}).ok());
  auto r = ResizeImage(c.child, 40 * MiB, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(c.parent + " does not match"), std::string::npos) << r.status().message();
  // Forced open over the larger parent: growing would show the parent's
  // data past the child's end, so it is refused.
  const std::string child_sha = Sha256OfFile(c.child);
  auto image = Image::Open(c.child, {.read_only = false, .ignore_parent_linkage = true});
  ASSERT_TRUE(image.ok()) << image.status().message();
  auto grown = ResizeImage(std::move(image).value(), 40 * MiB, {});
  EXPECT_EQ(grown.status().code(), Errc::kInvalidArgument);
  EXPECT_NE(grown.status().message().find("larger than this differencing image"), std::string::npos)
      << grown.status().message();
  EXPECT_EQ(Sha256OfFile(c.child), child_sha);
}

// ---- Crash consistency ----------------------------------------------------

struct CrashCase {
  Spec spec;
  bool child = false;
};

// Replays the recording of one resize with a crash after every op (and
// several random fates of the ops after the last flush), and checks each
// crashed file.
void CheckEveryCrashPoint(const Spec& spec, const SparseMemoryFile& start, const std::vector<uint8_t>& model,
                          const std::shared_ptr<const Image>& parent) {
  CrashRecorder rec(start);
  {
    auto image = Image::Open(rec.OpenFile(), {.read_only = false, .parent = parent});
    ASSERT_TRUE(image.ok()) << image.status().message();
    auto r = ResizeImage(std::move(image).value(), spec.new_size, {.shrink = spec.new_size < spec.size});
    ASSERT_TRUE(r.ok()) << spec.Describe() << ": " << r.status().message();
  }
  const size_t ops = rec.op_count();
  ASSERT_GT(ops, 4u);
  CrashStateBuilder builder(rec);
  size_t states = 0, new_size_seen = 0;
  for (size_t point = 0; point <= ops; ++point) {
    // Three fates of the pending writes per point; one for the huge
    // growths, whose every state costs a 130 GiB map walk.
    const int attempts = spec.new_size > 256 * MiB ? 1 : 3;
    for (int attempt = 0; attempt < attempts; ++attempt) {
      std::mt19937_64 rng(point * 7 + attempt);
      static constexpr TearPolicy kPolicies[] = {{0.5, 0.3}, {1.0, 0.0}, {0.2, 0.8}};
      CrashState state = builder.Build(point, rng, kPolicies[attempt]);
      ++states;
      auto where = [&] {
        return fmt::format("{}: crash after {} of {} ops ({} durable, {} pending: {} kept, {} torn)",
                           spec.Describe(), point, ops, state.durable_ops, state.pending_ops, state.kept,
                           state.torn);
      };
      // Read-only (in-memory replay), then Check, then read-write (replayed
      // into the file): the same size and content.
      uint64_t ro_size = 0;
      {
        auto ro = Image::Open(std::make_unique<ReadOnlyView>(*state.file), {.parent = parent});
        ASSERT_TRUE(ro.ok()) << where() << ": " << ro.status().message();
        ro_size = (*ro)->virtual_size();
        ASSERT_TRUE(ro_size == spec.size || ro_size == spec.new_size) << where() << ": size " << ro_size;
        ASSERT_EQ(CompareContent(**ro, model), "") << where();
      }
      ASSERT_EQ(CheckErrors(*state.file), "") << where();
      new_size_seen += ro_size == spec.new_size;
      {
        auto rw = Image::Open(std::make_unique<Borrowed>(*state.file), {.read_only = false, .parent = parent});
        ASSERT_TRUE(rw.ok()) << where() << ": " << rw.status().message();
        ASSERT_EQ((*rw)->virtual_size(), ro_size) << where();
        ASSERT_EQ(CompareContent(**rw, model), "") << where();
        // Finishing the job: the resize again, from wherever it stopped.
        auto again = ResizeImage(std::move(rw).value(), spec.new_size, {.shrink = true});
        ASSERT_TRUE(again.ok()) << where() << ": " << again.status().message();
      }
      ASSERT_EQ(CheckErrors(*state.file), "") << where() << " (after the re-run)";
      auto done = Image::Open(std::make_unique<ReadOnlyView>(*state.file), {.parent = parent});
      ASSERT_TRUE(done.ok()) << where();
      ASSERT_EQ((*done)->virtual_size(), spec.new_size) << where();
      ASSERT_EQ(CompareContent(**done, model), "") << where() << " (after the re-run)";
    }
  }
  EXPECT_GT(new_size_seen, 0u) << "no crash state had the new size";
  EXPECT_LT(new_size_seen, states) << "no crash state had the old size";
}

class ResizeCrashTest : public ::testing::TestWithParam<Spec> {};

TEST_P(ResizeCrashTest, PowerFailureAtAnyPointLeavesTheOldSizeOrTheNew) {
  const Spec spec = GetParam();
  std::vector<uint8_t> model;
  auto file = MakeImage(spec, 11, &model);
  CheckEveryCrashPoint(spec, *file, model, nullptr);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ResizeCrashTest,
    ::testing::Values(Spec{DiskType::kDynamic, 40 * MiB + 512, 1 * MiB, 512, 90 * MiB},       // BAT in place
                      Spec{DiskType::kDynamic, 40 * MiB + 4096, 1 * MiB, 4096, kBig},         // BAT moved
                      Spec{DiskType::kFixed, 12 * MiB + 512, 1 * MiB, 512, 30 * MiB},         // blocks allocated
                      Spec{DiskType::kFixed, 12 * MiB, 1 * MiB, 512, kBig},                   // both
                      Spec{DiskType::kDynamic, 40 * MiB + 512, 1 * MiB, 512, 9 * MiB + 512}),  // shrink
    [](const ::testing::TestParamInfo<Spec>& p) { return fmt::format("case{}", p.index); });

TEST(ResizeChildCrashTest, PowerFailureWhileGrowingAChildKeepsTheChain) {
  Chain c = MakeChain("resize-crash-child", 512);
  auto parent = Image::Open(c.parent);
  ASSERT_TRUE(parent.ok());
  std::shared_ptr<const Image> shared = std::move(parent).value();
  SparseMemoryFile start("child.avhdx", true);
  const std::vector<uint8_t> bytes = ReadWholeFile(c.child);
  ASSERT_TRUE(start.WriteAt(0, bytes.data(), bytes.size()).ok());
  for (uint64_t new_size : {uint64_t{40 * MiB}, kBig}) {
    Spec spec{DiskType::kDifferencing, c.model.size(), 1 * MiB, 512, new_size};
    CheckEveryCrashPoint(spec, start, c.model, shared);
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace vhdx::test
