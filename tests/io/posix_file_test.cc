#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "support/test_util.h"
#include "vhdx/file.h"

namespace vhdx {
namespace {

using Bytes = std::vector<uint8_t>;
constexpr uint64_t kMiB = 1 << 20;

Bytes Pattern(size_t n, uint8_t seed = 1) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 13 + (i >> 9));
  return b;
}

// Each test gets its own fresh folder, removed afterwards.
class PosixFileTest : public testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vhdx-io-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string Path(const std::string& leaf) const { return dir_ + "/" + leaf; }
  // A file holding `contents`.
  std::string ScratchFile(const Bytes& contents) const {
    std::string path = Path("file");
    test::WriteWholeFile(path, contents);
    return path;
  }

  std::string dir_;
};

std::unique_ptr<File> Open(const std::string& path, bool writable) {
  auto f = OpenPosixFile(path, writable);
  EXPECT_TRUE(f.ok()) << f.status().message();
  return f.ok() ? std::move(f).value() : nullptr;
}

TEST_F(PosixFileTest, ReadsWhatIsOnDisk) {
  std::string path = ScratchFile(Pattern(10000));
  auto f = Open(path, false);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->name(), path);
  EXPECT_FALSE(f->writable());
  EXPECT_EQ(*f->Size(), 10000u);
  Bytes buf(1000);
  ASSERT_EQ(*f->ReadAt(4000, buf.data(), buf.size()), 1000u);
  Bytes expect = Pattern(10000);
  EXPECT_TRUE(std::equal(buf.begin(), buf.end(), expect.begin() + 4000));
}

TEST_F(PosixFileTest, ReadPastTheEndIsShort) {
  std::string path = ScratchFile(Pattern(10000));
  auto f = Open(path, false);
  ASSERT_TRUE(f);
  Bytes buf(1000, 0xEE);
  EXPECT_EQ(*f->ReadAt(9500, buf.data(), buf.size()), 500u);
  Bytes expect = Pattern(10000);
  EXPECT_TRUE(std::equal(buf.begin(), buf.begin() + 500, expect.begin() + 9500));
  EXPECT_EQ(buf[500], 0xEE);
  EXPECT_EQ(*f->ReadAt(10000, buf.data(), buf.size()), 0u);
  EXPECT_EQ(*f->ReadAt(1ull << 40, buf.data(), buf.size()), 0u);
}

TEST_F(PosixFileTest, WriteOverwritesAndExtendsAndReachesTheDisk) {
  std::string path = Path("posix-create");
  auto created = CreatePosixFile(path);
  ASSERT_TRUE(created.ok()) << created.status().message();
  File& f = **created;
  EXPECT_TRUE(f.writable());
  EXPECT_EQ(*f.Size(), 0u);
  Bytes a = Pattern(5000, 3), b = Pattern(300, 9);
  ASSERT_TRUE(f.WriteAt(0, a.data(), a.size()).ok());
  ASSERT_TRUE(f.WriteAt(100, b.data(), b.size()).ok());
  ASSERT_TRUE(f.WriteAt(8000, b.data(), b.size()).ok());  // leaves a gap
  ASSERT_TRUE(f.Flush().ok());
  EXPECT_EQ(*f.Size(), 8300u);
  Bytes want = a;
  std::copy(b.begin(), b.end(), want.begin() + 100);
  want.resize(8000, 0);
  want.insert(want.end(), b.begin(), b.end());
  EXPECT_EQ(test::ReadWholeFile(path), want);
}

TEST_F(PosixFileTest, WritableOpenKeepsContentAndCreateTruncates) {
  std::string path = ScratchFile(Pattern(4096));
  {
    auto f = Open(path, true);
    ASSERT_TRUE(f);
    EXPECT_TRUE(f->writable());
    EXPECT_EQ(*f->Size(), 4096u);
  }
  EXPECT_EQ(test::ReadWholeFile(path), Pattern(4096));
  auto created = CreatePosixFile(path);
  ASSERT_TRUE(created.ok());
  EXPECT_EQ(*(*created)->Size(), 0u);
}

