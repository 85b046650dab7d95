// Image locks (src/io/file_lock.cc): the exact bytes QEMU's scheme locks,
// in-process sharing, and conflicts with other processes, played by the
// vhdx CLI and QEMU's own tools (separate processes, so their locks are
// real OFD locks of another open file description).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "support/test_util.h"
#include "vhdx/create.h"
#include "vhdx/file.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

// The OFD lock bytes /proc/locks lists on `path`'s inode (any process).
std::multiset<long> LockedBytes(const std::string& path) {
  struct stat st;
  std::multiset<long> bytes;
  if (stat(path.c_str(), &st) != 0) return bytes;
  std::ifstream locks("/proc/locks");
  std::string line;
  const std::string inode = fmt::format(":{} ", st.st_ino);
  while (std::getline(locks, line)) {
    if (line.find("OFDLCK") == std::string::npos || line.find(inode) == std::string::npos) continue;
    std::istringstream fields(line.substr(line.find(inode) + inode.size()));
    long first = 0, last = 0;
    fields >> first >> last;
    for (long b = first; b <= last; ++b) bytes.insert(b);
  }
  return bytes;
}

const std::multiset<long> kReaderBytes = {100, 201, 203};
const std::multiset<long> kWriterBytes = {100, 101, 103, 201, 203};

std::string NewImage(const std::string& leaf) {
  std::string path = ScratchPath(leaf);
  fs::remove(path);
  CreateOptions o;
  o.virtual_size = 64 << 20;
  o.block_size = 1 << 20;
  Status s = CreateImage(path, o);
  EXPECT_TRUE(s.ok()) << s.message();
  return path;
}

CommandResult Sh(const std::string& command) { return vhdx::test::Run(command); }
CommandResult Vhdx(const std::string& args) { return Sh(CliPath() + " " + args); }

TEST(FileLock, ReadersAndWritersLockQemusBytes) {
  const std::string path = NewImage("bytes.vhdx");
  ASSERT_TRUE(LockedBytes(path).empty());
  {
    auto reader = Image::Open(path);
    ASSERT_TRUE(reader.ok()) << reader.status().message();
    EXPECT_EQ(LockedBytes(path), kReaderBytes);
  }
  EXPECT_TRUE(LockedBytes(path).empty());
  {
    auto writer = Image::Open(path, {.read_only = false});
    ASSERT_TRUE(writer.ok()) << writer.status().message();
    EXPECT_EQ(LockedBytes(path), kWriterBytes);
    // Closed and clean: the lock goes, though the object lives on.
    ASSERT_TRUE((*writer)->Close().ok());
    EXPECT_TRUE(LockedBytes(path).empty());
  }
  {
    auto peek = Image::Open(path, {.force_share = true});
    ASSERT_TRUE(peek.ok()) << peek.status().message();
    EXPECT_TRUE(LockedBytes(path).empty()) << "force_share took a lock";
  }
  auto refused = Image::Open(path, {.read_only = false, .force_share = true});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Errc::kInvalidArgument);
}

// Opens within one process share one set of locks, the union of what each
// needs, and each close gives back only what no other open needs.
TEST(FileLock, OpensInOneProcessShareTheirLocks) {
  const std::string path = NewImage("shared.vhdx");
  auto reader = Image::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status().message();
  auto writer = Image::Open(path, {.read_only = false});
  ASSERT_TRUE(writer.ok()) << writer.status().message();
  auto second_reader = OpenPosixFile(path, false, false, FileLockMode::kRead);
  ASSERT_TRUE(second_reader.ok()) << second_reader.status().message();
  EXPECT_EQ(LockedBytes(path), kWriterBytes);  // one set, not one per open
  writer->reset();
  EXPECT_EQ(LockedBytes(path), kReaderBytes);
  reader->reset();
  EXPECT_EQ(LockedBytes(path), kReaderBytes);
  second_reader->reset();
  EXPECT_TRUE(LockedBytes(path).empty());
}

TEST(FileLock, AWriterHereKeepsOtherProcessesOff) {
  const std::string path = NewImage("writer.vhdx");
  auto writer = Image::Open(path, {.read_only = false});
  ASSERT_TRUE(writer.ok()) << writer.status().message();
  CommandResult info = Vhdx("info " + ShellQuote(path));
  EXPECT_EQ(info.exit_code, 1) << info.output;
  EXPECT_EQ(info.output, "vhdx: " + path +
                             ": in use: another process has it open for writing (a VM, qemu-nbd, nbdkit, vhdx "
                             "mount, ...); force-share (-U) reads it anyway, as it is at this moment\n");
  CommandResult check = Vhdx("check " + ShellQuote(path));
  EXPECT_EQ(check.exit_code, 1) << check.output;
  CommandResult peek = Vhdx("info -U --output=json " + ShellQuote(path));
  EXPECT_EQ(peek.exit_code, 0) << peek.output;
  CommandResult write = Vhdx("io -c 'write 0 4k' " + ShellQuote(path));
  EXPECT_EQ(write.exit_code, 1) << write.output;
  EXPECT_NE(write.output.find("in use: another process has it open for writing"), std::string::npos) << write.output;
  CommandResult unsafe = Vhdx("io -U -c 'write 0 4k' " + ShellQuote(path));
  EXPECT_EQ(unsafe.exit_code, 1) << unsafe.output;
  EXPECT_NE(unsafe.output.find("force-share is only for read-only opens"), std::string::npos) << unsafe.output;
  if (RunPart("qemu-img refused beside the writer", MissingTools({"qemu-img"}))) {
    CommandResult q = Sh("qemu-img info -f vhdx " + ShellQuote(path));
    EXPECT_NE(q.exit_code, 0) << q.output;
    EXPECT_NE(q.output.find("Failed to get shared \"write\" lock"), std::string::npos) << q.output;
  }
  // Once closed, the file is free for others at once.
  ASSERT_TRUE((*writer)->Close().ok());
  write = Vhdx("io -c 'write -P 0x42 0 4k' " + ShellQuote(path));
  EXPECT_EQ(write.exit_code, 0) << write.output;
}

