#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

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

class PosixFile final : public File {
 public:
  PosixFile(int fd, std::string name, bool writable)
      : fd_(fd), name_(std::move(name)), writable_(writable) {}
  ~PosixFile() override { ::close(fd_); }

  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override {
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
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pwrite(fd_, static_cast<const char*>(buf) + done, n - done,
                           static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, fmt::format("write of {} bytes at offset {:#x}", n, offset));
      }
      done += static_cast<size_t>(r);
    }
    return Status::Ok();
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
  const std::string& name() const override { return name_; }

 private:
  int fd_;
  std::string name_;
  bool writable_;
};

}  // namespace

Result<std::unique_ptr<File>> OpenPosixFile(const std::string& path, bool writable) {
  int fd = ::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "cannot open");
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    return Status(Errc::kInvalidArgument, "is a directory");
  }
  return std::unique_ptr<File>(std::make_unique<PosixFile>(fd, path, writable));
}

Result<std::unique_ptr<File>> CreatePosixFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "cannot create");
  return std::unique_ptr<File>(std::make_unique<PosixFile>(fd, path, true));
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
