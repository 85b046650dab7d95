#include "compact_plan.h"

#include <algorithm>
#include <map>

namespace vhdx {

uint64_t CompactPlan::moves() const {
  uint64_t n = 0;
  for (const auto& round : rounds) n += round.size();
  return n;
}

namespace {

uint64_t EndOf(const std::vector<CompactExtent>& extents, uint64_t floor) {
  uint64_t end = floor;
  for (const CompactExtent& e : extents) end = std::max(end, e.offset + e.length);
  return end;
}

}  // namespace

CompactPlan PlanCompaction(std::vector<CompactExtent> extents, uint64_t floor, size_t max_per_round) {
  CompactPlan plan;
  plan.end_before = EndOf(extents, floor);
  for (;;) {
    // The free gaps below the end, as the round starts.
    std::sort(extents.begin(), extents.end(),
              [](const CompactExtent& a, const CompactExtent& b) { return a.offset < b.offset; });
    std::map<uint64_t, uint64_t> gaps;  // start -> length
    uint64_t at = floor;
    for (const CompactExtent& e : extents) {
      if (e.offset > at) gaps.emplace(at, e.offset - at);
      at = std::max(at, e.offset + e.length);
    }
    // First fit, the highest extents first. Gaps only shrink from their
    // start within a round, so no gap before the first one that held a
    // length can hold it later: the search for each length (there are two:
    // the block size and the 1 MiB of a bitmap block) resumes there.
    std::map<uint64_t, uint64_t> resume;  // length -> gap start to search from
    std::vector<CompactMove> round;
    for (auto e = extents.rbegin(); e != extents.rend() && round.size() < max_per_round; ++e) {
      uint64_t& from = resume[e->length];
      auto g = gaps.lower_bound(from);
      while (g != gaps.end() && g->second < e->length) ++g;
      if (g == gaps.end()) {
        from = UINT64_MAX;
        continue;
      }
      from = g->first;
      if (g->first + e->length > e->offset) continue;  // nothing free lower down
      const uint64_t to = g->first, rest = g->second - e->length;
      gaps.erase(g);
      if (rest > 0) gaps.emplace(to + e->length, rest);
      round.push_back({e->bat_index, e->offset, to, e->length});
      e->offset = to;
    }
    if (round.empty()) break;
    plan.rounds.push_back(std::move(round));
  }
  plan.end_after = EndOf(extents, floor);
  return plan;
}

}  // namespace vhdx
