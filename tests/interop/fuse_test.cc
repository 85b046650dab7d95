// `vhdx mount` / `vhdx unmount`: the disk file under a FUSE mount, driven
// with plain system calls (pwrite, pread, fallocate, lseek) and the real
// ext4 tools, checked against a model of the disk, `vhdx map`, `vhdx
// convert -O raw` and `vhdx check`. Skips visibly without FUSE.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/test_util.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kDiskSize = 64 << 20;
constexpr uint64_t kBlock = 1 << 20;

CommandResult Vhdx(const std::string& args) { return Run(CliPath() + " " + args); }

// A mount that is always undone, even when a test fails half way.
class Mount {
 public:
  // `tag` tells apart the mount points of mounts of one image.
  Mount(const std::string& image, const std::string& extra_args = "", const std::string& tag = "")
      : dir_(ScratchPath("mnt-" + fs::path(image).filename().string() + tag)) {
    fs::create_directories(dir_);
    result_ = Vhdx("mount " + extra_args + " " + ShellQuote(image) + " " + ShellQuote(dir_));
    mounted_ = result_.exit_code == 0;
  }
  ~Mount() {
    if (mounted_) {
      // Lazy fallback: never leave a mount behind for the next test.
      if (Vhdx("unmount " + ShellQuote(dir_)).exit_code != 0) vhdx::test::Run("fusermount3 -uz " + ShellQuote(dir_));
    }
  }
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;

  bool mounted() const { return mounted_; }
  const CommandResult& result() const { return result_; }
  const std::string& dir() const { return dir_; }
  std::string disk() const { return dir_ + "/disk"; }
  // Unmounts, waiting until the image is closed; the test sees the status.
  int Unmount() {
    if (!mounted_) return -1;
    mounted_ = false;
    CommandResult r = Vhdx("unmount " + ShellQuote(dir_));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    if (r.exit_code != 0) vhdx::test::Run("fusermount3 -uz " + ShellQuote(dir_));  // never leave one behind
    return r.exit_code;
  }

 private:
  std::string dir_;
  CommandResult result_;
  bool mounted_ = false;
};

// Skips the test (visibly) when FUSE cannot be used here.
#define REQUIRE_FUSE() VHDX_REQUIRE(MissingFuse())

#define REQUIRE_MOUNTED(m)                                                                        \
  do {                                                                                            \
    const std::string& out = (m).result().output;                                                 \
    if (!(m).mounted() && (out.find("ermission denied") != std::string::npos ||                   \
                           out.find("not permitted") != std::string::npos)) {                     \
      VHDX_REQUIRE("FUSE mounts are not permitted here: " + out);                                 \
    }                                                                                             \
    ASSERT_TRUE((m).mounted()) << out;                                                            \
  } while (0)

std::string NewImage(const std::string& leaf, const std::string& options = "--block-size 1M") {
  std::string path = ScratchPath(leaf);
  fs::remove(path);
  CommandResult r = Vhdx("create " + options + " " + ShellQuote(path) + " 64M");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return path;
}

void ExpectCheckClean(const std::string& image) {
  CommandResult r = Vhdx("check " + ShellQuote(image));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("No errors were found"), std::string::npos) << r.output;
}

std::string RawHash(const std::string& image) {
  std::string raw = ScratchPath(fs::path(image).filename().string() + ".raw");
  fs::remove(raw);
  CommandResult r = Vhdx("convert -O raw " + ShellQuote(image) + " " + ShellQuote(raw));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::string hash = Sha256OfFile(raw);
  fs::remove(raw);
  return hash;
}

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 11));
  return v;
}

// What SEEK_DATA / SEEK_HOLE should answer from `off`, from the extents of
// `vhdx map --output=json` (a hole is a range reading as zeros).
off_t ExpectedSeek(const json& extents, uint64_t off, bool hole) {
  for (const auto& x : extents) {
    uint64_t start = x["start"], length = x["length"];
    if (start + length <= off) continue;
    if (x["zero"].get<bool>() == hole) return static_cast<off_t>(std::max(off, start));
  }
  return hole ? static_cast<off_t>(kDiskSize) : -1;
}