TEST_F(PosixFileTest, WriteBeyondTheLargestFileOffsetFails) {
  std::string path = ScratchFile(Pattern(100));
  auto f = Open(path, true);
  ASSERT_TRUE(f);
  const uint8_t four[4] = {1, 2, 3, 4};
  for (uint64_t offset : {UINT64_MAX - 1, uint64_t{1} << 63}) {
    Status st = f->WriteAt(offset, four, sizeof four);
    EXPECT_FALSE(st.ok()) << offset;
    EXPECT_NE(st.message().find("write of 4 bytes at offset"), std::string::npos) << st.message();
  }
  EXPECT_EQ(test::ReadWholeFile(path), Pattern(100));
}

TEST_F(PosixFileTest, TruncateShrinksAndGrowsWithZeros) {
  std::string path = ScratchFile(Pattern(4096));
  auto f = Open(path, true);
  ASSERT_TRUE(f);
  ASSERT_TRUE(f->Truncate(1000).ok());
  ASSERT_TRUE(f->Truncate(3000).ok());
  Bytes want = Pattern(1000);
  want.resize(3000, 0);
  EXPECT_EQ(test::ReadWholeFile(path), want);
}

TEST_F(PosixFileTest, PunchHoleZeroesDeallocatesAndKeepsTheSize) {
  std::string path = ScratchFile(Pattern(4 * kMiB));
  auto f = Open(path, true);
  ASSERT_TRUE(f);
  ASSERT_TRUE(f->Flush().ok());
  const uint64_t before = *f->AllocatedSize();
  ASSERT_GE(before, 4 * kMiB);
  Status st = f->PunchHole(kMiB, 2 * kMiB);
  if (st.code() == Errc::kIoError && st.message().find("not supported") != std::string::npos)
    GTEST_SKIP() << "the scratch file system cannot punch holes: " << st.message();
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(*f->Size(), 4 * kMiB);
  EXPECT_LE(*f->AllocatedSize(), before - 2 * kMiB);
  Bytes want = Pattern(4 * kMiB);
  std::fill(want.begin() + kMiB, want.begin() + 3 * kMiB, 0);
  EXPECT_EQ(test::ReadWholeFile(path), want);
}

TEST_F(PosixFileTest, AllocatedSizeOfASparseFile) {
  std::string path = Path("posix-sparse");
  auto created = CreatePosixFile(path);
  ASSERT_TRUE(created.ok());
  File& f = **created;
  ASSERT_TRUE(f.Truncate(64 * kMiB).ok());
  Bytes block = Pattern(kMiB);
  ASSERT_TRUE(f.WriteAt(32 * kMiB, block.data(), block.size()).ok());
  ASSERT_TRUE(f.Flush().ok());
  EXPECT_EQ(*f.Size(), 64 * kMiB);
  EXPECT_GE(*f.AllocatedSize(), kMiB);
  EXPECT_LT(*f.AllocatedSize(), 8 * kMiB);
}

TEST_F(PosixFileTest, AllocateReservesRealSpaceThatReadsAsZeros) {
  std::string path = Path("posix-allocate");
  auto created = CreatePosixFile(path);
  ASSERT_TRUE(created.ok());
  File& f = **created;
  Bytes head = Pattern(4096);
  ASSERT_TRUE(f.WriteAt(0, head.data(), head.size()).ok());
  ASSERT_TRUE(f.Allocate(0, 8 * kMiB).ok());
  EXPECT_EQ(*f.Size(), 8 * kMiB);
  EXPECT_GE(*f.AllocatedSize(), 8 * kMiB);  // not sparse
  Bytes want(8 * kMiB, 0);
  std::copy(head.begin(), head.end(), want.begin());
  EXPECT_EQ(test::ReadWholeFile(path), want);  // existing bytes kept, the rest zeros

  auto ro = Open(path, false);
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->Allocate(0, 16 * kMiB).code(), Errc::kReadOnly);
  EXPECT_EQ(*ro->Size(), 8 * kMiB);
}

TEST_F(PosixFileTest, OpenOfAMissingFileIsNotFound) {
  std::string path = Path("no-such-file.vhdx");
  for (bool writable : {false, true}) {
    auto f = OpenPosixFile(path, writable);
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), Errc::kNotFound);
    // The path itself is added by the caller (the CLI prints "vhdx: <path>: ...").
    EXPECT_NE(f.status().message().find("cannot open"), std::string::npos);
    EXPECT_NE(f.status().message().find("No such file or directory"), std::string::npos);
  }
}

