#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "io/file_lock.h"
#include "vhdx/file.h"

namespace vhdx {
namespace {

Status ErrnoStatus(int err, const std::string& what) {
  Errc code = err == ENOSPC ? Errc::kNoSpace
              : err == ENOENT ? Errc::kNotFound
              : (err == EROFS || err == EBADF || err == EACCES) ? Errc::kReadOnly
                                                                : Errc::kIoError;
  return Status(code, fmt::format("{}: {}", what, std::strerror(err)));
}

// O_DIRECT needs the file offset, the length and the buffer address aligned
// to the device's logical block size. 4 KiB is a multiple of every logical
// block size in use (512 and 4096), so it is always enough.
constexpr size_t kDirectAlign = 4096;
// Unaligned requests go through a bounce buffer of at most this many bytes:
// a large unaligned request is processed in pieces, so its memory is bounded.
constexpr size_t kBounceBytes = 1 << 20;
// Read-modify-write of a partial sector is serialised per sector through one
// of this many mutexes (sector index modulo the count): two writers touching
// different bytes of one sector must not both read the old sector and then
// each write back a copy that lacks the other's bytes.
constexpr size_t kSectorLockStripes = 64;

uint64_t AlignDown(uint64_t x) { return x & ~uint64_t{kDirectAlign - 1}; }
uint64_t AlignUp(uint64_t x) { return AlignDown(x + kDirectAlign - 1); }
bool IsAligned(uint64_t x) { return x % kDirectAlign == 0; }
bool IsAligned(const void* p) { return IsAligned(reinterpret_cast<uintptr_t>(p)); }

// The calling thread's bounce buffer: 4 KiB-aligned, kept for the thread's
// life so that small unaligned requests do not allocate each time.
Result<uint8_t*> ThreadBounceBuffer() {
  struct Buffer {
    uint8_t* data = nullptr;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffer;
  if (buffer.data == nullptr) {
    void* p = nullptr;
    int err = ::posix_memalign(&p, kDirectAlign, kBounceBytes);
    if (err != 0)
      return Status(Errc::kIoError, fmt::format("cannot allocate a {}-byte aligned bounce buffer "
                                                "for O_DIRECT: {}",
                                                kBounceBytes, std::strerror(err)));
    buffer.data = static_cast<uint8_t*>(p);
  }
  return buffer.data;
}

// pread until `n` bytes or the end of the file; returns the bytes read.
Result<size_t> PreadFull(int fd, void* buf, size_t n, uint64_t offset) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, static_cast<char*>(buf) + done, n - done,
                        static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, fmt::format("read of {} bytes at offset {:#x}", n, offset));
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
    // With O_DIRECT a short read means the end of the file; asking again at
    // the unaligned position would fail with EINVAL instead of returning 0.
    if (!IsAligned(done)) break;
  }
  return done;
}

Status PwriteFull(int fd, const void* buf, size_t n, uint64_t offset) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pwrite(fd, static_cast<const char*>(buf) + done, n - done,
                         static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, fmt::format("write of {} bytes at offset {:#x}", n, offset));
    }
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

class PosixFile final : public File {
 public:
  // `buffered_fd` is -1 unless `fd` was opened with O_DIRECT for writing:
  // then it is a second descriptor of the same file without O_DIRECT, used
  // only for the partial sector at the end of a write that extends the file
  // (see WriteBounced).
  PosixFile(int fd, std::string name, bool writable, bool direct = false, int buffered_fd = -1)
      : fd_(fd), buffered_fd_(buffered_fd), name_(std::move(name)), writable_(writable),
        direct_(direct) {}
  ~PosixFile() override {
    ::close(fd_);
    if (buffered_fd_ >= 0) ::close(buffered_fd_);
  }

