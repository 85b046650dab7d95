// ConvertToVhdx (and the raw-source paths of ConvertToRaw): raw files with
// holes and VHDX images become VHDX images that read back byte for byte,
// zero data allocates nothing, and failures leave no output behind.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "core_test_util.h"
#include "io/fault_file.h"
#include "support/test_util.h"
#include "vhdx/convert.h"
#include "vhdx/create.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

// A raw disk on the host (sparse where nothing was written) and the bytes
// it holds, kept in memory as the model.
class RawDisk {
 public:
  RawDisk(const std::string& leaf, uint64_t size) : path_(ScratchPath(leaf)), model_(size, 0) {
    fs::remove(path_);
    int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
    ::close(fd);
  }
  // Writes `bytes` at `offset` (zero bytes too: they allocate host space).
  void Put(uint64_t offset, const std::vector<uint8_t>& bytes) {
    int fd = ::open(path_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
              static_cast<ssize_t>(bytes.size()));
    ::close(fd);
    std::copy(bytes.begin(), bytes.end(), model_.begin() + static_cast<ptrdiff_t>(offset));
  }
  const std::string& path() const { return path_; }
  // SHA-256 of the model padded with zeros to `size` bytes.
  std::string Sha256Padded(uint64_t size) const {
    Sha256Stream h;
    h.Update(model_.data(), model_.size());
    std::vector<uint8_t> zeros(size - model_.size(), 0);
    h.Update(zeros.data(), zeros.size());
    return h.Final();
  }
  const std::vector<uint8_t>& model() const { return model_; }

 private:
  std::string path_;
  std::vector<uint8_t> model_;
};

std::vector<uint8_t> Zeros(size_t n) { return std::vector<uint8_t>(n, 0); }

std::unique_ptr<Image> OpenPath(const std::string& path) {
  auto image = Image::Open(path);
  EXPECT_TRUE(image.ok()) << path << ": " << image.status().message();
  if (!image.ok()) return nullptr;
  return std::move(image).value();
}

ConvertSource OpenSource(const std::string& path, SourceFormat format = SourceFormat::kDetect) {
  auto src = ConvertSource::Open(path, format);
  if (!src.ok()) throw std::runtime_error(path + ": " + src.status().message());
  return std::move(src).value();
}

// The payload blocks of `image` that hold data (FULLY_PRESENT), from its map.
std::vector<uint64_t> DataBlocks(const Image& image) {
  std::vector<uint64_t> blocks;
  const uint64_t bs = image.info().block_size;
  for (const MapExtent& x : MapAll(image)) {
    if (!x.data) continue;
    EXPECT_EQ(x.start % bs, 0u) << "data extents are whole blocks";
    for (uint64_t b = x.start / bs; b * bs < x.start + x.length; ++b) blocks.push_back(b);
  }
  return blocks;
}

struct TargetCase {
  const char* name;
  DiskType type;
  uint32_t block_size;
  uint32_t logical;
};

class RawToVhdxTest : public ::testing::TestWithParam<TargetCase> {};