TEST_F(PosixFileTest, CreateInAMissingFolderIsNotFound) {
  auto f = CreatePosixFile(Path("no-such-dir/x.vhdx"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), Errc::kNotFound);
  EXPECT_NE(f.status().message().find("cannot create"), std::string::npos);
}

TEST_F(PosixFileTest, OpenOfADirectoryIsRefused) {
  auto f = OpenPosixFile(dir_, false);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), Errc::kInvalidArgument);
  EXPECT_NE(f.status().message().find("directory"), std::string::npos);
}

TEST_F(PosixFileTest, ReadOnlyOpenRefusesEveryChange) {
  std::string path = ScratchFile(Pattern(8192));
  struct stat st_before;
  ASSERT_EQ(::stat(path.c_str(), &st_before), 0);
  auto f = Open(path, false);
  ASSERT_TRUE(f);
  Bytes patch(100, 0xAB);
  for (const Status& st :
       {f->WriteAt(0, patch.data(), patch.size()), f->WriteAt(8192, patch.data(), patch.size()),
        f->Truncate(0), f->Truncate(1 << 20), f->PunchHole(0, 4096)}) {
    EXPECT_EQ(st.code(), Errc::kReadOnly) << st.message();
    EXPECT_NE(st.message().find("read-only"), std::string::npos) << st.message();
  }
  EXPECT_TRUE(f->Flush().ok());
  f.reset();
  struct stat st_after;
  ASSERT_EQ(::stat(path.c_str(), &st_after), 0);
  EXPECT_EQ(st_after.st_size, st_before.st_size);
  EXPECT_EQ(st_after.st_mtim.tv_sec, st_before.st_mtim.tv_sec);
  EXPECT_EQ(st_after.st_mtim.tv_nsec, st_before.st_mtim.tv_nsec);
  EXPECT_EQ(test::ReadWholeFile(path), Pattern(8192));
}

TEST_F(PosixFileTest, ConcurrentReadersSeeTheSameBytes) {
  const Bytes data = Pattern(256 * 1024);
  auto f = Open(ScratchFile(data), false);
  ASSERT_TRUE(f);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      Bytes buf(4096);
      for (uint64_t i = 0; i < 500; ++i) {
        uint64_t off = (i * 7919 + t * 131) % (data.size() - buf.size());
        auto got = f->ReadAt(off, buf.data(), buf.size());
        if (!got.ok() || *got != buf.size() ||
            !std::equal(buf.begin(), buf.end(), data.begin() + off))
          ++mismatches[t];
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

// ---- O_DIRECT -------------------------------------------------------------

constexpr size_t kSector = 4096;

// A 4 KiB-aligned heap buffer, so tests can choose the exact misalignment of
// the address they pass.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t n) : size_(n) {
    void* p = nullptr;
    if (::posix_memalign(&p, kSector, n + kSector) != 0) std::abort();
    data_ = static_cast<uint8_t*>(p);
    std::memset(data_, 0, n + kSector);
  }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  // The address `misalign` bytes past a 4 KiB boundary; `size()` bytes fit.
  uint8_t* at(size_t misalign) { return data_ + misalign; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_;
  size_t size_;
};

std::unique_ptr<File> OpenDirect(const std::string& path, bool writable) {
  auto f = OpenPosixFile(path, writable, /*direct=*/true);
  EXPECT_TRUE(f.ok()) << f.status().message();
  return f.ok() ? std::move(f).value() : nullptr;
}

// The open-file flags (/proc/self/fdinfo) of every descriptor of this
// process that refers to `path`.
std::vector<long> OpenFlagsOf(const std::string& path) {
  std::vector<long> flags;
  const auto target = std::filesystem::canonical(path);
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto link = std::filesystem::read_symlink(entry.path(), ec);
    if (ec || link != target) continue;
    std::ifstream info("/proc/self/fdinfo/" + entry.path().filename().string());
    std::string key;
    while (info >> key) {
      if (key == "flags:") {
        std::string octal;
        info >> octal;
        flags.push_back(std::stol(octal, nullptr, 8));
        break;
      }
    }
  }
  return flags;
}

