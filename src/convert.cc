// Conversions. The source is walked by where its data is: a VHDX image by its
// allocation map, a raw file by SEEK_DATA/SEEK_HOLE, so empty space is
// skipped without reading it. Data is moved in large requests, with reading
// (and the zero scan) and writing spread over a few worker threads.
#include "vhdx/convert.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "util/exceptions.h"

namespace vhdx {
namespace {

// Bytes per request. Small enough that a piece the reader thread just filled
// is still in the CPU cache when the writer copies it out (measured: 1 MiB
// pieces convert ~30% faster than 8 MiB ones). Pieces never cross a multiple
// of kChunk, so none straddles two VHDX blocks (blocks are >= 1 MiB).
constexpr size_t kChunk = 1u << 20;
constexpr uint64_t kZeroGranule = 4096;  // smallest hole we leave, or write we skip

bool IsZero(const uint8_t* p, size_t n) {
  // Word-wise OR; n is a multiple of 64 except possibly at the disk end.
  size_t i = 0;
  uint64_t acc = 0;
  for (; i + 64 <= n; i += 64) {
    uint64_t w[8];
    std::memcpy(w, p + i, 64);
    acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
    if (acc) return false;
  }
  for (; i < n; ++i) acc |= p[i];
  return acc == 0;
}

// Page-aligned buffer. Alignment matters for speed: the kernel copies to and
// from the page cache with `rep movsb`, which is several times slower when
// the user buffer is not aligned like the page (a plain std::vector starts
// 16 bytes into a page).
// data() is null when the allocation failed.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t n) : data_(static_cast<uint8_t*>(std::aligned_alloc(4096, n))) {}
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data() { return data_; }

 private:
  uint8_t* data_;
};

struct Piece {
  uint64_t start = 0;
  uint64_t length = 0;
};

// A run of non-zero bytes inside a piece's buffer (offsets relative to the
// piece's start).
struct Run {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// The runs of `buf` (disk bytes [start, start+n)) that hold a non-zero byte,
// at the granularity of 4 KiB granules aligned on the disk (so that a zero
// granule of the disk is skipped whatever the piece's alignment).
void NonZeroRuns(const uint8_t* buf, uint64_t start, uint64_t n, std::vector<Run>& runs) {
  runs.clear();
  uint64_t off = 0;
  while (off < n) {
    uint64_t end = std::min(n, (start + off) / kZeroGranule * kZeroGranule + kZeroGranule - start);
    if (!IsZero(buf + off, end - off)) {
      if (!runs.empty() && runs.back().offset + runs.back().length == off)
        runs.back().length += end - off;
      else
        runs.push_back({off, end - off});
    }
    off = end;
  }
}

// Guards against a hostile BAT whose blocks share file space. Each data
// extent has its own bytes in the file, so an image cannot hold more data
// than its file is long; without this check a small file pointing 64 Mi BAT
// entries at one MiB would keep a convert reading for days.
class DataClaim {
 public:
  explicit DataClaim(uint64_t limit) : limit_(limit) {}
  Status Add(uint64_t n) {
    claimed_ += n;
    if (claimed_ > limit_)
      return Status(Errc::kCorrupt,
                    fmt::format("BAT: allocated blocks claim more data than the file's {} bytes "
                                "(entries share file space; `vhdx check` lists them)",
                                limit_));
    return Status::Ok();
  }

