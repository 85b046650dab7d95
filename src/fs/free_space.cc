#include "fs/free_space.h"

#include <fmt/format.h>

#include <algorithm>

#include "fs/ext_reader.h"
#include "fs/partitions.h"
#include "util/strings.h"

namespace vhdx::fs {
namespace {

// A region of the disk that may hold a file system.
struct Candidate {
  std::string label;  // "partition 2 at 0x100000", for notices and errors
  uint64_t offset = 0;
  uint64_t length = 0;
};

std::string LabelOf(const Partition& p) {
  return fmt::format("partition {} at {}", p.number, Hex(p.offset));
}

// The partitions worth reading. A partition past the disk's end, or one
// overlapping another (each would trust its own bitmap over the other's
// data), is left alone with a notice. Extended partitions only hold the
// logical ones and their EBRs.
std::vector<Candidate> CandidatesOf(const PartitionTable& table, uint64_t disk_size,
                                    std::vector<FsNotice>& notices) {
  std::vector<const Partition*> parts;
  for (const Partition& p : table.partitions) {
    if (p.container || p.length == 0) continue;
    if (p.offset > disk_size || p.length > disk_size - p.offset) {
      notices.push_back({p.offset, fmt::format("{}: {} bytes long, past the disk's end ({} bytes); "
                                               "left alone",
                                               LabelOf(p), p.length, disk_size)});
      continue;
    }
    parts.push_back(&p);
  }
  // `parts` is sorted by offset: a partition overlaps an earlier one exactly
  // when it starts before the furthest end so far.
  std::vector<bool> overlapping(parts.size(), false);
  size_t furthest = 0;
  for (size_t i = 1; i < parts.size(); i++) {
    const Partition& f = *parts[furthest];
    if (parts[i]->offset < f.offset + f.length) {
      overlapping[i] = true;
      overlapping[furthest] = true;
    }
    if (parts[i]->offset + parts[i]->length > f.offset + f.length) furthest = i;
  }
  std::vector<Candidate> out;
  for (size_t i = 0; i < parts.size(); i++) {
    const Partition& p = *parts[i];
    if (overlapping[i]) {
      notices.push_back({p.offset, fmt::format("{}: overlaps another partition; left alone",
                                               LabelOf(p))});
      continue;
    }
    out.push_back({LabelOf(p), p.offset, p.length});
  }
  return out;
}

// Sorts and merges touching or overlapping ranges.
std::vector<FreeRange> Merged(std::vector<FreeRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const FreeRange& a, const FreeRange& b) { return a.offset < b.offset; });
  std::vector<FreeRange> out;
  for (const FreeRange& r : ranges) {
    if (r.length == 0) continue;
    if (!out.empty() && r.offset <= out.back().offset + out.back().length) {
      out.back().length = std::max(out.back().offset + out.back().length, r.offset + r.length) -
                          out.back().offset;
    } else {
      out.push_back(r);
    }
  }
  return out;
}

}  // namespace

Result<FreeSpaceReport> FindFreeSpace(const Image& image, const FreeSpaceOptions& options) {
  FreeSpaceReport report;
  const uint64_t disk_size = image.virtual_size();
  if (disk_size == 0) return report;
  VHDX_ASSIGN_OR_RETURN(DiskMirror mirror, DiskMirror::Create(image));
  VHDX_ASSIGN_OR_RETURN(PartitionTable table, ReadPartitionTable(mirror));

  std::vector<Candidate> candidates;
  switch (table.kind) {
    case PartitionTable::kUnreadable:
      report.notices.push_back(
          {0, fmt::format("partition table at 0x0: libblkid cannot read it{}; the whole disk is "
                          "left alone",
                          table.name.empty() ? "" : " (" + table.name + ")")});
      return report;
    case PartitionTable::kNone:
      candidates.push_back({"the disk at 0x0 (no partition table)", 0, disk_size});
      break;
    case PartitionTable::kTable:
      candidates = CandidatesOf(table, disk_size, report.notices);
      break;
  }

  std::vector<FreeRange> ranges;
  for (const Candidate& c : candidates) {
    Result<ExtOutcome> ext = ReadExtFreeSpace(image, c.offset, c.length, options.min_length, ranges);
    if (!ext.ok()) return ext.status().WithContext(c.label);
    switch (ext->kind) {
      case ExtOutcome::kRead:
        report.file_systems_read++;
        break;
      case ExtOutcome::kLeftAlone:
        report.notices.push_back(
            {c.offset, fmt::format("{}: ext2/3/4 file system not read: {}; left alone", c.label,
                                   ext->why)});
        break;
      case ExtOutcome::kNotExt: {
        Result<std::string> type = ProbeFsType(mirror, c.offset, c.length);
        if (!type.ok()) return type.status().WithContext(c.label);
        report.notices.push_back(
            {c.offset, type->empty()
                           ? fmt::format("{}: no file system recognised; left alone", c.label)
                           : fmt::format("{}: not a file system we read ({}); left alone", c.label,
                                         *type)});
        break;
      }
    }
  }
  report.free = Merged(std::move(ranges));
  return report;
}

}  // namespace vhdx::fs
