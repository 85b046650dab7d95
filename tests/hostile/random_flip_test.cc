// Seeded random byte flips in the first MiBs of good images (headers,
// region tables, metadata, BAT, log). Every outcome must be clean; flips
// confined to bytes a reader ignores, or to one copy of a checksummed
// structure that has a second copy, must not change what the disk reads.
//
// VHDX_HOSTILE_FLIPS=N sets the iterations per image (default 60),
// VHDX_HOSTILE_SEED=S varies the seed, for longer soak runs.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "format/constants.h"
#include "format/crc32c.h"
#include "hostile/base_images.h"
#include "hostile/probes.h"
#include "support/test_util.h"
#include "util/coding.h"

namespace vhdx::hostile {
namespace {

using namespace format;

constexpr uint64_t kHeaderOffsets[2] = {kHeader1Offset, kHeader2Offset};
constexpr uint64_t kRegionOffsets[2] = {kRegionTable1Offset, kRegionTable2Offset};

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

// Where a flip landed, as far as the expected outcome is concerned.
enum class Zone { kIgnored, kHeader1, kHeader2, kRegion1, kRegion2, kOther };

Zone ZoneOf(const Layout& l, uint64_t pos) {
  auto in = [&](uint64_t start, uint64_t length) { return pos >= start && pos - start < length; };
  // The creator string is for diagnostics only; the rest of the first
  // 64 KiB and 320 KiB..1 MiB are reserved.
  if (in(8, 64 * KiB - 8) || in(0x50000, MiB - 0x50000)) return Zone::kIgnored;
  for (int i = 0; i < 2; ++i) {
    if (in(kHeaderOffsets[i], kHeaderSize)) return i == 0 ? Zone::kHeader1 : Zone::kHeader2;
    if (in(kHeaderOffsets[i] + kHeaderSize, 64 * KiB - kHeaderSize)) return Zone::kIgnored;
    if (in(kRegionOffsets[i], kRegionTableSize)) return i == 0 ? Zone::kRegion1 : Zone::kRegion2;
  }
  if (!l.active_log && in(l.header().log_offset, l.header().log_length)) return Zone::kIgnored;
  const uint64_t meta = l.metadata.file_offset;
  if (in(meta, l.metadata.length)) {
    uint64_t rel = pos - meta;
    if (rel < 32 + 32 * l.meta.entries.size()) return Zone::kOther;
    if (rel < kMetadataTableSize) return Zone::kIgnored;
    for (const auto& e : l.meta.entries)
      if (rel >= e.offset && rel - e.offset < e.length) return Zone::kOther;
    return Zone::kIgnored;
  }
  if (in(l.bat.file_offset + 8 * l.geo.total_entries, l.bat.length - 8 * l.geo.total_entries) &&
      !l.LogRewrites(pos))
    return Zone::kIgnored;
  return Zone::kOther;
}

// Picks a byte to flip, mostly inside the structures a reader interprets.
uint64_t PickOffset(std::mt19937_64& rng, const Layout& l, uint64_t size) {
  auto within = [&](uint64_t start, uint64_t length) {
    return start + std::uniform_int_distribution<uint64_t>(0, length - 1)(rng);
  };
  const uint64_t meta = l.metadata.file_offset;
  switch (std::uniform_int_distribution<int>(0, 9)(rng)) {
    case 0:
      return within(0, std::min<uint64_t>(size, 4 * MiB));
    case 1:
      return within(0, 8);
    case 2:
    case 3:
      return within(kHeaderOffsets[rng() % 2], rng() % 4 ? 80 : kHeaderSize);
    case 4:
      return within(kRegionOffsets[rng() % 2], 16 + 32 * l.regions.entries.size());
    case 5:
      return within(meta, 32 + 32 * l.meta.entries.size());
    case 6: {
      const auto& e = l.meta.entries[rng() % l.meta.entries.size()];
      return e.length ? within(meta + e.offset, e.length) : within(meta, 64);
    }
    case 7:
    case 8:
      return within(l.bat.file_offset, std::min<uint64_t>(8 * l.geo.total_entries, 4096));
    default:
      if (l.active_log)
        return within(l.header().log_offset + l.active_log->log_pos,
                      l.active_log->header.entry_length);
      return within(l.header().log_offset, 64 * KiB);
  }
}

// Makes every checksum valid again, so that the flipped fields themselves
// (not the checksums) are what the reader must judge.
void FixChecksums(Bytes& image, const Layout& l) {
  for (int i = 0; i < 2; ++i) {
    uint8_t* p = image.data() + kHeaderOffsets[i];
    EncodeFixed32(p + 4, crc32c::ValueWithZeroedField(p, kHeaderSize, 4));
    FixRegionTableChecksum(image, i);
  }
  if (l.active_log) FixLogEntryChecksum(image, l);
}

class RandomFlipTest : public testing::TestWithParam<std::string> {};

TEST_P(RandomFlipTest, EveryOutcomeIsClean) {
  const std::string base_name = GetParam();
  VHDX_REQUIRE(BaseUnavailable(base_name));
  const BaseImage& base = GetBase(base_name);
  const LibraryOutcome ref = ProbeLibrary(base.bytes, base.name);
  ASSERT_TRUE(ref.ReadsFine()) << ref.Describe();

  const uint64_t iterations = EnvOr("VHDX_HOSTILE_FLIPS", 60);
  const uint64_t seed = EnvOr("VHDX_HOSTILE_SEED", 20240611);
  std::mt19937_64 rng(seed ^ std::hash<std::string>{}(base_name));
  ImageFile file(test::ScratchPath(base.name + "-flipped.vhdx"));
  Bytes image;
  int opened = 0, rejected_at_open = 0, rejected_later = 0, unchanged_required = 0;
  for (uint64_t it = 0; it < iterations; ++it) {
    image.assign(base.bytes.begin(), base.bytes.end());  // reuses the buffer
    const int flips = 1 + static_cast<int>(rng() % 4);
    const bool fix_checksums = rng() % 10 < 3;
    bool headers_hit[2] = {}, regions_hit[2] = {}, other_hit = false;
    std::string where;
    for (int k = 0; k < flips; ++k) {
      uint64_t pos = PickOffset(rng, base.layout, image.size());
      uint8_t mask = rng() % 2 ? static_cast<uint8_t>(1u << (rng() % 8))
                               : static_cast<uint8_t>(1 + rng() % 255);
      image[pos] ^= mask;
      where += fmt::format(" {:#x}^{:#04x}", pos, mask);
      switch (ZoneOf(base.layout, pos)) {
        case Zone::kIgnored:
          break;
        case Zone::kHeader1:
          headers_hit[0] = true;
          break;
        case Zone::kHeader2:
          headers_hit[1] = true;
          break;
        case Zone::kRegion1:
          regions_hit[0] = true;
          break;
        case Zone::kRegion2:
          regions_hit[1] = true;
          break;
        case Zone::kOther:
          other_hit = true;
          break;
      }
    }
    if (fix_checksums) FixChecksums(image, base.layout);
    // A checksummed structure with a good second copy still reads the same.
    const bool must_read_same = !fix_checksums && !other_hit &&
                                !(headers_hit[0] && headers_hit[1]) &&
                                !(regions_hit[0] && regions_hit[1]);
    SCOPED_TRACE(fmt::format("{} iteration {} (VHDX_HOSTILE_SEED={}): flipped{}{}", base.name, it,
                             seed, where, fix_checksums ? ", checksums fixed" : ""));
    const LibraryOutcome o = ProbeLibrary(image, file.path());
    ExpectClean(o);
    if (!o.failure.empty()) continue;
    if (must_read_same) {
      ++unchanged_required;
      EXPECT_TRUE(o.ReadsFine()) << o.Describe();
      EXPECT_EQ(o.digest, ref.digest);
    }
    if (o.ReadsFine())
      ++opened;
    else if (!o.opened)
      ++rejected_at_open;
    else
      ++rejected_later;
    if (it % 8 == 0) {  // the CLI on a sample: same verdicts, one-line errors, file untouched
      file.Write(image);
      ExpectCliAgrees(file, o, std::nullopt);
    }
  }
  fmt::print(
      "{}: {} flip runs: {} opened and read, {} rejected at open, {} rejected when read "
      "({} had to read unchanged)\n",
      base.name, iterations, opened, rejected_at_open, rejected_later, unchanged_required);
}

INSTANTIATE_TEST_SUITE_P(Bases, RandomFlipTest,
                         testing::Values("qemu-dynamic-1M", "qemu-fixed-2M", "qemu-dirty-log",
                                         "windows-fixed", "qemu-corpus-dirty-log"),
                         BaseImageTestName);

}  // namespace
}  // namespace vhdx::hostile
