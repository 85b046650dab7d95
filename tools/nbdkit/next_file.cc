#include "next_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace vhdx_filter {

namespace {

vhdx::Status PluginError(const char* what, uint64_t count, uint64_t offset, int err) {
  return vhdx::Status(vhdx::Errc::kIoError, std::string("the plugin failed to ") + what + " " + std::to_string(count) +
                                                " bytes at offset " + std::to_string(offset) + ": " +
                                                std::strerror(err ? err : EIO));
}

}  // namespace

vhdx::Result<size_t> NextFile::ReadAt(uint64_t offset, void* buf, size_t n) const {
  return reader_.Read(offset, buf, n);
}

vhdx::Status NextFile::Fetch(uint64_t offset, void* buf, size_t n) const {
  for (size_t done = 0; done < n;) {
    const uint32_t count = static_cast<uint32_t>(std::min<size_t>(n - done, kMaxRequest));
    int err = 0;
    if (next_->pread(next_, static_cast<uint8_t*>(buf) + done, count, offset + done, 0, &err) == -1)
      return PluginError("read", count, offset + done, err);
    done += count;
  }
  return vhdx::Status::Ok();
}

vhdx::Status NextFile::NoGrowth(uint64_t end, const char* what) const {
  return vhdx::Status(vhdx::Errc::kNoSpace,
                      std::string(what) + " needs the image file to grow to " + std::to_string(end) +
                          " bytes, but the plugin serves it with a fixed size of " + std::to_string(size_) +
                          " (a dynamic image allocating a block: write to a fixed image, or to the file "
                          "directly)");
}

vhdx::Status NextFile::WriteAt(uint64_t offset, const void* buf, size_t n) {
  if (!writable_) return vhdx::Status(vhdx::Errc::kReadOnly, "the image is served read-only");
  if (offset + n > size_) return NoGrowth(offset + n, "a write");
  reader_.Forget(offset, n);
  for (size_t done = 0; done < n;) {
    const uint32_t count = static_cast<uint32_t>(std::min<size_t>(n - done, kMaxRequest));
    int err = 0;
    if (next_->pwrite(next_, static_cast<const uint8_t*>(buf) + done, count, offset + done, 0, &err) == -1)
      return PluginError("write", count, offset + done, err);
    done += count;
  }
  return vhdx::Status::Ok();
}

vhdx::Status NextFile::Flush() {
  if (!writable_) return vhdx::Status::Ok();
  int err = 0;
  if (next_->flush(next_, 0, &err) == -1)
    return vhdx::Status(vhdx::Errc::kIoError, std::string("the plugin failed to flush: ") + std::strerror(err ? err : EIO));
  return vhdx::Status::Ok();
}

vhdx::Status NextFile::Truncate(uint64_t size) {
  if (!writable_) return vhdx::Status(vhdx::Errc::kReadOnly, "the image is served read-only");
  if (size == size_) return vhdx::Status::Ok();
  if (size > size_) return NoGrowth(size, "extending the file");
  return vhdx::Status(vhdx::Errc::kUnsupported, "the plugin's export cannot be truncated to " + std::to_string(size) +
                                                    " bytes (it stays " + std::to_string(size_) + ")");
}

// The range reads zeros afterwards: the plugin's zero (trimming where it
// may), else written zeros.
vhdx::Status NextFile::Zero(uint64_t offset, uint64_t length) {
  reader_.Forget(offset, length);
  const bool can_zero = next_->can_zero(next_) > 0;
  static const std::vector<uint8_t> zeros(kZeroChunk, 0);
  for (uint64_t done = 0; done < length;) {
    const uint32_t count = static_cast<uint32_t>(std::min<uint64_t>(length - done, can_zero ? kMaxRequest : kZeroChunk));
    int err = 0;
    const int r = can_zero ? next_->zero(next_, count, offset + done, NBDKIT_FLAG_MAY_TRIM, &err)
                           : next_->pwrite(next_, zeros.data(), count, offset + done, 0, &err);
    if (r == -1) return PluginError("zero", count, offset + done, err);
    done += count;
  }
  return vhdx::Status::Ok();
}

vhdx::Status NextFile::PunchHole(uint64_t offset, uint64_t length) {
  if (!writable_) return vhdx::Status(vhdx::Errc::kReadOnly, "the image is served read-only");
  length = std::min(length, offset < size_ ? size_ - offset : 0);
  return Zero(offset, length);
}

vhdx::Status NextFile::Allocate(uint64_t offset, uint64_t length) {
  if (!writable_) return vhdx::Status(vhdx::Errc::kReadOnly, "the image is served read-only");
  if (offset + length > size_) return NoGrowth(offset + length, "allocating space");
  return vhdx::Status::Ok();
}

}  // namespace vhdx_filter