 private:
  uint64_t limit_;
  uint64_t claimed_ = 0;
};

// What the files of an image's chain hold together: the most data its map
// can honestly show.
uint64_t ChainFileBytes(const Image& image) {
  uint64_t total = 0;
  for (const Image* i = &image; i; i = i->parent()) total += i->info().file_size;
  return total;
}

// The source is converted a window at a time so that the list of pieces
// stays small whatever the disk size.
constexpr uint64_t kWindow = uint64_t{4} << 30;

// Appends [start, start+length) cut at multiples of kChunk.
void AddPieces(uint64_t start, uint64_t length, std::vector<Piece>& pieces) {
  const uint64_t end = start + length;
  while (start < end) {
    uint64_t next = std::min(end, start / kChunk * kChunk + kChunk);
    pieces.push_back({start, next - start});
    start = next;
  }
}

Status ErrnoStatus(int err, const std::string& what) {
  Errc code = err == ENOSPC ? Errc::kNoSpace : err == ENOENT ? Errc::kNotFound : Errc::kIoError;
  return Status(code, fmt::format("{}: {}", what, std::strerror(err)));
}

// The data extents of an image in [start, start+length), as pieces.
Status ImagePieces(const Image& src, uint64_t start, uint64_t length, DataClaim& claim,
                   std::vector<Piece>& pieces) {
  Status st;
  VHDX_RETURN_IF_ERROR(src.Map(start, length, [&](const MapExtent& x) {
    if (!x.data) return true;
    st = claim.Add(x.length);
    if (st.ok()) AddPieces(x.start, x.length, pieces);
    return st.ok();
  }));
  return st;
}

// The data extents of a raw file in [start, end), as pieces. A file system
// without SEEK_DATA support (EINVAL) makes the whole range data.
Status RawPieces(int fd, uint64_t start, uint64_t end, std::vector<Piece>& pieces) {
  uint64_t pos = start;
  while (pos < end) {
    off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) return Status::Ok();  // only a hole is left
      if (errno != EINVAL && errno != EOPNOTSUPP)
        return ErrnoStatus(errno, fmt::format("SEEK_DATA at offset {:#x}", pos));
      AddPieces(pos, end - pos, pieces);
      return Status::Ok();
    }
    if (static_cast<uint64_t>(data) >= end) return Status::Ok();
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    uint64_t data_end = hole < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(hole), end);
    if (data_end <= static_cast<uint64_t>(data)) data_end = end;  // cannot happen; never loop forever
    AddPieces(static_cast<uint64_t>(data), data_end - static_cast<uint64_t>(data), pieces);
    pos = data_end;
  }
  return Status::Ok();
}

Status PreadExact(int fd, uint64_t offset, uint8_t* buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, buf + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, fmt::format("read of {} bytes at offset {:#x}", n, offset));
    }
    if (r == 0)
      return Status(Errc::kIoError, fmt::format("the file ends at offset {:#x}, before {:#x}: it shrank "
                                                "while being converted",
                                                offset + done, offset + n));
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

// How many pieces are in flight at once, each on a worker of its own that
// reads, scans and writes it: a write into fresh page cache costs about as
// much as the read that filled it, and several workers keep two cores busy
// with both, as qemu-img's parallel requests do (2, 3, 4 and 6 measured
// with bench/convert_vs_qemu.sh: 4 is as fast as any). Memory stays
// kWorkers pieces whatever the disk size.
constexpr int kWorkers = 4;

using PieceWriter = std::function<Status(const Piece&, const uint8_t*, const std::vector<Run>&)>;

// Reads every piece (`read(i, buf)`), finds its non-zero runs and hands it
// to `write`, kWorkers pieces at a time, in any order. `taken(i)` is called
// under a lock as piece i is taken, in order of i. `done(end)` is called
// (under a lock, with the end offset of the longest prefix of pieces done)
// each time that prefix grows, so progress only moves forward. The first
// error stops the workers and is returned.
Status Pipeline(const std::vector<Piece>& pieces, const std::function<void(size_t)>& taken,
                const std::function<Status(size_t, uint8_t*)>& read, const PieceWriter& write,
                const std::function<void(uint64_t)>& done) {
  if (pieces.empty()) return Status::Ok();
  const int workers = static_cast<int>(std::min<size_t>(kWorkers, pieces.size()));
  std::mutex mu;
  size_t next = 0;              // the next piece a worker takes
  size_t prefix = 0;            // pieces [0, prefix) are written
  std::vector<bool> finished(pieces.size(), false);
  Status first_error;
  auto fail = [&](Status s) {
    std::lock_guard lock(mu);
    if (first_error.ok()) first_error = std::move(s);
  };
  auto run_worker = [&] {
    AlignedBuffer buf(kChunk);
    if (!buf.data()) return fail(OutOfMemory(fmt::format("convert: a {} KiB buffer", kChunk >> 10)));
    std::vector<Run> runs;
    for (;;) {
      size_t i;
      {
        std::lock_guard lock(mu);
        if (!first_error.ok() || next == pieces.size()) return;
        i = next++;
        taken(i);
      }
      Status s = read(i, buf.data());
      if (s.ok()) {
        NonZeroRuns(buf.data(), pieces[i].start, pieces[i].length, runs);
        s = write(pieces[i], buf.data(), runs);
      }
      std::lock_guard lock(mu);
      if (!s.ok()) {
        if (first_error.ok()) first_error = s;
        return;
      }
      finished[i] = true;
      const size_t before = prefix;
      while (prefix < pieces.size() && finished[prefix]) ++prefix;
      if (prefix != before && done) done(pieces[prefix - 1].start + pieces[prefix - 1].length);
    }
  };
  // An exception must not leave a worker (std::terminate) nor the library.
  auto work = [&]() noexcept {
    Status s = StatusFromException("convert", run_worker);
    if (!s.ok()) fail(std::move(s));
  };
  std::vector<std::thread> threads;
  Status started = StatusFromException("convert: starting its workers", [&] {
    threads.reserve(static_cast<size_t>(workers));
    for (int t = 1; t < workers; ++t) threads.emplace_back(work);
  });
  // Workers already running stop at their next piece; all are joined.
  if (!started.ok()) fail(std::move(started));
  work();
  for (std::thread& t : threads) t.join();
  return first_error;
}

