// Every damage of the catalogue applied to every base image it fits: the
// library, Check and the CLI must each do what the damage calls for, within
// time and memory bounds, without modifying the image.
// VHDX_HOSTILE_VERBOSE=1 prints what happened with each damaged variant.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "format/constants.h"
#include "hostile/base_images.h"
#include "hostile/damage_catalogue.h"
#include "hostile/probes.h"
#include "support/test_util.h"

namespace vhdx::hostile {
namespace {

class DamageCatalogueTest : public testing::TestWithParam<std::string> {};

void ExpectAsCatalogued(const Damage& damage, const LibraryOutcome& o, const LibraryOutcome& ref) {
  const std::string got = o.Describe();
  switch (damage.expect) {
    case Expect::kReject:
      EXPECT_FALSE(o.ReadsFine()) << "damage went unnoticed: " << got;
      EXPECT_GE(o.check_errors, 1u) << "Check found no error: " << got;
      break;
    case Expect::kAcceptSame:
      EXPECT_TRUE(o.ReadsFine()) << "a tolerable difference was rejected: " << got;
      EXPECT_EQ(o.digest, ref.digest) << "reads differ from the undamaged image";
      EXPECT_EQ(o.full_sha256, ref.full_sha256);
      EXPECT_EQ(o.check_errors, 0u) << got;
      break;
    case Expect::kEither:
      if (o.ReadsFine()) {
        EXPECT_EQ(o.digest, ref.digest) << "accepted, but reads differ";
      } else {
        // Rejected: as kReject, an error says why (ExpectClean checked it is
        // one line) and Check finds the damage too; ExpectCliAgrees then
        // checks the CLI's one-line error and the untouched file.
        EXPECT_FALSE(o.open_error.empty() && o.count_error.empty() && o.map_error.empty() &&
                     o.read_error.empty())
            << "rejected without an error: " << got;
        EXPECT_GE(o.check_errors, 1u) << "rejected, but Check found no error: " << got;
      }
      break;
    case Expect::kCheckOnly:
      EXPECT_GE(o.check_errors, 1u) << "Check found no error: " << got;
      break;
  }
}

TEST_P(DamageCatalogueTest, EveryDamageIsHandledCleanly) {
  const std::string base_name = GetParam();
  VHDX_REQUIRE(BaseUnavailable(base_name));
  const BaseImage& base = GetBase(base_name);

  const LibraryOutcome ref = ProbeLibrary(base.bytes, base.name);
  ExpectClean(ref);
  ASSERT_TRUE(ref.ReadsFine()) << ref.Describe();
  ASSERT_EQ(ref.check_errors, 0u) << ref.Describe();

  ImageFile file(test::ScratchPath(base.name + ".vhdx"));
  Bytes image;
  int applied = 0, rejected = 0, accepted = 0;
  for (const Damage& damage : DamageCatalogue()) {
    if (damage.applies && !damage.applies(base.layout)) continue;
    ++applied;
    SCOPED_TRACE(base.name + " / " + damage.name);
    image.assign(base.bytes.begin(), base.bytes.end());  // reuses the buffer
    damage.apply(image, base.layout);
    const LibraryOutcome o = ProbeLibrary(image, file.path());
    ExpectClean(o);
    if (!o.failure.empty()) continue;
    ExpectAsCatalogued(damage, o, ref);
    if (std::getenv("VHDX_HOSTILE_VERBOSE")) fmt::print("  {}: {}\n", damage.name, o.Describe());
    (o.ReadsFine() ? accepted : rejected)++;

    std::optional<std::string> raw_sha;
    if (damage.expect == Expect::kAcceptSame && !ref.full_sha256.empty()) raw_sha = ref.full_sha256;
    file.Write(image);
    ExpectCliAgrees(file, o, raw_sha);
  }
  fmt::print("{}: {} damaged variants, {} rejected, {} read fine\n", base.name, applied, rejected,
             accepted);
  EXPECT_GT(applied, 60);
}

INSTANTIATE_TEST_SUITE_P(Bases, DamageCatalogueTest,
                         testing::Values("qemu-dynamic-1M", "qemu-dynamic-8M", "qemu-fixed-2M",
                                         "qemu-dirty-log", "windows-fixed",
                                         "qemu-corpus-dirty-log"),
                         BaseImageTestName);

// The synthetic dirty log is only useful if replay matters: its physical
// BAT lacks a block that the log restores.
TEST(DirtyLogBase, ReadsAsTheCleanImageOnlyThroughReplay) {
  VHDX_REQUIRE(BaseUnavailable("qemu-dirty-log"));
  const LibraryOutcome clean = ProbeLibrary(GetBase("qemu-dynamic-1M").bytes, "clean");
  const LibraryOutcome dirty = ProbeLibrary(GetBase("qemu-dirty-log").bytes, "dirty");
  ASSERT_TRUE(clean.ReadsFine()) << clean.Describe();
  ASSERT_TRUE(dirty.ReadsFine()) << dirty.Describe();
  EXPECT_EQ(dirty.full_sha256, clean.full_sha256);
  EXPECT_EQ(dirty.digest, clean.digest);

  Bytes unreplayed = GetBase("qemu-dirty-log").bytes;
  EditBothHeaders(unreplayed, GetBase("qemu-dirty-log").layout,
                  [](format::Header& h) { h.log_guid = Guid{}; });
  const LibraryOutcome ignored = ProbeLibrary(unreplayed, "log ignored");
  ASSERT_TRUE(ignored.ReadsFine()) << ignored.Describe();
  EXPECT_NE(ignored.full_sha256, clean.full_sha256) << "the log entry changes nothing";
}

// A few MiB of file that describe a 64 TiB disk: a dirty log extends the
// logical file to 8 GiB (LastFileOffset), and the BAT of 67 million entries
// lives in that zero-filled extension. Valid by every rule; it must open,
// read as zeros and be checked within the time bound, not walk into an
// allocation sized by the geometry.
TEST(HugeGeometry, TinyFileDescribing64TiBReadsAsZerosWithinBounds) {
  VHDX_REQUIRE(BaseUnavailable("qemu-dirty-log"));
  const BaseImage& base = GetBase("qemu-dirty-log");
  const Layout& l = base.layout;
  Bytes image = base.bytes;
  EditActiveLogEntry(image, l,
                     [](LogEntryCopy& e) { e.header.last_file_offset = 8 * format::GiB; });
  EditBothRegionTables(image, l, [](format::RegionTable& t) {
    for (auto& r : t.entries)
      if (r.guid == format::kBatRegionGuid) {
        r.file_offset = 4 * format::GiB;
        r.length = 513 * format::MiB;
      }
  });
  PutU64(image, l.ItemOffset(format::kVirtualDiskSizeGuid), 64 * format::TiB);

  ImageFile file(test::ScratchPath("huge-geometry.vhdx"));
  const LibraryOutcome o = ProbeLibrary(image, file.path());
  ExpectClean(o);
  ASSERT_TRUE(o.ReadsFine()) << o.Describe();
  EXPECT_EQ(o.virtual_size, 64 * format::TiB);
  EXPECT_EQ(o.check_errors, 0u) << o.Describe();

  file.Write(image);
  EXPECT_EQ(o.check_corruptions, 0u) << o.Describe();
  for (const char* command : {"info", "map", "check"}) {
    CliRun r = RunCli({command, file.path()});
    EXPECT_EQ(r.failure, "") << command;
    // The base holds block data no BAT entry references, and the BAT's old
    // place is unreferenced now: leaks, which check reports with status 3.
    const int expected = std::string(command) == "check" && o.check_leaks > 0 ? 3 : 0;
    EXPECT_EQ(r.exit_code, expected) << command << ": " << r.stderr_text;
  }
  // A 64 TiB raw file exceeds some file systems (ext4: 16 TiB): then convert
  // must say so in one line.
  const std::string raw = file.path() + ".raw";
  CliRun r = RunCli({"convert", "-O", "raw", file.path(), raw});
  EXPECT_EQ(r.failure, "");
  if (r.exit_code != 0) {
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(r.stderr_text.starts_with("vhdx: " + file.path() + ": ")) << r.stderr_text;
    EXPECT_EQ(std::count(r.stderr_text.begin(), r.stderr_text.end(), '\n'), 1) << r.stderr_text;
  }
  std::filesystem::remove(raw);
}

}  // namespace
}  // namespace vhdx::hostile
