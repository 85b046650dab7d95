// Commit (merge) and rebase of differencing images (include/vhdx/chain.h).
#include "vhdx/chain.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <vector>

#include "image_impl.h"
#include "parent_paths.h"

namespace vhdx {

namespace {

Guid DataWriteGuid(const Image& image) {
  const ImageInfo& i = image.info();
  return i.headers[i.current_header].data_write_guid;
}

Status Named(const std::string& path, const Status& s) {
  if (s.ok()) return s;
  return Status(s.code(), fmt::format("{}: {}", path, s.message()));
}

}  // namespace

Result<CommitResult> CommitImage(const std::string& child_path, const CommitOptions& options) {
  OpenOptions child_options;
  child_options.read_only = false;
  child_options.parent_dirs = options.parent_dirs;
  VHDX_ASSIGN_OR_RETURN(std::unique_ptr<Image> child, Image::Open(child_path, child_options));
  if (child->info().type != DiskType::kDifferencing)
    return Status(Errc::kInvalidArgument, "not a differencing image: it has no parent to commit into");
  auto* child_impl = static_cast<ImageImpl*>(child.get());
  CommitResult result;
  result.parent_path = child->info().parent_filename;
  const uint64_t size = child->virtual_size();
  if (child->parent()->virtual_size() < size)
    return Status(Errc::kInvalidArgument,
                  fmt::format("the parent {} ({} bytes) is smaller than the child ({} bytes); it "
                              "cannot take the child's data",
                              result.parent_path, child->parent()->virtual_size(), size));

  OpenOptions parent_options;
  parent_options.read_only = false;
  parent_options.parent_dirs = options.parent_dirs;
  auto parent_opened = Image::Open(result.parent_path, parent_options);
  if (!parent_opened.ok()) return Named("parent " + result.parent_path, parent_opened.status());
  std::unique_ptr<Image> parent = std::move(parent_opened).value();
  auto* parent_impl = static_cast<ImageImpl*>(parent.get());

  // 1. The parent's DataWriteGuid-to-be goes into the child's second
  //    linkage slot (digest §4.7) before the parent changes: at every crash
  //    point below, one of the child's two linkage values matches.
  const Guid next = Guid::Random();
  format::ParentLocator locator = *child_impl->parent_locator();
  auto set_key = [&](const std::string& key, const std::string& value) {
    for (auto& [k, v] : locator.entries)
      if (k == key) {
        v = value;
        return;
      }
    locator.entries.emplace_back(key, value);
  };
  //    parent_linkage takes the parent's GUID as it is now: after an
  //    interrupted commit only the old parent_linkage2 names it.
  set_key("parent_linkage", fmt::format("{{{}}}", DataWriteGuid(*child->parent()).ToString()));
  set_key("parent_linkage2", fmt::format("{{{}}}", next.ToString()));
  VHDX_RETURN_IF_ERROR(child_impl->RewriteParentLocator(locator));

  // 2. Every range present in the child (depth 0) into the parent.
  parent_impl->SetNextDataWriteGuid(next);
  std::vector<MapExtent> extents;
  VHDX_RETURN_IF_ERROR(child->Map(0, size, [&](const MapExtent& x) {
    if (x.depth == 0 && x.present) extents.push_back(x);
    return true;
  }));
  constexpr uint64_t kPiece = 4u << 20;
  std::vector<uint8_t> buf(kPiece);
  for (const MapExtent& x : extents) {
    if (!x.data) {
      VHDX_RETURN_IF_ERROR(Named(result.parent_path, parent->WriteZeroes(x.start, x.length, true)));
      continue;
    }
    for (uint64_t off = x.start; off < x.start + x.length; off += kPiece) {
      const size_t k = static_cast<size_t>(std::min(kPiece, x.start + x.length - off));
      VHDX_RETURN_IF_ERROR(Named(child_path, child->Read(off, buf.data(), k)));
      VHDX_RETURN_IF_ERROR(Named(result.parent_path, parent->Write(off, buf.data(), k)));
      result.bytes_copied += k;
      if (options.progress) options.progress(std::min(off + k, size), size);
    }
  }
  // Durable, log applied, LogGuid clear.
  VHDX_RETURN_IF_ERROR(Named(result.parent_path, parent->Close()));

  // 3. The child follows the parent's DataWriteGuid as it now is (unchanged
  //    if nothing was written), and lets go of its blocks.
  set_key("parent_linkage", fmt::format("{{{}}}", DataWriteGuid(*parent).ToString()));
  set_key("parent_linkage2", "{00000000-0000-0000-0000-000000000000}");
  VHDX_RETURN_IF_ERROR(child_impl->RewriteParentLocator(locator));
  if (!options.keep_child) VHDX_RETURN_IF_ERROR(child_impl->DropAllBlocks());
  VHDX_RETURN_IF_ERROR(child->Close());
  if (options.progress) options.progress(size, size);
  return result;
}

Status RebaseImage(const std::string& child_path, const std::string& new_parent_path,
                   const RebaseOptions& options) {
  OpenOptions child_options;
  child_options.read_only = false;
  child_options.skip_parent = true;
  VHDX_ASSIGN_OR_RETURN(std::unique_ptr<Image> child, Image::Open(child_path, child_options));
  auto* child_impl = static_cast<ImageImpl*>(child.get());
  if (child->info().type != DiskType::kDifferencing || !child_impl->parent_locator())
    return Status(Errc::kInvalidArgument, "not a differencing image: it has no parent to change");

  OpenOptions parent_options;
  parent_options.parent_dirs = options.parent_dirs;
  auto opened = Image::Open(new_parent_path, parent_options);
  if (!opened.ok()) return Named("new parent " + new_parent_path, opened.status());
  std::unique_ptr<Image> parent = std::move(opened).value();

  // The child must not end up below itself.
  struct stat cs;
  if (::stat(child_path.c_str(), &cs) == 0)
    for (const Image* p = parent.get(); p; p = p->parent()) {
      struct stat ps;
      if (::stat(p->info().filename.c_str(), &ps) == 0 && ps.st_dev == cs.st_dev && ps.st_ino == cs.st_ino)
        return Status(Errc::kInvalidArgument,
                      fmt::format("new parent {}: the child {} is in its chain (a loop)", new_parent_path,
                                  child_path));
    }
  const ImageInfo& ci = child->info();
  const ImageInfo& pi = parent->info();
  if (pi.logical_sector_size != ci.logical_sector_size)
    return Status(Errc::kInvalidArgument,
                  fmt::format("new parent {} has {}-byte logical sectors, the child {}-byte ones",
                              new_parent_path, pi.logical_sector_size, ci.logical_sector_size));
  if (pi.virtual_size > ci.virtual_size)
    return Status(Errc::kInvalidArgument,
                  fmt::format("new parent {} ({} bytes) is larger than the child ({} bytes)",
                              new_parent_path, pi.virtual_size, ci.virtual_size));
  const Guid dwg = DataWriteGuid(*parent);
  const format::ParentLocator& old = *child_impl->parent_locator();
  auto linkage = [&](const char* key) -> std::optional<Guid> {
    const std::string* v = old.Get(key);
    return v ? Guid::Parse(*v) : std::nullopt;
  };
  std::optional<Guid> l1 = linkage("parent_linkage"), l2 = linkage("parent_linkage2");
  const bool matches = (l1 && *l1 == dwg) || (l2 && !l2->IsZero() && *l2 == dwg);
  if (!matches && !options.force)
    return Status(Errc::kCorrupt,
                  fmt::format("new parent {} does not match: its DataWriteGuid is {{{}}} but the "
                              "child's parent_linkage is {{{}}}; it is not the image the child was "
                              "made from, or it was modified since (use --force only if it holds "
                              "the same data)",
                              new_parent_path, dwg.ToString(), l1 ? l1->ToString() : "missing"));
  format::ParentLocator locator = MakeParentLocator(new_parent_path, child_path, dwg);
  VHDX_RETURN_IF_ERROR(child_impl->RewriteParentLocator(locator));
  return child->Close();
}

}  // namespace vhdx
