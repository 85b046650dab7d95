#include "format/header.h"

#include <fmt/format.h>

#include <cstring>

#include "format/constants.h"
#include "format/crc32c.h"
#include "util/coding.h"
#include "util/strings.h"

namespace vhdx::format {

namespace {
Guid ReadGuid(const uint8_t* p) {
  Guid g;
  std::memcpy(g.bytes.data(), p, 16);
  return g;
}
}  // namespace

Status ParseFileIdentifier(const uint8_t* p, FileIdentifier* out) {
  if (std::memcmp(p, kFileSignature, 8) != 0)
    return Status(Errc::kCorrupt,
                  "file type identifier at offset 0x0: signature is not 'vhdxfile' (not a VHDX image)");
  out->creator = Utf16LeZToUtf8Lossy(p + 8, 512);
  return Status::Ok();
}

void SerializeFileIdentifier(const FileIdentifier& id, uint8_t* p) {
  std::memset(p, 0, 64 * KiB);
  std::memcpy(p, kFileSignature, 8);
  std::string u16 = Utf8ToUtf16Le(id.creator);
  std::memcpy(p + 8, u16.data(), std::min<size_t>(u16.size(), 510));
}

Status ParseHeader(const uint8_t* p, uint64_t off, Header* h) {
  auto fail = [&](const std::string& what) {
    return Status(Errc::kCorrupt, fmt::format("header at offset {:#x}: {}", off, what));
  };
  if (std::memcmp(p, kHeaderSignature, 4) != 0) return fail("signature is not 'head'");
  h->checksum = DecodeFixed32(p + 4);
  uint32_t crc = crc32c::ValueWithZeroedField(p, kHeaderSize, 4);
  if (crc != h->checksum)
    return fail(fmt::format("checksum mismatch (stored {:#010x}, computed {:#010x})", h->checksum,
                            crc));
  h->sequence_number = DecodeFixed64(p + 8);
  h->file_write_guid = ReadGuid(p + 16);
  h->data_write_guid = ReadGuid(p + 32);
  h->log_guid = ReadGuid(p + 48);
  h->log_version = DecodeFixed16(p + 64);
  h->version = DecodeFixed16(p + 66);
  h->log_length = DecodeFixed32(p + 68);
  h->log_offset = DecodeFixed64(p + 72);
  if (h->version != 1) return fail(fmt::format("unsupported version {} (expected 1)", h->version));
  if (h->log_version != 0 && !h->log_guid.IsZero())
    return fail(fmt::format("unsupported log version {} with a non-empty log", h->log_version));
  if (h->log_length % MiB != 0)
    return fail(fmt::format("log length {:#x} is not a multiple of 1 MiB", h->log_length));
  if (h->log_length != 0) {
    if (h->log_offset % MiB != 0 || h->log_offset < kHeaderSectionSize)
      return fail(fmt::format("log offset {:#x} is not a 1 MiB-aligned offset past the header section",
                              h->log_offset));
    if (h->log_offset > kMaxFileOffset)
      return fail(fmt::format("log offset {:#x} is beyond any valid file size", h->log_offset));
  }
  return Status::Ok();
}

void SerializeHeader(const Header& h, uint8_t* p) {
  std::memset(p, 0, kHeaderSize);
  std::memcpy(p, kHeaderSignature, 4);
  EncodeFixed64(p + 8, h.sequence_number);
  std::memcpy(p + 16, h.file_write_guid.bytes.data(), 16);
  std::memcpy(p + 32, h.data_write_guid.bytes.data(), 16);
  std::memcpy(p + 48, h.log_guid.bytes.data(), 16);
  EncodeFixed16(p + 64, h.log_version);
  EncodeFixed16(p + 66, h.version);
  EncodeFixed32(p + 68, h.log_length);
  EncodeFixed64(p + 72, h.log_offset);
  EncodeFixed32(p + 4, crc32c::ValueWithZeroedField(p, kHeaderSize, 4));
}

Result<int> ChooseCurrentHeader(bool valid1, const Header& h1, const uint8_t* raw1, bool valid2,
                                const Header& h2, const uint8_t* raw2) {
  if (!valid1 && !valid2)
    return Status(Errc::kCorrupt, "headers at offsets 0x10000 and 0x20000: neither is valid");
  if (valid1 && !valid2) return 0;
  if (valid2 && !valid1) return 1;
  if (h1.sequence_number > h2.sequence_number) return 0;
  if (h2.sequence_number > h1.sequence_number) return 1;
  // Equal sequence numbers: Disk2vhd writes two identical headers; accept
  // that, but two different headers with one sequence number are ambiguous.
  if (std::memcmp(raw1, raw2, kHeaderSize) == 0) return 0;
  return Status(Errc::kCorrupt,
                fmt::format("headers at offsets 0x10000 and 0x20000: both valid with sequence "
                            "number {} but different contents",
                            h1.sequence_number));
}

}  // namespace vhdx::format