TEST_F(PosixFileTest, DirectOpenUsesODirect) {
  std::string path = ScratchFile(Pattern(8192));
  for (bool writable : {false, true}) {
    auto f = OpenDirect(path, writable);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->writable(), writable);
    std::vector<long> flags = OpenFlagsOf(path);
    ASSERT_FALSE(flags.empty());
    EXPECT_TRUE(std::any_of(flags.begin(), flags.end(), [](long fl) { return fl & O_DIRECT; }))
        << "writable=" << writable;
  }
  auto plain = Open(path, true);
  ASSERT_TRUE(plain);
  for (long fl : OpenFlagsOf(path)) EXPECT_EQ(fl & O_DIRECT, 0);
}

TEST_F(PosixFileTest, DirectOpenOnAFileSystemWithoutODirectIsUnsupported) {
  // procfs refuses O_DIRECT with EINVAL, as tmpfs did before Linux 6.6.
  const std::string path = "/proc/self/status";
  auto f = OpenPosixFile(path, false, /*direct=*/true);
  if (f.ok()) GTEST_SKIP() << path << " accepted O_DIRECT on this kernel";
  EXPECT_EQ(f.status().code(), Errc::kUnsupported) << f.status().message();
  EXPECT_NE(f.status().message().find("O_DIRECT"), std::string::npos) << f.status().message();
  // The same file opens without O_DIRECT: only the flag was refused.
  EXPECT_TRUE(OpenPosixFile(path, false).ok());
  // A missing file is still reported as missing, not as unsupported.
  auto missing = OpenPosixFile(Path("no-such-file"), true, /*direct=*/true);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Errc::kNotFound);
}

TEST_F(PosixFileTest, DirectReadsAnyAlignmentAndStopsShortAtTheEnd) {
  const Bytes data = Pattern(10000);  // not a multiple of 4096
  auto f = OpenDirect(ScratchFile(data), false);
  ASSERT_TRUE(f);
  AlignedBuffer buf(3 * kSector);
  struct Case {
    uint64_t offset;
    size_t n, misalign, want;
  };
  for (const Case& c : std::vector<Case>{
           {0, 4096, 0, 4096},      // aligned throughout
           {0, 8192, 0, 8192},
           {4096, 8192, 0, 5904},   // aligned request running past the end
           {8192, 4096, 0, 1808},
           {1, 4095, 0, 4095},      // unaligned offset
           {4096, 100, 7, 100},     // unaligned buffer and length
           {4000, 5000, 4000 % kSector, 5000},  // buffer misaligned like the offset
           {9500, 1000, 3, 500},    // unaligned, past the end
           {9999, 1, 0, 1},
           {10000, 100, 0, 0},      // at the end
           {12288, 4096, 0, 0},     // aligned, past the end
           {1ull << 40, 4096, 5, 0}}) {
    std::memset(buf.at(0), 0xEE, 3 * kSector);
    auto got = f->ReadAt(c.offset, buf.at(c.misalign), c.n);
    ASSERT_TRUE(got.ok()) << c.offset << ": " << got.status().message();
    EXPECT_EQ(*got, c.want) << "offset " << c.offset << " n " << c.n;
    EXPECT_TRUE(std::equal(buf.at(c.misalign), buf.at(c.misalign) + c.want,
                           data.begin() + std::min<uint64_t>(c.offset, data.size())))
        << "offset " << c.offset << " n " << c.n;
    // A bounced read copies only the bytes it returns. (An aligned O_DIRECT
    // read may fill its whole buffer: the kernel transfers whole blocks.)
    const bool bounced = c.misalign != 0 || c.offset % kSector != 0 || c.n % kSector != 0;
    if (bounced && c.want < c.n) {
      EXPECT_EQ(*buf.at(c.misalign + c.want), 0xEE) << "wrote past the bytes read";
    }
  }
}