  // Keeps the file's lock until the file is closed or ReleaseLock.
  void set_lock(std::unique_ptr<FileLockHold> lock) { lock_ = std::move(lock); }
  void ReleaseLock() override { lock_.reset(); }

  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override {
    if (direct_) return ReadDirect(offset, static_cast<uint8_t*>(buf), n);
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, static_cast<char*>(buf) + done, n - done,
                          static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, fmt::format("read of {} bytes at offset {:#x}", n, offset));
      }
      if (r == 0) break;
      done += static_cast<size_t>(r);
    }
    return done;
  }

  Status WriteAt(uint64_t offset, const void* buf, size_t n) override {
    if (!writable_) return Status(Errc::kReadOnly, "file is open read-only");
    if (direct_) return WriteDirect(offset, static_cast<const uint8_t*>(buf), n);
    return PwriteFull(fd_, buf, n, offset);
  }

  Status Flush() override {
    if (!writable_) return Status::Ok();
    if (::fdatasync(fd_) != 0) return ErrnoStatus(errno, "fdatasync");
    return Status::Ok();
  }

  Result<uint64_t> Size() const override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return ErrnoStatus(errno, "fstat");
    return static_cast<uint64_t>(st.st_size);
  }

  Result<uint64_t> NextData(uint64_t offset) const override {
    const off_t at = ::lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
    if (at >= 0) return static_cast<uint64_t>(at);
    if (errno == ENXIO) return Size();  // nothing but a hole up to the end
    return offset;                      // no SEEK_DATA here: no hole known
  }
  Result<uint64_t> AllocatedSize() const override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return ErrnoStatus(errno, "fstat");
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }

  Status Truncate(uint64_t size) override {
    if (!writable_) return Status(Errc::kReadOnly, "file is open read-only");
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
      return ErrnoStatus(errno, fmt::format("truncate to {}", size));
    return Status::Ok();
  }

  Status PunchHole(uint64_t offset, uint64_t length) override {
    if (!writable_) return Status(Errc::kReadOnly, "file is open read-only");
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(length)) != 0)
      return ErrnoStatus(errno, fmt::format("punch hole at {:#x}+{:#x}", offset, length));
    return Status::Ok();
  }

  Status Allocate(uint64_t offset, uint64_t length) override {
    if (!writable_) return Status(Errc::kReadOnly, "file is open read-only");
    int err = ::posix_fallocate(fd_, static_cast<off_t>(offset), static_cast<off_t>(length));
    if (err != 0) return ErrnoStatus(err, fmt::format("allocate {:#x}+{:#x}", offset, length));
    return Status::Ok();
  }

  bool writable() const override { return writable_; }
  // O_DIRECT reads skip the page cache, so there is nothing to warm.
  void WillNeed(uint64_t offset, uint64_t length) const override {
    if (!direct_)
      (void)::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(length), POSIX_FADV_WILLNEED);
  }
  const std::string& name() const override { return name_; }

 private:
  // The largest prefix of the request that can go straight to the kernel
  // (offset, address and length multiples of 4 KiB), or 0.
  static size_t AlignedPrefix(uint64_t offset, const void* buf, size_t n) {
    if (!IsAligned(offset) || !IsAligned(buf)) return 0;
    return static_cast<size_t>(AlignDown(n));
  }

  // The length of the next bounced piece of [offset, offset + n) at address
  // `buf`. When the buffer and the offset are equally misaligned, the piece
  // stops at the next sector boundary so the rest can go straight to the
  // kernel. Otherwise it is as long as the bounce buffer allows.
  static size_t BouncePiece(uint64_t offset, const void* buf, size_t n) {
    const size_t head = static_cast<size_t>(offset - AlignDown(offset));
    if ((reinterpret_cast<uintptr_t>(buf) - offset) % kDirectAlign == 0)
      return std::min(n, kDirectAlign - head);
    return std::min(n, kBounceBytes - head);
  }

  Result<size_t> ReadDirect(uint64_t offset, uint8_t* buf, size_t n) const {
    size_t done = 0;
    while (done < n) {
      const uint64_t at = offset + done;
      uint8_t* dst = buf + done;
      const size_t left = n - done;
      if (size_t direct = AlignedPrefix(at, dst, left)) {
        VHDX_ASSIGN_OR_RETURN(size_t got, PreadFull(fd_, dst, direct, at));
        done += got;
        if (got < direct) break;  // end of file
        continue;
      }
      const size_t piece = BouncePiece(at, dst, left);
      const uint64_t start = AlignDown(at);
      const size_t window = static_cast<size_t>(AlignUp(at + piece) - start);
      VHDX_ASSIGN_OR_RETURN(uint8_t* bounce, ThreadBounceBuffer());
      VHDX_ASSIGN_OR_RETURN(size_t got, PreadFull(fd_, bounce, window, start));
      const size_t skip = static_cast<size_t>(at - start);
      if (got <= skip) break;  // end of file
      const size_t avail = std::min(piece, got - skip);
      std::memcpy(dst, bounce + skip, avail);
      done += avail;
      if (avail < piece) break;
    }
    return done;
  }

  Status WriteDirect(uint64_t offset, const uint8_t* buf, size_t n) {
    if (n > 0 && offset > static_cast<uint64_t>(INT64_MAX) - n)
      return ErrnoStatus(EFBIG, fmt::format("write of {} bytes at offset {:#x}", n, offset));
    size_t done = 0;
    while (done < n) {
      const uint64_t at = offset + done;
      const uint8_t* src = buf + done;
      const size_t left = n - done;
      // Whole sectors: no other writer may touch these bytes concurrently
      // (the File contract allows only disjoint concurrent writes), so no
      // lock is needed.
      if (size_t direct = AlignedPrefix(at, src, left)) {
        VHDX_RETURN_IF_ERROR(PwriteFull(fd_, src, direct, at).WithContext(
            fmt::format("O_DIRECT write of {} bytes at offset {:#x}", n, offset)));
        done += direct;
        continue;
      }
      const size_t piece = BouncePiece(at, src, left);
      VHDX_RETURN_IF_ERROR(WriteBounced(at, src, piece).WithContext(
          fmt::format("O_DIRECT write of {} bytes at offset {:#x}", n, offset)));
      done += piece;
    }
    return Status::Ok();
  }

  // Writes [at, at + piece), which fits in the bounce buffer, by
  // read-modify-write of its partial first and last sectors.
  Status WriteBounced(uint64_t at, const uint8_t* src, size_t piece) {
    const uint64_t start = AlignDown(at);
    const uint64_t end = AlignUp(at + piece);
    const size_t window = static_cast<size_t>(end - start);
    const bool head_partial = at != start;
    const bool tail_partial = at + piece != end;
    const uint64_t head_sector = start / kDirectAlign;
    const uint64_t tail_sector = end / kDirectAlign - 1;

    // Lock the stripes of the partial sectors, lower stripe first, so that
    // two writers never wait on each other in opposite orders.
    std::array<size_t, 2> stripes{};
    size_t nstripes = 0;
    if (head_partial) stripes[nstripes++] = head_sector % kSectorLockStripes;
    if (tail_partial) {
      size_t s = tail_sector % kSectorLockStripes;
      if (nstripes == 0 || stripes[0] != s) stripes[nstripes++] = s;
    }
    if (nstripes == 2 && stripes[0] > stripes[1]) std::swap(stripes[0], stripes[1]);
    std::unique_lock<std::mutex> lock0, lock1;
    if (nstripes > 0) lock0 = std::unique_lock(sector_locks_[stripes[0]]);
    if (nstripes > 1) lock1 = std::unique_lock(sector_locks_[stripes[1]]);

    if (tail_partial) {
      // Writing the whole last sector would make the file longer than
      // at + piece when that sector reaches past the end of the file. Such a
      // write goes through the buffered descriptor instead, which writes
      // exactly the bytes asked for (the kernel keeps the page cache and
      // O_DIRECT I/O of one file coherent). Concurrent writes only make the
      // file longer, so a stale size at worst sends a write down this path
      // needlessly, never a padded sector past the end.
      struct stat st;
      if (::fstat(fd_, &st) != 0) return ErrnoStatus(errno, "fstat");
      if (static_cast<uint64_t>(st.st_size) < end) return PwriteFull(buffered_fd_, src, piece, at);
    }

    VHDX_ASSIGN_OR_RETURN(uint8_t* bounce, ThreadBounceBuffer());
    const size_t tail_off = window - kDirectAlign;
    if (head_partial) VHDX_RETURN_IF_ERROR(ReadSector(bounce, start));
    if (tail_partial && (!head_partial || tail_off != 0))
      VHDX_RETURN_IF_ERROR(ReadSector(bounce + tail_off, end - kDirectAlign));
    std::memcpy(bounce + (at - start), src, piece);
    return PwriteFull(fd_, bounce, window, start);
  }

  // Reads the 4 KiB sector at `offset` into `dst`; what lies past the end of
  // the file reads as zeros.
  Status ReadSector(uint8_t* dst, uint64_t offset) const {
    VHDX_ASSIGN_OR_RETURN(size_t got, PreadFull(fd_, dst, kDirectAlign, offset));
    std::memset(dst + got, 0, kDirectAlign - got);
    return Status::Ok();
  }

  int fd_;
  int buffered_fd_;
  std::unique_ptr<FileLockHold> lock_;  // released after the descriptors close
  std::string name_;
  bool writable_;
  bool direct_;
  std::array<std::mutex, kSectorLockStripes> sector_locks_;
};

}  // namespace

