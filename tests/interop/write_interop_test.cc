// Images written through the library's write path (Image::Write,
// WriteZeroes, Discard, Flush, Close) are accepted by the peers: a seeded
// random workload is applied to an image and mirrored into a raw model
// file, then qemu-img checks the image and reads the model's bytes from it,
// libvhdi opens it (4096-byte sectors too, through vhdimount), qemu-io and
// the library take turns writing one image, and a log we leave behind (a
// flush without close) is replayed by QEMU into the model's content.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <random>

#include "disk_checks.h"
#include "support/test_util.h"
#include "vhdx/create.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1ull << 20;


// The expected virtual disk: a sparse raw file that receives every change
// made to the image under test.
class RawModel {
 public:
  RawModel(std::string path, uint64_t size) : path_(std::move(path)), size_(size) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    EXPECT_GE(fd_, 0) << path_;
    EXPECT_EQ(::ftruncate(fd_, static_cast<off_t>(size)), 0) << path_;
  }
  ~RawModel() {
    if (fd_ >= 0) ::close(fd_);
    std::error_code ec;
    fs::remove(path_, ec);
  }
  RawModel(const RawModel&) = delete;
  RawModel& operator=(const RawModel&) = delete;

  void Write(uint64_t offset, const uint8_t* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
      ASSERT_GT(w, 0) << "model write at " << offset;
      p += w;
      n -= static_cast<size_t>(w);
      offset += static_cast<uint64_t>(w);
    }
  }
  void Fill(uint64_t offset, uint64_t n, uint8_t value) {
    std::vector<uint8_t> bytes(static_cast<size_t>(n), value);
    Write(offset, bytes.data(), bytes.size());
  }
  void Zero(uint64_t offset, uint64_t n) {
    // Punching keeps the model sparse; partial pages are zeroed by the kernel.
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(n)) == 0)
      return;
    Fill(offset, n, 0);
  }
  std::string Sha256() const { return Sha256OfFile(path_); }
  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

 private:
  std::string path_;
  uint64_t size_;
  int fd_ = -1;
};

// A seeded random mix of every change the write path offers, applied to
// the image and to the model alike. Offsets cluster around block boundaries
// (so writes and zero ranges cross them), lengths are byte- or
// sector-granular, some writes carry only zeros (no allocation), and some
// zero ranges cover whole blocks (unmapping them in dynamic images).
class Workload {
 public:
  Workload(uint64_t seed, uint64_t virtual_size, uint32_t block_size, uint32_t sector)
      : rng_(seed), size_(virtual_size), block_(block_size), sector_(sector) {}

  int writes = 0, zero_writes = 0, write_zeroes = 0, discards = 0, flushes = 0;

  void Run(Image& image, RawModel& model, int ops, bool allow_flush = true) {
    for (int i = 0; i < ops && !::testing::Test::HasFatalFailure(); ++i) {
      unsigned pick = Uniform(0, 99);
      if (pick < 50) {
        auto [off, len] = RandomRange(/*max_len=*/std::min<uint64_t>(4 * kMiB, 2ull * block_));
        std::vector<uint8_t> data(len);
        bool zeros = Uniform(0, 9) == 0;
        if (!zeros)
          for (auto& b : data) b = static_cast<uint8_t>(rng_() | 1);  // never all zero
        Status st = image.Write(off, data.data(), data.size());
        ASSERT_TRUE(st.ok()) << "write " << off << "+" << len << ": " << st.message();
        model.Write(off, data.data(), data.size());
        ++(zeros ? zero_writes : writes);
      } else if (pick < 90) {
        auto [off, len] = Uniform(0, 1) ? WholeBlocks() : RandomRange(2ull * block_);
        Status st;
        if (pick < 70) {
          bool may_unmap = Uniform(0, 1);
          st = image.WriteZeroes(off, len, may_unmap);
          ++write_zeroes;
        } else {
          st = image.Discard(off, len);
          ++discards;
        }
        ASSERT_TRUE(st.ok()) << (pick < 70 ? "write zeroes " : "discard ") << off << "+" << len << ": "
                             << st.message();
        model.Zero(off, len);
      } else if (allow_flush) {
        Status st = image.Flush();
        ASSERT_TRUE(st.ok()) << "flush: " << st.message();
        ++flushes;
      }
    }
  }

