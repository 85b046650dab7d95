// Finds the active log sequence (digest §7.3-7.5) and turns it into an
// ordered list of replay operations. The replay itself is applied either in
// memory (ReplayOverlayFile, read-only opens) or into the file
// (ApplyActiveLog, read-write opens).
#pragma once

#include <array>
#include <map>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "format/log_format.h"
#include "vhdx/file.h"
#include "vhdx/guid.h"
#include "vhdx/status.h"

namespace vhdx {

struct ReplayOp {
  uint64_t file_offset = 0;
  bool is_zero = false;
  uint64_t length = 0;          // 4096 for data, ZeroLength for zero
  uint32_t data_log_pos = 0;    // data: log offset of its data sector
  std::array<uint8_t, 8> leading{};
  std::array<uint8_t, 4> trailing{};
};

struct ActiveLog {
  struct Entry {
    uint32_t log_pos = 0;
    format::LogEntryHeader header;
  };
  std::vector<Entry> entries;  // tail entry first, head last
  std::vector<ReplayOp> ops;   // every descriptor of every entry, in order
  uint64_t head_flushed_file_offset = 0;
  uint64_t head_last_file_offset = 0;
  uint64_t max_target_end = 0;  // end of the furthest descriptor target
};

class LogReader {
 public:
  // Upper bound on descriptors in the active sequence (real logs of 1 MiB
  // hold at most 32 Ki); keeps a hostile log from exhausting memory.
  static constexpr uint64_t kMaxDescriptors = uint64_t{1} << 22;

  LogReader(const File& file, uint64_t log_offset, uint32_t log_length, const Guid& log_guid);

  // Scans the ring. nullopt: no valid sequence. Errors: I/O failures and a
  // hostile log that exceeds the scan budget or descriptor cap.
  Result<std::optional<ActiveLog>> FindActiveSequence();

  // Entries whose header parsed and whose CRC matched, whatever their
  // LogGuid (for `check`): filled in by FindActiveSequence.
  uint64_t entries_validated() const { return entries_validated_; }

 private:
  struct Probe {
    bool valid = false;
    format::LogEntryHeader header;
  };
  Result<Probe> ValidateAt(uint32_t pos);
  Status ReadRing(uint32_t pos, uint8_t* buf, size_t n) const;
  Status CollectOps(ActiveLog* log) const;

  const File& file_;
  uint64_t log_offset_;
  uint32_t log_length_;
  Guid log_guid_;
  std::unordered_map<uint32_t, Probe> memo_;
  uint64_t bytes_hashed_ = 0;
  uint64_t hash_budget_;
  uint64_t entries_validated_ = 0;
};

// A read-only view of `base` with the active log applied in memory. Reads
// go overlay first, then the file, zeros past the physical end up to the
// logical size. Never writes.
class ReplayOverlayFile final : public File {
 public:
  ReplayOverlayFile(const File& base, uint64_t log_offset, const ActiveLog& log,
                    uint64_t physical_size);

  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override;
  Status WriteAt(uint64_t, const void*, size_t) override { return ReadOnly(); }
  Status Flush() override { return Status::Ok(); }
  Result<uint64_t> Size() const override { return logical_size_; }
  Result<uint64_t> AllocatedSize() const override { return base_.AllocatedSize(); }
  // The base's holes, less the ranges the log rewrote with data.
  Result<uint64_t> NextData(uint64_t offset) const override;
  Status Truncate(uint64_t) override { return ReadOnly(); }
  Status PunchHole(uint64_t, uint64_t) override { return ReadOnly(); }
  Status Allocate(uint64_t, uint64_t) override { return ReadOnly(); }
  bool writable() const override { return false; }
  // Ranges the log rewrote are read from memory or the log; asking for the
  // base file's range still covers the rest.
  void WillNeed(uint64_t offset, uint64_t length) const override { base_.WillNeed(offset, length); }
  const std::string& name() const override { return base_.name(); }

 private:
  static Status ReadOnly() { return Status(Errc::kReadOnly, "log replay overlay is read-only"); }
  struct Segment {
    uint64_t end = 0;
    const ReplayOp* op = nullptr;  // nullptr: zeros
  };
  void Assign(uint64_t start, uint64_t end, const ReplayOp* op);

  const File& base_;
  uint64_t log_offset_;
  std::vector<ReplayOp> ops_;
  std::map<uint64_t, Segment> segments_;  // non-overlapping, keyed by start
  uint64_t physical_size_;
  uint64_t logical_size_;
};

// Writes every replay op into `file` and extends it to the head's
// LastFileOffset, then flushes (digest §7.5 "Apply" steps 2-4).
Status ApplyActiveLog(File& file, uint64_t log_offset, const ActiveLog& log);

}  // namespace vhdx
