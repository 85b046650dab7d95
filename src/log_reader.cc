#include "log_reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "format/constants.h"
#include "format/crc32c.h"
#include "util/coding.h"

namespace vhdx {

using format::kLogSectorSize;

LogReader::LogReader(const File& file, uint64_t log_offset, uint32_t log_length,
                     const Guid& log_guid)
    : file_(file), log_offset_(log_offset), log_length_(log_length), log_guid_(log_guid) {
  // Each start offset is validated at most once (memo), but overlapping
  // hostile entries could still make us hash the ring many times over.
  hash_budget_ = 8 * uint64_t{log_length} + 64 * format::MiB;
}

Status LogReader::ReadRing(uint32_t pos, uint8_t* buf, size_t n) const {
  while (n > 0) {
    size_t k = std::min<size_t>(n, log_length_ - pos);
    VHDX_RETURN_IF_ERROR(ReadExact(file_, log_offset_ + pos, buf, k, "log"));
    buf += k;
    n -= k;
    pos = 0;
  }
  return Status::Ok();
}

Result<LogReader::Probe> LogReader::ValidateAt(uint32_t pos) {
  if (auto it = memo_.find(pos); it != memo_.end()) return it->second;
  Probe probe;
  auto remember = [&]() -> Result<Probe> {
    memo_[pos] = probe;
    return probe;
  };
  std::vector<uint8_t> sector(kLogSectorSize);
  VHDX_RETURN_IF_ERROR(ReadRing(pos, sector.data(), kLogSectorSize));
  format::LogEntryHeader& h = probe.header;
  if (!format::ParseLogEntryHeader(sector.data(), &h).ok()) return remember();
  if (h.entry_length > log_length_ || h.tail >= log_length_ || h.log_guid != log_guid_)
    return remember();
  const uint64_t desc_sectors = h.DescriptorSectors();
  const uint64_t total_sectors = h.entry_length / kLogSectorSize;
  if (desc_sectors > total_sectors) return remember();
  if (bytes_hashed_ + h.entry_length > hash_budget_)
    return Status(Errc::kCorrupt, fmt::format("log at offset {:#x}: scanning it needs more than "
                                              "{} bytes of checksumming (hostile log?)",
                                              log_offset_, hash_budget_));
  bytes_hashed_ += h.entry_length;

  // Stream the entry in chunks: CRC over all of it, descriptors checked as
  // they pass, data sectors checked against the data-descriptor count.
  constexpr uint64_t kChunkSectors = 256;
  // Sized to the entry (most are a few sectors): the scan validates
  // entries at many positions.
  std::vector<uint8_t> buf(std::min<uint64_t>(kChunkSectors, total_sectors) * kLogSectorSize);
  uint32_t crc = 0;
  uint64_t data_descs = 0;
  uint64_t desc_index = 0;
  const uint64_t log_end = log_offset_ + log_length_;
  for (uint64_t s = 0; s < total_sectors;) {
    uint64_t ring_pos = (pos + s * kLogSectorSize) % log_length_;
    uint64_t run = std::min<uint64_t>({kChunkSectors, total_sectors - s,
                                       (log_length_ - ring_pos) / kLogSectorSize});
    VHDX_RETURN_IF_ERROR(ReadRing(static_cast<uint32_t>(ring_pos), buf.data(), run * kLogSectorSize));
    if (s == 0) std::memset(buf.data() + 4, 0, 4);  // checksum field counts as zero
    crc = crc32c::Extend(crc, buf.data(), run * kLogSectorSize);
    for (uint64_t i = 0; i < run; ++i) {
      uint64_t sec = s + i;
      const uint8_t* p = buf.data() + i * kLogSectorSize;
      if (sec < desc_sectors) {
        for (size_t off = (sec == 0 ? 64 : 0); off < kLogSectorSize && desc_index < h.descriptor_count;
             off += 32, ++desc_index) {
          format::LogDescriptor d;
          if (!format::ParseLogDescriptor(p + off, h.sequence_number, &d).ok()) return remember();
          uint64_t len = d.is_zero ? d.zero_length : kLogSectorSize;
          uint64_t end;
          // Hardening (digest §7.4): targets stay clear of the identifier,
          // the headers and the log, and below any sane file size.
          if (AddOverflows(d.file_offset, len, &end) || end > format::kMaxFileOffset ||
              d.file_offset < format::kRegionTable1Offset ||
              (d.file_offset < log_end && end > log_offset_))
            return remember();
          if (!d.is_zero) ++data_descs;
        }
        if (sec + 1 == desc_sectors && (desc_sectors + data_descs) > total_sectors)
          return remember();
      } else if (sec < desc_sectors + data_descs) {
        if (!format::DataSectorMatches(p, h.sequence_number)) return remember();
      }
    }
    s += run;
  }
  if (crc != h.checksum) return remember();
  ++entries_validated_;
  probe.valid = true;
  return remember();
}

Result<std::optional<ActiveLog>> LogReader::FindActiveSequence() {
  struct Found {
    uint32_t pos;
    format::LogEntryHeader header;
  };
  std::vector<Found> candidate;
  uint64_t candidate_seq = 0;
  uint32_t cur_tail = 0, old_tail = 0;
  for (;;) {
    std::vector<Found> seq;
    uint32_t pos = cur_tail;
    uint64_t accumulated = 0;
    for (;;) {
      VHDX_ASSIGN_OR_RETURN(Probe p, ValidateAt(pos));
      if (!p.valid) break;
      if (!seq.empty() && p.header.sequence_number != seq.back().header.sequence_number + 1) break;
      if (accumulated + p.header.entry_length > log_length_) break;  // would lap the ring
      seq.push_back({pos, p.header});
      accumulated += p.header.entry_length;
      pos = static_cast<uint32_t>((uint64_t{pos} + p.header.entry_length) % log_length_);
    }
    bool valid = false;
    if (!seq.empty()) {
      uint32_t tail = seq.back().header.tail;
      auto it = std::find_if(seq.begin(), seq.end(), [&](const Found& f) { return f.pos == tail; });
      if (it != seq.end()) {
        valid = true;
        if (seq.back().header.sequence_number > candidate_seq) {
          candidate_seq = seq.back().header.sequence_number;
          candidate.assign(it, seq.end());  // replay starts at the head's Tail
        }
      }
    }
    cur_tail = valid ? pos : static_cast<uint32_t>((uint64_t{cur_tail} + kLogSectorSize) % log_length_);
    if (cur_tail <= old_tail) break;
    old_tail = cur_tail;
  }
  if (candidate.empty()) return std::optional<ActiveLog>();
  ActiveLog log;
  for (const auto& f : candidate) log.entries.push_back({f.pos, f.header});
  log.head_flushed_file_offset = candidate.back().header.flushed_file_offset;
  log.head_last_file_offset = candidate.back().header.last_file_offset;
  VHDX_RETURN_IF_ERROR(CollectOps(&log));
  return std::optional<ActiveLog>(std::move(log));
}

Status LogReader::CollectOps(ActiveLog* log) const {
  std::vector<uint8_t> sector(kLogSectorSize);
  for (const auto& e : log->entries) {
    const auto& h = e.header;
    if (log->ops.size() + h.descriptor_count > kMaxDescriptors)
      return Status(Errc::kCorrupt, fmt::format("log at offset {:#x}: active sequence has more "
                                                "than {} descriptors",
                                                log_offset_, kMaxDescriptors));
    uint64_t desc_sectors = h.DescriptorSectors();
    uint64_t data_index = 0;
    for (uint64_t k = 0; k < h.descriptor_count; ++k) {
      uint64_t entry_off = 64 + 32 * k;
      uint64_t sec = entry_off / kLogSectorSize;
      if (k == 0 || entry_off % kLogSectorSize == 0)
        VHDX_RETURN_IF_ERROR(ReadRing(
            static_cast<uint32_t>((e.log_pos + sec * kLogSectorSize) % log_length_), sector.data(),
            kLogSectorSize));
      format::LogDescriptor d;
      VHDX_RETURN_IF_ERROR(
          format::ParseLogDescriptor(sector.data() + entry_off % kLogSectorSize, h.sequence_number, &d));
      ReplayOp op;
      op.file_offset = d.file_offset;
      op.is_zero = d.is_zero;
      op.length = d.is_zero ? d.zero_length : kLogSectorSize;
      if (!d.is_zero) {
        op.data_log_pos = static_cast<uint32_t>(
            (e.log_pos + (desc_sectors + data_index++) * kLogSectorSize) % log_length_);
        op.leading = d.leading_bytes;
        op.trailing = d.trailing_bytes;
      }
      if (op.length == 0) continue;
      log->max_target_end = std::max(log->max_target_end, op.file_offset + op.length);
      log->ops.push_back(op);
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------

ReplayOverlayFile::ReplayOverlayFile(const File& base, uint64_t log_offset, const ActiveLog& log,
                                     uint64_t physical_size)
    : base_(base), log_offset_(log_offset), ops_(log.ops), physical_size_(physical_size) {
  for (const auto& op : ops_)
    Assign(op.file_offset, op.file_offset + op.length, op.is_zero ? nullptr : &op);
  logical_size_ = std::max({physical_size, log.head_last_file_offset, log.max_target_end});
}

void ReplayOverlayFile::Assign(uint64_t start, uint64_t end, const ReplayOp* op) {
  auto it = segments_.upper_bound(start);
  if (it != segments_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end > start) {  // `prev` straddles `start`: keep both outer parts
      Segment old = prev->second;
      if (old.end > end) segments_[end] = old;
      if (prev->first == start)
        segments_.erase(prev);
      else
        prev->second.end = start;
    }
  }
  it = segments_.lower_bound(start);
  while (it != segments_.end() && it->first < end) {
    if (it->second.end > end) {
      Segment rest = it->second;
      segments_.erase(it);
      segments_[end] = rest;
      break;
    }
    it = segments_.erase(it);
  }
  segments_[start] = Segment{end, op};
}

Result<uint64_t> ReplayOverlayFile::NextData(uint64_t offset) const {
  VHDX_ASSIGN_OR_RETURN(uint64_t next, base_.NextData(offset));
  auto it = segments_.upper_bound(offset);
  if (it != segments_.begin() && std::prev(it)->second.end > offset) --it;
  for (; it != segments_.end() && it->first < next; ++it)
    if (it->second.op) return std::max(offset, it->first);
  return next;
}

Result<size_t> ReplayOverlayFile::ReadAt(uint64_t offset, void* buf, size_t n) const {
  if (offset >= logical_size_) return size_t{0};
  n = static_cast<size_t>(std::min<uint64_t>(n, logical_size_ - offset));
  auto* out = static_cast<uint8_t*>(buf);
  const uint64_t end = offset + n;
  uint64_t pos = offset;
  auto it = segments_.upper_bound(pos);
  if (it != segments_.begin() && std::prev(it)->second.end > pos) --it;
  uint8_t sector[kLogSectorSize];
  uint8_t page[kLogSectorSize];
  while (pos < end) {
    if (it != segments_.end() && it->first <= pos) {
      uint64_t seg_end = std::min(it->second.end, end);
      const ReplayOp* op = it->second.op;
      if (!op) {
        std::memset(out + (pos - offset), 0, seg_end - pos);
      } else {
        VHDX_RETURN_IF_ERROR(
            ReadExact(base_, log_offset_ + op->data_log_pos, sector, kLogSectorSize, "log data sector"));
        format::LogDescriptor d;
        d.leading_bytes = op->leading;
        d.trailing_bytes = op->trailing;
        format::ReconstructDataSector(d, sector, page);
        std::memcpy(out + (pos - offset), page + (pos - op->file_offset), seg_end - pos);
      }
      pos = seg_end;
      ++it;
    } else {
      uint64_t gap_end = it != segments_.end() ? std::min(end, it->first) : end;
      size_t want = static_cast<size_t>(gap_end - pos);
      size_t got = 0;
      if (pos < physical_size_) {
        VHDX_ASSIGN_OR_RETURN(got, base_.ReadAt(pos, out + (pos - offset), want));
      }
      if (got < want) std::memset(out + (pos - offset) + got, 0, want - got);
      pos = gap_end;
    }
  }
  return n;
}

Status ApplyActiveLog(File& file, uint64_t log_offset, const ActiveLog& log) {
  uint8_t sector[kLogSectorSize];
  uint8_t page[kLogSectorSize];
  std::vector<uint8_t> zeros;
  for (const auto& op : log.ops) {
    if (op.is_zero) {
      // Only the part inside the file is written; extending the file zeroes
      // the rest, so a huge (hostile) zero range costs no writes or space.
      VHDX_ASSIGN_OR_RETURN(uint64_t size, file.Size());
      const uint64_t end = op.file_offset + op.length;
      const uint64_t write_end = std::min(end, std::max(size, op.file_offset));
      zeros.assign(std::min<uint64_t>(write_end - op.file_offset, format::MiB), 0);
      for (uint64_t pos = op.file_offset; pos < write_end;) {
        size_t k = static_cast<size_t>(std::min<uint64_t>(zeros.size(), write_end - pos));
        VHDX_RETURN_IF_ERROR(file.WriteAt(pos, zeros.data(), k));
        pos += k;
      }
      if (end > size) VHDX_RETURN_IF_ERROR(file.Truncate(end));
    } else {
      VHDX_RETURN_IF_ERROR(
          ReadExact(file, log_offset + op.data_log_pos, sector, kLogSectorSize, "log data sector"));
      format::LogDescriptor d;
      d.leading_bytes = op.leading;
      d.trailing_bytes = op.trailing;
      format::ReconstructDataSector(d, sector, page);
      VHDX_RETURN_IF_ERROR(file.WriteAt(op.file_offset, page, kLogSectorSize));
    }
  }
  VHDX_ASSIGN_OR_RETURN(uint64_t size, file.Size());
  if (size < log.head_last_file_offset) VHDX_RETURN_IF_ERROR(file.Truncate(log.head_last_file_offset));
  return file.Flush();
}

}  // namespace vhdx
