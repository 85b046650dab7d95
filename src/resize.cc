// Resize (include/vhdx/resize.h).
//
// A payload block's BAT index (b + b / chunk_ratio) does not depend on the
// virtual size, so a resize never moves an entry: growth adds entries past
// the old TotalBATEntries, shrinking drops entries off the end. What makes
// a resize crash-safe is the order:
//  grow:   everything the new size will show is written first where no
//          reader of the old size looks (entries past the old total, a new
//          BAT region past the end of the file, the unused tail of the old
//          last block), made durable, and only then does one log entry
//          switch the size (metadata) and, if the BAT moved, the region
//          tables;
//  shrink: the size change is logged first; only then are blocks past the
//          new end released, their entries cleared and the file truncated.
// A crash before the log entry is durable leaves the old image (at worst
// with unreferenced space at the end); after it, replaying the log gives
// the new one.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "format/bat.h"
#include "format/constants.h"
#include "format/crc32c.h"
#include "format/region_table.h"
#include "image_impl.h"
#include "util/coding.h"

namespace vhdx {

using namespace format;

namespace {

Status Named(const std::string& path, const Status& s) {
  if (s.ok()) return s;
  return Status(s.code(), fmt::format("{}: {}", path, s.message()));
}

// Writes `n` zero bytes at `offset`, a MiB at a time.
Status WriteZerosAt(File& file, uint64_t offset, uint64_t n) {
  static const std::vector<uint8_t> zeros(MiB, 0);
  while (n > 0) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n, zeros.size()));
    VHDX_RETURN_IF_ERROR(file.WriteAt(offset, zeros.data(), k));
    offset += k;
    n -= k;
  }
  return Status::Ok();
}

}  // namespace