// Hands a borrowed File to Image::Open (which takes ownership of its File),
// and drops the flushes when the caller asked for qemu's cache=unsafe.
class BorrowedFile final : public File {
 public:
  BorrowedFile(File& base, bool flush) : base_(base), flush_(flush) {}
  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override {
    return base_.ReadAt(offset, buf, n);
  }
  Status WriteAt(uint64_t offset, const void* buf, size_t n) override { return base_.WriteAt(offset, buf, n); }
  Status Flush() override { return flush_ ? base_.Flush() : Status::Ok(); }
  Result<uint64_t> Size() const override { return base_.Size(); }
  Status Truncate(uint64_t size) override { return base_.Truncate(size); }
  Status PunchHole(uint64_t offset, uint64_t length) override { return base_.PunchHole(offset, length); }
  Status Allocate(uint64_t offset, uint64_t length) override { return base_.Allocate(offset, length); }
  Result<uint64_t> AllocatedSize() const override { return base_.AllocatedSize(); }
  Result<uint64_t> NextData(uint64_t offset) const override { return base_.NextData(offset); }
  bool writable() const override { return base_.writable(); }
  void WillNeed(uint64_t offset, uint64_t length) const override { base_.WillNeed(offset, length); }
  const std::string& name() const override { return base_.name(); }

 private:
  File& base_;
  bool flush_;
};

}  // namespace

// ---- ConvertSource ---------------------------------------------------------

struct ConvertSource::Rep {
  std::string name;
  std::unique_ptr<Image> owned_image;
  const Image* image = nullptr;
  int fd = -1;
  bool owns_fd = false;
  uint64_t size = 0;
  bool has_identity = false;
  dev_t dev = 0;
  ino_t ino = 0;

  ~Rep() {
    if (owns_fd) ::close(fd);
  }
  void SetIdentity(const struct stat& st) {
    has_identity = true;
    dev = st.st_dev;
    ino = st.st_ino;
  }
};

ConvertSource::ConvertSource(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
ConvertSource::ConvertSource(ConvertSource&&) noexcept = default;
ConvertSource& ConvertSource::operator=(ConvertSource&&) noexcept = default;
ConvertSource::~ConvertSource() = default;

bool ConvertSource::is_vhdx() const { return rep_->image != nullptr; }
const Image* ConvertSource::image() const { return rep_->image; }
int ConvertSource::raw_fd() const { return rep_->image ? -1 : rep_->fd; }
uint64_t ConvertSource::size() const { return rep_->size; }
const std::string& ConvertSource::name() const { return rep_->name; }

bool ConvertSource::IsSameFileAs(const std::string& path) const {
  struct stat st;
  return rep_->has_identity && ::stat(path.c_str(), &st) == 0 && st.st_dev == rep_->dev &&
         st.st_ino == rep_->ino;
}

namespace {

// The length of a raw disk: a regular file's size, a block device's
// capacity. Anything else cannot be read by offset.
Result<uint64_t> RawDiskSize(int fd, const struct stat& st) {
  if (S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    off_t end = ::lseek(fd, 0, SEEK_END);
    if (end < 0) return ErrnoStatus(errno, "cannot find the size of the block device");
    return static_cast<uint64_t>(end);
  }
  if (S_ISDIR(st.st_mode)) return Status(Errc::kInvalidArgument, "is a directory");
  return Status(Errc::kUnsupported, "not a regular file or block device (a raw source is read by offset)");
}

}  // namespace

Result<ConvertSource> ConvertSource::FromRawFd(int fd, std::string name) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "fstat");
  VHDX_ASSIGN_OR_RETURN(uint64_t size, RawDiskSize(fd, st));
  auto rep = std::make_unique<Rep>();
  rep->name = std::move(name);
  rep->fd = fd;
  rep->size = size;
  rep->SetIdentity(st);
  return ConvertSource(std::move(rep));
}