// Data at block edges, a granule straddled, zeros written explicitly, the
// last bytes of a file whose size is not a sector multiple.
TEST_P(RawToVhdxTest, ReadsBackAsTheSourceRoundedUpToASector) {
  const TargetCase& c = GetParam();
  const uint64_t size = 7 * MiB + 1000;
  RawDisk raw(std::string("edges-") + c.name + ".raw", size);
  raw.Put(0, PatternBytes(5000, 1));
  raw.Put(MiB - 100, PatternBytes(200, 2));              // across the 1 MiB block edge
  raw.Put(2 * MiB, Zeros(MiB));                           // allocated on the host, all zero
  raw.Put(3 * MiB + 4095, PatternBytes(2, 3));            // two bytes across a granule edge
  raw.Put(4 * MiB - 4096, PatternBytes(4096 + 8192, 4));  // the end of one block into the next
  raw.Put(size - 1000, PatternBytes(1000, 5));            // the tail, not a sector multiple

  CreateOptions o;
  o.type = c.type;
  o.block_size = c.block_size;
  o.logical_sector_size = c.logical;
  std::string dst = ScratchPath(std::string("edges-") + c.name + ".vhdx");
  ConvertSource src = OpenSource(raw.path());
  ASSERT_FALSE(src.is_vhdx());
  EXPECT_EQ(src.size(), size);
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  ConvertOptions options;
  options.progress = [&](uint64_t done, uint64_t total) { progress.emplace_back(done, total); };
  Status st = ConvertToVhdx(src, dst, o, options);
  ASSERT_TRUE(st.ok()) << st.message();

  const uint64_t virtual_size = (size + c.logical - 1) / c.logical * c.logical;
  EXPECT_EQ(ConvertedVirtualSize(size, c.logical), virtual_size);
  auto image = OpenPath(dst);
  ASSERT_NE(image, nullptr);
  const ImageInfo& info = image->info();
  EXPECT_EQ(info.virtual_size, virtual_size);
  EXPECT_EQ(info.type, c.type);
  EXPECT_EQ(info.block_size, c.block_size);
  EXPECT_EQ(info.logical_sector_size, c.logical);
  EXPECT_FALSE(info.log.dirty) << "Close() leaves a clean log";
  EXPECT_EQ(Sha256OfImage(*image), raw.Sha256Padded(virtual_size));
  auto report = Check(dst);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->errors(), 0u) << (report->findings.empty() ? "" : report->findings[0].message);

  if (c.type == DiskType::kDynamic) {
    // Blocks whose bytes are all zero (the explicit zeros at 2 MiB included)
    // are not allocated.
    std::vector<uint64_t> want;
    for (uint64_t b = 0; b * c.block_size < virtual_size; ++b) {
      uint64_t end = std::min<uint64_t>((b + 1) * c.block_size, size);
      auto first = raw.model().begin() + static_cast<ptrdiff_t>(b * c.block_size);
      if (std::any_of(first, raw.model().begin() + static_cast<ptrdiff_t>(end), [](uint8_t v) { return v; }))
        want.push_back(b);
    }
    EXPECT_EQ(DataBlocks(*image), want);
  } else {
    auto alloc = image->CountAllocation();
    ASSERT_TRUE(alloc.ok());
    EXPECT_EQ(alloc->payload[format::kPayloadFullyPresent], info.payload_blocks);
  }
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), std::make_pair(virtual_size, virtual_size));
  for (size_t i = 1; i < progress.size(); ++i) EXPECT_LE(progress[i - 1].first, progress[i].first);
}

INSTANTIATE_TEST_SUITE_P(Targets, RawToVhdxTest,
                         ::testing::Values(TargetCase{"Dynamic1M", DiskType::kDynamic, 1 << 20, 512},
                                           TargetCase{"Dynamic2M4K", DiskType::kDynamic, 2 << 20, 4096},
                                           TargetCase{"Dynamic32M", DiskType::kDynamic, 32 << 20, 512},
                                           TargetCase{"Fixed1M", DiskType::kFixed, 1 << 20, 512},
                                           TargetCase{"Fixed8M4K", DiskType::kFixed, 8 << 20, 4096}),
                         [](const ::testing::TestParamInfo<TargetCase>& i) { return std::string(i.param.name); });