Result<std::unique_ptr<File>> OpenPosixFile(const std::string& path, bool writable, bool direct,
                                            FileLockMode lock) {
  if (lock == FileLockMode::kWrite && !writable)
    return Status(Errc::kInvalidArgument, "a write lock needs a file opened for writing");
  const int mode = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  int fd = ::open(path.c_str(), mode | (direct ? O_DIRECT : 0));
  if (fd < 0 && direct && errno == EINVAL) {
    // Tell "the file system cannot do O_DIRECT" from "the file is missing"
    // and the like: the same open without O_DIRECT decides.
    int plain = ::open(path.c_str(), mode);
    if (plain < 0) return ErrnoStatus(errno, "cannot open");
    ::close(plain);
    return Status(Errc::kUnsupported,
                  "cannot open with O_DIRECT (direct I/O, cache mode none): the file system does "
                  "not support it");
  }
  if (fd < 0) return ErrnoStatus(errno, "cannot open");
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    return Status(Errc::kInvalidArgument, "is a directory");
  }
  auto held = LockFile(fd, path, lock);
  if (!held.ok()) {
    ::close(fd);
    return held.status();
  }
  int buffered_fd = -1;
  if (direct && writable) {
    buffered_fd = ::open(path.c_str(), mode);
    if (buffered_fd < 0) {
      Status st_err = ErrnoStatus(errno, "cannot open");
      ::close(fd);
      return st_err;
    }
  }
  auto file = std::make_unique<PosixFile>(fd, path, writable, direct, buffered_fd);
  file->set_lock(std::move(held).value());
  return std::unique_ptr<File>(std::move(file));
}