ConvertSource ConvertSource::FromImage(const Image& image) {
  auto rep = std::make_unique<Rep>();
  rep->name = image.info().filename;
  rep->image = &image;
  rep->size = image.virtual_size();
  struct stat st;
  if (::stat(rep->name.c_str(), &st) == 0) rep->SetIdentity(st);
  return ConvertSource(std::move(rep));
}

Result<ConvertSource> ConvertSource::Open(const std::string& path, SourceFormat format,
                                          const OpenOptions& open) {
  if (format == SourceFormat::kVhdx) {
    OpenOptions read_only = open;
    read_only.read_only = true;
    VHDX_ASSIGN_OR_RETURN(std::unique_ptr<Image> image, Image::Open(path, read_only));
    ConvertSource src = FromImage(*image);
    src.rep_->owned_image = std::move(image);
    return src;
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "cannot open");
  auto raw = FromRawFd(fd, path);
  if (!raw.ok()) {
    ::close(fd);
    return raw.status();
  }
  raw->rep_->owns_fd = true;
  // Read front to back: a larger readahead window helps cold reads.
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  if (format == SourceFormat::kDetect) {
    char signature[8] = {};
    ssize_t got = raw->size() >= sizeof signature ? ::pread(fd, signature, sizeof signature, 0) : 0;
    if (got == static_cast<ssize_t>(sizeof signature) && std::memcmp(signature, "vhdxfile", 8) == 0)
      return Open(path, SourceFormat::kVhdx, open);
  }
  return raw;
}

// ---- Conversions -----------------------------------------------------------

namespace {

// What a conversion needs from its source: the data pieces of each window,
// and reading one.
class SourceWalker {
 public:
  explicit SourceWalker(const ConvertSource& src)
      : src_(src), claim_(src.is_vhdx() ? ChainFileBytes(*src.image()) : UINT64_MAX) {}

  Result<std::vector<Piece>> Pieces(uint64_t start, uint64_t length) {
    std::vector<Piece> pieces;
    if (src_.is_vhdx()) {
      VHDX_RETURN_IF_ERROR(ImagePieces(*src_.image(), start, length, claim_, pieces));
    } else {
      VHDX_RETURN_IF_ERROR(RawPieces(src_.raw_fd(), start, start + length, pieces));
    }
    return pieces;
  }

  Status Read(const Piece& p, uint8_t* buf) const {
    if (src_.is_vhdx()) return src_.image()->Read(p.start, buf, p.length);
    return PreadExact(src_.raw_fd(), p.start, buf, p.length);
  }

  // Before piece i of `pieces` is read: asks the kernel to start reading the
  // source's pieces up to kPrefetch bytes ahead (for a VHDX source, the
  // host ranges behind them, through the chain). Data runs between holes
  // look like random reads to the kernel's readahead, which then starts
  // small for each run, and several workers reading side by side confuse
  // it further; this keeps several MiB in flight across the holes, as
  // qemu-img's parallel requests do (measured cold: ~1.5x faster).
  void Prefetch(const std::vector<Piece>& pieces, size_t i) {
    if (i == 0) prefetched_ = prefetched_bytes_ = consumed_bytes_ = 0;  // a new window
    while (prefetched_ < pieces.size() && prefetched_bytes_ - consumed_bytes_ < kPrefetch) {
      const Piece& p = pieces[prefetched_++];
      if (src_.is_vhdx()) {
        src_.image()->Prefetch(p.start, p.length);
      } else {
        (void)::posix_fadvise(src_.raw_fd(), static_cast<off_t>(p.start), static_cast<off_t>(p.length),
                              POSIX_FADV_WILLNEED);
      }
      prefetched_bytes_ += p.length;
    }
    consumed_bytes_ += pieces[i].length;
  }

