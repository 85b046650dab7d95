// `vhdx compact` with the guest's file system read: an ext4 disk with files
// written and a third of them deleted loses the space of the deleted ones.
// Afterwards e2fsck -fn passes on the virtual disk, every surviving file reads
// back byte for byte (debugfs dump), vhdx check (and qemu-img check) are
// clean, the file is no larger than the live data, the structures and a
// block per block group, and the DataWriteGuid changed. A file system that is
// not clean is left alone; a differencing child over an ext4 parent changes
// alone.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <nlohmann/json.hpp>

#include "core/resize_test_util.h"
#include "fs_test_util.h"
#include "support/crash_file.h"
#include "support/strace_replay.h"
#include "support/test_util.h"
#include "vhdx/compact.h"
#include "vhdx/create.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kMiB = 1ull << 20;

CommandResult Sh(const std::string& command) { return vhdx::test::Run(command); }
CommandResult Vhdx(const std::string& args) { return Sh(ShellQuote(CliPath()) + " " + args); }

// SHA-256 of file `name` inside the ext file system of the raw disk `raw`.
std::string FileSha(const std::string& raw, const std::string& name) {
  const std::string out = raw + ".dump";
  fs::remove(out);
  CommandResult r = Sh(fmt::format("debugfs -R {} {}", ShellQuote("dump /" + name + " " + out), ShellQuote(raw)));
  if (!fs::exists(out)) return "not dumped: " + r.output;
  std::string sha = Sha256OfFile(out);
  fs::remove(out);
  return sha;
}

Guid DataWriteGuid(const std::string& path) {
  auto image = Image::Open(path);
  EXPECT_TRUE(image.ok()) << image.status().message();
  if (!image.ok()) return {};
  const ImageInfo& info = (*image)->info();
  return info.headers[info.current_header].data_write_guid;
}

