// Log entry structures (digest §7.2): entry header, zero and data
// descriptors, data sectors. Pure parse/serialise; the scan and replay are
// in src/log_reader.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "vhdx/guid.h"
#include "vhdx/status.h"

namespace vhdx::format {

struct LogEntryHeader {
  uint32_t checksum = 0;
  uint32_t entry_length = 0;
  uint32_t tail = 0;
  uint64_t sequence_number = 0;
  uint32_t descriptor_count = 0;
  Guid log_guid;
  uint64_t flushed_file_offset = 0;
  uint64_t last_file_offset = 0;

  // Descriptor sectors: ceil((DescriptorCount + 2) / 128).
  uint64_t DescriptorSectors() const { return (uint64_t{descriptor_count} + 2 + 127) / 128; }
};

// Parses the 64-byte header at the start of a log sector. Checks only what
// needs no context: signature, EntryLength non-zero multiple of 4 KiB,
// SequenceNumber non-zero, Tail a multiple of 4 KiB. The rest (against
// LogLength, LogGuid, CRC) is the scanner's.
Status ParseLogEntryHeader(const uint8_t* p, LogEntryHeader* out);

struct LogDescriptor {
  bool is_zero = false;       // zero descriptor, else data descriptor
  uint64_t file_offset = 0;
  uint64_t zero_length = 0;   // zero descriptors
  std::array<uint8_t, 8> leading_bytes{};   // data: bytes 0-7 of the sector
  std::array<uint8_t, 4> trailing_bytes{};  // data: bytes 4092-4095
  uint64_t sequence_number = 0;
};

// Parses one 32-byte descriptor and checks its signature, sequence number
// (== `entry_sequence`) and 4 KiB alignment of offset and zero length.
Status ParseLogDescriptor(const uint8_t* p, uint64_t entry_sequence, LogDescriptor* out);

// Checks a 4 KiB data sector's signature and split sequence number.
bool DataSectorMatches(const uint8_t* p, uint64_t entry_sequence);

// Rebuilds the 4 KiB update of a data descriptor from its data sector.
void ReconstructDataSector(const LogDescriptor& d, const uint8_t* data_sector, uint8_t* out4k);

// One update to put into a log entry (writer side and test builders).
struct LogUpdate {
  uint64_t file_offset = 0;
  bool is_zero = false;
  uint64_t zero_length = 0;
  std::vector<uint8_t> data;  // exactly 4096 bytes for data updates
};

// Builds a complete entry (descriptor sectors, data sectors, checksum).
std::vector<uint8_t> SerializeLogEntry(uint64_t sequence_number, uint32_t tail, const Guid& log_guid,
                                       uint64_t flushed_file_offset, uint64_t last_file_offset,
                                       const std::vector<LogUpdate>& updates);

}  // namespace vhdx::format
