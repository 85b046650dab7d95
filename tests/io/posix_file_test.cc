#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
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

}  // namespace
}  // namespace vhdx