 private:
  static constexpr uint64_t kPrefetch = 32u << 20;
  const ConvertSource& src_;
  DataClaim claim_;
  size_t prefetched_ = 0;
  uint64_t prefetched_bytes_ = 0, consumed_bytes_ = 0;
};

// Moves every data piece of `src` through `write` (from several threads at
// once), window by window, reporting progress against `total`.
Status ForEachDataPiece(const ConvertSource& src, const PieceWriter& write, const ConvertOptions& options,
                        uint64_t total) {
  SourceWalker walker(src);
  const uint64_t size = src.size();
  std::function<void(uint64_t)> done;
  if (options.progress) done = [&](uint64_t end) { options.progress(end, total); };
  for (uint64_t start = 0; start < size; start += kWindow) {
    VHDX_ASSIGN_OR_RETURN(std::vector<Piece> pieces, walker.Pieces(start, std::min(kWindow, size - start)));
    auto taken = [&](size_t i) { walker.Prefetch(pieces, i); };
    auto read = [&](size_t i, uint8_t* buf) { return walker.Read(pieces[i], buf); };
    VHDX_RETURN_IF_ERROR(Pipeline(pieces, taken, read, write, done));
  }
  return Status::Ok();
}

Status ToRaw(const ConvertSource& src, File& dst, const ConvertOptions& options) {
  const uint64_t total = src.size();
  const std::string out_name = "output " + dst.name();
  VHDX_RETURN_IF_ERROR(dst.Truncate(total).WithContext(out_name));
  // Only the non-zero runs are written; the rest stays a hole.
  auto write = [&](const Piece& p, const uint8_t* buf, const std::vector<Run>& runs) -> Status {
    for (const Run& r : runs)
      VHDX_RETURN_IF_ERROR(dst.WriteAt(p.start + r.offset, buf + r.offset, r.length).WithContext(out_name));
    return Status::Ok();
  };
  VHDX_RETURN_IF_ERROR(ForEachDataPiece(src, write, options, total));
  if (options.progress) options.progress(total, total);
  return Status::Ok();
}

Status ToRawStream(const ConvertSource& src, int fd, const ConvertOptions& options) {
  const uint64_t total = src.size();
  AlignedBuffer buf(kChunk);
  if (!buf.data()) return OutOfMemory(fmt::format("convert: a {} KiB buffer", kChunk >> 10));
  std::vector<uint8_t> zeros(kChunk, 0);
  auto put = [&](const uint8_t* p, size_t n) -> Status {
    while (n > 0) {
      ssize_t w = ::write(fd, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return Status(errno == ENOSPC ? Errc::kNoSpace : Errc::kIoError,
                      fmt::format("output: write failed: {}", std::strerror(errno)));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return Status::Ok();
  };
  // Zeros up to `end` are emitted from a zero buffer.
  uint64_t pos = 0;
  auto zeros_until = [&](uint64_t end) -> Status {
    while (pos < end) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, end - pos));
      VHDX_RETURN_IF_ERROR(put(zeros.data(), n));
      pos += n;
      if (options.progress) options.progress(pos, total);
    }
    return Status::Ok();
  };
  SourceWalker walker(src);
  for (uint64_t start = 0; start < total; start += kWindow) {
    VHDX_ASSIGN_OR_RETURN(std::vector<Piece> pieces, walker.Pieces(start, std::min(kWindow, total - start)));
    for (size_t i = 0; i < pieces.size(); ++i) {
      const Piece& p = pieces[i];
      walker.Prefetch(pieces, i);
      VHDX_RETURN_IF_ERROR(zeros_until(p.start));
      VHDX_RETURN_IF_ERROR(walker.Read(p, buf.data()));
      VHDX_RETURN_IF_ERROR(put(buf.data(), p.length));
      pos = p.start + p.length;
      if (options.progress) options.progress(pos, total);
    }
  }
  return zeros_until(total);
}

}  // namespace

// The conversions allocate (pieces, buffers, the output image's caches): an
// allocation that fails is an error returned, not an exception.
Status ConvertToRaw(const ConvertSource& src, File& dst, const ConvertOptions& options) {
  return StatusFromException("convert", [&] { return ToRaw(src, dst, options); });
}