nlohmann::json CompactJson(const std::string& path, const std::string& extra = "") {
  CommandResult r = Vhdx(fmt::format("compact --output=json {} {}", extra, ShellQuote(path)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output, nullptr, false);
  EXPECT_TRUE(j.is_object()) << r.output;
  return j;
}

class CompactFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    VHDX_REQUIRE(MissingFsTools());
    VHDX_REQUIRE(MissingTools({"e2fsck"}));
    dir_ = ScratchPath(::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  std::string dir_;
};

TEST_F(CompactFsTest, DeletedFilesGiveTheirSpaceBackAndTheRestSurvives) {
  const std::string raw = dir_ + "/disk.raw", image = dir_ + "/disk.vhdx", back = dir_ + "/back.raw";
  ASSERT_EQ(MakeExt(raw, 192 * kMiB, "ext4", "-b 4096"), "");
  std::string error;
  const std::vector<std::string> survivors = FillAndThin(raw, 45, error);
  ASSERT_EQ(error, "");
  const DumpedExt dumped = Dumpe2fs(raw);
  ASSERT_EQ(dumped.error, "");
  ASSERT_EQ(ConvertToVhdx(raw, image), "");
  const uint64_t size_before = fs::file_size(image);
  const Guid guid_before = DataWriteGuid(image);

  // The dry run writes nothing and says what the run does.
  const std::string sha_before = Sha256OfFile(image);
  nlohmann::json dry = CompactJson(image, "-n");
  EXPECT_EQ(Sha256OfFile(image), sha_before);
  nlohmann::json j = CompactJson(image);
  EXPECT_EQ(j["file-systems-read"], 1) << j.dump();
  EXPECT_GT(j["blocks-freed-fs"].get<uint64_t>(), 10u) << j.dump();
  EXPECT_EQ(dry["blocks-freed-fs"], j["blocks-freed-fs"]);
  EXPECT_EQ(dry["file-size-after"], j["file-size-after"]);
  EXPECT_EQ(j["file-size-after"].get<uint64_t>(), fs::file_size(image));
  EXPECT_LT(fs::file_size(image), size_before);
  EXPECT_NE(DataWriteGuid(image), guid_before) << "free space now reads zeros: new DataWriteGuid";

  // No larger than the live data, the structures (under 8 MiB) and one
  // 1 MiB block per block group (a group's metadata shares a block with free space).
  uint64_t free_blocks = 0;
  for (const BlockRun& run : dumped.free) free_blocks += run.count;
  const uint64_t live = (dumped.block_count - free_blocks) * dumped.block_size;
  const uint64_t groups = (dumped.block_count + 32767) / 32768;
  EXPECT_LE(fs::file_size(image), 8 * kMiB + live + groups * kMiB) << "live data " << live;

  CommandResult r = Vhdx("check " + ShellQuote(image));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  if (RunPart("qemu-img check", MissingTools({"qemu-img"}))) {
    r = Sh("qemu-img check -f vhdx " + ShellQuote(image));
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  r = Vhdx(fmt::format("convert -O raw {} {}", ShellQuote(image), ShellQuote(back)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Sh("e2fsck -fn " + ShellQuote(back));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const std::string& name : survivors) EXPECT_EQ(FileSha(back, name), FileSha(raw, name)) << name;

  // Nothing left to do the second time.
  j = CompactJson(image);
  EXPECT_EQ(j["blocks-freed-fs"].get<uint64_t>() + j["blocks-moved"].get<uint64_t>(), 0u) << j.dump();
}

TEST_F(CompactFsTest, NoFsReleasesOnlyZerosAndKeepsTheDataWriteGuid) {
  const std::string raw = dir_ + "/disk.raw", image = dir_ + "/disk.vhdx";
  ASSERT_EQ(MakeExt(raw, 96 * kMiB, "ext4"), "");
  std::string error;
  ASSERT_FALSE(FillAndThin(raw, 15, error).empty()) << error;
  ASSERT_EQ(ConvertToVhdx(raw, image), "");
  const Guid guid = DataWriteGuid(image);
  nlohmann::json j = CompactJson(image, "--no-fs");
  EXPECT_EQ(j["blocks-freed-fs"], 0);
  EXPECT_EQ(j["file-systems-read"], 0);
  EXPECT_EQ(DataWriteGuid(image), guid);
  auto image_open = Image::Open(image);
  ASSERT_TRUE(image_open.ok());
  std::vector<uint8_t> bytes = ReadWholeFile(raw);
  EXPECT_EQ(Sha256OfImage(**image_open), Sha256Hex(bytes.data(), bytes.size())) << "the disk reads as before";
}

// A GPT disk with two ext4 partitions and one holding random bytes (no file
// system we read): the ext4 ones give back their deleted files' space and
// keep their survivors; the third partition and the table read as before.
TEST_F(CompactFsTest, GptWithTwoExt4AndAnUnknownPartition) {
  VHDX_REQUIRE(MissingTools({"sfdisk"}));
  const std::string disk = dir_ + "/gpt.raw", image = dir_ + "/gpt.vhdx", back = dir_ + "/back.raw";
  ASSERT_EQ(Sh("truncate -s 288M " + ShellQuote(disk)).exit_code, 0);
  ASSERT_EQ(Partition(disk, "label: gpt\nsize=96MiB\nsize=64MiB\nsize=96MiB\n"), "");
  const std::map<int, PartitionSpec> parts = ReadBack(disk);
  ASSERT_EQ(parts.size(), 3u);
  std::map<int, std::vector<std::string>> survivors;
  for (int n : {1, 3}) {
    const std::string path = dir_ + fmt::format("/p{}.ext4", n);
    ASSERT_EQ(MakeExt(path, parts.at(n).length, "ext4"), "");
    std::string error;
    survivors[n] = FillAndThin(path, 12, error);
    ASSERT_FALSE(survivors[n].empty()) << error;
    ASSERT_EQ(Place(path, disk, parts.at(n).offset), "");
  }
  ASSERT_EQ(Sh(fmt::format("head -c {} /dev/urandom | dd status=none conv=notrunc oflag=seek_bytes of={} seek={}",
                           parts.at(2).length, ShellQuote(disk), parts.at(2).offset))
                .exit_code,
            0);
  ASSERT_EQ(ConvertToVhdx(disk, image), "");
  nlohmann::json j = CompactJson(image);
  EXPECT_EQ(j["file-systems-read"], 2) << j.dump();
  EXPECT_GT(j["blocks-freed-fs"].get<uint64_t>(), 0u) << j.dump();
  ASSERT_EQ(j["notices"].size(), 1u) << j.dump();
  EXPECT_NE(j["notices"][0].get<std::string>().find("partition 2"), std::string::npos) << j.dump();

  CommandResult r = Vhdx(fmt::format("convert -O raw {} {}", ShellQuote(image), ShellQuote(back)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The table and the unknown partition, byte for byte.
  const std::vector<uint8_t> a = ReadWholeFile(disk), b = ReadWholeFile(back);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + parts.at(1).offset, b.begin())) << "the partition table changed";
  const auto p2 = static_cast<std::ptrdiff_t>(parts.at(2).offset), n2 = static_cast<std::ptrdiff_t>(parts.at(2).length);
  EXPECT_TRUE(std::equal(a.begin() + p2, a.begin() + p2 + n2, b.begin() + p2)) << "the unknown partition changed";
  for (int n : {1, 3}) {
    const std::string mine = dir_ + fmt::format("/p{}.ext4", n), got = dir_ + fmt::format("/got{}.ext4", n);
    ASSERT_EQ(Sh(fmt::format("dd status=none iflag=skip_bytes,count_bytes if={} of={} skip={} count={}",
                             ShellQuote(back), ShellQuote(got), parts.at(n).offset, parts.at(n).length))
                  .exit_code,
              0);
    r = Sh("e2fsck -fn " + ShellQuote(got));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    for (const std::string& name : survivors[n]) EXPECT_EQ(FileSha(got, name), FileSha(mine, name)) << n << name;
  }
}

// A journal that needs recovery: the file system is left alone with a
// notice, its free space kept; the disk reads exactly as before.
TEST_F(CompactFsTest, AFileSystemThatIsNotCleanIsLeftAlone) {
  const std::string raw = dir_ + "/disk.raw", image = dir_ + "/disk.vhdx";
  ASSERT_EQ(MakeExt(raw, 96 * kMiB, "ext4"), "");
  std::string error;
  ASSERT_FALSE(FillAndThin(raw, 15, error).empty()) << error;
  ASSERT_EQ(DebugfsWrite(raw, {"feature needs_recovery"}), "");
  ASSERT_EQ(ConvertToVhdx(raw, image), "");
  const std::vector<uint8_t> bytes = ReadWholeFile(raw);
  CommandResult r = Vhdx("compact " + ShellQuote(image));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Left alone: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("journal needs recovery"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" 0 in free space of 0 file system(s)"), std::string::npos) << r.output;
  auto image_open = Image::Open(image);
  ASSERT_TRUE(image_open.ok());
  EXPECT_EQ(Sha256OfImage(**image_open), Sha256Hex(bytes.data(), bytes.size()));
}

// A differencing child over an ext4 parent, holding the changes of deleting
// files: compacting the child reads the file system through the chain,
// changes only the child, and the chain's files survive.
TEST_F(CompactFsTest, AChildOverAnExt4ParentChangesAlone) {
  const std::string raw = dir_ + "/disk.raw", parent = dir_ + "/parent.vhdx", child = dir_ + "/child.avhdx";
  ASSERT_EQ(MakeExt(raw, 96 * kMiB, "ext4"), "");
  // Files written in the parent; the deletions (and new files) in the child.
  std::string error;
  std::vector<std::string> survivors = FillAndThin(raw, 12, error);
  ASSERT_FALSE(survivors.empty()) << error;
  ASSERT_EQ(ConvertToVhdx(raw, parent), "");
  const std::vector<uint8_t> before = ReadWholeFile(raw);
  // The child also holds the data of a file written and deleted since: its
  // sectors lie in free space now, amid blocks whose other sectors (read
  // from the parent) the file system uses.
  const std::string g = dir_ + "/g";
  std::vector<uint8_t> g_bytes(3 * kMiB + 12345);
  for (size_t i = 0; i < g_bytes.size(); ++i) g_bytes[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  WriteWholeFile(g, g_bytes);
  ASSERT_EQ(DebugfsWrite(raw, {"rm f0", "rm f3", "write " + g + " g"}), "");
  ASSERT_EQ(DebugfsWrite(raw, {"rm g"}), "");
  survivors.erase(std::remove_if(survivors.begin(), survivors.end(),
                                 [](const std::string& n) { return n == "f0" || n == "f3"; }),
                  survivors.end());
  const std::vector<uint8_t> after = ReadWholeFile(raw);
  ASSERT_TRUE(CreateImage(child, {.block_size = 1u << 20, .parent_path = parent}).ok());
  {
    auto c = Image::Open(child, {.read_only = false});
    ASSERT_TRUE(c.ok()) << c.status().message();
    for (uint64_t at = 0; at < after.size(); at += 4096) {
      if (std::memcmp(before.data() + at, after.data() + at, 4096) != 0) {
        ASSERT_TRUE((*c)->Write(at, after.data() + at, 4096).ok());
      }
    }
    ASSERT_TRUE((*c)->Close().ok());
  }
  const std::string parent_sha = Sha256OfFile(parent);
  const uint64_t child_size = fs::file_size(child);
  nlohmann::json j = CompactJson(child);
  EXPECT_GT(j["blocks-freed-fs"].get<uint64_t>(), 0u) << j.dump();
  EXPECT_LT(fs::file_size(child), child_size);
  CommandResult r;
  EXPECT_EQ(Sha256OfFile(parent), parent_sha) << "the parent is never written";
  r = Vhdx("check " + ShellQuote(child));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const std::string back = dir_ + "/back.raw";
  r = Vhdx(fmt::format("convert -O raw {} {}", ShellQuote(child), ShellQuote(back)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Sh("e2fsck -fn " + ShellQuote(back));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const std::string& name : survivors) EXPECT_EQ(FileSha(back, name), FileSha(raw, name)) << name;
}

// A child whose only own sectors in a block lie in the file system's free
// space, in a block the file system also uses (read from the parent): the
// block goes back to reading its parent everywhere, which is then the
// chain's whole content.
TEST_F(CompactFsTest, AChildsSectorsInFreeSpaceAreDroppedWhereTheParentHasData) {
  const std::string raw = dir_ + "/disk.raw", parent = dir_ + "/parent.vhdx", child = dir_ + "/child.avhdx";
  ASSERT_EQ(MakeExt(raw, 96 * kMiB, "ext4", "-b 4096"), "");
  std::string error;
  ASSERT_FALSE(FillAndThin(raw, 15, error).empty()) << error;
  const DumpedExt dumped = Dumpe2fs(raw);
  ASSERT_EQ(dumped.error, "");
  ASSERT_EQ(ConvertToVhdx(raw, parent), "");
  // A free run of at least 64 KiB starting inside a 1 MiB block whose start
  // the file system uses.
  std::optional<vhdx::fs::FreeRange> target;
  for (const vhdx::fs::FreeRange& r : ToDiskRanges(dumped, 0)) {
    const uint64_t block_end = (r.offset / kMiB + 1) * kMiB;
    if (r.offset % kMiB != 0 && std::min(r.offset + r.length, block_end) - r.offset >= 64 * 1024) {
      target = vhdx::fs::FreeRange{r.offset, std::min(r.offset + r.length, block_end) - r.offset};
      break;
    }
  }
  ASSERT_TRUE(target.has_value()) << "no free run starts inside a used block";
  ASSERT_TRUE(CreateImage(child, {.block_size = 1u << 20, .parent_path = parent}).ok());
  {
    auto c = Image::Open(child, {.read_only = false});
    ASSERT_TRUE(c.ok()) << c.status().message();
    std::vector<uint8_t> junk(target->length);
    for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<uint8_t>(i * 2654435761u >> 11);
    ASSERT_TRUE((*c)->Write(target->offset, junk.data(), junk.size()).ok());
    ASSERT_TRUE((*c)->Close().ok());
  }
  const uint64_t child_size = fs::file_size(child);
  nlohmann::json j = CompactJson(child);
  EXPECT_EQ(j["blocks-freed-fs"], 1) << j.dump();
  EXPECT_LT(fs::file_size(child), child_size);
  CommandResult r = Vhdx("check " + ShellQuote(child));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto chain = Image::Open(child);
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  const std::vector<uint8_t> bytes = ReadWholeFile(raw);
  EXPECT_EQ(Sha256OfImage(**chain), Sha256Hex(bytes.data(), bytes.size())) << "the block reads its parent again";
}

// A power failure after any file operation of a file-system-aware
// compaction: every 1 MiB of the disk reads as before or as after (free
// space old or zeros, everything the file system uses unchanged), and the
// image checks clean.
TEST_F(CompactFsTest, PowerFailureLeavesEveryBlockAsBeforeOrAsAfter) {
  const std::string raw = dir_ + "/disk.raw", image = dir_ + "/disk.vhdx";
  ASSERT_EQ(MakeExt(raw, 64 * kMiB, "ext4"), "");
  std::string error;
  ASSERT_FALSE(FillAndThin(raw, 12, error).empty()) << error;
  ASSERT_EQ(ConvertToVhdx(raw, image), "");
  std::unique_ptr<SparseMemoryFile> start = LoadFile(image);
  auto hashes = [](const File& file) {
    std::vector<std::string> out;
    auto opened = Image::Open(std::make_unique<ReadOnlyView>(file));
    if (!opened.ok()) return out;
    std::vector<uint8_t> buf(kMiB);
    for (uint64_t at = 0; at < (*opened)->virtual_size(); at += kMiB) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kMiB, (*opened)->virtual_size() - at));
      if (!(*opened)->Read(at, buf.data(), n).ok()) return std::vector<std::string>{};
      out.push_back(Sha256Hex(buf.data(), n));
    }
    return out;
  };
  const std::vector<std::string> before = hashes(*start);
  SparseMemoryFile done(*start);
  {
    auto opened = Image::Open(std::make_unique<Borrowed>(done), {.read_only = false});
    ASSERT_TRUE(opened.ok());
    auto r = CompactImage(std::move(opened).value());
    ASSERT_TRUE(r.ok()) << r.status().message();
    ASSERT_GT(r->blocks_fs_free, 0u);
  }
  const std::vector<std::string> after = hashes(done);
  ASSERT_EQ(before.size(), after.size());
  size_t changed = 0;
  for (size_t i = 0; i < before.size(); ++i) changed += before[i] != after[i];
  ASSERT_GT(changed, 0u) << "free space that held deleted data reads zeros after";

  CrashRecorder rec(*start);
  {
    auto opened = Image::Open(rec.OpenFile(), {.read_only = false});
    ASSERT_TRUE(opened.ok());
    ASSERT_TRUE(CompactImage(std::move(opened).value()).ok());
  }
  CrashStateBuilder builder(rec);
  const size_t ops = rec.op_count();
  for (size_t point = 0; point <= ops; ++point) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      std::mt19937_64 rng(point * 13 + attempt);
      static constexpr TearPolicy kPolicies[] = {{0.5, 0.3}, {1.0, 0.0}};
      CrashState state = builder.Build(point, rng, kPolicies[attempt]);
      const std::string where = fmt::format("crash after {} of {} ops", point, ops);
      ASSERT_EQ(CheckErrors(*state.file), "") << where;
      const std::vector<std::string> got = hashes(*state.file);
      ASSERT_EQ(got.size(), before.size()) << where << ": does not open or read";
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_TRUE(got[i] == before[i] || got[i] == after[i]) << where << ": MiB " << i << " reads neither";
    }
  }
}

}  // namespace
}  // namespace vhdx::test
