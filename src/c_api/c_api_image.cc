// The C API on an open image (include/vhdx/vhdx.h): open, create, close,
// info, read, write, discard, write-zeroes, flush, map.
#include <cstring>
#include <vector>

#include "c_api/c_api_internal.h"
#include "vhdx/create.h"
#include "vhdx/json.h"

using namespace vhdx::capi;  // NOLINT: the extern "C" functions below only
using vhdx::Errc;
using vhdx::Status;

namespace {

// Messages about an open image name its file, as the CLI's do.
Status OnImage(const vhdx_image* image, const Status& status) { return InFile(image->filename, status); }

}  // namespace

extern "C" {

vhdx_status vhdx_open(const char* path, const vhdx_open_options* options, vhdx_image** out) noexcept {
  if (out) *out = nullptr;
  return Run("vhdx_open", [&]() -> Status {
    if (!path) return NullArgument("path");
    if (!out) return NullArgument("out");
    const vhdx_open_options defaults{};
    const vhdx_open_options& o = options ? *options : defaults;
    vhdx::OpenOptions opts;
    opts.read_only = !o.read_write;
    opts.direct_io = o.direct_io;
    opts.force_share = o.force_share;
    if (o.parent_path) opts.parent_path = o.parent_path;
    auto dirs = Dirs(o.parent_dirs, o.parent_dir_count);
    if (!dirs.ok()) return dirs.status();
    opts.parent_dirs = std::move(dirs).value();
    opts.ignore_parent_linkage = o.ignore_parent_linkage;
    opts.skip_parent = o.skip_parent;
    auto opened = vhdx::Image::Open(path, opts);
    if (!opened.ok()) return InFile(path, opened.status());
    auto handle = std::make_unique<vhdx_image>();
    handle->image = std::move(opened).value();
    const vhdx::ImageInfo& info = handle->image->info();
    handle->filename = info.filename;
    handle->creator = info.creator;
    handle->parent_filename = info.parent_filename;
    *out = handle.release();
    return Status::Ok();
  });
}

vhdx_status vhdx_close(vhdx_image* image) noexcept {
  if (!image) return Finish(NullArgument("image"));
  vhdx_status st = Run("vhdx_close", [&] { return OnImage(image, image->image->Close()); });
  // The destructor of a closed Image does no I/O that could throw.
  delete image;
  return st;
}

vhdx_status vhdx_create(const char* path, const vhdx_create_options* options) noexcept {
  return Run("vhdx_create", [&]() -> Status {
    if (!path) return NullArgument("path");
    if (!options) return NullArgument("options");
    const vhdx_create_options& o = *options;
    vhdx::CreateOptions c;
    switch (EnumValue(o.type)) {
      case VHDX_DISK_DYNAMIC: c.type = vhdx::DiskType::kDynamic; break;
      case VHDX_DISK_FIXED: c.type = vhdx::DiskType::kFixed; break;
      case VHDX_DISK_DIFFERENCING: c.type = vhdx::DiskType::kDifferencing; break;
      default: return Status(Errc::kInvalidArgument, "options->type is not a vhdx_disk_type");
    }
    // The C++ API takes a parent path as "make a child" whatever the type;
    // here the two must agree, so a stray field is caught, not obeyed.
    if (c.type == vhdx::DiskType::kDifferencing && !o.parent_path)
      return NullArgument("options->parent_path (a differencing image needs its parent)");
    if (c.type != vhdx::DiskType::kDifferencing && o.parent_path)
      return Status(Errc::kInvalidArgument, "options->parent_path is given for a type other than differencing");
    c.virtual_size = o.virtual_size;
    if (o.block_size) c.block_size = o.block_size;
    if (o.logical_sector_size) c.logical_sector_size = o.logical_sector_size;
    if (o.physical_sector_size) c.physical_sector_size = o.physical_sector_size;
    if (o.parent_path) c.parent_path = o.parent_path;
    auto dirs = Dirs(o.parent_dirs, o.parent_dir_count);
    if (!dirs.ok()) return dirs.status();
    c.parent_dirs = std::move(dirs).value();
    return InFile(path, vhdx::CreateImage(path, c));
  });
}

vhdx_status vhdx_get_info(const vhdx_image* image, vhdx_info* out) noexcept {
  return Run("vhdx_get_info", [&]() -> Status {
    if (!image) return NullArgument("image");
    if (!out) return NullArgument("out");
    const vhdx::ImageInfo& i = image->image->info();
    vhdx_info r{};
    r.filename = image->filename.c_str();
    r.creator = image->creator.c_str();
    r.parent_filename = image->parent_filename.c_str();
    r.type = i.type == vhdx::DiskType::kFixed          ? VHDX_DISK_FIXED
             : i.type == vhdx::DiskType::kDifferencing ? VHDX_DISK_DIFFERENCING
                                                       : VHDX_DISK_DYNAMIC;
    r.virtual_size = i.virtual_size;
    r.block_size = i.block_size;
    r.logical_sector_size = i.logical_sector_size;
    r.physical_sector_size = i.physical_sector_size;
    r.file_size = i.file_size;
    std::memcpy(r.virtual_disk_id, i.virtual_disk_id.bytes.data(), 16);
    const std::string id = i.virtual_disk_id.ToString();
    std::memcpy(r.virtual_disk_id_text, id.c_str(), std::min(id.size() + 1, sizeof r.virtual_disk_id_text));
    r.virtual_disk_id_text[sizeof r.virtual_disk_id_text - 1] = '\0';
    std::memcpy(r.data_write_guid, i.headers[i.current_header & 1].data_write_guid.bytes.data(), 16);
    r.log_dirty = i.log.dirty;
    r.bat_entries = i.bat_entries;
    r.payload_blocks = i.payload_blocks;
    r.chunk_ratio = i.chunk_ratio;
    for (const vhdx::Image* p = image->image->parent(); p; p = p->parent()) ++r.chain_depth;
    *out = r;
    return Status::Ok();
  });
}

vhdx_status vhdx_info_json(const vhdx_image* image, bool backing_chain, char** json_out) noexcept {
  if (json_out) *json_out = nullptr;
  return Run("vhdx_info_json", [&]() -> Status {
    if (!image) return NullArgument("image");
    if (!json_out) return NullArgument("json_out");
    // As `vhdx info`: a summary of each image shown, the failure of one
    // naming that image's file.
    std::vector<vhdx::InfoSummary> shown;
    for (const vhdx::Image* level = image->image.get(); level; level = backing_chain ? level->parent() : nullptr) {
      auto summary = vhdx::SummarizeImage(*level);
      if (!summary.ok()) return InFile(level->info().filename, summary.status());
      shown.push_back(*summary);
    }
    return MallocString(backing_chain ? vhdx::InfoJson(shown) : vhdx::InfoJson(shown[0]), json_out);
  });
}

vhdx_status vhdx_read(const vhdx_image* image, uint64_t offset, void* buf, size_t n) noexcept {
  return Run("vhdx_read", [&]() -> Status {
    if (!image) return NullArgument("image");
    if (!buf && n) return NullArgument("buf");
    return OnImage(image, image->image->Read(offset, buf, n));
  });
}

vhdx_status vhdx_write(vhdx_image* image, uint64_t offset, const void* buf, size_t n, unsigned flags) noexcept {
  return Run("vhdx_write", [&]() -> Status {
    if (!image) return NullArgument("image");
    if (!buf && n) return NullArgument("buf");
    if (flags & ~VHDX_WRITE_FUA) return Status(Errc::kInvalidArgument, "flags: unknown bits set");
    vhdx::WriteOptions w;
    w.fua = flags & VHDX_WRITE_FUA;
    return OnImage(image, image->image->Write(offset, buf, n, w));
  });
}

vhdx_status vhdx_discard(vhdx_image* image, uint64_t offset, uint64_t length) noexcept {
  return Run("vhdx_discard", [&]() -> Status {
    if (!image) return NullArgument("image");
    return OnImage(image, image->image->Discard(offset, length));
  });
}

vhdx_status vhdx_write_zeroes(vhdx_image* image, uint64_t offset, uint64_t length, bool may_unmap) noexcept {
  return Run("vhdx_write_zeroes", [&]() -> Status {
    if (!image) return NullArgument("image");
    return OnImage(image, image->image->WriteZeroes(offset, length, may_unmap));
  });
}

vhdx_status vhdx_flush(vhdx_image* image) noexcept {
  return Run("vhdx_flush", [&]() -> Status {
    if (!image) return NullArgument("image");
    return OnImage(image, image->image->Flush());
  });
}

vhdx_status vhdx_map(const vhdx_image* image, uint64_t start, uint64_t length, vhdx_map_fn fn,
                     void* user) noexcept {
  return Run("vhdx_map", [&]() -> Status {
    if (!image) return NullArgument("image");
    if (!fn) return NullArgument("fn");
    return OnImage(image, image->image->Map(start, length, [&](const vhdx::MapExtent& e) {
      vhdx_extent c{};
      c.start = e.start;
      c.length = e.length;
      c.depth = e.depth;
      c.present = e.present;
      c.zero = e.zero;
      c.data = e.data;
      c.has_offset = e.offset.has_value();
      c.offset = e.offset.value_or(0);
      return fn(&c, user) == 0;
    }));
  });
}

}  // extern "C"