Result<std::unique_ptr<File>> CreatePosixFile(const std::string& path) {
  // Truncated only once locked: a file in use elsewhere is left alone.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "cannot create");
  auto held = LockFile(fd, path, FileLockMode::kWrite);
  if (!held.ok()) {
    ::close(fd);
    return held.status();
  }
  // An empty file (the usual case: just created) is not truncated at all.
  // On ext4, truncating to 0 arms its "replace via truncate" heuristic
  // (auto_da_alloc): the last close then starts writeback of everything
  // written since and waits for the allocation, a quarter of a second for a
  // 512 MiB conversion, which qemu-img never pays. When there was data to
  // drop, a throwaway open and close right after the truncation lets ext4
  // run that (now empty) flush at once and disarms it.
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_size != 0) {
    if (::ftruncate(fd, 0) != 0) {
      Status err = ErrnoStatus(errno, "cannot truncate");
      ::close(fd);
      return err;
    }
    if (S_ISREG(st.st_mode)) {
      int disarm = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
      if (disarm >= 0) ::close(disarm);
    }
  }
  auto file = std::make_unique<PosixFile>(fd, path, true);
  file->set_lock(std::move(held).value());
  return std::unique_ptr<File>(std::move(file));
}

Status ReadExact(const File& file, uint64_t offset, void* buf, size_t n, const char* what) {
  VHDX_ASSIGN_OR_RETURN(size_t got, file.ReadAt(offset, buf, n));
  if (got != n)
    return Status(Errc::kCorrupt, fmt::format("{} at offset {:#x} (+{:#x}) extends past the end "
                                              "of the file",
                                              what, offset, n));
  return Status::Ok();
}

}  // namespace vhdx
