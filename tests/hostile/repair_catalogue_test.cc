// Every damage of the catalogue through a real `vhdx check -r all`: the
// repair must never crash, hang or run out of memory; never expose another
// block's data (each MiB of the disk reads as before the damage, or zeros
// that the report lists as lost, or that the damage had already lost);
// never change a byte outside what its report lists; explain every
// corruption it leaves; and a second `-r all` must find nothing to do.
// Metadata damage in particular is reported as not repaired, with nothing
// written. VHDX_HOSTILE_VERBOSE=1 prints what each variant's repair did.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "format/constants.h"
#include "hostile/base_images.h"
#include "hostile/damage_catalogue.h"
#include "hostile/probes.h"
#include "support/test_util.h"

namespace vhdx::hostile {
namespace {

using namespace format;
using json = nlohmann::json;

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, ',');) out.push_back(part);
  return out;
}

// The first 16 hex digits of SHA-256 over `n` zero bytes, as mib_sha256 holds them.
std::string ZeroHash(size_t n) {
  static std::map<size_t, std::string> cache;
  auto [it, inserted] = cache.try_emplace(n);
  if (inserted) {
    std::vector<uint8_t> zeros(n, 0);
    it->second = test::Sha256Hex(zeros.data(), n).substr(0, 16);
  }
  return it->second;
}

// One `vhdx check -r all --output=json` run.
struct RepairRun {
  CliRun cli;
  json report;  // null when the run printed no JSON
  // The file as the run left it, up to kLoadLimit past the damaged file's
  // size (a replayed log may extend a file by a TiB of holes).
  Bytes after;
  uint64_t after_size = 0;
  bool data_past_loaded = false;  // data (not holes) beyond `after`
};

inline constexpr uint64_t kLoadSlack = 64 * MiB;

void LoadFile(const std::string& path, uint64_t limit, RepairRun* run) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  run->after_size = static_cast<uint64_t>(st.st_size);
  run->after.resize(std::min(run->after_size, limit));
  for (size_t done = 0; done < run->after.size();) {
    const ssize_t n = pread(fd, run->after.data() + done, run->after.size() - done, static_cast<off_t>(done));
    ASSERT_GT(n, 0) << path;
    done += static_cast<size_t>(n);
  }
  if (run->after_size > run->after.size())
    run->data_past_loaded = lseek(fd, static_cast<off_t>(run->after.size()), SEEK_DATA) >= 0;
  close(fd);
}

RepairRun RunRepair(const std::string& path, uint64_t damaged_size) {
  RepairRun run;
  const std::string out = path + ".json";
  run.cli = RunCli({"check", "-r", "all", "--output=json", path}, out);
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  if (!text.str().empty()) run.report = json::parse(text.str(), nullptr, false);
  std::filesystem::remove(out);
  LoadFile(path, damaged_size + kLoadSlack, &run);
  return run;
}

// What the report says was changed, as byte ranges a change may touch.
class ListedChanges {
 public:
  ListedChanges(const json& report, const Layout& l) {
    if (!report.contains("repairs")) return;
    for (const auto& a : report["repairs"]) {
      const std::string structure = a["structure"], action = a["action"];
      const uint64_t offset = a["offset"];
      any_ = true;
      uint64_t index = 0, at = 0, length = 0;
      if (structure.starts_with("region table ")) {
        ranges_.push_back({kRegionTableOffsets[structure.back() - '1'], kRegionTableSize});
      } else if (std::sscanf(structure.c_str(), "BAT entry %" SCNu64, &index) == 1) {
        // The 4 KiB BAT sector written in place, and the log that carried it.
        ranges_.push_back({offset / kLogSectorSize * kLogSectorSize, kLogSectorSize});
        ranges_.push_back({l.header().log_offset, l.header().log_length});
        new_zero_space_ |= action.find("new zeroed space") != std::string::npos;
        if (a["data-lost"] && !l.geo.IsBitmapIndex(index)) lost_blocks_.insert(l.geo.BlockOfIndex(index));
      } else if (structure == "log") {
        replayed_ = true;
      } else if (structure == "file" &&
                 std::sscanf(action.c_str(), "leaked range 0x%" SCNx64 " (+0x%" SCNx64, &at, &length) == 2) {
        punched_.push_back({at, length});
      } else if (structure == "file" && action.starts_with("truncated")) {
        truncated_to_ = offset;
      }
    }
  }

