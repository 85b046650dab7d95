// A read-only vhdx::File over an http(s) URL (libcurl range requests): the
// parent of a differencing image that the vhdx filter serves, where the
// parent lives on a web server too (vhdx-parent=URL).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "paged_reader.h"

#include "vhdx/file.h"

namespace vhdx_filter {

// Whether `s` names a URL (http:// or https://) rather than a local path.
bool IsUrl(const std::string& s);

// Reads go through a PagedReader, as NextFile's: the library's small
// structure reads cost one request per 1 MiB page.
class UrlFile final : public vhdx::File {
 public:
  // The size from a HEAD request; a URL that does not answer, or answers
  // without a length, is an error naming it.
  static vhdx::Result<std::unique_ptr<UrlFile>> Open(const std::string& url);

  vhdx::Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override;
  vhdx::Status WriteAt(uint64_t, const void*, size_t) override { return ReadOnly(); }
  vhdx::Status Flush() override { return vhdx::Status::Ok(); }
  vhdx::Result<uint64_t> Size() const override { return size_; }
  vhdx::Status Truncate(uint64_t) override { return ReadOnly(); }
  vhdx::Status PunchHole(uint64_t, uint64_t) override { return ReadOnly(); }
  vhdx::Status Allocate(uint64_t, uint64_t) override { return ReadOnly(); }
  bool writable() const override { return false; }
  const std::string& name() const override { return url_; }

 private:
  UrlFile(std::string url, uint64_t size)
      : url_(std::move(url)), size_(size), reader_(size, [this](uint64_t offset, void* buf, size_t n) {
          return Fetch(offset, buf, n);
        }) {}
  static vhdx::Status ReadOnly() { return vhdx::Status(vhdx::Errc::kReadOnly, "a parent is never written"); }
  // Exactly [offset, offset+n) of the resource, by one range request.
  vhdx::Status Fetch(uint64_t offset, void* buf, size_t n) const;

  std::string url_;
  uint64_t size_;
  PagedReader reader_;
};

}  // namespace vhdx_filter