TEST(FuseTest, WritePunchSeekThenConvertAndCheck) {
  REQUIRE_FUSE();
  std::string image = NewImage("rw.vhdx");
  std::vector<uint8_t> model(kDiskSize, 0);
  {
    Mount m(image);
    REQUIRE_MOUNTED(m);
    EXPECT_EQ(fs::file_size(m.disk()), kDiskSize);
    int fd = open(m.disk().c_str(), O_RDWR);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    // Unaligned writes spanning blocks, and one at the very end.
    struct Piece { uint64_t offset; size_t length; uint8_t seed; };
    for (Piece p : {Piece{1000, 3 * kBlock + 4321, 1}, Piece{10 * kBlock + 17, 200000, 2},
                    Piece{20 * kBlock, 2 * kBlock, 3}, Piece{kDiskSize - 777, 777, 4}}) {
      std::vector<uint8_t> data = Pattern(p.length, p.seed);
      ASSERT_EQ(pwrite(fd, data.data(), data.size(), static_cast<off_t>(p.offset)), static_cast<ssize_t>(p.length))
          << std::strerror(errno);
      std::copy(data.begin(), data.end(), model.begin() + static_cast<ptrdiff_t>(p.offset));
    }
    // A write past the end of the disk does not grow it.
    EXPECT_EQ(pwrite(fd, "x", 1, static_cast<off_t>(kDiskSize)), -1);
    // Read it all once, so the kernel's page cache holds the data that the
    // punches and zeroes below must then drop.
    {
      std::vector<uint8_t> cached(kDiskSize);
      ASSERT_EQ(pread(fd, cached.data(), kDiskSize, 0), static_cast<ssize_t>(kDiskSize));
      EXPECT_TRUE(cached == model) << "the mounted disk differs from the model before the punches";
    }
    // Punch: whole blocks 1-2 become holes, a partial range reads as zeros.
    ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kBlock, 2 * kBlock), 0) << std::strerror(errno);
    std::fill(model.begin() + kBlock, model.begin() + 3 * kBlock, 0);
    ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 10 * kBlock + 1000, 5000), 0);
    std::fill(model.begin() + 10 * kBlock + 1000, model.begin() + 10 * kBlock + 6000, 0);
    // Zero range: whole block 20 reads as zeros.
    ASSERT_EQ(fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 20 * kBlock, kBlock), 0);
    std::fill(model.begin() + 20 * kBlock, model.begin() + 21 * kBlock, 0);
    // Resizing is refused.
    EXPECT_NE(ftruncate(fd, kDiskSize / 2), 0);
    EXPECT_EQ(fs::file_size(m.disk()), kDiskSize);

    // Read back everything, in odd-sized pieces.
    std::vector<uint8_t> back(kDiskSize);
    for (uint64_t off = 0; off < kDiskSize;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kDiskSize - off, 300001));
      ASSERT_EQ(pread(fd, back.data() + off, n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
      off += n;
    }
    EXPECT_TRUE(back == model) << "the mounted disk differs from the model";

    // SEEK_DATA / SEEK_HOLE agree with `vhdx map`. The mount holds the
    // image's write lock, so map needs -U (a read-only look without a
    // lock; it sees the BAT once fsync made it durable).
    ASSERT_EQ(fsync(fd), 0) << std::strerror(errno);
    CommandResult locked = Vhdx("map --output=json " + ShellQuote(image));
    EXPECT_EQ(locked.exit_code, 1) << locked.output;
    EXPECT_NE(locked.output.find("in use: another process has it open for writing"), std::string::npos)
        << locked.output;
    CommandResult map = Vhdx("map -U --output=json " + ShellQuote(image));
    ASSERT_EQ(map.exit_code, 0) << map.output;
    json extents = json::parse(map.output);
    ASSERT_GT(extents.size(), 2u);
    int probes = 0;
    for (uint64_t off : {uint64_t{0}, uint64_t{999}, kBlock, kBlock + 5, 3 * kBlock, 10 * kBlock + 2000,
                         15 * kBlock, 20 * kBlock + 1, 22 * kBlock, kDiskSize - 1}) {
      for (bool hole : {false, true}) {
        off_t expected = ExpectedSeek(extents, off, hole);
        errno = 0;
        off_t got = lseek(fd, static_cast<off_t>(off), hole ? SEEK_HOLE : SEEK_DATA);
        EXPECT_EQ(got, expected) << (hole ? "SEEK_HOLE" : "SEEK_DATA") << " from " << off;
        if (expected == -1) {
          EXPECT_EQ(errno, ENXIO);
        }
        ++probes;
      }
    }
    EXPECT_EQ(probes, 20);
    // The punched whole blocks are a hole; the data before them is data.
    EXPECT_EQ(lseek(fd, 0, SEEK_HOLE), static_cast<off_t>(kBlock));
    EXPECT_EQ(lseek(fd, static_cast<off_t>(kBlock), SEEK_DATA), static_cast<off_t>(3 * kBlock));
    close(fd);
    ASSERT_EQ(m.Unmount(), 0);
  }
  EXPECT_EQ(RawHash(image), Sha256Hex(model.data(), model.size()));
  ExpectCheckClean(image);
  CommandResult info = Vhdx("info --output=json " + ShellQuote(image));
  EXPECT_EQ(info.exit_code, 0) << info.output;
}

