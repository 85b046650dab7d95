// The log writer (digest §7.7): appends entries to the circular log of a
// session and keeps track of which ones still need their updates applied
// in place. Applying and flushing are the caller's; the caller tells the
// writer when everything appended so far is applied and durable
// (MarkApplied), which frees that log space for reuse.
//
// The reading side is src/log_reader.
#pragma once

#include <cstdint>
#include <vector>

#include "format/log_format.h"
#include "vhdx/file.h"
#include "vhdx/guid.h"
#include "vhdx/status.h"

namespace vhdx {

class LogWriter {
 public:
  // A session's log: `log_guid` is the non-zero GUID the header will carry
  // (or already carries). The ring is reused from offset 0 (older entries
  // carry another LogGuid and are ignored by readers).
  LogWriter(File& file, uint64_t log_offset, uint32_t log_length, const Guid& log_guid,
            uint64_t first_sequence = 1);

  const Guid& log_guid() const { return log_guid_; }

  // Largest number of 4 KiB data updates one entry may carry right now
  // without overwriting entries not yet applied (one sector of the ring
  // always stays free, so that a full ring never looks empty), and at most
  // MaxDataUpdatesPerEntry.
  size_t MaxDataUpdatesNow() const;
  // The most one entry may ever carry: what fits in half the ring. Two
  // consecutive entries then never overlap, so writing an entry (and a
  // crash tearing it) never destroys the previous one, which may be the
  // only valid sequence left in the ring. 126 updates for a 1 MiB log.
  size_t MaxDataUpdatesPerEntry() const;

  // Writes one entry for `updates` at the write position, wrapping at the
  // ring's end. Does not flush. Fails with kInvalidArgument if it does not
  // fit (callers split by MaxDataUpdatesNow).
  Status Append(const std::vector<format::LogUpdate>& updates, uint64_t flushed_file_offset,
                uint64_t last_file_offset);

  // Every entry appended so far has been applied in place and flushed:
  // later entries start a new sequence (Tail = their own offset).
  void MarkApplied() { tail_ = write_; }

 private:
  static size_t MaxDataUpdates(uint64_t free_bytes);
  uint64_t FreeBytes() const;

  File& file_;
  uint64_t log_offset_;
  uint32_t log_length_;
  Guid log_guid_;
  uint64_t sequence_;
  uint32_t write_ = 0;  // log offset of the next entry
  uint32_t tail_ = 0;   // log offset of the oldest entry not applied and flushed
};

}  // namespace vhdx