  std::string Summary() const {
    return fmt::format("{} writes, {} zero-data writes, {} write-zeroes, {} discards, {} flushes", writes,
                       zero_writes, write_zeroes, discards, flushes);
  }

  // A qemu-io command line of `ops` sector-aligned pattern writes and
  // zero writes, mirrored into the model.
  std::string QemuIoScript(RawModel& model, int ops) {
    std::string script;
    for (int i = 0; i < ops; ++i) {
      auto [off, len] = RandomRange(std::min<uint64_t>(3 * kMiB, 2ull * block_), /*aligned=*/true);
      if (Uniform(0, 3) == 0) {
        script += fmt::format(" -c 'write -z {} {}'", off, len);
        model.Zero(off, len);
      } else {
        uint8_t pattern = static_cast<uint8_t>(Uniform(1, 255));
        script += fmt::format(" -c 'write -P {:#04x} {} {}'", pattern, off, len);
        model.Fill(off, len, pattern);
      }
    }
    return script;
  }

 private:
  uint64_t Uniform(uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_); }

  // A range of at most max_len bytes inside the disk, starting uniformly or
  // just before a block boundary; sector-aligned when `aligned` (and half
  // the time anyway).
  std::pair<uint64_t, size_t> RandomRange(uint64_t max_len, bool aligned = false) {
    const uint64_t blocks = (size_ + block_ - 1) / block_;
    uint64_t off;
    if (blocks > 1 && Uniform(0, 1)) {
      uint64_t boundary = Uniform(1, blocks - 1) * block_;
      off = boundary - Uniform(1, std::min<uint64_t>(boundary, 64 * 1024));
    } else {
      off = Uniform(0, size_ - 1);
    }
    uint64_t len = Uniform(0, 1) ? Uniform(1, 64 * 1024) : Uniform(64 * 1024, max_len);
    if (aligned || Uniform(0, 1)) {
      off = off / sector_ * sector_;
      len = std::max<uint64_t>(len / sector_ * sector_, sector_);
    }
    len = std::min(len, size_ - off);
    return {off, static_cast<size_t>(len)};
  }

  // One or two whole blocks (the last one possibly partial: it ends the disk).
  std::pair<uint64_t, size_t> WholeBlocks() {
    const uint64_t blocks = (size_ + block_ - 1) / block_;
    uint64_t off = Uniform(0, blocks - 1) * block_;
    uint64_t len = std::min<uint64_t>(Uniform(1, 2) * block_, size_ - off);
    return {off, static_cast<size_t>(len)};
  }

  std::mt19937_64 rng_;
  uint64_t size_;
  uint64_t block_;
  uint64_t sector_;
};

CreateOptions Options(DiskType type, uint64_t size, uint32_t block, uint32_t logical) {
  CreateOptions o;
  o.type = type;
  o.virtual_size = size;
  o.block_size = block;
  o.logical_sector_size = logical;
  return o;
}

// A new image at `path`, opened read-write.
std::unique_ptr<Image> CreateWritable(const std::string& path, const CreateOptions& o) {
  fs::remove(path);
  Status st = CreateImage(path, o);
  EXPECT_TRUE(st.ok()) << st.message();
  if (!st.ok()) return nullptr;
  auto image = Image::Open(path, {.read_only = false});
  EXPECT_TRUE(image.ok()) << image.status().message();
  return image.ok() ? std::move(image).value() : nullptr;
}

std::unique_ptr<Image> OpenWritable(const std::string& path) {
  auto image = Image::Open(path, {.read_only = false});
  EXPECT_TRUE(image.ok()) << image.status().message();
  return image.ok() ? std::move(image).value() : nullptr;
}

// The model file compared with what `image` reads (cheaper than hashing
// both: the model's holes are only checked to read as zeros).
std::string CompareWithModel(const Image& image, const RawModel& model) {
  return CompareRawFile(model.path(), model.size(), ImageReader(image));
}