TEST(ConvertToVhdx, ZeroGranulesAllocateNoBlocks) {
  RawDisk raw("zeros.raw", 8 * MiB);
  raw.Put(0, PatternBytes(MiB, 6));           // block 0: data
  raw.Put(MiB, Zeros(MiB));                   // block 1: zeros, allocated on the host
  raw.Put(3 * MiB, Zeros(MiB));               // block 3: zeros
  raw.Put(3 * MiB + 12288, Zeros(4096));      //   (rewritten: still zeros)
  raw.Put(5 * MiB, Zeros(MiB));               // block 5: zeros (one host data extent) ...
  raw.Put(5 * MiB + MiB - 1, {0x5a});         //   ... but for the block's last byte
  CreateOptions o;
  o.block_size = MiB;
  std::string dst = ScratchPath("zeros.vhdx");
  ASSERT_TRUE(ConvertToVhdx(OpenSource(raw.path()), dst, o).ok());
  auto image = OpenPath(dst);
  ASSERT_NE(image, nullptr);
  EXPECT_EQ(DataBlocks(*image), (std::vector<uint64_t>{0, 5}));
  auto alloc = image->CountAllocation();
  ASSERT_TRUE(alloc.ok());
  EXPECT_EQ(alloc->payload[format::kPayloadFullyPresent], 2u);
  EXPECT_EQ(Sha256OfImage(*image), raw.Sha256Padded(8 * MiB));
  // The file holds the headers, log, metadata, BAT and two blocks: no more.
  EXPECT_LE(fs::file_size(dst), image->info().bat_offset + MiB + 2 * MiB);
  // Inside block 5 only its last granule was written: the zero granules
  // before it are still a hole in the host file.
  std::optional<uint64_t> block5;
  for (const MapExtent& x : MapAll(*image))
    if (x.data && x.start == 5 * MiB) block5 = x.offset;
  ASSERT_TRUE(block5.has_value());
  int fd = ::open(dst.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::lseek(fd, static_cast<off_t>(*block5), SEEK_DATA), static_cast<off_t>(*block5 + MiB - 4096));
  ::close(fd);
}

// A raw file of 4 TiB with three small data runs: read whole, it would take
// hours; walked by SEEK_DATA it takes milliseconds.
TEST(ConvertToVhdx, RawHolesAreSkippedWithoutBeingRead) {
  const uint64_t size = 4 * TiB;
  RawDisk raw("huge.raw", 0);
  int fd = ::open(raw.path().c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  const std::vector<std::pair<uint64_t, std::vector<uint8_t>>> parts = {
      {0, PatternBytes(4096, 7)}, {TiB + 3 * MiB, PatternBytes(70000, 8)}, {size - 512, PatternBytes(512, 9)}};
  for (const auto& [off, bytes] : parts)
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(off)), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
  CreateOptions o;
  o.block_size = 256 * MiB;
  std::string dst = ScratchPath("huge.vhdx");
  Status st = ConvertToVhdx(OpenSource(raw.path()), dst, o);
  ASSERT_TRUE(st.ok()) << st.message();
  auto image = OpenPath(dst);
  ASSERT_NE(image, nullptr);
  EXPECT_EQ(image->virtual_size(), size);
  EXPECT_EQ(DataBlocks(*image), (std::vector<uint64_t>{0, TiB / (256 * MiB), size / (256 * MiB) - 1}));
  for (const auto& [off, bytes] : parts) EXPECT_EQ(ReadImage(*image, off, bytes.size()), bytes) << off;
  EXPECT_EQ(ReadImage(*image, 4096, 4096), Zeros(4096));
  fs::remove(raw.path());
  fs::remove(dst);
}

