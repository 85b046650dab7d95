// Image: maps of ranges (what each range of the virtual disk is and where
// it lies, down the parent chain), prefetch hints and allocation counts.
#include <algorithm>
#include <functional>
#include <vector>

#include "format/constants.h"
#include "image_impl.h"
#include "image_util.h"

namespace vhdx {

using namespace format;

Status ImageImpl::Map(uint64_t start, uint64_t length,
                      const std::function<bool(const MapExtent&)>& sink) const {
  VHDX_RETURN_IF_ERROR(CheckRange(start, length, "map"));
  if (geo_.has_parent && !parent_) return ParentNeeded();
  if (length == 0) return Status::Ok();
  const uint64_t end = start + length;
  const uint64_t first_block = start / geo_.block_size;
  const uint64_t last_block = (end - 1) / geo_.block_size;
  MapExtent pending;
  bool have = false;
  bool stop = false;
  auto emit = [&](const MapExtent& x) {
    if (have && pending.present == x.present && pending.zero == x.zero && pending.data == x.data &&
        pending.depth == x.depth &&
        (!x.data || *pending.offset + pending.length == *x.offset)) {
      pending.length += x.length;
      return;
    }
    if (have && !sink(pending)) stop = true;
    pending = x;
    have = true;
  };
  // Ranges left to the parent: its extents one level deeper; past the
  // parent's end, zeros that no image defines (depth of the chain's bottom,
  // as qemu-img map reports unallocated ranges).
  int bottom = 0;
  for (const Image* p = parent_.get(); p; p = p->parent()) ++bottom;
  auto map_parent = [&](uint64_t s, uint64_t n) -> Status {
    const uint64_t psize = parent_->virtual_size();
    const uint64_t k = s < psize ? std::min(n, psize - s) : 0;
    if (k)
      VHDX_RETURN_IF_ERROR(parent_->Map(s, k, [&](const MapExtent& y) {
        MapExtent z = y;
        z.depth += 1;
        emit(z);
        return !stop;
      }));
    if (k < n && !stop) {
      MapExtent z;
      z.start = s + k;
      z.length = n - k;
      z.zero = true;
      z.depth = bottom;
      emit(z);
    }
    return Status::Ok();
  };
  constexpr uint64_t kBatch = 65536;
  std::vector<uint64_t> entries;
  for (uint64_t b0 = first_block; b0 <= last_block && !stop; b0 += kBatch) {
    uint64_t b1 = std::min(last_block, b0 + kBatch - 1);
    uint64_t i0 = geo_.PayloadIndex(b0), i1 = geo_.PayloadIndex(b1);
    if (i1 - i0 < 64) {
      // A few blocks (a parent asked for one run of a child's block): the
      // cached entries, not a read of the file each time.
      entries.resize(i1 - i0 + 1);
      for (uint64_t i = i0; i <= i1; ++i) {
        VHDX_ASSIGN_OR_RETURN(entries[i - i0], bat_->Get(i));
      }
    } else {
      VHDX_RETURN_IF_ERROR(bat_->ReadRange(i0, i1 - i0 + 1, &entries));
    }
    for (uint64_t b = b0; b <= b1 && !stop; ++b) {
      BatEntry e = BatEntry::Decode(entries[geo_.PayloadIndex(b) - i0]);
      uint64_t bstart = b * geo_.block_size;
      uint64_t s = std::max(start, bstart);
      uint64_t t = std::min(end, bstart + geo_.block_size);
      MapExtent x;
      x.start = s;
      x.length = t - s;
      switch (e.state) {
        case kPayloadFullyPresent:
          VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
          x.present = x.data = true;
          x.offset = e.file_offset + (s - bstart);
          break;
        case kPayloadNotPresent:
          if (geo_.has_parent) {
            VHDX_RETURN_IF_ERROR(map_parent(s, t - s));
            continue;
          }
          x.zero = true;  // nothing below a standalone image: reads as zeros
          break;
        case kPayloadPartiallyPresent: {
          if (!geo_.has_parent) return BadState(geo_, b, e);
          VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
          VHDX_ASSIGN_OR_RETURN(uint64_t sb, BitmapOf(b));
          const uint64_t ss = geo_.logical_sector_size;
          const uint64_t s0 = (s - bstart) / ss, s1 = (t - bstart - 1) / ss;
          std::vector<std::pair<bool, uint64_t>> runs;
          VHDX_RETURN_IF_ERROR(bitmaps_->Runs(sb, FirstBit(b) + s0, s1 - s0 + 1,
                                              [&](bool v, uint64_t c) { runs.emplace_back(v, c); }));
          uint64_t sector = s0;
          for (auto [present, count] : runs) {
            if (stop) break;
            uint64_t a = std::max(s, bstart + sector * ss);
            uint64_t z = std::min(t, bstart + (sector + count) * ss);
            sector += count;
            if (present) {
              MapExtent y;
              y.start = a;
              y.length = z - a;
              y.present = y.data = true;
              y.offset = e.file_offset + (a - bstart);
              emit(y);
            } else {
              VHDX_RETURN_IF_ERROR(map_parent(a, z - a));
            }
          }
          continue;
        }
        case kPayloadUndefined:
        case kPayloadZero:
        case kPayloadUnmapped:
          x.present = x.zero = true;
          break;
        default:
          return BadState(geo_, b, e);
      }
      emit(x);
    }
  }
  if (have && !stop) sink(pending);
  return Status::Ok();
}

void ImageImpl::Prefetch(uint64_t offset, uint64_t length) const {
  // The map already names each extent's level and file offset: the file
  // to hint is that level's (every image of a chain is an ImageImpl).
  std::vector<const File*> files;
  for (const Image* level = this; level; level = level->parent()) {
    const auto* impl = dynamic_cast<const ImageImpl*>(level);
    files.push_back(impl ? impl->view_ : nullptr);
  }
  (void)Map(offset, length, [&](const MapExtent& x) {
    const size_t depth = static_cast<size_t>(x.depth);
    if (x.data && x.offset && depth < files.size() && files[depth]) files[depth]->WillNeed(*x.offset, x.length);
    return true;
  });
}

Result<AllocationSummary> ImageImpl::CountAllocation() const {
  AllocationSummary sum;
  constexpr uint64_t kBatch = 65536;
  std::vector<uint64_t> entries;
  for (uint64_t i0 = 0; i0 < geo_.total_entries; i0 += kBatch) {
    uint64_t n = std::min(kBatch, geo_.total_entries - i0);
    VHDX_RETURN_IF_ERROR(bat_->ReadRange(i0, n, &entries));
    for (uint64_t k = 0; k < n; ++k) {
      unsigned state = entries[k] & 7;
      if (geo_.IsBitmapIndex(i0 + k))
        ++sum.sector_bitmap[state];
      else if (geo_.BlockOfIndex(i0 + k) < geo_.payload_blocks)  // not the last chunk's spare slots
        ++sum.payload[state];
    }
  }
  return sum;
}

}  // namespace vhdx
