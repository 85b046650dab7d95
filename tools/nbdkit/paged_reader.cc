#include "paged_reader.h"

#include <algorithm>
#include <cstring>

namespace vhdx_filter {

vhdx::Result<size_t> PagedReader::Read(uint64_t offset, void* buf, size_t n) const {
  if (offset >= size_) return size_t{0};
  n = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
  if (n == 0) return n;
  if (n >= kPage) {
    if (vhdx::Status s = fetch_(offset, buf, n); !s.ok()) return s;
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

// The page at `page` (shorter at the end of the container), from the cache
// or fetched. The lock is not held while fetching: requests for other
// pages go on meanwhile; two for the same page may both fetch it.
vhdx::Status PagedReader::Page(uint64_t page, std::shared_ptr<const std::vector<uint8_t>>* out) const {
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
  if (vhdx::Status s = fetch_(page, bytes->data(), bytes->size()); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mutex_);
  pages_.emplace_front(page, bytes);
  if (pages_.size() > kPages) pages_.pop_back();
  *out = std::move(bytes);
  return vhdx::Status::Ok();
}

void PagedReader::Forget(uint64_t offset, uint64_t length) {
  std::lock_guard<std::mutex> lock(mutex_);
  pages_.remove_if([&](const auto& p) { return p.first < offset + length && offset < p.first + kPage; });
}

}  // namespace vhdx_filter
