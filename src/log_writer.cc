#include "log_writer.h"

#include <fmt/format.h>

#include <algorithm>

#include "format/constants.h"

namespace vhdx {

using namespace format;

LogWriter::LogWriter(File& file, uint64_t log_offset, uint32_t log_length, const Guid& log_guid,
                     uint64_t first_sequence)
    : file_(file),
      log_offset_(log_offset),
      log_length_(log_length),
      log_guid_(log_guid),
      sequence_(first_sequence) {}

uint64_t LogWriter::FreeBytes() const {
  uint64_t used = (uint64_t{write_} + log_length_ - tail_) % log_length_;
  return log_length_ - used - kLogSectorSize;
}

size_t LogWriter::MaxDataUpdates(uint64_t free_bytes) {
  // n data updates need ceil((n + 2) / 128) descriptor sectors + n data
  // sectors. Find the largest n that fits.
  uint64_t sectors = free_bytes / kLogSectorSize;
  if (sectors < 2) return 0;
  uint64_t n = sectors - 1;
  while (n > 0 && (n + 2 + 127) / 128 + n > sectors) --n;
  return static_cast<size_t>(n);
}

// An entry takes at most half of the ring (less the sector that stays
// free). Once everything is applied, the previous entry is still the only
// valid sequence on disk until the next entry has been flushed; two entries
// of at most half the ring each never overlap, so writing the next one (or
// a crash tearing it) cannot destroy the previous one. A larger entry would
// wrap over the start of the previous one, and a torn write there leaves
// the log with no valid sequence: the file could not be opened.
size_t LogWriter::MaxDataUpdatesNow() const {
  return std::min(MaxDataUpdates(FreeBytes()), MaxDataUpdatesPerEntry());
}
size_t LogWriter::MaxDataUpdatesPerEntry() const {
  return MaxDataUpdates((log_length_ / kLogSectorSize - 1) / 2 * kLogSectorSize);
}

Status LogWriter::Append(const std::vector<LogUpdate>& updates, uint64_t flushed_file_offset,
                         uint64_t last_file_offset) {
  // Tail: the oldest entry still needed, or this entry itself when every
  // earlier one is applied and durable.
  std::vector<uint8_t> entry = SerializeLogEntry(sequence_, tail_, log_guid_, flushed_file_offset,
                                                 last_file_offset, updates);
  if (entry.size() > FreeBytes())
    return Status(Errc::kInvalidArgument,
                  fmt::format("log at offset {:#x}: entry of {} bytes does not fit in the {} free "
                              "bytes",
                              log_offset_, entry.size(), FreeBytes()));
  // Sector by sector across the end of the ring (digest §7.1).
  size_t first = std::min<size_t>(entry.size(), log_length_ - write_);
  VHDX_RETURN_IF_ERROR(file_.WriteAt(log_offset_ + write_, entry.data(), first)
                           .WithContext(fmt::format("log entry at offset {:#x}", log_offset_ + write_)));
  if (first < entry.size())
    VHDX_RETURN_IF_ERROR(file_.WriteAt(log_offset_, entry.data() + first, entry.size() - first)
                             .WithContext(fmt::format("log entry at offset {:#x}", log_offset_)));
  write_ = static_cast<uint32_t>((uint64_t{write_} + entry.size()) % log_length_);
  ++sequence_;
  return Status::Ok();
}

}  // namespace vhdx
