// Image: open (validate every structure, replay a dirty log in memory), then
// read through the paged BAT. Maps: image_map.cc; the parent chain:
// image_open_chain.cc.
#include "vhdx/image.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "format/constants.h"
#include "header_writer.h"
#include "image_impl.h"
#include "image_loader.h"
#include "image_util.h"
#include "util/coding.h"

namespace vhdx {

using namespace format;

const char* DiskTypeName(DiskType t) {
  switch (t) {
    case DiskType::kFixed: return "fixed";
    case DiskType::kDynamic: return "dynamic";
    case DiskType::kDifferencing: return "differencing";
  }
  return "unknown";
}

const char* BlockStateName(unsigned s) {
  switch (s) {
    case 0: return "not_present";
    case 1: return "undefined";
    case 2: return "zero";
    case 3: return "unmapped";
    case 6: return "fully_present";
    case 7: return "partially_present";
    default: return "reserved";
  }
}

std::optional<std::string> ParentLocatorInfo::Get(const std::string& key) const {
  for (const auto& [k, v] : entries)
    if (k == key) return v;
  return std::nullopt;
}

const char* Version() { return "0.1.0"; }

namespace {

HeaderInfo ToInfo(const Header& h, const Status& problem) {
  HeaderInfo i;
  i.valid = problem.ok();
  i.problem = problem.message();
  i.sequence_number = h.sequence_number;
  i.file_write_guid = h.file_write_guid;
  i.data_write_guid = h.data_write_guid;
  i.log_guid = h.log_guid;
  i.log_version = h.log_version;
  i.version = h.version;
  i.log_length = h.log_length;
  i.log_offset = h.log_offset;
  return i;
}

}  // namespace

Result<std::unique_ptr<Image>> ImageImpl::Open(std::unique_ptr<File> file, bool read_only) {
  auto img = std::make_unique<ImageImpl>();
  File& f = *file;
  img->physical_ = std::move(file);
  ImageInfo& info = img->info_;
  info.filename = f.name();

  VHDX_ASSIGN_OR_RETURN(uint64_t physical_size, f.Size());
  if (physical_size < kHeaderSectionSize) {
    uint8_t sig[8] = {};
    VHDX_ASSIGN_OR_RETURN(size_t got, f.ReadAt(0, sig, 8));
    if (got < 8 || std::memcmp(sig, kFileSignature, 8) != 0)
      return Status(Errc::kCorrupt, "file type identifier at offset 0x0: signature is not 'vhdxfile' "
                                    "(not a VHDX image)");
    return Status(Errc::kCorrupt, fmt::format("file is {} bytes, shorter than the 1 MiB header "
                                              "section (truncated)",
                                              physical_size));
  }
  std::vector<uint8_t> ident(520);
  VHDX_RETURN_IF_ERROR(ReadExact(f, 0, ident.data(), ident.size(), "file type identifier"));
  FileIdentifier id;
  VHDX_RETURN_IF_ERROR(ParseFileIdentifier(ident.data(), &id));
  info.creator = id.creator;

  VHDX_ASSIGN_OR_RETURN(HeaderSet headers, LoadHeaders(f));
  for (int i = 0; i < 2; ++i) info.headers[i] = ToInfo(headers.headers[i], headers.problems[i]);
  if (headers.current < 0) return headers.choice;
  if (!read_only) {
    // A read-write open applies a dirty log to the file first (§7.5, §8.1);
    // read-only opens replay it in memory below instead.
    VHDX_ASSIGN_OR_RETURN(size_t replayed, ReplayLogInPlace(f, &headers));
    info.log.replayed_entries = static_cast<uint32_t>(replayed);
    if (replayed) {
      VHDX_ASSIGN_OR_RETURN(physical_size, f.Size());
      for (int i = 0; i < 2; ++i) info.headers[i] = ToInfo(headers.headers[i], headers.problems[i]);
    }
  }
  info.current_header = headers.current;
  img->writable_ = !read_only;
  const Header& h = headers.Current();

  VHDX_ASSIGN_OR_RETURN(LogState log, LoadLog(f, h, physical_size));
  info.log.offset = h.log_offset;
  info.log.length = h.log_length;
  info.log.dirty = log.dirty;
  img->view_ = &f;
  img->file_size_ = physical_size;
  if (log.active) {
    info.log.active_entries = static_cast<uint32_t>(log.active->entries.size());
    info.log.active_descriptors = static_cast<uint32_t>(log.active->ops.size());
    info.log.head_sequence_number = log.active->entries.back().header.sequence_number;
    // Read-only: replay in memory, never touch the file (digest §7.6).
    img->overlay_ = std::make_unique<ReplayOverlayFile>(f, h.log_offset, *log.active, physical_size);
    img->view_ = img->overlay_.get();
    VHDX_ASSIGN_OR_RETURN(img->file_size_, img->overlay_->Size());
  }
  const File& view = *img->view_;
  info.file_size = img->file_size_;
  img->open_file_size_ = img->file_size_;

  VHDX_ASSIGN_OR_RETURN(RegionSet regions, LoadRegions(view));
  info.region_table_used = regions.used;
  for (const auto& r : regions.table.entries) {
    RegionInfo ri{r.guid,
                  r.guid == kBatRegionGuid        ? "bat"
                  : r.guid == kMetadataRegionGuid ? "metadata"
                                                  : "unknown",
                  r.file_offset, r.length, r.required != 0};
    info.regions.push_back(ri);
  }
  VHDX_ASSIGN_OR_RETURN(img->reserved_, PlaceStructures(h, regions.table, img->file_size_));
  const RegionEntry& bat_region = *regions.table.Find(kBatRegionGuid);
  const RegionEntry& meta_region = *regions.table.Find(kMetadataRegionGuid);

  VHDX_ASSIGN_OR_RETURN(MetadataSet meta, LoadMetadata(view, meta_region));
  for (const auto& e : meta.table.entries) {
    const char* name = e.is_user() ? nullptr : SystemItemName(e.item_id);
    info.metadata_items.push_back({e.item_id, name ? name : (e.is_user() ? "user" : "unknown"),
                                   e.offset, e.length, e.is_user(),
                                   (e.flags & kMetaIsVirtualDisk) != 0, e.is_required()});
  }
  info.virtual_size = meta.virtual_size;
  info.block_size = meta.params.block_size;
  info.logical_sector_size = meta.logical_sector_size;
  info.physical_sector_size = meta.physical_sector_size;
  info.virtual_disk_id = meta.virtual_disk_id;
  info.type = meta.params.has_parent              ? DiskType::kDifferencing
              : meta.params.leave_block_allocated ? DiskType::kFixed
                                                  : DiskType::kDynamic;
  if (meta.parent) info.parent = ParentLocatorInfo{meta.parent->locator_type, meta.parent->entries};
  img->locator_ = meta.parent;
  img->meta_region_offset_ = meta.region_offset;
  img->meta_region_length_ = meta.region_length;
  img->meta_table_ = meta.table;

  VHDX_ASSIGN_OR_RETURN(img->geo_, Geometry::Make(meta.virtual_size, meta.params.block_size,
                                                  meta.logical_sector_size, meta.params.has_parent));
  const Geometry& g = img->geo_;
  if (bat_region.length < g.total_entries * 8)
    return Status(Errc::kCorrupt, fmt::format("BAT region at offset {:#x}: length {:#x} is too small "
                                              "for {} entries",
                                              bat_region.file_offset, bat_region.length,
                                              g.total_entries));
  info.bat_offset = bat_region.file_offset;
  info.bat_entries = g.total_entries;
  info.payload_blocks = g.payload_blocks;
  info.chunk_ratio = static_cast<uint32_t>(g.chunk_ratio);
  img->bat_ = std::make_unique<BatCache>(view, bat_region.file_offset, g.total_entries);
  if (g.has_parent) {
    img->bitmaps_ = std::make_unique<SectorBitmapCache>(view);
    if (read_only) img->known_bitmaps_ = std::make_unique<std::atomic<uint64_t>[]>(g.bitmap_blocks);
  }
  img->headers_ = std::move(headers);
  return std::unique_ptr<Image>(std::move(img));
}

Status ImageImpl::ParentNeeded() const {
  std::string parent = "(no path in the parent locator)";
  if (info_.parent) {
    for (const char* key : {"relative_path", "absolute_win32_path", "volume_path"})
      if (auto v = info_.parent->Get(key)) {
        parent = "'" + *v + "'";
        break;
      }
  }
  return Status(Errc::kUnsupported,
                fmt::format("differencing image opened without its parent {}: its content depends "
                            "on the parent",
                            parent));
}

Status ImageImpl::ReadParent(uint64_t offset, uint8_t* out, size_t n) const {
  if (!parent_) return ParentNeeded();
  const uint64_t psize = parent_->virtual_size();
  size_t k = offset < psize ? static_cast<size_t>(std::min<uint64_t>(n, psize - offset)) : 0;
  if (k) VHDX_RETURN_IF_ERROR(parent_->Read(offset, out, k));
  if (k < n) std::memset(out + k, 0, n - k);  // a child larger than its parent
  return Status::Ok();
}

Result<uint64_t> ImageImpl::BitmapOf(uint64_t b) const {
  const uint64_t chunk = b / geo_.chunk_ratio;
  if (known_bitmaps_) {
    if (uint64_t known = known_bitmaps_[chunk].load(std::memory_order_relaxed)) return known;
  }
  const uint64_t index = geo_.BitmapIndex(chunk);
  VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
  BatEntry sb = BatEntry::Decode(raw);
  if (sb.state != kSectorBitmapPresent)
    return Status(Errc::kCorrupt, fmt::format("BAT entry {} (sector bitmap of chunk {}): state {}, "
                                              "not SB_BLOCK_PRESENT, but payload block {} is "
                                              "PARTIALLY_PRESENT",
                                              index, chunk, sb.state, b));
  VHDX_RETURN_IF_ERROR(CheckAllocatedEntry(index, sb, MiB, file_size_, reserved_,
                                           EntryLabel{.kind = "sector bitmap of chunk", .block = chunk}));
  if (known_bitmaps_) known_bitmaps_[chunk].store(sb.file_offset, std::memory_order_relaxed);
  return sb.file_offset;
}

Status ImageImpl::ReadPartial(uint64_t b, const BatEntry& e, uint64_t in_block, uint8_t* out,
                              size_t n) const {
  VHDX_ASSIGN_OR_RETURN(uint64_t sb, BitmapOf(b));
  const uint64_t ss = geo_.logical_sector_size;
  const uint64_t s0 = in_block / ss, s1 = (in_block + n - 1) / ss;
  // One read per run of equal bits of the sectors touched.
  const uint64_t end = in_block + n;
  uint64_t sector = s0;
  Status st;
  VHDX_RETURN_IF_ERROR(bitmaps_->ForEachRun(sb, FirstBit(b) + s0, s1 - s0 + 1, [&](bool present,
                                                                                 uint64_t count) {
    const uint64_t a = std::max(in_block, sector * ss);
    const uint64_t z = std::min(end, (sector + count) * ss);
    sector += count;
    if (!st.ok()) return;
    uint8_t* dst = out + (a - in_block);
    st = present ? ReadExact(*view_, e.file_offset + a, dst, z - a, "payload block")
                 : ReadParent(b * geo_.block_size + a, dst, z - a);
  }));
  return st;
}

Status ImageImpl::CheckRange(uint64_t offset, uint64_t n, const char* op) const {
  if (offset > info_.virtual_size || n > info_.virtual_size - offset)
    return Status(Errc::kOutOfRange, fmt::format("{} of {} bytes at offset {:#x} is beyond the "
                                                 "virtual disk size {}",
                                                 op, n, offset, info_.virtual_size));
  return Status::Ok();
}

Status ImageImpl::CheckPayload(uint64_t b, const BatEntry& e) const {
  uint64_t used = std::min<uint64_t>(geo_.block_size, geo_.virtual_size - b * geo_.block_size);
  return CheckAllocatedEntry(geo_.PayloadIndex(b), e, used, file_size_, reserved_, EntryLabel{.block = b});
}

Status ImageImpl::Read(uint64_t offset, void* buf, size_t n) const {
  VHDX_RETURN_IF_ERROR(CheckRange(offset, n, "read"));
  if (geo_.has_parent && !parent_) return ParentNeeded();
  auto* out = static_cast<uint8_t*>(buf);
  while (n > 0) {
    uint64_t b = offset / geo_.block_size;
    uint64_t in_block = offset % geo_.block_size;
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, geo_.block_size - in_block));
    // Block states change only in a writable image (parents never are).
    std::shared_lock<std::shared_mutex> lock;
    if (writable_) lock = std::shared_lock(BlockLock(b));
    VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(geo_.PayloadIndex(b)));
    BatEntry e = BatEntry::Decode(raw);
    switch (e.state) {
      case kPayloadFullyPresent:
        VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
        VHDX_RETURN_IF_ERROR(ReadExact(*view_, e.file_offset + in_block, out, k, "payload block"));
        break;
      case kPayloadNotPresent:
        if (geo_.has_parent) {
          VHDX_RETURN_IF_ERROR(ReadParent(offset, out, k));
          break;
        }
        std::memset(out, 0, k);
        break;
      case kPayloadPartiallyPresent:
        if (!geo_.has_parent) return BadState(geo_, b, e);
        VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
        VHDX_RETURN_IF_ERROR(ReadPartial(b, e, in_block, out, k));
        break;
      case kPayloadUndefined:
      case kPayloadZero:
      case kPayloadUnmapped:
        std::memset(out, 0, k);  // never stale data (digest §5.5 reader table)
        break;
      default:
        return BadState(geo_, b, e);
    }
    out += k;
    offset += k;
    n -= k;
  }
  return Status::Ok();
}

}  // namespace vhdx
