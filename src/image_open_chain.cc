// Image: opening an image with its parent chain (differencing images):
// each parent found from the locator, opened read-only and checked.
#include "vhdx/image.h"

#include <fmt/format.h>

#include <sys/stat.h>

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "image_impl.h"
#include "parent_paths.h"

namespace vhdx {

using namespace format;

struct ImageImpl::ChainGuard {
  // Files already in the chain (device, inode), child first.
  std::vector<std::pair<dev_t, ino_t>> files;
  int depth = 0;
};

namespace {

// Hyper-V has no documented limit; 64 levels is far beyond any real chain
// and bounds the files and memory a hostile chain can make us open.
constexpr int kMaxChainDepth = 64;

std::optional<std::pair<dev_t, ino_t>> Identity(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return std::make_pair(st.st_dev, st.st_ino);
}

Result<std::unique_ptr<Image>> OpenLevel(std::unique_ptr<File> file, const OpenOptions& options,
                                         ImageImpl::ChainGuard& guard) {
  if (auto id = Identity(file->name())) guard.files.push_back(*id);
  VHDX_ASSIGN_OR_RETURN(std::unique_ptr<Image> image, ImageImpl::Open(std::move(file), options.read_only));
  if (image->info().type == DiskType::kDifferencing && !options.skip_parent)
    VHDX_RETURN_IF_ERROR(static_cast<ImageImpl*>(image.get())->AttachParent(options, guard));
  return image;
}

}  // namespace

Status ImageImpl::CheckParent(const Image& parent, const std::string& path, bool ignore_linkage) const {
  const ImageInfo& p = parent.info();
  if (p.logical_sector_size != info_.logical_sector_size)
    return Status(Errc::kCorrupt, fmt::format("parent {} has {}-byte logical sectors, the child {}-byte "
                                              "ones",
                                              path, p.logical_sector_size, info_.logical_sector_size));
  const Guid dwg = p.headers[p.current_header].data_write_guid;
  const std::string* l1 = locator_->Get("parent_linkage");
  const std::string* l2 = locator_->Get("parent_linkage2");
  std::optional<Guid> g1 = l1 ? Guid::Parse(*l1) : std::nullopt;
  std::optional<Guid> g2 = l2 ? Guid::Parse(*l2) : std::nullopt;
  if (!g1)
    return Status(Errc::kCorrupt, fmt::format("parent locator: parent_linkage '{}' is not a GUID",
                                              l1 ? *l1 : ""));
  if (l2 && !g2)
    return Status(Errc::kCorrupt, fmt::format("parent locator: parent_linkage2 '{}' is not a GUID", *l2));
  if (dwg == *g1 || (g2 && !g2->IsZero() && dwg == *g2) || ignore_linkage) return Status::Ok();
  return Status(Errc::kCorrupt,
                fmt::format("parent {} does not match: its DataWriteGuid is {{{}}} but the child's "
                            "parent_linkage is {{{}}}{}; the parent was modified after the child was "
                            "made (rebase with --force, or open ignoring the linkage, only if you "
                            "know the data is the same)",
                            path, dwg.ToString(), g1->ToString(),
                            g2 && !g2->IsZero() ? fmt::format(" and parent_linkage2 {{{}}}", g2->ToString())
                                                : std::string()));
}

Status ImageImpl::AttachParent(const OpenOptions& options, ChainGuard& guard) {
  if (!locator_) return Status(Errc::kCorrupt, "differencing image without a parent locator");
  if (options.parent) {
    VHDX_RETURN_IF_ERROR(CheckParent(*options.parent, options.parent->info().filename,
                                     options.ignore_parent_linkage));
    parent_ = options.parent;
    info_.parent_filename = options.parent->info().filename;
    return Status::Ok();
  }
  if (guard.depth + 1 >= kMaxChainDepth)
    return Status(Errc::kUnsupported, fmt::format("the parent chain is deeper than {} images",
                                                  kMaxChainDepth));
  std::vector<ParentCandidate> candidates =
      ParentCandidates(info_.filename, *locator_, options.parent_path, options.parent_dirs);
  std::vector<std::string> looked;
  Status first_error;
  for (const ParentCandidate& c : candidates) {
    auto id = Identity(c.path);
    if (!id) {
      looked.push_back(fmt::format("{} ({})", c.path, c.source));
      continue;
    }
    if (std::find(guard.files.begin(), guard.files.end(), *id) != guard.files.end())
      return Status(Errc::kCorrupt, fmt::format("loop in the parent chain: parent {} ({}) is already "
                                                "in the chain",
                                                c.path, c.source));
    Status s = [&]() -> Status {
      // Parents are locked for reading: nobody else may write them while
      // the chain is open.
      VHDX_ASSIGN_OR_RETURN(std::unique_ptr<File> file,
                            OpenPosixFile(c.path, /*writable=*/false, /*direct=*/false,
                                          options.force_share ? FileLockMode::kNone : FileLockMode::kRead));
      OpenOptions po;
      po.read_only = true;
      po.force_share = options.force_share;
      po.parent_dirs = options.parent_dirs;
      po.ignore_parent_linkage = options.ignore_parent_linkage;
      ChainGuard next{guard.files, guard.depth + 1};
      VHDX_ASSIGN_OR_RETURN(std::unique_ptr<Image> parent, OpenLevel(std::move(file), po, next));
      VHDX_RETURN_IF_ERROR(CheckParent(*parent, c.path, options.ignore_parent_linkage));
      parent_ = std::move(parent);
      info_.parent_filename = c.path;
      return Status::Ok();
    }();
    if (s.ok()) return s;
    if (first_error.ok()) {
      const bool own = s.message().rfind("parent ", 0) == 0;  // already names the path
      first_error = own ? s
                        : Status(s.code(), fmt::format("parent {} ({}): {}", c.path, c.source,
                                                       s.message()));
    }
  }
  if (!first_error.ok()) return first_error;
  std::string list;
  for (const auto& l : looked) list += (list.empty() ? "" : ", ") + l;
  return Status(Errc::kNotFound, fmt::format("parent image not found; looked for {}",
                                             list.empty() ? "nothing (no usable path in the locator)"
                                                          : list));
}

Result<std::unique_ptr<Image>> Image::Open(std::unique_ptr<File> file, const OpenOptions& options) {
  if (!options.read_only && !file->writable())
    return Status(Errc::kReadOnly, "read-write open of a file that is open read-only");
  ImageImpl::ChainGuard guard;
  return OpenLevel(std::move(file), options, guard);
}

Result<std::unique_ptr<Image>> Image::Open(const std::string& path, const OpenOptions& options) {
  if (options.force_share && !options.read_only)
    return Status(Errc::kInvalidArgument, "force-share is only for read-only opens");
  // Locked before the image is read: a read-write open may replay the log
  // into the file, which must never happen under another writer.
  const FileLockMode lock = !options.read_only  ? FileLockMode::kWrite
                            : options.force_share ? FileLockMode::kNone
                                                  : FileLockMode::kRead;
  auto file = OpenPosixFile(path, !options.read_only, options.direct_io, lock);
  if (!file.ok()) return file.status();
  return Open(std::move(file).value(), options);
}

}  // namespace vhdx
