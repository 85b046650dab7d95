#include "format/log_format.h"

#include <fmt/format.h>

#include <cstring>

#include "format/constants.h"
#include "format/crc32c.h"
#include "util/coding.h"

namespace vhdx::format {

Status ParseLogEntryHeader(const uint8_t* p, LogEntryHeader* h) {
  if (std::memcmp(p, kLogEntrySignature, 4) != 0)
    return Status(Errc::kCorrupt, "signature is not 'loge'");
  h->checksum = DecodeFixed32(p + 4);
  h->entry_length = DecodeFixed32(p + 8);
  h->tail = DecodeFixed32(p + 12);
  h->sequence_number = DecodeFixed64(p + 16);
  h->descriptor_count = DecodeFixed32(p + 24);
  std::memcpy(h->log_guid.bytes.data(), p + 32, 16);
  h->flushed_file_offset = DecodeFixed64(p + 48);
  h->last_file_offset = DecodeFixed64(p + 56);
  if (h->entry_length == 0 || h->entry_length % kLogSectorSize != 0)
    return Status(Errc::kCorrupt,
                  fmt::format("entry length {:#x} is not a non-zero multiple of 4 KiB",
                              h->entry_length));
  if (h->sequence_number == 0) return Status(Errc::kCorrupt, "sequence number is zero");
  if (h->tail % kLogSectorSize != 0)
    return Status(Errc::kCorrupt, fmt::format("tail {:#x} is not 4 KiB aligned", h->tail));
  return Status::Ok();
}

Status ParseLogDescriptor(const uint8_t* p, uint64_t seq, LogDescriptor* d) {
  if (std::memcmp(p, kZeroDescriptorSignature, 4) == 0) {
    d->is_zero = true;
    d->zero_length = DecodeFixed64(p + 8);
    if (d->zero_length % kLogSectorSize != 0)
      return Status(Errc::kCorrupt, fmt::format("zero descriptor length {:#x} is not 4 KiB aligned",
                                                d->zero_length));
  } else if (std::memcmp(p, kDataDescriptorSignature, 4) == 0) {
    d->is_zero = false;
    std::memcpy(d->trailing_bytes.data(), p + 4, 4);
    std::memcpy(d->leading_bytes.data(), p + 8, 8);
  } else {
    return Status(Errc::kCorrupt, "descriptor signature is neither 'desc' nor 'zero'");
  }
  d->file_offset = DecodeFixed64(p + 16);
  d->sequence_number = DecodeFixed64(p + 24);
  if (d->sequence_number != seq)
    return Status(Errc::kCorrupt, fmt::format("descriptor sequence number {} differs from the "
                                              "entry's {}",
                                              d->sequence_number, seq));
  if (d->file_offset % kLogSectorSize != 0)
    return Status(Errc::kCorrupt,
                  fmt::format("descriptor file offset {:#x} is not 4 KiB aligned", d->file_offset));
  return Status::Ok();
}

bool DataSectorMatches(const uint8_t* p, uint64_t seq) {
  if (std::memcmp(p, kDataSectorSignature, 4) != 0) return false;
  uint64_t got = (static_cast<uint64_t>(DecodeFixed32(p + 4)) << 32) | DecodeFixed32(p + 4092);
  return got == seq;
}

void ReconstructDataSector(const LogDescriptor& d, const uint8_t* sector, uint8_t* out) {
  std::memcpy(out, d.leading_bytes.data(), 8);
  std::memcpy(out + 8, sector + 8, 4084);
  std::memcpy(out + 4092, d.trailing_bytes.data(), 4);
}

std::vector<uint8_t> SerializeLogEntry(uint64_t seq, uint32_t tail, const Guid& log_guid,
                                       uint64_t flushed, uint64_t last,
                                       const std::vector<LogUpdate>& updates) {
  uint64_t desc_sectors = (updates.size() + 2 + 127) / 128;
  uint64_t data_sectors = 0;
  for (const auto& u : updates) data_sectors += u.is_zero ? 0 : 1;
  std::vector<uint8_t> e((desc_sectors + data_sectors) * kLogSectorSize, 0);
  uint8_t* p = e.data();
  std::memcpy(p, kLogEntrySignature, 4);
  EncodeFixed32(p + 8, static_cast<uint32_t>(e.size()));
  EncodeFixed32(p + 12, tail);
  EncodeFixed64(p + 16, seq);
  EncodeFixed32(p + 24, static_cast<uint32_t>(updates.size()));
  std::memcpy(p + 32, log_guid.bytes.data(), 16);
  EncodeFixed64(p + 48, flushed);
  EncodeFixed64(p + 56, last);
  uint64_t data_index = 0;
  for (size_t k = 0; k < updates.size(); ++k) {
    uint8_t* d = p + 64 + 32 * k;
    const LogUpdate& u = updates[k];
    if (u.is_zero) {
      std::memcpy(d, kZeroDescriptorSignature, 4);
      EncodeFixed64(d + 8, u.zero_length);
    } else {
      std::memcpy(d, kDataDescriptorSignature, 4);
      std::memcpy(d + 4, u.data.data() + 4092, 4);
      std::memcpy(d + 8, u.data.data(), 8);
      uint8_t* s = p + (desc_sectors + data_index++) * kLogSectorSize;
      std::memcpy(s, kDataSectorSignature, 4);
      EncodeFixed32(s + 4, static_cast<uint32_t>(seq >> 32));
      std::memcpy(s + 8, u.data.data() + 8, 4084);
      EncodeFixed32(s + 4092, static_cast<uint32_t>(seq));
    }
    EncodeFixed64(d + 16, u.file_offset);
    EncodeFixed64(d + 24, seq);
  }
  EncodeFixed32(p + 4, crc32c::ValueWithZeroedField(p, e.size(), 4));
  return e;
}

}  // namespace vhdx::format