TEST(FuseTest, Ext4MkfsAndFsckThroughTheMount) {
  REQUIRE_FUSE();
  VHDX_REQUIRE(MissingTools({"mkfs.ext4", "e2fsck"}));
  std::string image = NewImage("ext4.vhdx", "");
  {
    Mount m(image);
    REQUIRE_MOUNTED(m);
    CommandResult mkfs = vhdx::test::Run("mkfs.ext4 -F -q " + ShellQuote(m.disk()));
    ASSERT_EQ(mkfs.exit_code, 0) << mkfs.output;
    CommandResult fsck = vhdx::test::Run("e2fsck -fn " + ShellQuote(m.disk()));
    EXPECT_EQ(fsck.exit_code, 0) << fsck.output;
    ASSERT_EQ(m.Unmount(), 0);
  }
  ExpectCheckClean(image);
  std::string hash = RawHash(image);
  {
    Mount m(image, "--read-only");
    REQUIRE_MOUNTED(m);
    CommandResult fsck = vhdx::test::Run("e2fsck -fn " + ShellQuote(m.disk()));
    EXPECT_EQ(fsck.exit_code, 0) << fsck.output;
    EXPECT_EQ(Sha256OfFile(m.disk()), hash);
    ASSERT_EQ(m.Unmount(), 0);
  }
}

