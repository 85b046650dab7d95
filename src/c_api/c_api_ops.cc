// The C API's whole-file operations (include/vhdx/vhdx.h): check and
// repair, convert, commit, rebase, resize, compact. Each takes paths, opens
// what it needs and closes it before returning.
#include <unistd.h>

#include <cstring>
#include <functional>

#include "c_api/c_api_internal.h"
#include "vhdx/chain.h"
#include "vhdx/compact.h"
#include "vhdx/convert.h"
#include "vhdx/json.h"
#include "vhdx/repair.h"
#include "vhdx/resize.h"

using namespace vhdx::capi;  // NOLINT: the extern "C" functions below only
using vhdx::Errc;
using vhdx::Status;

namespace {

std::function<void(uint64_t, uint64_t)> Progress(vhdx_progress_fn fn, void* user) {
  if (!fn) return {};
  return [fn, user](uint64_t done, uint64_t total) { fn(done, total, user); };
}

}  // namespace

extern "C" {

vhdx_status vhdx_check(const char* path, const vhdx_check_options* options, vhdx_check_result* result,
                       char** json_out) noexcept {
  if (json_out) *json_out = nullptr;
  return Run("vhdx_check", [&]() -> Status {
    if (!path) return NullArgument("path");
    const vhdx_check_options defaults{};
    const vhdx_check_options& o = options ? *options : defaults;
    vhdx::CheckImageOptions c;
    switch (EnumValue(o.repair)) {
      case VHDX_REPAIR_NONE: c.mode = vhdx::RepairMode::kNone; break;
      case VHDX_REPAIR_LEAKS: c.mode = vhdx::RepairMode::kLeaks; break;
      case VHDX_REPAIR_ALL: c.mode = vhdx::RepairMode::kAll; break;
      default: return Status(Errc::kInvalidArgument, "options->repair is not a vhdx_repair_mode");
    }
    c.force_share = o.force_share;
    auto dirs = Dirs(o.parent_dirs, o.parent_dir_count);
    if (!dirs.ok()) return dirs.status();
    c.parent_dirs = std::move(dirs).value();
    auto checked = vhdx::CheckImage(path, c);
    if (!checked.ok()) return InFile(path, checked.status());
    const vhdx::RepairReport& rep = checked->report;
    if (json_out) {
      Status st = MallocString(vhdx::CheckJson(*checked), json_out);
      if (!st.ok()) return st;
    }
    if (result) {
      vhdx_check_result r{};
      r.errors = rep.after.errors();
      r.warnings = rep.after.warnings();
      r.corruptions = rep.after.corruptions();
      r.leaks = rep.after.leaked_units();
      r.corruptions_fixed = rep.corruptions_fixed;
      r.leaks_fixed = rep.leaks_fixed;
      r.image_end_offset = rep.image_end_offset;
      r.repairs = rep.actions.size();
      r.chain_ok = checked->chain_error.empty();
      *result = r;
    }
    return Status::Ok();
  });
}

vhdx_status vhdx_repair(const char* path, vhdx_repair_mode mode, vhdx_check_result* result,
                        char** json_out) noexcept {
  vhdx_check_options options{};
  std::memcpy(&options.repair, &mode, sizeof mode);  // any int: vhdx_check says whether it is a mode
  return vhdx_check(path, &options, result, json_out);
}

vhdx_status vhdx_convert(const char* source, const char* dest, const vhdx_convert_options* options) noexcept {
  return Run("vhdx_convert", [&]() -> Status {
    if (!source) return NullArgument("source");
    if (!dest) return NullArgument("dest");
    const vhdx_convert_options defaults{};
    const vhdx_convert_options& o = options ? *options : defaults;
    const int output_format = EnumValue(o.output_format);
    if (output_format != VHDX_FORMAT_DEFAULT && output_format != VHDX_FORMAT_RAW && output_format != VHDX_FORMAT_VHDX)
      return Status(Errc::kInvalidArgument, "options->output_format is not a vhdx_format");
    const bool to_vhdx = output_format != VHDX_FORMAT_RAW;
    vhdx::CreateOptions create;
    if (to_vhdx) {
      const int type = EnumValue(o.create.type);
      if (type != VHDX_DISK_DYNAMIC && type != VHDX_DISK_FIXED)
        return Status(Errc::kInvalidArgument, "options->create.type: convert makes dynamic or fixed images");
      if (o.create.parent_path || o.create.parent_dir_count)
        return Status(Errc::kInvalidArgument, "options->create: parent fields are for vhdx_create only");
      create.type = type == VHDX_DISK_FIXED ? vhdx::DiskType::kFixed : vhdx::DiskType::kDynamic;
      create.virtual_size = o.create.virtual_size;
      if (o.create.block_size) create.block_size = o.create.block_size;
      if (o.create.logical_sector_size) create.logical_sector_size = o.create.logical_sector_size;
      if (o.create.physical_sector_size) create.physical_sector_size = o.create.physical_sector_size;
    }
    // As the CLI: raw output reads VHDX only (a file that is not VHDX is an
    // error, not a copy); VHDX output also takes raw disks, probed.
    vhdx::SourceFormat format;
    switch (EnumValue(o.source_format)) {
      case VHDX_FORMAT_RAW: format = vhdx::SourceFormat::kRaw; break;
      case VHDX_FORMAT_VHDX: format = vhdx::SourceFormat::kVhdx; break;
      case VHDX_FORMAT_DEFAULT:
        format = to_vhdx ? vhdx::SourceFormat::kDetect : vhdx::SourceFormat::kVhdx;
        break;
      default: return Status(Errc::kInvalidArgument, "options->source_format is not a vhdx_format");
    }
    vhdx::OpenOptions open;
    auto dirs = Dirs(o.parent_dirs, o.parent_dir_count);
    if (!dirs.ok()) return dirs.status();
    open.parent_dirs = std::move(dirs).value();
    auto src = vhdx::ConvertSource::Open(source, format, open);
    if (!src.ok()) return InFile(source, src.status());
    if (src->IsSameFileAs(dest))
      return Status(Errc::kInvalidArgument, std::string(dest) + ": is the source file itself; not overwriting it");
    vhdx::ConvertOptions convert;
    convert.progress = Progress(o.progress, o.progress_user);
    convert.sync = !o.unsafe;
    if (to_vhdx) return InFile(source, vhdx::ConvertToVhdx(*src, dest, create, convert));
    auto out = vhdx::CreatePosixFile(dest);
    if (!out.ok()) return InFile(dest, out.status());
    Status st = vhdx::ConvertToRaw(*src, **out, convert);
    if (st.ok() && convert.sync) st = (*out)->Flush();
    if (!st.ok()) {
      // As ConvertToVhdx: no partial output is left behind.
      out->reset();
      ::unlink(dest);
      return InFile(source, st);
    }
    return Status::Ok();
  });
}

vhdx_status vhdx_commit(const char* child_path, const vhdx_commit_options* options, uint64_t* bytes_copied) noexcept {
  return Run("vhdx_commit", [&]() -> Status {
    if (!child_path) return NullArgument("child_path");
    const vhdx_commit_options defaults{};
    const vhdx_commit_options& o = options ? *options : defaults;
    vhdx::CommitOptions c;
    auto dirs = Dirs(o.parent_dirs, o.parent_dir_count);
    if (!dirs.ok()) return dirs.status();
    c.parent_dirs = std::move(dirs).value();
    c.keep_child = o.keep_child;
    c.progress = Progress(o.progress, o.progress_user);
    auto committed = vhdx::CommitImage(child_path, c);
    if (!committed.ok()) return InFile(child_path, committed.status());
    if (bytes_copied) *bytes_copied = committed->bytes_copied;
    return Status::Ok();
  });
}

vhdx_status vhdx_rebase(const char* child_path, const char* new_parent_path,
                        const vhdx_rebase_options* options) noexcept {
  return Run("vhdx_rebase", [&]() -> Status {
    if (!child_path) return NullArgument("child_path");
    if (!new_parent_path) return NullArgument("new_parent_path");
    const vhdx_rebase_options defaults{};
    const vhdx_rebase_options& o = options ? *options : defaults;
    vhdx::RebaseOptions r;
    auto dirs = Dirs(o.parent_dirs, o.parent_dir_count);
    if (!dirs.ok()) return dirs.status();
    r.parent_dirs = std::move(dirs).value();
    r.force = o.force;
    return InFile(child_path, vhdx::RebaseImage(child_path, new_parent_path, r));
  });
}

vhdx_status vhdx_resize(const char* path, uint64_t new_size, const vhdx_resize_options* options,
                        vhdx_resize_result* result) noexcept {
  return Run("vhdx_resize", [&]() -> Status {
    if (!path) return NullArgument("path");
    const vhdx_resize_options defaults{};
    const vhdx_resize_options& o = options ? *options : defaults;
    vhdx::ResizeOptions r;
    auto dirs = Dirs(o.parent_dirs, o.parent_dir_count);
    if (!dirs.ok()) return dirs.status();
    r.parent_dirs = std::move(dirs).value();
    r.shrink = o.shrink;
    r.progress = Progress(o.progress, o.progress_user);
    auto resized = vhdx::ResizeImage(path, new_size, r);
    if (!resized.ok()) return InFile(path, resized.status());
    if (result) {
      vhdx_resize_result out{};
      out.old_size = resized->old_size;
      out.new_size = resized->new_size;
      out.file_size_before = resized->file_size_before;
      out.file_size_after = resized->file_size_after;
      out.bat_relocated = resized->bat_relocated;
      *result = out;
    }
    return Status::Ok();
  });
}

vhdx_status vhdx_compact(const char* path, const vhdx_compact_options* options, vhdx_compact_result* result) noexcept {
  return Run("vhdx_compact", [&]() -> Status {
    if (!path) return NullArgument("path");
    const vhdx_compact_options defaults{};
    const vhdx_compact_options& o = options ? *options : defaults;
    vhdx::CompactOptions c;
    auto dirs = Dirs(o.parent_dirs, o.parent_dir_count);
    if (!dirs.ok()) return dirs.status();
    c.parent_dirs = std::move(dirs).value();
    c.dry_run = o.dry_run;
    c.file_system = !o.zero_blocks_only;
    c.progress = Progress(o.progress, o.progress_user);
    auto compacted = vhdx::CompactImage(path, c);
    if (!compacted.ok()) return InFile(path, compacted.status());
    if (result) {
      vhdx_compact_result out{};
      out.file_size_before = compacted->file_size_before;
      out.file_size_after = compacted->file_size_after;
      out.blocks_scanned = compacted->blocks_scanned;
      out.blocks_zero = compacted->blocks_zero;
      out.blocks_fs_free = compacted->blocks_fs_free;
      out.blocks_moved = compacted->blocks_moved;
      out.bytes_moved = compacted->bytes_moved;
      *result = out;
    }
    return Status::Ok();
  });
}

}  // extern "C"