// A VHDX source is read by its map: ZERO blocks, data blocks that hold only
// zeros and unwritten blocks all end up unallocated; data moves to other
// block and sector sizes intact.
TEST(ConvertToVhdx, VhdxToVhdxWithOtherGeometryKeepsTheContent) {
  ImageSpec spec;
  spec.virtual_size = 24 * MiB + 512;  // not a 4096 multiple: a 4K target rounds it up
  spec.block_size = MiB;
  ImageBuilder b(spec);
  auto a = PatternBytes(MiB + 300, 10);
  auto tail = PatternBytes(512, 11);
  b.WriteVirtual(MiB - 150, a);          // blocks 0-2
  b.AllocateBlock(5);                     // FULLY_PRESENT, all zeros
  b.SetBlock(6, format::kPayloadZero);
  b.WriteVirtual(17 * MiB + 4096 * 3, PatternBytes(100, 12));
  b.WriteVirtual(24 * MiB, tail);         // the last, partial block
  auto source = OpenBuilt(b);
  ASSERT_NE(source, nullptr);
  const std::string want = Sha256OfImage(*source);

  struct Target {
    uint32_t block_size, logical;
    DiskType type;
  };
  for (const Target& t : {Target{32 * MiB, 4096, DiskType::kDynamic}, Target{2 * MiB, 512, DiskType::kDynamic},
                          Target{4 * MiB, 4096, DiskType::kFixed}}) {
    SCOPED_TRACE(::testing::Message() << t.block_size << " " << t.logical);
    CreateOptions o;
    o.type = t.type;
    o.block_size = t.block_size;
    o.logical_sector_size = t.logical;
    std::string dst = ScratchPath("v2v.vhdx");
    ConvertSource src = ConvertSource::FromImage(*source);
    ASSERT_TRUE(src.is_vhdx());
    Status st = ConvertToVhdx(src, dst, o);
    ASSERT_TRUE(st.ok()) << st.message();
    auto image = OpenPath(dst);
    ASSERT_NE(image, nullptr);
    EXPECT_EQ(image->info().logical_sector_size, t.logical);
    EXPECT_EQ(image->info().block_size, t.block_size);
    if (t.logical == 512) {
      EXPECT_EQ(image->virtual_size(), spec.virtual_size);
      EXPECT_EQ(Sha256OfImage(*image), want);
    } else {
      ASSERT_EQ(image->virtual_size(), 24 * MiB + 4096);
      std::vector<uint8_t> buf(spec.virtual_size);
      ASSERT_TRUE(image->Read(0, buf.data(), buf.size()).ok());
      EXPECT_EQ(Sha256Hex(buf.data(), buf.size()), want);
      EXPECT_EQ(ReadImage(*image, spec.virtual_size, 4096 - 512), Zeros(4096 - 512));
    }
    if (t.type == DiskType::kDynamic) {
      std::vector<uint64_t> want_blocks;
      for (uint64_t off : {uint64_t{0}, 2 * MiB, 17 * MiB, 24 * MiB})  // data blocks of the source
        if (want_blocks.empty() || want_blocks.back() != off / t.block_size) want_blocks.push_back(off / t.block_size);
      EXPECT_EQ(DataBlocks(*image), want_blocks);
    }
  }
}

// Detection by signature; -f raw copies a VHDX file's own bytes as a disk.
TEST(ConvertSource, DetectsVhdxBySignatureAndCanBeForcedRaw) {
  ImageSpec spec;
  spec.virtual_size = 3 * MiB;
  ImageBuilder b(spec);
  b.WriteVirtual(4096, PatternBytes(10000, 13));
  std::string path = ScratchPath("detect.vhdx");
  b.WriteTo(path);
  ConvertSource detected = OpenSource(path);
  ASSERT_TRUE(detected.is_vhdx());
  EXPECT_EQ(detected.size(), 3 * MiB);
  EXPECT_EQ(detected.raw_fd(), -1);
  ConvertSource forced = OpenSource(path, SourceFormat::kRaw);
  ASSERT_FALSE(forced.is_vhdx());
  EXPECT_EQ(forced.size(), fs::file_size(path));

  std::string dst = ScratchPath("detect-copy.vhdx");
  ASSERT_TRUE(ConvertToVhdx(forced, dst, {}).ok());
  auto image = OpenPath(dst);
  ASSERT_NE(image, nullptr);
  std::vector<uint8_t> file = ReadWholeFile(path);
  EXPECT_EQ(ReadImage(*image, 0, file.size()), file);

  // A file that is not VHDX (too short for a signature, or another one).
  std::string small = ScratchPath("tiny.raw");
  WriteWholeFile(small, {'v', 'h', 'd', 'x'});
  EXPECT_FALSE(OpenSource(small).is_vhdx());
  auto as_vhdx = ConvertSource::Open(small, SourceFormat::kVhdx);
  EXPECT_FALSE(as_vhdx.ok());
}

