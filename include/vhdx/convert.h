// Converting disks: a VHDX image to raw, and a raw disk or a VHDX image to a
// new VHDX image.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "vhdx/export.h"
#include "vhdx/create.h"
#include "vhdx/file.h"
#include "vhdx/image.h"
#include "vhdx/status.h"

namespace vhdx {

struct ConvertOptions {
  // Called now and then with bytes done out of total (virtual size).
  std::function<void(uint64_t done, uint64_t total)> progress;
  // ConvertToVhdx only. true: the output is on stable storage when the call
  // returns (Image::Close flushes it). false: every flush of the output is
  // skipped, as qemu-img's default cache mode 'unsafe' does; writeback is
  // left to the kernel, and a crash soon after the call may lose the output.
  bool sync = true;
};

// How the format of a source file is chosen.
enum class SourceFormat {
  kDetect,  // VHDX when the file starts with the signature "vhdxfile", raw otherwise
  kRaw,     // the file's bytes are the disk (even a VHDX file's)
  kVhdx,
};

// The disk a conversion reads: a raw disk image, or a VHDX image.
//  * raw: read through its file descriptor. Holes (SEEK_DATA/SEEK_HOLE) are
//    skipped without being read; where the file system cannot tell holes,
//    the whole file is read. The disk is the file's length.
//  * VHDX: read through Image, by its allocation map: only blocks that hold
//    data are read.
class VHDX_API ConvertSource {
 public:
  // Opens `path` read-only. A VHDX source is opened with Image::Open, so a
  // dirty log is replayed in memory and the file is never written.
  // `open` gives the parent search options of a differencing source
  // (read_only is forced).
  static Result<ConvertSource> Open(const std::string& path, SourceFormat format = SourceFormat::kDetect,
                                    const OpenOptions& open = {});
  // A raw disk read through `fd` (a regular file or a block device), which
  // the caller keeps open while the source is used. `name` is for messages.
  static Result<ConvertSource> FromRawFd(int fd, std::string name);
  // An open image, which the caller keeps open while the source is used.
  static ConvertSource FromImage(const Image& image);

  ConvertSource(ConvertSource&&) noexcept;
  ConvertSource& operator=(ConvertSource&&) noexcept;
  ~ConvertSource();

  bool is_vhdx() const;
  const Image* image() const;  // VHDX sources; nullptr for raw ones
  int raw_fd() const;          // raw sources; -1 for VHDX ones
  uint64_t size() const;       // bytes of disk: the raw file's length, or the virtual size
  const std::string& name() const;
  // True when `path` names the source's own file (same device and inode).
  bool IsSameFileAs(const std::string& path) const;

 private:
  struct Rep;
  explicit ConvertSource(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

// Writes the virtual disk into `dst` as a raw image of the virtual size.
// Sparse: unallocated and zero ranges (and all-zero 4 KiB runs inside data
// blocks) are never written, so they become holes. `dst` should be empty.
VHDX_API Status ConvertToRaw(const Image& src, File& dst, const ConvertOptions& options = {});
// The same from either kind of source (a raw source is copied with its
// holes and all-zero 4 KiB runs left as holes).
VHDX_API Status ConvertToRaw(const ConvertSource& src, File& dst, const ConvertOptions& options = {});

// Streams the raw disk to a file descriptor in order (a pipe, stdout):
// zeros are written out since a stream cannot have holes.
VHDX_API Status ConvertToRawStream(const Image& src, int fd, const ConvertOptions& options = {});
VHDX_API Status ConvertToRawStream(const ConvertSource& src, int fd, const ConvertOptions& options = {});

// The virtual size ConvertToVhdx gives a source of `source_size` bytes: the
// size rounded up to the logical sector size (qemu-img rounds raw sources up
// to 512 bytes the same way); the added bytes read as zeros.
VHDX_API uint64_t ConvertedVirtualSize(uint64_t source_size, uint32_t logical_sector_size);

// Writes the disk of `src` into `dst`, which must be empty and writable, as
// a new VHDX image made by CreateImage with `create` (type, block size,
// sector sizes). create.virtual_size 0 means ConvertedVirtualSize(src); a
// larger one gives the disk a zero tail; a smaller one is refused.
// Only data is written: all-zero 4 KiB granules are skipped, so a dynamic
// target allocates only the blocks that hold non-zero bytes. The image is
// written through Image::Write and closed with Image::Close (log applied,
// LogGuid clear).
VHDX_API Status ConvertToVhdx(const ConvertSource& src, File& dst, const CreateOptions& create,
                              const ConvertOptions& options = {});

// The same into the file at `dst_path`, created or truncated as qemu-img
// does; refused (nothing touched) when `dst_path` is the source's own file.
// A failure removes the partial output file.
VHDX_API Status ConvertToVhdx(const ConvertSource& src, const std::string& dst_path, const CreateOptions& create,
                              const ConvertOptions& options = {});

}  // namespace vhdx