Result<ResizeResult> ImageImpl::ResizeAndClose(uint64_t new_size, const ResizeOptions& options) {
  auto progress = [&](uint64_t done, uint64_t total) {
    if (options.progress) options.progress(done, total);
  };
  ResizeResult result;
  result.old_size = geo_.virtual_size;
  result.new_size = new_size;
  VHDX_ASSIGN_OR_RETURN(result.file_size_before, physical_->Size());
  result.file_size_after = result.file_size_before;
  result.bat_offset = info_.bat_offset;
  if (!writable_) return Status(Errc::kReadOnly, "resize: the image is open read-only");
  if (new_size == geo_.virtual_size) {
    VHDX_RETURN_IF_ERROR(Close());
    return result;
  }
  VHDX_ASSIGN_OR_RETURN(const Geometry next, Geometry::Make(new_size, geo_.block_size, geo_.logical_sector_size,
                                                             geo_.has_parent));
  const MetadataEntry* size_item = nullptr;
  for (const MetadataEntry& m : meta_table_.entries)
    if (!m.is_user() && m.item_id == kVirtualDiskSizeGuid) size_item = &m;
  if (size_item == nullptr || size_item->length < 8)
    return Status(Errc::kCorrupt, "metadata table: no virtual disk size item");
  const uint64_t size_offset = meta_region_offset_ + size_item->offset;

  const RegionInfo* bat_region = nullptr;
  for (const RegionInfo& r : info_.regions)
    if (r.name == "bat") bat_region = &r;
  if (bat_region == nullptr) return Status(Errc::kCorrupt, "region table: no BAT region");
  const uint64_t bat_offset = bat_region->file_offset;
  const uint64_t bat_length = bat_region->length;

  // A damaged image is refused, not resized: what follows copies, scans
  // and clears BAT entries, and would carry damage into the resized image
  // (or free space a damaged entry shares). Pending writes of this session
  // are committed first, so that the file is what Check sees.
  VHDX_RETURN_IF_ERROR(Flush());
  VHDX_RETURN_IF_ERROR(RequireUndamaged(*physical_, "resize", "resized"));

  VHDX_RETURN_IF_ERROR(BeginChange());
  VHDX_ASSIGN_OR_RETURN(BlockAllocator * alloc, Allocator());
  const bool grow = new_size > geo_.virtual_size;
  const uint64_t bs = geo_.block_size;
  std::unique_lock lock(commit_mu_);
  // Nothing of this session may be pending: the entries written below go
  // straight to the file, past what the BAT cache holds.
  VHDX_RETURN_IF_ERROR(CommitLocked());
  File& f = *physical_;

  // The old last block's bytes past the old end read as zeros once they
  // are inside the disk (shrink: past the new end, for whoever grows it
  // next). Nobody reads them now.
  auto zero_tail = [&](const Geometry& g) -> Status {
    const uint64_t used = g.virtual_size % bs;
    if (used == 0) return Status::Ok();
    const uint64_t b = g.payload_blocks - 1;
    VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(geo_.PayloadIndex(b)));
    const BatEntry e = BatEntry::Decode(raw);
    if (e.state != kPayloadFullyPresent && e.state != kPayloadPartiallyPresent) return Status::Ok();
    if (!CheckPayload(b, e).ok()) return Status::Ok();  // damaged: never read, never written
    // Sector bits past the end may be set in a child's bitmap: the data
    // they name is zeroed too. Clear bits read the parent, which ends no
    // later than here (the caller checked).
    return WriteZerosAt(f, e.file_offset + used, bs - used);
  };

  if (grow) {
    VHDX_RETURN_IF_ERROR(Fail(zero_tail(geo_)));
    // New space goes past everything the file holds or any entry names.
    uint64_t end = RoundUp(std::max(result.file_size_before, alloc->end()), MiB);
    const bool fixed = info_.type == DiskType::kFixed;
    uint64_t first_new_block = end;
    if (fixed) {
      // A fixed image keeps every block allocated: the new ones, zeroed
      // (fallocate), before the BAT names them.
      const uint64_t count = next.payload_blocks - geo_.payload_blocks;
      VHDX_RETURN_IF_ERROR(Fail(f.Allocate(end, count * bs)));
      result.blocks_allocated = count;
      end += count * bs;
    }
    // The entries [old total, new total), as they will read.
    auto new_entry = [&](uint64_t index) -> uint64_t {
      if (!fixed || index >= next.total_entries || next.IsBitmapIndex(index)) return 0;
      const uint64_t b = next.BlockOfIndex(index);
      if (b < geo_.payload_blocks) return 0;  // an old block's index is below the old total
      return BatEntry{kPayloadFullyPresent, first_new_block + (b - geo_.payload_blocks) * bs}.Encode();
    };
    const uint64_t new_bat_length = RoundUp(next.total_entries * 8, MiB);
    const bool relocate = new_bat_length > bat_length;
    const uint64_t target = relocate ? end : bat_offset;
    if (relocate) {
      // Room for the BAT at the end; the old entries copied as they are.
      VHDX_RETURN_IF_ERROR(Fail(f.Allocate(target, new_bat_length)));
      end += new_bat_length;
    }
    constexpr uint64_t kBatch = 65536;  // entries: 512 KiB a write
    std::vector<uint64_t> entries;
    std::vector<uint8_t> bytes;
    const uint64_t from = relocate ? 0 : geo_.total_entries;
    // Past the new total too, up to the region's end: stale entries there
    // would turn up in a later growth that takes the region as it is.
    const uint64_t to = relocate ? next.total_entries : std::min(bat_length / 8, RoundUp(next.total_entries * 8, MiB) / 8);
    for (uint64_t i0 = from; i0 < to; i0 += kBatch) {
      const uint64_t n = std::min(kBatch, to - i0);
      bytes.assign(n * 8, 0);
      const uint64_t old_n = i0 < geo_.total_entries ? std::min(n, geo_.total_entries - i0) : 0;
      if (old_n) VHDX_RETURN_IF_ERROR(Fail(bat_->ReadRange(i0, old_n, &entries)));
      bool all_zero = true;
      for (uint64_t k = 0; k < n; ++k) {
        const uint64_t value = k < old_n ? entries[k] : new_entry(i0 + k);
        EncodeFixed64(bytes.data() + k * 8, value);
        all_zero = all_zero && value == 0;
      }
      // The new region was allocated past the end of the file, so it reads
      // as zeros already: a dynamic disk grown to terabytes writes only
      // the entries it had, not megabytes of NOT_PRESENT.
      if (!(relocate && all_zero))
        VHDX_RETURN_IF_ERROR(Fail(f.WriteAt(target + i0 * 8, bytes.data(), bytes.size())));
      progress(i0 + n - from, to - from);
    }
    if (relocate) {
      // Both region tables name the new BAT region: staged with the size.
      for (uint64_t table_offset : kRegionTableOffsets) {
        std::vector<uint8_t> raw(kRegionTableSize), fresh(kRegionTableSize);
        RegionTable table;
        for (const RegionInfo& r : info_.regions)
          table.entries.push_back(RegionEntry{r.guid, r.name == "bat" ? target : r.file_offset,
                                              static_cast<uint32_t>(r.name == "bat" ? new_bat_length : r.length),
                                              r.required ? 1u : 0u});
        SerializeRegionTable(table, fresh.data());
        VHDX_RETURN_IF_ERROR(Fail(ReadExact(f, table_offset, raw.data(), raw.size(), "region table")));
        for (size_t s = 0; s < kRegionTableSize; s += 4096)
          if (std::memcmp(raw.data() + s, fresh.data() + s, 4096) != 0)
            VHDX_RETURN_IF_ERROR(Fail(StageMetadataLocked(table_offset + s, fresh.data() + s, 4096)));
      }
      result.bat_relocated = true;
      result.bat_offset = target;
    }
  }

  uint8_t size_bytes[8];
  EncodeFixed64(size_bytes, new_size);
  VHDX_RETURN_IF_ERROR(Fail(StageMetadataLocked(size_offset, size_bytes, 8)));
  // The switch: durable (log entry and header) when CommitLocked returns,
  // applied in place too.
  VHDX_RETURN_IF_ERROR(CommitLocked());

  uint64_t keep_end = 0;  // shrink: the end of everything still referenced
  if (grow) {
    if (result.bat_relocated) {
      // The region tables in place and durable: the old BAT is unused.
      VHDX_RETURN_IF_ERROR(Fail(FlushFile()));
      (void)f.PunchHole(bat_offset, bat_length);
    }
  } else {
    VHDX_RETURN_IF_ERROR(Fail(zero_tail(next)));
    for (const Reserved& r : reserved_) keep_end = std::max(keep_end, r.end);
    // Blocks past the new end, and the sector bitmaps of chunks past it,
    // are released; their entries cleared (no reader of the new size looks
    // at them). Space shared by two entries (a damaged image) is kept.
    const uint64_t first_gone = next.PayloadIndex(next.payload_blocks);
    constexpr uint64_t kBatch = 65536;
    std::vector<uint64_t> entries;
    for (uint64_t i0 = 0; i0 < geo_.total_entries; i0 += kBatch) {
      const uint64_t n = std::min(kBatch, geo_.total_entries - i0);
      VHDX_RETURN_IF_ERROR(Fail(bat_->ReadRange(i0, n, &entries)));
      bool cleared = false;
      for (uint64_t k = 0; k < n; ++k) {
        const uint64_t index = i0 + k;
        const BatEntry e = BatEntry::Decode(entries[k]);
        const bool bitmap = geo_.IsBitmapIndex(index);
        // A base's sector bitmap entries are unused: only those past the
        // new total go (visible ones are never written outside the log).
        const bool gone = !bitmap             ? index >= first_gone
                          : geo_.has_parent ? index / (geo_.chunk_ratio + 1) >= next.bitmap_blocks
                                            : index >= next.total_entries;
        const bool allocated = bitmap ? geo_.has_parent && e.state == kSectorBitmapPresent
                                      : e.state == kPayloadFullyPresent || e.state == kPayloadPartiallyPresent;
        const uint64_t len = bitmap ? MiB : bs;
        const bool valid = allocated && CheckAllocatedEntry(index, e, len, file_size_, reserved_, EntryLabel{}).ok();
        if (!gone) {
          if (valid) keep_end = std::max(keep_end, e.file_offset + len);
          continue;
        }
        if (valid && release_space_) {
          (void)f.PunchHole(e.file_offset, len);
          if (!bitmap) ++result.blocks_freed;
        } else if (valid) {
          keep_end = std::max(keep_end, e.file_offset + len);
        }
        if (entries[k] != 0) {
          entries[k] = 0;
          cleared = true;
        }
      }
      if (cleared) {
        std::vector<uint8_t> bytes(n * 8);
        for (uint64_t k = 0; k < n; ++k) EncodeFixed64(bytes.data() + k * 8, entries[k]);
        VHDX_RETURN_IF_ERROR(Fail(f.WriteAt(bat_offset + i0 * 8, bytes.data(), bytes.size())));
      }
      progress(i0 + n, geo_.total_entries);
    }
    if (!release_space_) keep_end = std::max(keep_end, result.file_size_before);
  }
  // Close (which takes the commit lock itself): everything durable, the
  // log emptied (LogGuid zero).
  lock.unlock();
  VHDX_RETURN_IF_ERROR(Close());
  if (!grow && RoundUp(keep_end, MiB) < result.file_size_before) {
    // Only with the log empty: a log entry's FlushedFileOffset names the
    // old size, and a replay would find the file short of it.
    VHDX_RETURN_IF_ERROR(f.Truncate(RoundUp(keep_end, MiB)));
    VHDX_RETURN_IF_ERROR(f.Flush());
  }
  VHDX_ASSIGN_OR_RETURN(result.file_size_after, f.Size());
  return result;
}