TEST_F(PosixFileTest, DirectWritesPastTheEndKeepTheExactSize) {
  std::string path = ScratchFile(Pattern(4096));
  auto f = OpenDirect(path, true);
  ASSERT_TRUE(f);
  Bytes patch = Pattern(100, 7);
  ASSERT_TRUE(f->WriteAt(10000, patch.data(), patch.size()).ok());
  EXPECT_EQ(*f->Size(), 10100u);
  // And an unaligned write inside the last, partial sector.
  ASSERT_TRUE(f->WriteAt(8200, patch.data(), 50).ok());
  EXPECT_EQ(*f->Size(), 10100u);
  ASSERT_TRUE(f->Flush().ok());
  Bytes want = Pattern(4096);
  want.resize(10100, 0);
  std::copy(patch.begin(), patch.end(), want.begin() + 10000);
  std::copy(patch.begin(), patch.begin() + 50, want.begin() + 8200);
  EXPECT_EQ(test::ReadWholeFile(path), want);
  Bytes back(10100);
  ASSERT_EQ(*f->ReadAt(0, back.data(), back.size()), 10100u);
  EXPECT_EQ(back, want);
}

TEST_F(PosixFileTest, WriteBeyondTheLargestFileOffsetFailsWithDirectIo) {
  std::string path = ScratchFile(Pattern(100));
  auto f = OpenDirect(path, true);
  ASSERT_TRUE(f);
  const uint8_t four[4] = {1, 2, 3, 4};
  for (uint64_t offset : {UINT64_MAX - 1, uint64_t{1} << 63}) {
    Status st = f->WriteAt(offset, four, sizeof four);
    EXPECT_FALSE(st.ok()) << offset;
    EXPECT_NE(st.message().find("write of 4 bytes at offset"), std::string::npos) << st.message();
  }
  EXPECT_EQ(test::ReadWholeFile(path), Pattern(100));
}

// The same random writes, through an O_DIRECT file and through a normal one,
// must leave the same bytes, and reads must agree, whatever the alignment of
// offset, length and buffer.
TEST_F(PosixFileTest, DirectAndBufferedFilesEndUpIdentical) {
  const Bytes initial = Pattern(3 * kMiB + 1234, 5);
  const std::string direct_path = Path("direct"), plain_path = Path("plain");
  test::WriteWholeFile(direct_path, initial);
  test::WriteWholeFile(plain_path, initial);
  auto direct = OpenDirect(direct_path, true);
  auto plain = Open(plain_path, true);
  ASSERT_TRUE(direct && plain);

  std::mt19937_64 rng(20240611);
  auto uniform = [&rng](uint64_t lo, uint64_t hi) {  // inclusive
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
  };
  constexpr size_t kMaxLength = 2 * kMiB + 3 * kSector;  // more than one bounce piece
  AlignedBuffer data(kMaxLength), got_direct(kMaxLength), got_plain(kMaxLength);
  for (int round = 0; round < 400; ++round) {
    uint64_t size = *plain->Size();
    uint64_t offset;
    size_t n, misalign;
    switch (uniform(0, 3)) {
      case 0:  // everything aligned: the path straight to pwrite
        offset = uniform(0, (size + 16 * kSector) / kSector) * kSector;
        n = uniform(1, 64) * kSector;
        misalign = 0;
        break;
      case 1:  // small, often inside one sector
        offset = uniform(0, size + 3 * kSector);
        n = uniform(1, 300);
        misalign = uniform(0, kSector - 1);
        break;
      case 2:  // buffer misaligned like the offset: bounced ends, direct middle
        offset = uniform(0, size + 3 * kSector);
        n = uniform(1, 300 * 1024);
        misalign = offset % kSector;
        break;
      default:  // large and unaligned: several bounce pieces
        offset = uniform(0, size + kSector);
        n = uniform(1, kMaxLength - kSector);
        misalign = uniform(0, kSector - 1);
        break;
    }
    if (uniform(0, 2) == 0) {
      std::memset(got_direct.at(0), 0xA5, kMaxLength);
      std::memset(got_plain.at(0), 0x5A, kMaxLength);
      auto a = direct->ReadAt(offset, got_direct.at(misalign), n);
      auto b = plain->ReadAt(offset, got_plain.at(misalign), n);
      ASSERT_TRUE(a.ok() && b.ok()) << a.status().message() << b.status().message();
      ASSERT_EQ(*a, *b) << "round " << round << " read at " << offset << " n " << n;
      ASSERT_EQ(std::memcmp(got_direct.at(misalign), got_plain.at(misalign), *a), 0)
          << "round " << round << " read at " << offset << " n " << n;
      continue;
    }
    uint8_t* src = data.at(misalign);
    for (size_t i = 0; i < n; ++i) src[i] = static_cast<uint8_t>(rng());
    Status a = direct->WriteAt(offset, src, n);
    ASSERT_TRUE(a.ok()) << "round " << round << ": " << a.message();
    ASSERT_TRUE(plain->WriteAt(offset, src, n).ok());
    ASSERT_EQ(*direct->Size(), *plain->Size()) << "round " << round;
  }
  ASSERT_TRUE(direct->Flush().ok());
  ASSERT_TRUE(plain->Flush().ok());
  direct.reset();
  plain.reset();
  const Bytes direct_bytes = test::ReadWholeFile(direct_path);
  EXPECT_GT(direct_bytes.size(), initial.size());  // some writes extended the file
  EXPECT_EQ(test::Sha256Hex(direct_bytes.data(), direct_bytes.size()),
            test::Sha256OfFile(plain_path));
}

