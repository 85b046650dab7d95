// Where compaction moves blocks (pure: no I/O). The allocated extents of an
// image (payload blocks, sector bitmap blocks) are moved from the end of
// the file into free space lower down, round by round: a round's targets
// are free when the round starts, so space a move frees is reused only in a
// later round, after the move's BAT change is committed (digest §8.4: space
// is free only once no durable entry points at it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vhdx {

struct CompactExtent {
  uint64_t offset = 0;  // 1 MiB aligned
  uint64_t length = 0;  // a 1 MiB multiple
  uint64_t bat_index = 0;
};

struct CompactMove {
  uint64_t bat_index = 0;
  uint64_t from = 0, to = 0, length = 0;
};

struct CompactPlan {
  std::vector<std::vector<CompactMove>> rounds;
  uint64_t end_before = 0;  // end of the last extent (or `floor`) before
  uint64_t end_after = 0;   // and after the moves: where the file can end
  uint64_t moves() const;
};

// `extents` must not overlap each other nor start below `floor` (the end of
// the headers, log, region tables, metadata and BAT, 1 MiB aligned).
// Blocks only move down; at most `max_per_round` moves a round.
CompactPlan PlanCompaction(std::vector<CompactExtent> extents, uint64_t floor, size_t max_per_round);

}  // namespace vhdx