// -f raw -O raw: a sparse copy whose holes stay holes.
TEST(ConvertToRaw, RawSourceCopiesDataAndKeepsHoles) {
  RawDisk raw("copy-src.raw", 40 * MiB + 3);
  raw.Put(5 * MiB + 1, PatternBytes(3 * MiB, 14));
  raw.Put(20 * MiB, Zeros(8 * MiB));
  raw.Put(40 * MiB, {1, 2, 3});
  std::string dst = ScratchPath("copy-dst.raw");
  auto out = CreatePosixFile(dst);
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(ConvertToRaw(OpenSource(raw.path(), SourceFormat::kRaw), **out).ok());
  out->reset();
  EXPECT_EQ(ReadWholeFile(dst), raw.model());
  struct stat st;
  ASSERT_EQ(::stat(dst.c_str(), &st), 0);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 3 * MiB + 64 * KiB);

  // And streamed, every byte in order.
  std::string streamed = ScratchPath("copy-stream.raw");
  int fd = ::open(streamed.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  Status s = ConvertToRawStream(OpenSource(raw.path(), SourceFormat::kRaw), fd);
  ::close(fd);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(ReadWholeFile(streamed), raw.model());
}

TEST(ConvertToVhdx, SyncFalseIssuesNoFlushAndSyncTrueDoes) {
  RawDisk raw("sync.raw", 4 * MiB);
  raw.Put(MiB, PatternBytes(MiB, 15));
  for (bool sync : {false, true}) {
    FaultInjectingFile out(std::make_unique<SparseMemoryFile>("sync.vhdx", true));
    ConvertOptions options;
    options.sync = sync;
    CreateOptions o;
    o.block_size = MiB;
    Status st = ConvertToVhdx(OpenSource(raw.path()), out, o, options);
    ASSERT_TRUE(st.ok()) << st.message();
    size_t flushes = 0, writes = 0;
    for (const auto& op : out.ops()) {
      flushes += op.kind == FaultInjectingFile::Op::kFlush;
      writes += op.kind == FaultInjectingFile::Op::kWrite;
    }
    EXPECT_GT(writes, 0u);
    if (sync)
      EXPECT_GT(flushes, 0u);
    else
      EXPECT_EQ(flushes, 0u);
  }
}

TEST(ConvertToVhdx, AWriteFailureIsReported) {
  RawDisk raw("fail.raw", 8 * MiB);
  raw.Put(0, PatternBytes(8 * MiB, 16));
  FaultInjectingFile out(std::make_unique<SparseMemoryFile>("fail.vhdx", true));
  out.FailWriteAfter(6, Errc::kNoSpace);
  CreateOptions o;
  o.block_size = MiB;
  Status st = ConvertToVhdx(OpenSource(raw.path()), out, o);
  EXPECT_EQ(st.code(), Errc::kNoSpace) << st.message();
  EXPECT_NE(st.message().find("fail.vhdx"), std::string::npos) << st.message();
}