// Our own read-only view reads the model and the structures check clean.
void ExpectLibraryReadsModel(const std::string& path, const RawModel& model) {
  auto image = Image::Open(path);
  ASSERT_TRUE(image.ok()) << image.status().message();
  EXPECT_FALSE((*image)->info().log.dirty);
  EXPECT_EQ(CompareWithModel(**image, model), "") << "the library reads other bytes than the model";
  auto report = Check(path);
  ASSERT_TRUE(report.ok()) << report.status().message();
  for (const CheckFinding& f : report->findings)
    ADD_FAILURE() << "vhdx check: " << f.structure << ": " << f.message;
}

// qemu-img checks the image clean, compares it equal to the model and
// converts it to the model's bytes; libvhdi opens it with the right size.
void ExpectPeersReadModel(const std::string& path, const RawModel& model) {
  const std::string model_sha = model.Sha256();
  CommandResult r = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("No errors"), std::string::npos) << r.output;

  r = vhdx::test::Run(fmt::format("qemu-img compare -f vhdx -F raw {} {}", ShellQuote(path), ShellQuote(model.path())));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Images are identical."), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("mismatch"), std::string::npos) << r.output;

  std::string raw = path + ".qemu.raw";
  r = vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw {} {}", ShellQuote(path), ShellQuote(raw)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fs::file_size(raw), model.size());
  EXPECT_EQ(Sha256OfFile(raw), model_sha) << "qemu-img convert reads other bytes than the model";
  fs::remove(raw);

  if (RunPart("vhdiinfo part", MissingTools({"vhdiinfo"}))) {
    r = vhdx::test::Run("vhdiinfo " + ShellQuote(path));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(fmt::format("({} bytes)", model.size())), std::string::npos) << r.output;
  }
}

struct Scenario {
  const char* name;
  DiskType type;
  uint32_t block_size;
  uint64_t virtual_size;
};

void PrintTo(const Scenario& s, std::ostream* os) { *os << s.name; }

class WriteInteropTest : public ::testing::TestWithParam<Scenario> {
 protected:
  void SetUp() override {
    VHDX_REQUIRE(MissingTools({"qemu-img"}));
  }
};

TEST_P(WriteInteropTest, PeersReadWhatTheLibraryWrote) {
  const Scenario& s = GetParam();
  std::string path = ScratchPath(fmt::format("written-{}.vhdx", s.name));
  RawModel model(ScratchPath(fmt::format("written-{}.model.raw", s.name)), s.virtual_size);
  auto image = CreateWritable(path, Options(s.type, s.virtual_size, s.block_size, 512));
  ASSERT_TRUE(image);
  Workload w(/*seed=*/s.block_size ^ s.virtual_size ^ static_cast<uint64_t>(s.type), s.virtual_size,
             s.block_size, 512);
  ASSERT_NO_FATAL_FAILURE(w.Run(*image, model, 48));
  SCOPED_TRACE(w.Summary());
  // Data the library reads before the close is already the model's.
  EXPECT_EQ(CompareWithModel(*image, model), "");
  Status st = image->Close();
  ASSERT_TRUE(st.ok()) << st.message();
  if (s.type == DiskType::kDynamic) {
    // The peers meet every state the write path leaves: allocated blocks,
    // and blocks unmapped by write-zeroes (ZERO) or discard (UNMAPPED).
    EXPECT_GT(image->write_stats().blocks_released, 0u);
    auto reopened = Image::Open(path);
    ASSERT_TRUE(reopened.ok()) << reopened.status().message();
    auto alloc = (*reopened)->CountAllocation();
    ASSERT_TRUE(alloc.ok()) << alloc.status().message();
    EXPECT_GT(alloc->payload[static_cast<int>(BlockState::kFullyPresent)], 0u);
    EXPECT_GT(alloc->payload[static_cast<int>(BlockState::kZero)] +
                  alloc->payload[static_cast<int>(BlockState::kUnmapped)],
              0u);
  }

  ExpectPeersReadModel(path, model);
  ExpectLibraryReadsModel(path, model);
  fs::remove(path);
}

