// File type identifier (offset 0) and the two 4 KiB headers (digest §2).
#pragma once

#include <cstdint>
#include <string>

#include "vhdx/guid.h"
#include "vhdx/status.h"

namespace vhdx::format {

struct FileIdentifier {
  std::string creator;  // UTF-8, diagnostics only
};

// `p` holds at least 520 bytes read at file offset 0.
Status ParseFileIdentifier(const uint8_t* p, FileIdentifier* out);
// Writes the 64 KiB identifier into `p` (zeroed first).
void SerializeFileIdentifier(const FileIdentifier& id, uint8_t* p);

struct Header {
  uint32_t checksum = 0;
  uint64_t sequence_number = 0;
  Guid file_write_guid;
  Guid data_write_guid;
  Guid log_guid;
  uint16_t log_version = 0;
  uint16_t version = 1;
  uint32_t log_length = 0;
  uint64_t log_offset = 0;
};

// Parses and validates one 4096-byte header read at `file_offset`:
// signature, CRC-32C, Version 1, LogVersion 0 unless LogGuid is zero,
// log placement (MiB-aligned, outside the header section, no overflow).
Status ParseHeader(const uint8_t* p, uint64_t file_offset, Header* out);
// Writes 4096 bytes with the checksum computed (the `checksum` field is ignored).
void SerializeHeader(const Header& h, uint8_t* p);

// Which header is current (digest §2.3). `valid1/valid2` say whether each
// parsed. Returns 0 or 1, or an error when none is usable (neither valid,
// or equal sequence numbers with differing contents).
Result<int> ChooseCurrentHeader(bool valid1, const Header& h1, const uint8_t* raw1, bool valid2,
                                const Header& h2, const uint8_t* raw2);

}  // namespace vhdx::format