// Writers owning different bytes of the same 4 KiB sectors write them at
// the same time; every byte must land (each read-modify-write must see the
// others' completed writes).
void ConcurrentSectorSharingWrites(const std::string& path, uint64_t initial_size) {
  auto f = OpenDirect(path, true);
  ASSERT_TRUE(f);
  constexpr int kThreads = 8;
  constexpr uint64_t kBegin = 4096 - 7, kEnd = 4 * 4096 + 11;  // crosses sector boundaries
  constexpr uint64_t kRun = 5;  // the byte at p belongs to thread (p / kRun) % kThreads
  auto value = [](uint64_t p) { return static_cast<uint8_t>(p * 31 + 17); };
  std::vector<std::thread> threads;
  std::vector<std::string> errors(kThreads);
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      std::vector<uint64_t> runs;
      for (uint64_t p = kBegin - kBegin % kRun; p < kEnd; p += kRun)
        if (static_cast<int>((p / kRun) % kThreads) == t) runs.push_back(p);
      std::shuffle(runs.begin(), runs.end(), std::mt19937(t));
      for (uint64_t p : runs) {
        uint8_t bytes[kRun];
        for (uint64_t i = 0; i < kRun; ++i) bytes[i] = value(p + i);
        // Single bytes and whole runs, so writes start and end anywhere.
        for (uint64_t i = 0; i < kRun; i += (p / kRun) % 2 ? kRun : 1) {
          size_t len = (p / kRun) % 2 ? kRun : 1;
          Status st = f->WriteAt(p + i, bytes + i, len);
          if (!st.ok() && errors[t].empty()) errors[t] = st.message();
        }
      }
    });
  for (auto& th : threads) th.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  ASSERT_TRUE(f->Flush().ok());
  const uint64_t last = (kEnd - 1) - (kEnd - 1) % kRun + kRun;  // end of the last run
  EXPECT_EQ(*f->Size(), std::max(initial_size, last));
  Bytes bytes = test::ReadWholeFile(path);
  ASSERT_GE(bytes.size(), last);
  size_t wrong = 0;
  for (uint64_t p = kBegin - kBegin % kRun; p < last; ++p)
    if (bytes[p] != value(p)) ++wrong;
  EXPECT_EQ(wrong, 0u) << "bytes lost by concurrent read-modify-write";
}

TEST_F(PosixFileTest, ConcurrentDirectWritesToDifferentBytesOfOneSectorAllLand) {
  for (int repeat = 0; repeat < 3; ++repeat) {
    ConcurrentSectorSharingWrites(ScratchFile(Bytes(8 * kSector, 0)), 8 * kSector);
    if (HasFatalFailure() || HasFailure()) return;
  }
}

TEST_F(PosixFileTest, ConcurrentDirectWritesThatExtendTheFileAllLand) {
  for (int repeat = 0; repeat < 3; ++repeat) {
    ConcurrentSectorSharingWrites(ScratchFile(Bytes(100, 0)), 100);
    if (HasFatalFailure() || HasFailure()) return;
  }
}

}  // namespace
}  // namespace vhdx