INSTANTIATE_TEST_SUITE_P(
    Written, WriteInteropTest,
    ::testing::Values(Scenario{"Dynamic1M", DiskType::kDynamic, 1u << 20, 40 * kMiB},
                      Scenario{"Dynamic8M", DiskType::kDynamic, 8u << 20, 96 * kMiB + 512},
                      Scenario{"Dynamic32M", DiskType::kDynamic, 32u << 20, 200 * kMiB},
                      Scenario{"Dynamic256M", DiskType::kDynamic, 256u << 20, 600 * kMiB},
                      Scenario{"Fixed1M", DiskType::kFixed, 1u << 20, 24 * kMiB + 512},
                      Scenario{"Fixed8M", DiskType::kFixed, 8u << 20, 72 * kMiB},
                      Scenario{"Fixed32M", DiskType::kFixed, 32u << 20, 136 * kMiB},
                      Scenario{"Fixed256M", DiskType::kFixed, 256u << 20, 600 * kMiB}),
    [](const ::testing::TestParamInfo<Scenario>& i) { return std::string(i.param.name); });

// 4096-byte logical sectors: QEMU refuses them; libvhdi reads our writes.
TEST(WriteInterop, FourKSectorImagesReadIdenticallyThroughLibvhdi) {
  VHDX_REQUIRE(MissingTools({"vhdiinfo", "vhdimount"}));
  for (const Scenario& s : {Scenario{"4k-Dynamic1M", DiskType::kDynamic, 1u << 20, 48 * kMiB + 4096},
                            Scenario{"4k-Dynamic32M", DiskType::kDynamic, 32u << 20, 80 * kMiB},
                            Scenario{"4k-Fixed8M", DiskType::kFixed, 8u << 20, 40 * kMiB + 4096}}) {
    SCOPED_TRACE(s.name);
    std::string path = ScratchPath(fmt::format("written-{}.vhdx", s.name));
    RawModel model(ScratchPath(fmt::format("written-{}.model.raw", s.name)), s.virtual_size);
    auto image = CreateWritable(path, Options(s.type, s.virtual_size, s.block_size, 4096));
    ASSERT_TRUE(image);
    Workload w(/*seed=*/4096 + s.block_size, s.virtual_size, s.block_size, 4096);
    ASSERT_NO_FATAL_FAILURE(w.Run(*image, model, 40));
    SCOPED_TRACE(w.Summary());
    Status st = image->Close();
    ASSERT_TRUE(st.ok()) << st.message();

    std::string unmountable = ExpectLibvhdiReads(path, s.virtual_size, 4096, model.Sha256());
    VHDX_REQUIRE(unmountable);
    ExpectLibraryReadsModel(path, model);
    fs::remove(path);
  }
}

// qemu-io and the library take turns writing one image: each sees the
// other's writes and leaves an image the other accepts.
class AlternatingWritersTest : public ::testing::TestWithParam<Scenario> {
 protected:
  void SetUp() override {
    VHDX_REQUIRE(MissingTools({"qemu-img", "qemu-io"}));
  }
};

