// Whole-image operations: create, check, convert, commit, rebase, resize,
// compact, repair. Each runs with the GIL released; a progress callable is
// called back with it held (Progress).
#include <string>

#include "disk.h"
#include "vhdx/chain.h"
#include "vhdx/compact.h"
#include "vhdx/convert.h"
#include "vhdx/create.h"
#include "vhdx/repair.h"
#include "vhdx/resize.h"

namespace vhdx::py_binding {
namespace {

// Runs fn() -> Status or Result<T> without the GIL.
template <typename Fn>
auto WithoutGil(Fn&& fn) {
  py::gil_scoped_release nogil;
  return fn();
}

DiskType ParseDiskType(const std::string& type) {
  if (type == "dynamic") return DiskType::kDynamic;
  if (type == "fixed") return DiskType::kFixed;
  RaiseStatus(Status(Errc::kInvalidArgument, "type must be 'dynamic' or 'fixed', not '" + type + "'"));
}

CreateOptions MakeCreateOptions(const std::string& type, uint64_t size, uint32_t block_size,
                                uint32_t logical_sector_size, uint32_t physical_sector_size) {
  CreateOptions o;
  o.type = ParseDiskType(type);
  o.virtual_size = size;
  o.block_size = block_size;
  o.logical_sector_size = logical_sector_size;
  o.physical_sector_size = physical_sector_size;
  return o;
}

void Create(py::handle path, uint64_t size, const std::string& type, uint32_t block_size,
            uint32_t logical_sector_size, uint32_t physical_sector_size, py::handle parent,
            py::handle parent_dirs) {
  CreateOptions o = MakeCreateOptions(type, size, block_size, logical_sector_size, physical_sector_size);
  if (!parent.is_none()) o.parent_path = PathArg(parent);
  o.parent_dirs = PathListArg(parent_dirs);
  const std::string file = PathArg(path);
  ThrowIfError(WithoutGil([&] { return CreateImage(file, o); }));
}

py::dict CheckPath(py::handle path, bool force_share) {
  const std::string file = PathArg(path);
  return CheckReportDict(ValueOrRaise(WithoutGil([&] { return vhdx::Check(file, force_share); })));
}

SourceFormat ParseSourceFormat(const std::string& f) {
  if (f == "detect") return SourceFormat::kDetect;
  if (f == "raw") return SourceFormat::kRaw;
  if (f == "vhdx") return SourceFormat::kVhdx;
  RaiseStatus(Status(Errc::kInvalidArgument, "source_format must be 'detect', 'raw' or 'vhdx', not '" + f + "'"));
}

void Convert(py::handle src, py::handle dst, const std::string& format, const std::string& source_format,
             const std::string& type, uint64_t virtual_size, uint32_t block_size, uint32_t logical_sector_size,
             uint32_t physical_sector_size, py::handle parent_dirs, bool sync, py::object progress) {
  if (format != "vhdx" && format != "raw")
    RaiseStatus(Status(Errc::kInvalidArgument, "format must be 'vhdx' or 'raw', not '" + format + "'"));
  const SourceFormat sf = ParseSourceFormat(source_format);
  CreateOptions create = MakeCreateOptions(type, virtual_size, block_size, logical_sector_size,
                                           physical_sector_size);
  OpenOptions open;
  open.parent_dirs = PathListArg(parent_dirs);
  const std::string from = PathArg(src), to = PathArg(dst);
  Progress p(std::move(progress));
  ConvertOptions options;
  options.progress = p.Callback();
  options.sync = sync;
  Status status = WithoutGil([&]() -> Status {
    auto source = ConvertSource::Open(from, sf, open);
    if (!source.ok()) return source.status();
    if (format == "vhdx") return ConvertToVhdx(*source, to, create, options);
    // As `vhdx convert -O raw` (tools/vhdx/convert.cc): a new sparse file.
    if (source->IsSameFileAs(to)) return Status(Errc::kInvalidArgument, to + ": is the source itself");
    auto out = CreatePosixFile(to);
    if (!out.ok()) return out.status();
    return ConvertToRaw(*source, **out, options);
  });
  p.RethrowIfFailed();
  ThrowIfError(status);
}

py::dict Commit(py::handle child, py::handle parent_dirs, bool keep_child, py::object progress) {
  CommitOptions o;
  o.parent_dirs = PathListArg(parent_dirs);
  o.keep_child = keep_child;
  Progress p(std::move(progress));
  o.progress = p.Callback();
  const std::string file = PathArg(child);
  auto result = WithoutGil([&] { return CommitImage(file, o); });
  p.RethrowIfFailed();
  CommitResult r = ValueOrRaise(std::move(result));
  py::dict d;
  d["parent_path"] = Text(r.parent_path);
  d["bytes_copied"] = r.bytes_copied;
  return d;
}

void Rebase(py::handle child, py::handle new_parent, py::handle parent_dirs, bool force) {
  RebaseOptions o;
  o.parent_dirs = PathListArg(parent_dirs);
  o.force = force;
  const std::string file = PathArg(child), parent = PathArg(new_parent);
  ThrowIfError(WithoutGil([&] { return RebaseImage(file, parent, o); }));
}

py::dict Resize(py::handle path, uint64_t size, bool shrink, py::handle parent_dirs, py::object progress) {
  ResizeOptions o;
  o.parent_dirs = PathListArg(parent_dirs);
  o.shrink = shrink;
  Progress p(std::move(progress));
  o.progress = p.Callback();
  const std::string file = PathArg(path);
  auto result = WithoutGil([&] { return ResizeImage(file, size, o); });
  p.RethrowIfFailed();
  ResizeResult r = ValueOrRaise(std::move(result));
  py::dict d;
  d["old_size"] = r.old_size;
  d["new_size"] = r.new_size;
  d["file_size_before"] = r.file_size_before;
  d["file_size_after"] = r.file_size_after;
  d["bat_relocated"] = r.bat_relocated;
  d["bat_offset"] = r.bat_offset;
  d["blocks_allocated"] = r.blocks_allocated;
  d["blocks_freed"] = r.blocks_freed;
  return d;
}

py::dict Compact(py::handle path, bool dry_run, bool file_system, py::handle parent_dirs, py::object progress) {
  CompactOptions o;
  o.parent_dirs = PathListArg(parent_dirs);
  o.dry_run = dry_run;
  o.file_system = file_system;
  Progress p(std::move(progress));
  o.progress = p.Callback();
  const std::string file = PathArg(path);
  auto result = WithoutGil([&] { return CompactImage(file, o); });
  p.RethrowIfFailed();
  CompactResult r = ValueOrRaise(std::move(result));
  py::dict d;
  d["file_size_before"] = r.file_size_before;
  d["file_size_after"] = r.file_size_after;
  d["blocks_scanned"] = r.blocks_scanned;
  d["blocks_zero"] = r.blocks_zero;
  d["blocks_fs_free"] = r.blocks_fs_free;
  d["file_systems_read"] = r.file_systems_read;
  py::list notices;
  for (const auto& n : r.notices) notices.append(Text(n));
  d["notices"] = notices;
  d["stale_offsets"] = r.stale_offsets;
  d["blocks_moved"] = r.blocks_moved;
  d["bytes_moved"] = r.bytes_moved;
  d["dry_run"] = r.dry_run;
  return d;
}

py::dict Repair(py::handle path, const std::string& mode, bool force_share) {
  RepairMode m;
  if (mode == "all") {
    m = RepairMode::kAll;
  } else if (mode == "leaks") {
    m = RepairMode::kLeaks;
  } else if (mode == "none") {
    m = RepairMode::kNone;
  } else {
    RaiseStatus(Status(Errc::kInvalidArgument, "mode must be 'all', 'leaks' or 'none', not '" + mode + "'"));
  }
  const std::string file = PathArg(path);
  RepairReport r = ValueOrRaise(WithoutGil([&] { return CheckAndRepair(file, m, force_share); }));
  py::dict d;
  d["before"] = CheckReportDict(r.before);
  d["after"] = CheckReportDict(r.after);
  py::list actions, left;
  for (const auto& a : r.actions) {
    py::dict x;
    x["structure"] = Text(a.structure);
    x["offset"] = a.offset;
    x["action"] = Text(a.action);
    x["data_lost"] = a.data_lost;
    x["leak"] = a.leak;
    actions.append(x);
  }
  for (const auto& f : r.not_repaired) left.append(FindingDict(f));
  d["actions"] = actions;
  d["not_repaired"] = left;
  d["log_entries_replayed"] = r.log_entries_replayed;
  d["corruptions"] = r.corruptions;
  d["leaks"] = r.leaks;
  d["corruptions_fixed"] = r.corruptions_fixed;
  d["leaks_fixed"] = r.leaks_fixed;
  d["image_end_offset"] = r.image_end_offset;
  return d;
}

}  // namespace

void RegisterOperations(py::module_& m) {
  // Defaults live in python/vhdx/__init__.py, which documents them; the
  // extension takes every argument explicitly.
  m.def("_create", &Create);
  m.def("_check", &CheckPath);
  m.def("_convert", &Convert);
  m.def("_commit", &Commit);
  m.def("_rebase", &Rebase);
  m.def("_resize", &Resize);
  m.def("_compact", &Compact);
  m.def("_repair", &Repair);
}

}  // namespace vhdx::py_binding