  // "" when the change from `before` to `after` is within what was listed.
  std::string Explains(const Bytes& before, const RepairRun& run, const Layout& l) const {
    const Bytes& after = run.after;
    if (run.after_size < before.size() && truncated_to_ != run.after_size)
      return fmt::format("the file shrank from {:#x} to {:#x} bytes, and no truncation is listed",
                         before.size(), run.after_size);
    if (run.after_size > after.size() && (!replayed_ || run.data_past_loaded))
      return fmt::format("the file grew to {:#x} bytes, with data far past its old end", run.after_size);
    for (uint64_t page = 0; page < after.size(); page += kLogSectorSize) {
      const size_t n = std::min<size_t>(kLogSectorSize, after.size() - page);
      const bool existed = page + n <= before.size();
      if (existed && std::equal(after.begin() + page, after.begin() + page + n, before.begin() + page)) continue;
      const bool zeros = std::all_of(after.begin() + page, after.begin() + page + n, [](uint8_t b) { return b == 0; });
      if (Allows(page, n, zeros, existed, l)) continue;
      return fmt::format("bytes at {:#x} changed, which no listed repair touches", page);
    }
    return "";
  }

  bool any() const { return any_; }
  const std::set<uint64_t>& lost_blocks() const { return lost_blocks_; }

 private:
  struct Range {
    uint64_t offset, length;
    bool Covers(uint64_t at, uint64_t n) const { return at >= offset && at + n <= offset + length; }
  };

  bool Allows(uint64_t page, size_t n, bool zeros, bool existed, const Layout& l) const {
    // Every write session begins with a header update.
    if (any_ && page >= kHeader1Offset && page + n <= kHeader2Offset + kHeaderSize) return true;
    for (const Range& r : ranges_)
      if (r.Covers(page, n)) return true;
    // A replay writes what its log entries say, and may extend the file.
    if (replayed_ && (l.LogRewrites(page) || !existed)) return true;
    if (zeros && !existed && new_zero_space_) return true;
    if (zeros)
      for (const Range& r : punched_)
        if (r.Covers(page, n)) return true;
    return false;
  }

  bool any_ = false, replayed_ = false, new_zero_space_ = false;
  std::vector<Range> ranges_, punched_;
  std::optional<uint64_t> truncated_to_;
  std::set<uint64_t> lost_blocks_;
};

int ExitFor(const json& report) {
  return report["corruptions"] > 0 ? 2 : report["leaks"] > 0 ? 3 : 0;
}

struct Tally {
  int variants = 0, clean = 0, corrupt_left = 0, not_run = 0, repaired = 0, lost = 0;
};

