#include "format/header.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <functional>

#include "format/constants.h"
#include "format/crc32c.h"
#include "util/coding.h"

namespace vhdx::format {
namespace {

using Bytes = std::array<uint8_t, kHeaderSize>;

Guid G(const char* text) { return *Guid::Parse(text); }

// The header of the spec §11 test vector.
Header SpecHeader() {
  Header h;
  h.sequence_number = 1;
  h.file_write_guid = G("11111111-2222-3333-4444-555555555555");
  h.data_write_guid = G("66666666-7777-8888-9999-AAAAAAAAAAAA");
  h.log_version = 0;
  h.version = 1;
  h.log_length = 1 * MiB;
  h.log_offset = 1 * MiB;
  return h;
}

Bytes Serialized(const Header& h) {
  Bytes b;
  SerializeHeader(h, b.data());
  return b;
}

// Serialises `h`, lets `mutate` damage the bytes, restores a valid
// checksum (so the damage alone decides) and parses at header 1's offset.
Status ParseMutated(const Header& h, const std::function<void(uint8_t*)>& mutate) {
  Bytes b = Serialized(h);
  mutate(b.data());
  EncodeFixed32(b.data() + 4, crc32c::ValueWithZeroedField(b.data(), b.size(), 4));
  Header out;
  return ParseHeader(b.data(), kHeader1Offset, &out);
}

Status ParseWith(const Header& h) {
  return ParseMutated(h, [](uint8_t*) {});
}

void ExpectCorrupt(const Status& st, const char* fragment) {
  EXPECT_EQ(st.code(), Errc::kCorrupt) << st.message();
  EXPECT_NE(st.message().find("header at offset 0x10000"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(fragment), std::string::npos) << st.message();
}

TEST(Header, SpecTestVectorChecksum) {
  Bytes b = Serialized(SpecHeader());
  EXPECT_EQ(DecodeFixed32(b.data() + 4), 0xA01CF6D7u);
}

TEST(Header, SerializedFieldsSitAtTheSpecsOffsets) {
  Bytes b = Serialized(SpecHeader());
  const uint8_t expected[80] = {
      'h',  'e',  'a',  'd',  0xD7, 0xF6, 0x1C, 0xA0,  // signature, checksum
      0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // SequenceNumber
      0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33,  // FileWriteGuid
      0x44, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55,  //
      0x66, 0x66, 0x66, 0x66, 0x77, 0x77, 0x88, 0x88,  // DataWriteGuid
      0x99, 0x99, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA,  //
      0,    0,    0,    0,    0,    0,    0,    0,     // LogGuid
      0,    0,    0,    0,    0,    0,    0,    0,     //
      0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00,  // LogVersion, Version, LogLength
      0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,  // LogOffset
  };
  EXPECT_EQ(std::memcmp(b.data(), expected, sizeof expected), 0);
  for (size_t i = 80; i < b.size(); ++i) ASSERT_EQ(b[i], 0) << "reserved byte " << i;
}

TEST(Header, ParsesTheSpecTestVector) {
  Bytes b = Serialized(SpecHeader());
  Header h;
  ASSERT_TRUE(ParseHeader(b.data(), kHeader1Offset, &h).ok());
  EXPECT_EQ(h.checksum, 0xA01CF6D7u);
  EXPECT_EQ(h.sequence_number, 1u);
  EXPECT_EQ(h.file_write_guid, G("11111111-2222-3333-4444-555555555555"));
  EXPECT_EQ(h.data_write_guid, G("66666666-7777-8888-9999-aaaaaaaaaaaa"));
  EXPECT_TRUE(h.log_guid.IsZero());
  EXPECT_EQ(h.log_version, 0);
  EXPECT_EQ(h.version, 1);
  EXPECT_EQ(h.log_length, 1 * MiB);
  EXPECT_EQ(h.log_offset, 1 * MiB);
}

TEST(Header, RoundTripsEveryField) {
  Header in;
  in.sequence_number = 0x0123456789ABCDEFull;
  in.file_write_guid = Guid::Random();
  in.data_write_guid = Guid::Random();
  in.log_guid = Guid::Random();
  in.log_length = 7 * MiB;
  in.log_offset = 40 * GiB;
  Bytes b = Serialized(in);
  Header out;
  ASSERT_TRUE(ParseHeader(b.data(), kHeader2Offset, &out).ok());
  EXPECT_EQ(out.checksum, DecodeFixed32(b.data() + 4));
  EXPECT_EQ(out.sequence_number, in.sequence_number);
  EXPECT_EQ(out.file_write_guid, in.file_write_guid);
  EXPECT_EQ(out.data_write_guid, in.data_write_guid);
  EXPECT_EQ(out.log_guid, in.log_guid);
  EXPECT_EQ(out.log_version, 0);
  EXPECT_EQ(out.version, 1);
  EXPECT_EQ(out.log_length, in.log_length);
  EXPECT_EQ(out.log_offset, in.log_offset);
}

TEST(Header, ChecksumIgnoresTheCallersChecksumField) {
  Header h = SpecHeader();
  h.checksum = 0xDEADBEEF;
  EXPECT_EQ(DecodeFixed32(Serialized(h).data() + 4), 0xA01CF6D7u);
}

TEST(Header, RejectsBadSignature) {
  ExpectCorrupt(ParseMutated(SpecHeader(), [](uint8_t* p) { p[0] = 'H'; }), "signature");
}

TEST(Header, RejectsBadChecksum) {
  for (size_t byte : {0x08u, 0x50u, 0xFFFu}) {
    Bytes b = Serialized(SpecHeader());
    b[byte] ^= 0x01;
    Header h;
    ExpectCorrupt(ParseHeader(b.data(), kHeader1Offset, &h), "checksum mismatch");
  }
}

TEST(Header, RejectsVersionOtherThanOne) {
  for (uint16_t version : {0, 2, 0xFFFF}) {
    Header h = SpecHeader();
    h.version = version;
    ExpectCorrupt(ParseWith(h), "version");
  }
}

TEST(Header, RejectsLogVersionWithALog) {
  Header h = SpecHeader();
  h.log_guid = Guid::Random();
  h.log_version = 1;
  ExpectCorrupt(ParseWith(h), "log version");
}

TEST(Header, AcceptsAnyLogVersionWhenTheLogIsEmpty) {
  Header h = SpecHeader();
  h.log_version = 1;
  Bytes b = Serialized(h);
  Header out;
  ASSERT_TRUE(ParseHeader(b.data(), kHeader1Offset, &out).ok());
  EXPECT_EQ(out.log_version, 1);
}

TEST(Header, RejectsMisalignedLogLength) {
  for (uint32_t length : {uint32_t{4096}, uint32_t{MiB + 4096}, uint32_t{3 * MiB - 1}}) {
    Header h = SpecHeader();
    h.log_length = length;
    ExpectCorrupt(ParseWith(h), "log length");
  }
}

TEST(Header, RejectsMisalignedLogOffset) {
  for (uint64_t offset : {MiB + 512, MiB + 4096, 5 * MiB - 1}) {
    Header h = SpecHeader();
    h.log_offset = offset;
    ExpectCorrupt(ParseWith(h), "log offset");
  }
}

TEST(Header, RejectsLogInsideTheHeaderSection) {
  for (uint64_t offset : {uint64_t{0}, 64 * KiB, 512 * KiB}) {
    Header h = SpecHeader();
    h.log_offset = offset;
    ExpectCorrupt(ParseWith(h), "log offset");
  }
}

TEST(Header, RejectsLogBeyondAnyValidFileSize) {
  Header h = SpecHeader();
  h.log_offset = kMaxFileOffset + MiB;
  ExpectCorrupt(ParseWith(h), "log offset");
  h.log_offset = 0xFFFFFFFFFFF00000ull;  // log end would overflow
  ExpectCorrupt(ParseWith(h), "log offset");
}

// ChooseCurrentHeader (spec §2.3).
struct HeaderPair {
  Header h1 = SpecHeader(), h2 = SpecHeader();
  Bytes raw1{}, raw2{};
  HeaderPair(uint64_t seq1, uint64_t seq2) {
    h1.sequence_number = seq1;
    h2.sequence_number = seq2;
    raw1 = Serialized(h1);
    raw2 = Serialized(h2);
  }
  Result<int> Choose(bool valid1, bool valid2) const {
    return ChooseCurrentHeader(valid1, h1, raw1.data(), valid2, h2, raw2.data());
  }
};

TEST(ChooseCurrentHeader, TheOnlyValidHeaderWinsWhateverItsSequence) {
  HeaderPair pair(5, 9);
  EXPECT_EQ(*pair.Choose(true, false), 0);
  EXPECT_EQ(*pair.Choose(false, true), 1);
}

TEST(ChooseCurrentHeader, HigherSequenceNumberWins) {
  EXPECT_EQ(*HeaderPair(14, 15).Choose(true, true), 1);
  EXPECT_EQ(*HeaderPair(37, 36).Choose(true, true), 0);
  EXPECT_EQ(*HeaderPair(0, UINT64_MAX).Choose(true, true), 1);
  EXPECT_EQ(*HeaderPair(UINT64_MAX, 0).Choose(true, true), 0);
}

TEST(ChooseCurrentHeader, EqualSequenceAndIdenticalBytesPicksHeaderOne) {
  // Disk2vhd writes two byte-identical headers with sequence number 1.
  auto r = HeaderPair(1, 1).Choose(true, true);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, 0);
}

TEST(ChooseCurrentHeader, EqualSequenceWithDifferentBytesIsCorrupt) {
  HeaderPair pair(7, 7);
  pair.h2.data_write_guid = Guid::Random();
  pair.raw2 = Serialized(pair.h2);
  auto r = pair.Choose(true, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Errc::kCorrupt);
  EXPECT_NE(r.status().message().find("different contents"), std::string::npos);
}

TEST(ChooseCurrentHeader, NoValidHeaderIsCorrupt) {
  auto r = HeaderPair(1, 2).Choose(false, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Errc::kCorrupt);
  EXPECT_NE(r.status().message().find("neither is valid"), std::string::npos);
}

}  // namespace
}  // namespace vhdx::format