TEST(FileLock, ReadersShareButKeepWritersOff) {
  const std::string path = NewImage("reader.vhdx");
  auto reader = Image::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status().message();
  CommandResult info = Vhdx("info " + ShellQuote(path));
  EXPECT_EQ(info.exit_code, 0) << info.output;
  const std::string before = Sha256OfFile(path);
  CommandResult write = Vhdx("io -c 'write 0 4k' " + ShellQuote(path));
  EXPECT_EQ(write.exit_code, 1) << write.output;
  EXPECT_NE(write.output.find("in use: another process has it open for reading"), std::string::npos) << write.output;
  CommandResult repair = Vhdx("check -r all " + ShellQuote(path));
  EXPECT_EQ(repair.exit_code, 1) << repair.output;
  if (RunPart("qemu-io beside the reader", MissingTools({"qemu-io"}))) {
    CommandResult q = Sh("qemu-io -f vhdx -c 'write 0 4k' " + ShellQuote(path));
    EXPECT_NE(q.exit_code, 0) << q.output;
    EXPECT_NE(q.output.find("Failed to get \"write\" lock"), std::string::npos) << q.output;
    q = Sh("qemu-io -r -f vhdx -c 'read 0 4k' " + ShellQuote(path));
    EXPECT_EQ(q.exit_code, 0) << q.output;
  }
  EXPECT_EQ(Sha256OfFile(path), before) << "a refused writer changed the file";
}

// Another process's lock (qemu-nbd's): a refused open leaves no lock of
// ours behind, and a refused convert output is not truncated.
TEST(FileLock, RefusedOpensLeaveNothingBehind) {
  VHDX_REQUIRE(MissingTools({"qemu-nbd"}));
  const std::string path = NewImage("qemu-held.vhdx");
  QemuNbdServer qemu(path, /*read_only=*/false);
  ASSERT_EQ(qemu.started().exit_code, 0) << qemu.started().output;
  const std::multiset<long> qemus = LockedBytes(path);
  EXPECT_EQ(qemus, kWriterBytes);
  const std::string before = Sha256OfFile(path);
  for (FileLockMode mode : {FileLockMode::kRead, FileLockMode::kWrite}) {
    auto f = OpenPosixFile(path, true, false, mode);
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), Errc::kBusy) << f.status().message();
    EXPECT_EQ(LockedBytes(path), qemus) << "a refused open left locks";
  }
  auto image = Image::Open(path, {.read_only = false});
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), Errc::kBusy);
  auto created = CreatePosixFile(path);
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.status().code(), Errc::kBusy);
  CommandResult convert = Vhdx("convert -O vhdx " + ShellQuote(NewImage("src.vhdx")) + " " + ShellQuote(path));
  EXPECT_EQ(convert.exit_code, 1) << convert.output;
  EXPECT_EQ(Sha256OfFile(path), before) << "a refused output was truncated or written";
  EXPECT_EQ(LockedBytes(path), qemus);
  auto peek = Image::Open(path, {.force_share = true});
  EXPECT_TRUE(peek.ok()) << peek.status().message();
  qemu.Stop();
  EXPECT_TRUE(LockedBytes(path).empty());
}

// A differencing image's parents are read-locked while the chain is open:
// nobody writes under a child.
TEST(FileLock, ParentsAreLockedForReading) {
  const std::string base = NewImage("lock-base.vhdx");
  const std::string child = ScratchPath("lock-child.avhdx");
  fs::remove(child);
  CommandResult made = Vhdx("create --parent " + ShellQuote(base) + " " + ShellQuote(child));
  ASSERT_EQ(made.exit_code, 0) << made.output;
  auto chain = Image::Open(child, {.read_only = false});
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  EXPECT_EQ(LockedBytes(child), kWriterBytes);
  EXPECT_EQ(LockedBytes(base), kReaderBytes);
  CommandResult write = Vhdx("io -c 'write 0 4k' " + ShellQuote(base));
  EXPECT_EQ(write.exit_code, 1) << write.output;
  EXPECT_NE(write.output.find("in use"), std::string::npos) << write.output;
  CommandResult read = Vhdx("io -r -c 'read 0 4k' " + ShellQuote(base));
  EXPECT_EQ(read.exit_code, 0) << read.output;
  chain->reset();
  EXPECT_TRUE(LockedBytes(base).empty());
  EXPECT_TRUE(LockedBytes(child).empty());
}

}  // namespace
}  // namespace vhdx::test