// One damaged variant through `-r all`, twice.
void RepairVariant(const Damage& damage, const Bytes& damaged, const BaseImage& base, const LibraryOutcome& ref,
                   const std::string& path, Tally* tally) {
  const Layout& l = base.layout;
  const LibraryOutcome was = ProbeLibrary(damaged, "damaged");
  {
    ImageFile fresh(path);
    fresh.Write(damaged);
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    RepairRun first = RunRepair(path, damaged.size());
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    ASSERT_EQ(first.cli.failure, "") << "vhdx check -r all crashed, hung or ran out of memory";
    ++tally->variants;
    if (first.cli.exit_code == 1) {
      // The check could not run: one line saying why, nothing written.
      ++tally->not_run;
      EXPECT_EQ(std::count(first.cli.stderr_text.begin(), first.cli.stderr_text.end(), '\n'), 1)
          << first.cli.stderr_text;
      EXPECT_TRUE(first.after == damaged && first.after_size == damaged.size())
          << "a repair that could not run changed the file";
      std::filesystem::remove(path);
      return;
    }
    ASSERT_TRUE(first.report.is_object()) << "exit " << first.cli.exit_code << ", no JSON report; stderr: "
                                          << first.cli.stderr_text;
    const json& rep = first.report;
    SCOPED_TRACE("report: " + rep.dump(1));
    EXPECT_EQ(first.cli.exit_code, ExitFor(rep)) << first.cli.stderr_text;
    const ListedChanges listed(rep, l);
    EXPECT_EQ(listed.Explains(damaged, first, l), "");
    if (!listed.any()) {
      EXPECT_TRUE(first.after == damaged && first.after_size == damaged.size())
          << "the file changed, and no repair is listed";
    }
    tally->repaired += listed.any();
    tally->lost += !listed.lost_blocks().empty();
    if (std::getenv("VHDX_HOSTILE_VERBOSE"))
      fmt::print("  {}: exit {}, {} repairs, {} not repaired\n", damage.name, first.cli.exit_code,
                 rep["repairs"].size(), rep["not-repaired"].size());

    if (first.cli.exit_code == 2) {
      // What is left is explained, one entry per reason.
      ++tally->corrupt_left;
      EXPECT_FALSE(rep["not-repaired"].empty()) << "corruptions remain, and the report does not say why";
    } else {
      // Repaired: the disk reads, every MiB as before or zeros, and zeros
      // only where the damage had lost the data or the report says so.
      ++tally->clean;
      const LibraryOutcome now = ProbeLibrary(first.after, "repaired");
      ExpectClean(now);
      ASSERT_TRUE(now.ReadsFine()) << "the repaired image does not read: " << now.Describe();
      EXPECT_EQ(now.check_corruptions, 0u) << now.Describe();
      const auto want = Split(ref.mib_sha256), got = Split(now.mib_sha256), had = Split(was.mib_sha256);
      if (!want.empty() && now.virtual_size == ref.virtual_size) {
        ASSERT_EQ(got.size(), want.size());
        for (size_t i = 0; i < got.size(); ++i) {
          if (got[i] == want[i]) continue;
          const size_t n = std::min<uint64_t>(MiB, ref.virtual_size - i * MiB);
          ASSERT_EQ(got[i], ZeroHash(n)) << "MiB " << i << " reads neither as before the damage nor zeros";
          const bool listed_lost = listed.lost_blocks().count(i * MiB / l.geo.block_size) > 0;
          const bool already_lost = had.size() == got.size() && had[i] == got[i];
          EXPECT_TRUE(listed_lost || already_lost)
              << "MiB " << i << " reads zeros, and the report does not list its data as lost";
        }
      }
    }
    if (damage.name.starts_with("metadata-") && damage.expect == Expect::kReject) {
      // Metadata is not repaired by guessing: reported, nothing written.
      // A dirty log is still replayed: that needs no metadata, and is what
      // any open does first.
      EXPECT_EQ(first.cli.exit_code, 2);
      for (const auto& a : rep["repairs"]) EXPECT_EQ(a["structure"], "log") << "metadata damage, and a repair";
      EXPECT_FALSE(rep["not-repaired"].empty());
    }

    // Nothing is left to do: a second run writes nothing and ends alike.
    RepairRun second = RunRepair(path, damaged.size());
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    ASSERT_EQ(second.cli.failure, "");
    EXPECT_EQ(second.cli.exit_code, first.cli.exit_code) << second.cli.stderr_text;
    ASSERT_TRUE(second.report.is_object());
    EXPECT_TRUE(second.report["repairs"].empty()) << "second run: " << second.report.dump(1);
    EXPECT_EQ(second.report["corruptions-fixed"], 0);
    EXPECT_EQ(second.report["leaks-fixed"], 0);
    EXPECT_TRUE(second.after == first.after && second.after_size == first.after_size)
        << "a second repair changed the file";
  }
  std::filesystem::remove(path);
}

// Under the sanitizers each CLI run costs several times more: every third
// damage there (the Release run takes them all).
#if defined(__SANITIZE_ADDRESS__)
constexpr int kStride = 3;
#else
constexpr int kStride = 1;
#endif

class RepairCatalogueTest : public testing::TestWithParam<std::string> {};

TEST_P(RepairCatalogueTest, RepairAllIsSafeOnEveryDamage) {
  const std::string base_name = GetParam();
  VHDX_REQUIRE(BaseUnavailable(base_name));
  const BaseImage& base = GetBase(base_name);
  const LibraryOutcome ref = ProbeLibrary(base.bytes, base.name);
  ASSERT_TRUE(ref.ReadsFine()) << ref.Describe();

  const std::string path = test::ScratchPath("repair-" + base.name + ".vhdx");
  Tally tally;
  Bytes image;
  int index = 0;
  for (const Damage& damage : DamageCatalogue()) {
    if (damage.applies && !damage.applies(base.layout)) continue;
    if (index++ % kStride != 0) continue;
    SCOPED_TRACE(base.name + " / " + damage.name);
    image.assign(base.bytes.begin(), base.bytes.end());
    damage.apply(image, base.layout);
    RepairVariant(damage, image, base, ref, path, &tally);
    if (HasFatalFailure()) return;
  }
  fmt::print(
      "{}: {} damaged variants through check -r all: {} clean afterwards, {} with corruptions left (each "
      "explained), {} where the check could not run; {} changed the file, {} declaring data lost\n",
      base.name, tally.variants, tally.clean, tally.corrupt_left, tally.not_run, tally.repaired, tally.lost);
  EXPECT_GT(tally.variants, 60 / kStride);
  EXPECT_GT(tally.repaired, 0);
}

INSTANTIATE_TEST_SUITE_P(Bases, RepairCatalogueTest,
                         testing::Values("qemu-dynamic-1M", "qemu-dynamic-8M", "qemu-fixed-2M", "qemu-dirty-log",
                                         "windows-fixed", "qemu-corpus-dirty-log"),
                         BaseImageTestName);

}  // namespace
}  // namespace vhdx::hostile