Result<ResizeResult> ResizeImage(const std::string& path, uint64_t new_size, const ResizeOptions& options) {
  OpenOptions open_options;
  open_options.read_only = false;
  open_options.parent_dirs = options.parent_dirs;
  VHDX_ASSIGN_OR_RETURN(std::unique_ptr<Image> image, Image::Open(path, open_options));
  auto resized = ResizeImage(std::move(image), new_size, options);
  if (!resized.ok()) return Named(path, resized.status());
  return resized;
}

Result<ResizeResult> ResizeImage(std::unique_ptr<Image> image, uint64_t new_size, const ResizeOptions& options) {
  const ImageInfo& info = image->info();
  const uint64_t old_size = info.virtual_size;
  auto refuse = [&](std::string why) { return Status(Errc::kInvalidArgument, std::move(why)); };
  if (info.type == DiskType::kDifferencing && image->parent() == nullptr)
    return refuse("a differencing image is resized with its parent (opened read-only) to check the size");
  if (new_size == 0) return refuse("the new size is 0 bytes");
  if (new_size % info.logical_sector_size != 0)
    return refuse(fmt::format("the new size {} is not a multiple of the logical sector size ({} bytes)",
                              new_size, info.logical_sector_size));
  if (new_size > kMaxVirtualSize)
    return refuse(fmt::format("the new size {} is larger than VHDX's maximum of 64 TiB", new_size));
  if (new_size < old_size && !options.shrink)
    return refuse(fmt::format("the new size {} is smaller than the current {} bytes; use --shrink to "
                              "shrink (data past the new end is lost)",
                              new_size, old_size));
  if (const Image* parent = image->parent()) {
    const uint64_t parent_size = parent->virtual_size();
    if (new_size < old_size && new_size < parent_size)
      return refuse(fmt::format("a differencing image cannot shrink below its parent's size ({} bytes): "
                                "growing it again would show the parent's data there",
                                parent_size));
    if (new_size > old_size && parent_size > old_size)
      return refuse(fmt::format("the parent ({} bytes) is larger than this differencing image ({} bytes): "
                                "growing it would show the parent's data instead of zeros",
                                parent_size, old_size));
  }
  return static_cast<ImageImpl*>(image.get())->ResizeAndClose(new_size, options);
}

}  // namespace vhdx
