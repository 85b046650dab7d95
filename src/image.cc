// Image: open (validate every structure, replay a dirty log in memory), then
// read and map through the paged BAT.
#include "vhdx/image.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "format/constants.h"
#include "header_writer.h"
#include "image_impl.h"
#include "image_loader.h"
#include "util/coding.h"

namespace vhdx {

using namespace format;

const char* ErrcName(Errc code) {
  switch (code) {
    case Errc::kOk: return "ok";
    case Errc::kIoError: return "I/O error";
    case Errc::kCorrupt: return "corrupt image";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kInvalidArgument: return "invalid argument";
    case Errc::kNotFound: return "not found";
    case Errc::kReadOnly: return "read-only";
    case Errc::kNoSpace: return "no space left";
    case Errc::kOutOfRange: return "out of range";
  }
  return "unknown";
}

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
                fmt::format("differencing image: its content depends on the parent image {}, and "
                            "reading through parents is not supported yet",
                            parent));
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

namespace {
Status BadState(const Geometry& g, uint64_t b, const BatEntry& e) {
  const char* why = e.state == kPayloadPartiallyPresent
                        ? "PARTIALLY_PRESENT is only valid in a differencing image"
                        : "reserved state";
  return Status(Errc::kCorrupt, fmt::format("BAT entry {} (payload block {}): state {} ({})",
                                            g.PayloadIndex(b), b, e.state, why));
}
}  // namespace

Status ImageImpl::Read(uint64_t offset, void* buf, size_t n) const {
  VHDX_RETURN_IF_ERROR(CheckRange(offset, n, "read"));
  if (geo_.has_parent) return ParentNeeded();
  auto* out = static_cast<uint8_t*>(buf);
  while (n > 0) {
    uint64_t b = offset / geo_.block_size;
    uint64_t in_block = offset % geo_.block_size;
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, geo_.block_size - in_block));
    std::shared_lock lock(BlockLock(b));
    VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(geo_.PayloadIndex(b)));
    BatEntry e = BatEntry::Decode(raw);
    switch (e.state) {
      case kPayloadFullyPresent:
        VHDX_RETURN_IF_ERROR(CheckPayload(b, e));
        VHDX_RETURN_IF_ERROR(ReadExact(*view_, e.file_offset + in_block, out, k, "payload block"));
        break;
      case kPayloadNotPresent:
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

Status ImageImpl::Map(uint64_t start, uint64_t length,
                      const std::function<bool(const MapExtent&)>& sink) const {
  VHDX_RETURN_IF_ERROR(CheckRange(start, length, "map"));
  if (geo_.has_parent) return ParentNeeded();
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
  constexpr uint64_t kBatch = 65536;
  std::vector<uint64_t> entries;
  for (uint64_t b0 = first_block; b0 <= last_block && !stop; b0 += kBatch) {
    uint64_t b1 = std::min(last_block, b0 + kBatch - 1);
    uint64_t i0 = geo_.PayloadIndex(b0), i1 = geo_.PayloadIndex(b1);
    VHDX_RETURN_IF_ERROR(bat_->ReadRange(i0, i1 - i0 + 1, &entries));
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
          x.zero = true;  // nothing below a standalone image: reads as zeros
          break;
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
      else
        ++sum.payload[state];
    }
  }
  return sum;
}

size_t CheckReport::errors() const {
  return std::count_if(findings.begin(), findings.end(),
                       [](const CheckFinding& f) { return f.severity == CheckFinding::Severity::kError; });
}
size_t CheckReport::warnings() const { return findings.size() - errors(); }

Result<std::unique_ptr<Image>> Image::Open(std::unique_ptr<File> file, const OpenOptions& options) {
  if (!options.read_only && !file->writable())
    return Status(Errc::kReadOnly, "read-write open of a file that is open read-only");
  return ImageImpl::Open(std::move(file), options.read_only);
}

Result<std::unique_ptr<Image>> Image::Open(const std::string& path, const OpenOptions& options) {
  auto file = OpenPosixFile(path, !options.read_only, options.direct_io);
  if (!file.ok()) return file.status();
  return Open(std::move(file).value(), options);
}

}  // namespace vhdx