TEST_P(AlternatingWritersTest, QemuIoWritesOnOurImageThenWeWriteAgain) {
  const Scenario& s = GetParam();
  std::string path = ScratchPath(fmt::format("ours-then-qemu-{}.vhdx", s.name));
  RawModel model(ScratchPath(fmt::format("ours-then-qemu-{}.model.raw", s.name)), s.virtual_size);
  Workload w(/*seed=*/7 + s.block_size, s.virtual_size, s.block_size, 512);
  {
    auto image = CreateWritable(path, Options(s.type, s.virtual_size, s.block_size, 512));
    ASSERT_TRUE(image);
    ASSERT_NO_FATAL_FAILURE(w.Run(*image, model, 30));
    Status st = image->Close();
    ASSERT_TRUE(st.ok()) << st.message();
  }

  CommandResult r = vhdx::test::Run("qemu-io -f vhdx" + w.QemuIoScript(model, 10) + " " + ShellQuote(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("failed"), std::string::npos) << r.output;
  r = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  ExpectLibraryReadsModel(path, model);

  {
    auto image = OpenWritable(path);
    ASSERT_TRUE(image);
    ASSERT_NO_FATAL_FAILURE(w.Run(*image, model, 30));
    SCOPED_TRACE(w.Summary());
    Status st = image->Close();
    ASSERT_TRUE(st.ok()) << st.message();
  }
  ExpectPeersReadModel(path, model);
  ExpectLibraryReadsModel(path, model);
  fs::remove(path);
}

TEST_P(AlternatingWritersTest, WeWriteOnAQemuImage) {
  const Scenario& s = GetParam();
  std::string path = ScratchPath(fmt::format("qemu-then-ours-{}.vhdx", s.name));
  RawModel model(ScratchPath(fmt::format("qemu-then-ours-{}.model.raw", s.name)), s.virtual_size);
  fs::remove(path);
  CommandResult r = vhdx::test::Run(fmt::format(
      "qemu-img create -f vhdx -o subformat={},block_size={} {} {}",
      s.type == DiskType::kFixed ? "fixed" : "dynamic", s.block_size, ShellQuote(path), s.virtual_size));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Workload w(/*seed=*/11 + s.block_size, s.virtual_size, s.block_size, 512);
  r = vhdx::test::Run("qemu-io -f vhdx" + w.QemuIoScript(model, 12) + " " + ShellQuote(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("failed"), std::string::npos) << r.output;

  {
    auto image = OpenWritable(path);
    ASSERT_TRUE(image);
    EXPECT_EQ(CompareWithModel(*image, model), "") << "we read other bytes than qemu-io wrote";
    ASSERT_NO_FATAL_FAILURE(w.Run(*image, model, 40));
    SCOPED_TRACE(w.Summary());
    Status st = image->Close();
    ASSERT_TRUE(st.ok()) << st.message();
  }
  ExpectPeersReadModel(path, model);
  ExpectLibraryReadsModel(path, model);
  fs::remove(path);
}

INSTANTIATE_TEST_SUITE_P(
    Alternating, AlternatingWritersTest,
    ::testing::Values(Scenario{"Dynamic1M", DiskType::kDynamic, 1u << 20, 48 * kMiB},
                      Scenario{"Dynamic32M", DiskType::kDynamic, 32u << 20, 160 * kMiB},
                      Scenario{"Fixed8M", DiskType::kFixed, 8u << 20, 64 * kMiB}),
    [](const ::testing::TestParamInfo<Scenario>& i) { return std::string(i.param.name); });

// The bytes of [offset, offset + n) of the file at `path`.
std::vector<uint8_t> ReadFileRange(const std::string& path, uint64_t offset, size_t n) {
  std::vector<uint8_t> bytes(n);
  int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0) << path;
  EXPECT_EQ(::pread(fd, bytes.data(), n, static_cast<off_t>(offset)), static_cast<ssize_t>(n)) << path;
  ::close(fd);
  return bytes;
}

void WriteFileRange(const std::string& path, uint64_t offset, const std::vector<uint8_t>& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  EXPECT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(bytes.size()))
      << path;
  ::close(fd);
}

