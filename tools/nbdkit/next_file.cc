#include "next_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vhdx_filter {

namespace {

vhdx::Status PluginError(const char* what, uint64_t count, uint64_t offset, int err) {
  return vhdx::Status(vhdx::Errc::kIoError, std::string("the plugin failed to ") + what + " " + std::to_string(count) +
                                                " bytes at offset " + std::to_string(offset) + ": " +
                                                std::strerror(err ? err : EIO));
}

}  // namespace

vhdx::Result<size_t> NextFile::ReadAt(uint64_t offset, void* buf, size_t n) const {
  if (offset >= size_) return size_t{0};
  n = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
  if (n >= kPage) {
    if (vhdx::Status s = Fetch(offset, buf, n); !s.ok()) return s;
    return n;
  }
  for (size_t done = 0; done < n;) {
    const uint64_t at = offset + done;
    const uint64_t page = at / kPage * kPage;
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    if (vhdx::Status s = Page(page, &bytes); !s.ok()) return s;
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n - done, page + bytes->size() - at));
    std::memcpy(static_cast<uint8_t*>(buf) + done, bytes->data() + (at - page), k);
    done += k;
  }
  return n;
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

// The page at `page` (shorter at the end of the container), from the cache
// or the plugin. The lock is not held while fetching: requests for other
// pages go on meanwhile; two for the same page may both fetch it.
vhdx::Status NextFile::Page(uint64_t page, std::shared_ptr<const std::vector<uint8_t>>* out) const {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = pages_.begin(); it != pages_.end(); ++it)
      if (it->first == page) {
        pages_.splice(pages_.begin(), pages_, it);  // most recently used first
        *out = it->second;
        return vhdx::Status::Ok();
      }
  }
  auto bytes = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(std::min(kPage, size_ - page)));
  if (vhdx::Status s = Fetch(page, bytes->data(), bytes->size()); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mutex_);
  pages_.emplace_front(page, bytes);
  if (pages_.size() > kPages) pages_.pop_back();
  *out = std::move(bytes);
  return vhdx::Status::Ok();
}

// Drops the cached pages a write changes. A read racing the write may put
// back the old page; the library never reads a range while it writes it.
void NextFile::Forget(uint64_t offset, uint64_t length) {
  std::lock_guard<std::mutex> lock(mutex_);
  pages_.remove_if([&](const auto& p) { return p.first < offset + length && offset < p.first + kPage; });
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
  Forget(offset, n);
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
  Forget(offset, length);
  const bool can_zero = next_->can_zero(next_) > 0;
  static const std::vector<uint8_t> zeros(kPage, 0);
  for (uint64_t done = 0; done < length;) {
    const uint32_t count = static_cast<uint32_t>(std::min<uint64_t>(length - done, can_zero ? kMaxRequest : kPage));
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
