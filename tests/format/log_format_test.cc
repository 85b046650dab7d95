#include "format/log_format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "format/constants.h"
#include "format/crc32c.h"
#include "util/coding.h"

namespace vhdx::format {
namespace {

using Bytes = std::vector<uint8_t>;

// High and low halves differ, so a swapped split sequence number shows.
constexpr uint64_t kSeq = 0x0000001200000034ull;
const Guid kLogGuid = *Guid::Parse("{4a3f0e9c-7d21-4b8e-9f60-1c2d3e4f5a6b}");

// 4 KiB of content unique to `k`, so a data sector put in the wrong place shows.
Bytes SectorContent(size_t k) {
  Bytes d(kLogSectorSize);
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<uint8_t>(k * 131 + i * 7 + (i >> 8));
  return d;
}

// `count` updates alternating data (even k) and zero (odd k) descriptors.
std::vector<LogUpdate> Updates(size_t count) {
  std::vector<LogUpdate> u(count);
  for (size_t k = 0; k < count; ++k) {
    u[k].file_offset = (k + 3) * 0x1000 + 2 * MiB;
    if (k % 2 == 0) {
      u[k].data = SectorContent(k);
    } else {
      u[k].is_zero = true;
      u[k].zero_length = (k + 1) * 0x1000;
    }
  }
  return u;
}

Bytes Entry(const std::vector<LogUpdate>& updates) {
  return SerializeLogEntry(kSeq, 0x3000, kLogGuid, 4 * MiB, 36 * MiB, updates);
}

// Serialises `count` descriptors and checks everything reads back (spec §7.2).
void CheckRoundTrip(size_t count, uint64_t descriptor_sectors) {
  SCOPED_TRACE(testing::Message() << count << " descriptors");
  const std::vector<LogUpdate> updates = Updates(count);
  const size_t data_count = (count + 1) / 2;
  const Bytes e = Entry(updates);
  ASSERT_EQ(e.size(), (descriptor_sectors + data_count) * kLogSectorSize);

  LogEntryHeader h;
  ASSERT_TRUE(ParseLogEntryHeader(e.data(), &h).ok());
  EXPECT_EQ(h.entry_length, e.size());
  EXPECT_EQ(h.tail, 0x3000u);
  EXPECT_EQ(h.sequence_number, kSeq);
  EXPECT_EQ(h.descriptor_count, count);
  EXPECT_EQ(h.log_guid, kLogGuid);
  EXPECT_EQ(h.flushed_file_offset, 4 * MiB);
  EXPECT_EQ(h.last_file_offset, 36 * MiB);
  EXPECT_EQ(h.DescriptorSectors(), descriptor_sectors);
  EXPECT_EQ(h.checksum, DecodeFixed32(e.data() + 4));
  Bytes zeroed = e;
  EncodeFixed32(zeroed.data() + 4, 0);
  EXPECT_EQ(h.checksum, crc32c::Value(zeroed.data(), zeroed.size()));

  size_t data_index = 0;
  for (size_t k = 0; k < count; ++k) {
    LogDescriptor d;
    ASSERT_TRUE(ParseLogDescriptor(e.data() + 64 + 32 * k, kSeq, &d).ok()) << k;
    EXPECT_EQ(d.is_zero, updates[k].is_zero) << k;
    EXPECT_EQ(d.file_offset, updates[k].file_offset) << k;
    EXPECT_EQ(d.sequence_number, kSeq);
    if (d.is_zero) {
      EXPECT_EQ(d.zero_length, updates[k].zero_length) << k;
      continue;
    }
    const uint8_t* sector = e.data() + (descriptor_sectors + data_index++) * kLogSectorSize;
    ASSERT_TRUE(DataSectorMatches(sector, kSeq)) << k;
    Bytes rebuilt(kLogSectorSize);
    ReconstructDataSector(d, sector, rebuilt.data());
    ASSERT_EQ(rebuilt, updates[k].data) << k;
  }
  // Unused descriptor slots are zero.
  for (size_t i = 64 + 32 * count; i < descriptor_sectors * kLogSectorSize; ++i)
    ASSERT_EQ(e[i], 0) << "byte " << i;
}

// 126 descriptors fill the first sector beside the header, 254 two sectors.
TEST(LogEntry, RoundTrip0Descriptors) { CheckRoundTrip(0, 1); }
TEST(LogEntry, RoundTrip1Descriptor) { CheckRoundTrip(1, 1); }
TEST(LogEntry, RoundTrip126Descriptors) { CheckRoundTrip(126, 1); }
TEST(LogEntry, RoundTrip127Descriptors) { CheckRoundTrip(127, 2); }
TEST(LogEntry, RoundTrip254Descriptors) { CheckRoundTrip(254, 2); }
TEST(LogEntry, RoundTrip255Descriptors) { CheckRoundTrip(255, 3); }

TEST(LogEntry, LengthsOfTheSpecsWindowsExamples) {
  EXPECT_EQ(Entry({}).size(), 0x1000u);  // empty entry
  std::vector<LogUpdate> one(1);
  one[0].data = SectorContent(0);
  EXPECT_EQ(Entry(one).size(), 0x2000u);  // one BAT update
  std::vector<LogUpdate> seventeen(17, one[0]);
  EXPECT_EQ(Entry(seventeen).size(), 0x12000u);
}

// Spec §11 step 3: one data descriptor updating the BAT sector at 3 MiB.
TEST(LogEntry, DataDescriptorAndSectorBytes) {
  LogUpdate u;
  u.file_offset = 0x300000;
  u.data = SectorContent(5);
  const uint8_t bat0[8] = {0x06, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00};  // BAT[0] = 0x400006
  std::memcpy(u.data.data(), bat0, 8);
  Bytes e = Entry({u});
  ASSERT_EQ(e.size(), 0x2000u);
  EXPECT_EQ(std::memcmp(e.data(), "loge", 4), 0);
  EXPECT_EQ(DecodeFixed32(e.data() + 8), 0x2000u);
  EXPECT_EQ(DecodeFixed32(e.data() + 12), 0x3000u);
  EXPECT_EQ(DecodeFixed64(e.data() + 16), kSeq);
  EXPECT_EQ(DecodeFixed32(e.data() + 24), 1u);
  EXPECT_EQ(DecodeFixed32(e.data() + 28), 0u);
  EXPECT_EQ(std::memcmp(e.data() + 32, kLogGuid.bytes.data(), 16), 0);
  EXPECT_EQ(DecodeFixed64(e.data() + 48), 4 * MiB);
  EXPECT_EQ(DecodeFixed64(e.data() + 56), 36 * MiB);

  const uint8_t* d = e.data() + 0x40;
  EXPECT_EQ(std::memcmp(d, "desc", 4), 0);
  EXPECT_EQ(std::memcmp(d + 4, u.data.data() + 4092, 4), 0);  // trailing bytes
  EXPECT_EQ(std::memcmp(d + 8, bat0, 8), 0);                  // leading bytes
  EXPECT_EQ(DecodeFixed64(d + 16), 0x300000u);
  EXPECT_EQ(DecodeFixed64(d + 24), kSeq);

  const uint8_t* s = e.data() + 0x1000;
  EXPECT_EQ(std::memcmp(s, "data", 4), 0);
  EXPECT_EQ(DecodeFixed32(s + 4), 0x12u);  // sequence high
  EXPECT_EQ(std::memcmp(s + 8, u.data.data() + 8, 4084), 0);
  EXPECT_EQ(DecodeFixed32(s + 4092), 0x34u);  // sequence low
}

TEST(LogEntry, ZeroDescriptorBytes) {
  LogUpdate u;
  u.is_zero = true;
  u.file_offset = 0x500000;
  u.zero_length = 0x200000;
  Bytes e = Entry({u});
  ASSERT_EQ(e.size(), 0x1000u);  // no data sector
  const uint8_t* d = e.data() + 0x40;
  EXPECT_EQ(std::memcmp(d, "zero", 4), 0);
  EXPECT_EQ(DecodeFixed32(d + 4), 0u);
  EXPECT_EQ(DecodeFixed64(d + 8), 0x200000u);
  EXPECT_EQ(DecodeFixed64(d + 16), 0x500000u);
  EXPECT_EQ(DecodeFixed64(d + 24), kSeq);
}

// --- entry header rejections ---

Status ParseHeaderAfter(void (*mutate)(uint8_t*)) {
  Bytes e = Entry(Updates(3));
  mutate(e.data());
  LogEntryHeader h;
  return ParseLogEntryHeader(e.data(), &h);
}

void ExpectCorrupt(const Status& st, const char* fragment) {
  EXPECT_EQ(st.code(), Errc::kCorrupt) << st.message();
  EXPECT_NE(st.message().find(fragment), std::string::npos) << st.message();
}

TEST(LogEntryHeader, RejectsBadSignature) {
  ExpectCorrupt(ParseHeaderAfter([](uint8_t* p) { p[0] = 'L'; }), "signature");
  ExpectCorrupt(ParseHeaderAfter([](uint8_t* p) { std::memcpy(p, "desc", 4); }), "signature");
}

TEST(LogEntryHeader, RejectsZeroOrUnalignedLength) {
  ExpectCorrupt(ParseHeaderAfter([](uint8_t* p) { EncodeFixed32(p + 8, 0); }), "entry length");
  ExpectCorrupt(ParseHeaderAfter([](uint8_t* p) { EncodeFixed32(p + 8, 0x1800); }), "entry length");
  ExpectCorrupt(ParseHeaderAfter([](uint8_t* p) { EncodeFixed32(p + 8, 0xFFFFFFFF); }),
                "entry length");
}

TEST(LogEntryHeader, RejectsZeroSequenceNumber) {
  ExpectCorrupt(ParseHeaderAfter([](uint8_t* p) { EncodeFixed64(p + 16, 0); }),
                "sequence number is zero");
}

TEST(LogEntryHeader, RejectsUnalignedTail) {
  ExpectCorrupt(ParseHeaderAfter([](uint8_t* p) { EncodeFixed32(p + 12, 0x3200); }), "tail");
}

// --- descriptor rejections ---

Status ParseDescriptorAfter(bool zero, void (*mutate)(uint8_t*), uint64_t seq = kSeq) {
  std::vector<LogUpdate> updates = Updates(2);  // [0] data, [1] zero
  Bytes e = Entry(updates);
  uint8_t* d = e.data() + 64 + (zero ? 32 : 0);
  mutate(d);
  LogDescriptor out;
  return ParseLogDescriptor(d, seq, &out);
}

TEST(LogDescriptor, RejectsSequenceMismatch) {
  for (bool zero : {false, true}) {
    ExpectCorrupt(ParseDescriptorAfter(
                      zero, [](uint8_t*) {}, kSeq + 1),
                  "sequence number");
    ExpectCorrupt(ParseDescriptorAfter(zero, [](uint8_t* d) { EncodeFixed64(d + 24, 7); }),
                  "sequence number");
  }
}

TEST(LogDescriptor, RejectsUnalignedFileOffset) {
  for (bool zero : {false, true})
    ExpectCorrupt(ParseDescriptorAfter(zero, [](uint8_t* d) { EncodeFixed64(d + 16, 0x300200); }),
                  "file offset");
}

TEST(LogDescriptor, RejectsUnalignedZeroLength) {
  ExpectCorrupt(ParseDescriptorAfter(true, [](uint8_t* d) { EncodeFixed64(d + 8, 0x1001); }),
                "zero descriptor length");
}

TEST(LogDescriptor, RejectsUnknownSignature) {
  ExpectCorrupt(ParseDescriptorAfter(false, [](uint8_t* d) { std::memcpy(d, "data", 4); }),
                "neither 'desc' nor 'zero'");
  ExpectCorrupt(ParseDescriptorAfter(false, [](uint8_t* d) { std::memset(d, 0, 32); }),
                "neither 'desc' nor 'zero'");
}

// --- data sector checks ---

Bytes DataSector() {
  Bytes e = Entry(Updates(1));
  return Bytes(e.begin() + kLogSectorSize, e.end());
}

TEST(DataSector, MatchesOnlyItsOwnSequenceNumber) {
  Bytes s = DataSector();
  EXPECT_TRUE(DataSectorMatches(s.data(), kSeq));
  EXPECT_FALSE(DataSectorMatches(s.data(), kSeq + 1));
  EXPECT_FALSE(DataSectorMatches(s.data(), 0x0000003400000012ull));  // halves swapped
}

TEST(DataSector, RejectsWrongSignature) {
  Bytes s = DataSector();
  std::memcpy(s.data(), "desc", 4);
  EXPECT_FALSE(DataSectorMatches(s.data(), kSeq));
}

TEST(DataSector, RejectsATornSplitSequenceNumber) {
  Bytes high = DataSector();
  EncodeFixed32(high.data() + 4, 0x13);
  EXPECT_FALSE(DataSectorMatches(high.data(), kSeq));
  Bytes low = DataSector();
  EncodeFixed32(low.data() + 4092, 0x35);
  EXPECT_FALSE(DataSectorMatches(low.data(), kSeq));
}

TEST(DataSector, ReconstructTakesEndsFromTheDescriptor) {
  LogDescriptor d;
  d.leading_bytes = {1, 2, 3, 4, 5, 6, 7, 8};
  d.trailing_bytes = {9, 10, 11, 12};
  Bytes sector = SectorContent(9);
  Bytes out(kLogSectorSize);
  ReconstructDataSector(d, sector.data(), out.data());
  EXPECT_EQ(std::memcmp(out.data(), d.leading_bytes.data(), 8), 0);
  EXPECT_EQ(std::memcmp(out.data() + 8, sector.data() + 8, 4084), 0);
  EXPECT_EQ(std::memcmp(out.data() + 4092, d.trailing_bytes.data(), 4), 0);
}

}  // namespace
}  // namespace vhdx::format