TEST(FuseTest, DifferencingChildReadsLikeConvert) {
  REQUIRE_FUSE();
  std::string parent = NewImage("base.vhdx");
  std::string child = ScratchPath("child.avhdx");
  fs::remove(child);
  ASSERT_EQ(Vhdx("io -c 'write -P 0x11 0 4M' -c 'write -P 0x22 30M 3M' " + ShellQuote(parent)).exit_code, 0);
  CommandResult made = Vhdx("create --parent " + ShellQuote(parent) + " " + ShellQuote(child));
  ASSERT_EQ(made.exit_code, 0) << made.output;
  ASSERT_EQ(Vhdx("io -c 'write -P 0x33 1M 1536k' -c 'write -P 0x44 31M 100k' " + ShellQuote(child)).exit_code, 0);
  std::string expected = RawHash(child);
  {
    Mount m(child, "-r");
    REQUIRE_MOUNTED(m);
    EXPECT_EQ(Sha256OfFile(m.disk()), expected);
    int fd = open(m.disk().c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    unsigned char bytes[3] = {};
    ASSERT_EQ(pread(fd, bytes, 1, 0), 1);
    ASSERT_EQ(pread(fd, bytes + 1, 1, 1 << 20), 1);
    ASSERT_EQ(pread(fd, bytes + 2, 1, 30 << 20), 1);
    EXPECT_EQ(bytes[0], 0x11);  // the parent's
    EXPECT_EQ(bytes[1], 0x33);  // the child's
    EXPECT_EQ(bytes[2], 0x22);  // the parent's
    close(fd);
    ASSERT_EQ(m.Unmount(), 0);
  }
}

TEST(FuseTest, ReadOnlyMountRefusesWrites) {
  REQUIRE_FUSE();
  std::string image = NewImage("ro.vhdx");
  ASSERT_EQ(Vhdx("io -c 'write -P 0x5a 0 1M' " + ShellQuote(image)).exit_code, 0);
  std::string before = Sha256OfFile(image);
  {
    Mount m(image, "--read-only");
    REQUIRE_MOUNTED(m);
    EXPECT_EQ(fs::status(m.disk()).permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    errno = 0;
    int fd = open(m.disk().c_str(), O_RDWR);
    EXPECT_EQ(fd, -1);
    EXPECT_TRUE(errno == EROFS || errno == EACCES) << std::strerror(errno);
    if (fd >= 0) close(fd);
    fd = open(m.disk().c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    unsigned char byte = 0;
    EXPECT_EQ(pread(fd, &byte, 1, 4095), 1);
    EXPECT_EQ(byte, 0x5a);
    EXPECT_NE(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), 0);
    close(fd);
    ASSERT_EQ(m.Unmount(), 0);
  }
  EXPECT_EQ(Sha256OfFile(image), before) << "a read-only mount changed the image file";
}

// The image lock (the library's, QEMU's locks): one read-write mount
// excludes every other mount of the image and every other opener, qemu's
// included (the refused one must not even read it: a read-write open would
// replay the live mount's log); read-only mounts share it with readers.
TEST(FuseTest, ImageInUseIsNotMountedTwice) {
  REQUIRE_FUSE();
  std::string image = NewImage("busy.vhdx");
  {
    Mount writer(image);
    REQUIRE_MOUNTED(writer);
    int fd = open(writer.disk().c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    std::vector<uint8_t> data = Pattern(3 << 20, 9);
    ASSERT_EQ(pwrite(fd, data.data(), data.size(), 5 << 20), static_cast<ssize_t>(data.size()));
    ASSERT_EQ(fsync(fd), 0);
    std::string before = Sha256OfFile(image);
    const std::string busy = "vhdx: " + image + ": in use: another process has it open for writing (a VM, "
                             "qemu-nbd, nbdkit, vhdx mount, ...)";
    Mount second(image, "", "-second");
    EXPECT_FALSE(second.mounted());
    EXPECT_EQ(second.result().exit_code, 1);
    EXPECT_EQ(second.result().output, busy + "\n");
    Mount reader(image, "--read-only", "-reader");
    EXPECT_FALSE(reader.mounted());
    EXPECT_EQ(reader.result().output,
              busy + "; force-share (-U) reads it anyway, as it is at this moment\n");
    if (RunPart("qemu-img refused beside the writer", MissingTools({"qemu-img"}))) {
      CommandResult q = vhdx::test::Run("qemu-img info -f vhdx " + ShellQuote(image));
      EXPECT_NE(q.exit_code, 0) << q.output;
      EXPECT_NE(q.output.find("Failed to get shared \"write\" lock"), std::string::npos) << q.output;
    }
    // -U reads it without a lock, the live log replayed in memory (qemu-img
    // -U refuses: it cannot read a dirty image read-only).
    CommandResult peek = Vhdx("info -U --output=json " + ShellQuote(image));
    EXPECT_EQ(peek.exit_code, 0) << peek.output;
    EXPECT_NE(peek.output.find("\"dirty\": true"), std::string::npos) << peek.output;
    EXPECT_EQ(Sha256OfFile(image), before) << "a refused mount changed the image file";
    close(fd);
    ASSERT_EQ(writer.Unmount(), 0);
  }
  ExpectCheckClean(image);
  Mount reader1(image, "--read-only");
  REQUIRE_MOUNTED(reader1);
  Mount reader2(image, "-r", "-2");
  ASSERT_TRUE(reader2.mounted()) << reader2.result().output;
  EXPECT_EQ(Sha256OfFile(reader1.disk()), Sha256OfFile(reader2.disk()));
  Mount late_writer(image, "", "-late");
  EXPECT_FALSE(late_writer.mounted());
  EXPECT_NE(late_writer.result().output.find("in use: another process has it open for reading"), std::string::npos)
      << late_writer.result().output;
  if (RunPart("qemu-io beside the readers", MissingTools({"qemu-io"}))) {  // qemu may read beside them, not write
    CommandResult q = vhdx::test::Run("qemu-io -r -f vhdx -c 'read 0 4k' " + ShellQuote(image));
    EXPECT_EQ(q.exit_code, 0) << q.output;
    q = vhdx::test::Run("qemu-io -f vhdx -c 'write 0 4k' " + ShellQuote(image));
    EXPECT_NE(q.exit_code, 0) << q.output;
    EXPECT_NE(q.output.find("Failed to get \"write\" lock"), std::string::npos) << q.output;
  }
  EXPECT_EQ(reader1.Unmount(), 0);
  EXPECT_EQ(reader2.Unmount(), 0);
}

// What the daemon serving `mountpoint` holds open: pipes (libfuse makes one
// per worker thread for splicing, and only then) and descriptors of `file`.
struct DaemonFds {
  bool found = false;
  int pipes = 0;
  int opens_of_file = 0;
};

DaemonFds DaemonFdsOf(const std::string& mountpoint, const std::string& file) {
  DaemonFds out;
  std::error_code ec;
  const fs::path target = fs::canonical(file, ec);
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string pid = entry.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream cmdline(entry.path() / "cmdline");
    std::string arg, last;
    bool is_vhdx = false;
    for (bool first = true; std::getline(cmdline, arg, '\0'); first = false) {
      if (first) is_vhdx = fs::path(arg).filename() == "vhdx";
      last = arg;
    }
    if (!is_vhdx || last != mountpoint) continue;
    out.found = true;
    for (const auto& fd : fs::directory_iterator(entry.path() / "fd", ec)) {
      const std::string link = fs::read_symlink(fd.path(), ec).string();
      if (link.rfind("pipe:", 0) == 0) ++out.pipes;
      if (!ec && fs::path(link) == target) ++out.opens_of_file;
    }
  }
  return out;
}

// Read-only mounts of clean images reply from the image file by splice(2);
// read-write mounts and dirty images copy through the daemon, which must
// then show the in-memory log replay, never the stale file. Every way reads
// the bytes `vhdx convert -O raw` gives.
TEST(FuseTest, ReadOnlyMountsSpliceCleanImagesAndCopyDirtyOnes) {
  REQUIRE_FUSE();
  std::string image = NewImage("splice.vhdx");
  // Whole blocks, part blocks, a zero range inside data, and holes.
  ASSERT_EQ(Vhdx("io -c 'write -P 0x61 0 3M' -c 'write -P 0x62 5M 1536k' -c 'write -z 1M 64k' "
                 "-c 'write -P 0x63 40M 4k' " + ShellQuote(image)).exit_code, 0);
  const std::string expected = RawHash(image);
  // Copying mounts first: what a daemon holds open without splicing (the
  // library's descriptors of the image, libfuse's own pipe).
  DaemonFds copying;
  for (const std::string flags : {"-r --no-splice", ""}) {
    SCOPED_TRACE(flags);
    Mount m(image, flags, flags.empty() ? "-rw" : "-copy");
    REQUIRE_MOUNTED(m);
    EXPECT_EQ(Sha256OfFile(m.disk()), expected);
    DaemonFds fds = DaemonFdsOf(m.dir(), image);
    ASSERT_TRUE(fds.found) << "no vhdx process serves " << m.dir();
    ASSERT_GE(fds.opens_of_file, 1);
    if (!flags.empty()) {
      copying = fds;
    } else {
      EXPECT_EQ(fds.pipes, copying.pipes) << "a read-write mount spliced";
      EXPECT_EQ(fds.opens_of_file, copying.opens_of_file);
    }
    ASSERT_EQ(m.Unmount(), 0);
  }
  {
    Mount m(image, "-r");
    REQUIRE_MOUNTED(m);
    EXPECT_EQ(Sha256OfFile(m.disk()), expected);
    DaemonFds fds = DaemonFdsOf(m.dir(), image);
    ASSERT_TRUE(fds.found);
    EXPECT_GT(fds.pipes, copying.pipes) << "the read-only mount did not splice";
    EXPECT_EQ(fds.opens_of_file, copying.opens_of_file + 1) << "one more descriptor, spliced from";
    ASSERT_EQ(m.Unmount(), 0);
  }
  // A dirty copy: the image as a live read-write mount leaves it after an
  // fsync (log entries durable, LogGuid set).
  std::string dirty = ScratchPath("splice-dirty.vhdx");
  fs::remove(dirty);
  {
    Mount writer(image);
    REQUIRE_MOUNTED(writer);
    int fd = open(writer.disk().c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    std::vector<uint8_t> data = Pattern(2 << 20, 5);
    ASSERT_EQ(pwrite(fd, data.data(), data.size(), 20 << 20), static_cast<ssize_t>(data.size()));
    ASSERT_EQ(fsync(fd), 0);
    fs::copy_file(image, dirty);
    close(fd);
    ASSERT_EQ(writer.Unmount(), 0);
  }
  CommandResult info = Vhdx("info --output=json " + ShellQuote(dirty));
  ASSERT_EQ(info.exit_code, 0) << info.output;
  ASSERT_NE(info.output.find("\"dirty\": true"), std::string::npos) << info.output;
  const std::string dirty_expected = RawHash(dirty);
  EXPECT_EQ(dirty_expected, RawHash(image)) << "the dirty copy replays to the closed image's bytes";
  {
    Mount m(dirty, "-r");
    REQUIRE_MOUNTED(m);
    EXPECT_EQ(Sha256OfFile(m.disk()), dirty_expected);
    DaemonFds fds = DaemonFdsOf(m.dir(), dirty);
    ASSERT_TRUE(fds.found);
    EXPECT_EQ(fds.pipes, copying.pipes) << "a dirty image was spliced from its file";
    EXPECT_EQ(fds.opens_of_file, copying.opens_of_file);
    ASSERT_EQ(m.Unmount(), 0);
  }
}

TEST(FuseTest, MountErrorsAreOneLine) {
  std::string missing = ScratchPath("missing.vhdx");
  std::string dir = ScratchPath("mnt-missing");
  fs::create_directories(dir);
  CommandResult r = Vhdx("mount " + ShellQuote(missing) + " " + ShellQuote(dir));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output.rfind("vhdx: " + missing + ": ", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  CommandResult u = Vhdx("unmount " + ShellQuote(dir));
  EXPECT_EQ(u.exit_code, 1);
  EXPECT_NE(u.output.find("not a vhdx mount"), std::string::npos) << u.output;
}

}  // namespace
}  // namespace vhdx::test