Status ConvertToRaw(const Image& src, File& dst, const ConvertOptions& options) {
  return ConvertToRaw(ConvertSource::FromImage(src), dst, options);
}

Status ConvertToRawStream(const ConvertSource& src, int fd, const ConvertOptions& options) {
  return StatusFromException("convert", [&] { return ToRawStream(src, fd, options); });
}

Status ConvertToRawStream(const Image& src, int fd, const ConvertOptions& options) {
  return ConvertToRawStream(ConvertSource::FromImage(src), fd, options);
}

uint64_t ConvertedVirtualSize(uint64_t source_size, uint32_t logical_sector_size) {
  if (logical_sector_size == 0) return source_size;
  return (source_size + logical_sector_size - 1) / logical_sector_size * logical_sector_size;
}

namespace {

// The options CreateImage gets for converting `src`: the virtual size
// filled in and checked.
Result<CreateOptions> TargetOptions(const ConvertSource& src, const CreateOptions& create) {
  CreateOptions o = create;
  const uint64_t needed = ConvertedVirtualSize(src.size(), o.logical_sector_size);
  if (src.size() == 0)
    return Status(Errc::kInvalidArgument, "the source disk is empty (0 bytes); a VHDX disk holds at least one sector");
  if (o.virtual_size == 0) o.virtual_size = needed;
  if (o.virtual_size < needed)
    return Status(Errc::kInvalidArgument,
                  fmt::format("virtual size {} is smaller than the source disk ({} bytes)", o.virtual_size, needed));
  VHDX_RETURN_IF_ERROR(ValidateCreateOptions(o));
  return o;
}

Status ToVhdx(const ConvertSource& src, File& dst, const CreateOptions& create, const ConvertOptions& options) {
  VHDX_ASSIGN_OR_RETURN(CreateOptions o, TargetOptions(src, create));
  const std::string out_name = "output " + dst.name();
  auto view = std::make_unique<BorrowedFile>(dst, options.sync);
  VHDX_RETURN_IF_ERROR(CreateImage(*view, o).WithContext(out_name));
  auto opened = Image::Open(std::move(view), {.read_only = false});
  if (!opened.ok()) return opened.status().WithContext(out_name);
  Image& image = **opened;
  const uint64_t total = o.virtual_size;
  // Zero granules are never written: in a dynamic image a block with no
  // non-zero byte stays unallocated; in a fixed one its space already reads
  // as zeros.
  auto write = [&](const Piece& p, const uint8_t* buf, const std::vector<Run>& runs) -> Status {
    for (const Run& r : runs)
      VHDX_RETURN_IF_ERROR(image.Write(p.start + r.offset, buf + r.offset, r.length).WithContext(out_name));
    return Status::Ok();
  };
  VHDX_RETURN_IF_ERROR(ForEachDataPiece(src, write, options, total));
  VHDX_RETURN_IF_ERROR(image.Close().WithContext(out_name));
  if (options.progress) options.progress(total, total);
  return Status::Ok();
}

}  // namespace

Status ConvertToVhdx(const ConvertSource& src, File& dst, const CreateOptions& create,
                     const ConvertOptions& options) {
  return StatusFromException("convert", [&] { return ToVhdx(src, dst, create, options); });
}

Status ConvertToVhdx(const ConvertSource& src, const std::string& dst_path, const CreateOptions& create,
                     const ConvertOptions& options) {
  const std::string out_name = "output " + dst_path;
  if (src.IsSameFileAs(dst_path))
    return Status(Errc::kInvalidArgument, fmt::format("{}: is the source file itself; not overwriting it", out_name));
  // Bad options must fail before an existing file is truncated.
  VHDX_RETURN_IF_ERROR(TargetOptions(src, create).status());
  auto file = CreatePosixFile(dst_path);
  if (!file.ok()) return file.status().WithContext(out_name);
  Status st = ConvertToVhdx(src, **file, create, options);
  file->reset();  // closed before it is removed
  if (!st.ok()) {
    struct stat sb;
    if (::stat(dst_path.c_str(), &sb) == 0 && S_ISREG(sb.st_mode)) ::unlink(dst_path.c_str());
  }
  return st;
}

}  // namespace vhdx