TEST(ConvertToVhdx, ErrorsLeaveNoOutputAndNeverTouchTheSource) {
  RawDisk raw("err.raw", 2 * MiB);
  raw.Put(0, PatternBytes(2 * MiB, 17));
  const std::string raw_sha = Sha256OfFile(raw.path());

  auto missing = ConvertSource::Open(ScratchPath("no-such.raw"));
  EXPECT_EQ(missing.status().code(), Errc::kNotFound) << missing.status().message();
  auto dir = ConvertSource::Open(ScratchDir());
  EXPECT_FALSE(dir.ok());

  ConvertSource src = OpenSource(raw.path());
  // The destination's folder does not exist.
  std::string nowhere = ScratchPath("no-such-dir/out.vhdx");
  Status st = ConvertToVhdx(src, nowhere, {});
  EXPECT_EQ(st.code(), Errc::kNotFound) << st.message();
  EXPECT_NE(st.message().find(nowhere), std::string::npos) << st.message();

  // The destination is the source (by another name, too): refused, untouched.
  std::string link = ScratchPath("err-link.raw");
  fs::remove(link);
  fs::create_symlink(raw.path(), link);
  for (const std::string& dst : {raw.path(), link}) {
    st = ConvertToVhdx(src, dst, {});
    EXPECT_EQ(st.code(), Errc::kInvalidArgument) << st.message();
    EXPECT_NE(st.message().find("source"), std::string::npos) << st.message();
    EXPECT_EQ(Sha256OfFile(raw.path()), raw_sha);
  }

  // Bad options fail before an existing destination is truncated.
  std::string existing = ScratchPath("err-existing.vhdx");
  WriteWholeFile(existing, PatternBytes(1000, 18));
  const std::string existing_sha = Sha256OfFile(existing);
  CreateOptions bad;
  bad.block_size = 3 * MiB;
  st = ConvertToVhdx(src, existing, bad);
  EXPECT_EQ(st.code(), Errc::kInvalidArgument) << st.message();
  EXPECT_NE(st.message().find("block size"), std::string::npos) << st.message();
  CreateOptions small;
  small.virtual_size = MiB;
  st = ConvertToVhdx(src, existing, small);
  EXPECT_EQ(st.code(), Errc::kInvalidArgument) << st.message();
  EXPECT_EQ(Sha256OfFile(existing), existing_sha);

  // An empty source makes no disk.
  RawDisk empty("err-empty.raw", 0);
  std::string out = ScratchPath("err-empty.vhdx");
  st = ConvertToVhdx(OpenSource(empty.path()), out, {});
  EXPECT_EQ(st.code(), Errc::kInvalidArgument) << st.message();
  EXPECT_FALSE(fs::exists(out));

  // A failure half-way (a source BAT claiming more data than its file holds)
  // removes the partial output, even one that existed before.
  ImageSpec spec;
  spec.virtual_size = 64 * GiB;
  ImageBuilder b(spec);
  uint64_t shared = b.AllocateBlock(0);
  b.WriteVirtual(0, PatternBytes(MiB, 19));
  for (uint64_t block = 1; block < b.geometry().payload_blocks; ++block)
    b.SetBlock(block, format::kPayloadFullyPresent, shared);
  auto hostile = OpenBuilt(b);
  ASSERT_NE(hostile, nullptr);
  st = ConvertToVhdx(ConvertSource::FromImage(*hostile), existing, {});
  EXPECT_EQ(st.code(), Errc::kCorrupt) << st.message();
  EXPECT_FALSE(fs::exists(existing));
  EXPECT_EQ(Sha256OfFile(raw.path()), raw_sha);
}

TEST(ConvertToVhdx, OverwritesAnExistingDestinationAsQemuImgDoes) {
  RawDisk raw("over.raw", 3 * MiB);
  raw.Put(MiB, PatternBytes(4096, 20));
  std::string dst = ScratchPath("over.vhdx");
  WriteWholeFile(dst, PatternBytes(50 * MiB, 21));
  ASSERT_TRUE(ConvertToVhdx(OpenSource(raw.path()), dst, {}).ok());
  auto image = OpenPath(dst);
  ASSERT_NE(image, nullptr);
  EXPECT_EQ(Sha256OfImage(*image), raw.Sha256Padded(3 * MiB));
  EXPECT_LT(fs::file_size(dst), 50 * MiB);
}

}  // namespace
}  // namespace vhdx::test