// An image we left with a live log (flushed, never closed): QEMU refuses it
// read-only as it does the corpus's dirty image, and its repair replays our
// log entries into the model's content. Two states are taken from the same
// session: the file as it is after the flush (BAT written in place too),
// and the file as a crash right after the log entry became durable leaves
// it (the BAT pages as they were before the flush), where only a replay of
// our entry yields the model's bytes.
TEST(WriteInterop, QemuReplaysTheLogOfAnImageWeLeftDirty) {
  VHDX_REQUIRE(MissingTools({"qemu-img"}));
  const uint64_t size = 64 * kMiB;
  const uint32_t block = 1u << 20;
  std::string path = ScratchPath("left-dirty.vhdx");
  RawModel model(ScratchPath("left-dirty.model.raw"), size);
  Workload w(/*seed=*/2024, size, block, 512);
  {
    auto image = CreateWritable(path, Options(DiskType::kDynamic, size, block, 512));
    ASSERT_TRUE(image);
    ASSERT_NO_FATAL_FAILURE(w.Run(*image, model, 30));
    ASSERT_TRUE(image->Close().ok());
  }

  std::string applied = ScratchPath("left-dirty-applied.vhdx");
  std::string unapplied = ScratchPath("left-dirty-unapplied.vhdx");
  std::string model_sha;
  std::vector<uint8_t> bat_applied;
  uint64_t bat_offset = 0;
  {
    auto image = OpenWritable(path);
    ASSERT_TRUE(image);
    ASSERT_NO_FATAL_FAILURE(w.Run(*image, model, 20));
    Status st = image->Flush();
    ASSERT_TRUE(st.ok()) << st.message();
    // The last commit of the session: its BAT changes are in memory only.
    ASSERT_NO_FATAL_FAILURE(w.Run(*image, model, 25, /*allow_flush=*/false));
    SCOPED_TRACE(w.Summary());
    const ImageInfo& info = image->info();
    bat_offset = info.bat_offset;
    auto bat_region = std::find_if(info.regions.begin(), info.regions.end(),
                                   [](const RegionInfo& x) { return x.name == "bat"; });
    ASSERT_NE(bat_region, info.regions.end());
    std::vector<uint8_t> bat_before = ReadFileRange(path, bat_offset, bat_region->length);
    st = image->Flush();
    ASSERT_TRUE(st.ok()) << st.message();
    model_sha = model.Sha256();
    // Copies of the file as the flush left it, taken while the image is open.
    fs::copy_file(path, applied, fs::copy_options::overwrite_existing);
    fs::copy_file(path, unapplied, fs::copy_options::overwrite_existing);
    bat_applied = ReadFileRange(applied, bat_offset, bat_region->length);
    ASSERT_NE(bat_applied, bat_before) << "the last commit changed no BAT entry: the workload is too weak";
    ASSERT_NO_FATAL_FAILURE(WriteFileRange(unapplied, bat_offset, bat_before));
    st = image->Close();
    ASSERT_TRUE(st.ok()) << st.message();
  }
  // The closed original is clean and reads as the model everywhere.
  ExpectPeersReadModel(path, model);
  ExpectLibraryReadsModel(path, model);

  for (const std::string& copy : {applied, unapplied}) {
    SCOPED_TRACE(copy);
    const std::string before = Sha256OfFile(copy);
    {
      // Our read-only open replays in memory and shows the model.
      auto image = Image::Open(copy);
      ASSERT_TRUE(image.ok()) << image.status().message();
      const ImageInfo& info = image.value()->info();
      EXPECT_TRUE(info.log.dirty);
      EXPECT_GE(info.log.active_entries, 1u);
      EXPECT_FALSE(info.headers[info.current_header].log_guid.IsZero());
      EXPECT_EQ(CompareWithModel(**image, model), "");
    }
    EXPECT_EQ(Sha256OfFile(copy), before) << "a read-only open changed the file";

    // QEMU will not open it read-only, as with the corpus's dirty image.
    CommandResult r = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(copy));
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("log that needs to be replayed"), std::string::npos) << r.output;
    std::string raw = copy + ".qemu.raw";
    r = vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw {} {}", ShellQuote(copy), ShellQuote(raw)));
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("replay"), std::string::npos) << r.output;
    EXPECT_EQ(Sha256OfFile(copy), before);

    // Its repair replays our log: the file changes, checks clean and reads
    // as the model.
    r = vhdx::test::Run("qemu-img check -r all -f vhdx " + ShellQuote(copy));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("repaired"), std::string::npos) << r.output;
    EXPECT_NE(Sha256OfFile(copy), before) << "qemu-img check -r all did not replay the log";
    EXPECT_EQ(ReadFileRange(copy, bat_offset, bat_applied.size()), bat_applied)
        << "QEMU's replay left other BAT bytes than our own in-place writes";
    r = vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw {} {}", ShellQuote(copy), ShellQuote(raw)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(Sha256OfFile(raw), model_sha) << "QEMU's replay of our log reads other bytes than the model";
    fs::remove(raw);
    ExpectLibraryReadsModel(copy, model);
    fs::remove(copy);
  }
  fs::remove(path);
}

}  // namespace
}  // namespace vhdx::test
