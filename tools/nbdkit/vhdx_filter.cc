// nbdkit filter: decodes a VHDX image that any nbdkit plugin serves (file,
// curl, ssh, nbd, S3 ...) and serves the virtual disk inside it.
//
//   nbdkit --filter=vhdx file disk.vhdx
//   nbdkit --filter=vhdx curl https://example.com/disk.vhdx
//
// Each connection opens the image through the plugin below it (NextFile:
// the library's File interface over nbdkit's next_ops), read-only: a dirty
// log is replayed in memory, so a read-only URL serves the image as its
// writer left it. Reads, block status (holes and zeros from the BAT) and
// sizes come from the library; nothing of the container reaches the client.
// Uses the public API only (include/vhdx), as any front end.
#include <nbdkit-filter.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>
#include <memory>
#include <new>
#include <string>
#include <type_traits>

#include "vhdx/file.h"
#include "vhdx/image.h"

namespace {

// The plugin below as a read-only vhdx::File. Its size is read once
// (prepare): a container that changes size underneath is not supported.
//
// Round trips are what a remote image costs (an HTTP range request each),
// and the library reads structures in small pieces (a 4 KiB header, a
// 64 KiB region table, 8-byte metadata items, a BAT page). So reads
// smaller than kPage are served from whole 1 MiB-aligned pages of the
// container, fetched once and kept (kPages of them, least recently used
// dropped): opening an image costs two requests (the header section and
// the metadata region), and sequential reads of data fetch 1 MiB at a time.
// Larger reads go to the plugin as they are.
class NextFile final : public vhdx::File {
 public:
  NextFile(nbdkit_next* next, uint64_t size) : next_(next), size_(size) {}

  vhdx::Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override {
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
  vhdx::Status WriteAt(uint64_t, const void*, size_t) override { return ReadOnly(); }
  vhdx::Status Flush() override { return vhdx::Status::Ok(); }
  vhdx::Result<uint64_t> Size() const override { return size_; }
  vhdx::Status Truncate(uint64_t) override { return ReadOnly(); }
  vhdx::Status PunchHole(uint64_t, uint64_t) override { return ReadOnly(); }
  vhdx::Status Allocate(uint64_t, uint64_t) override { return ReadOnly(); }
  bool writable() const override { return false; }
  const std::string& name() const override { return name_; }

 private:
  static constexpr uint64_t kPage = 1 << 20;
  static constexpr size_t kPages = 16;
  static constexpr size_t kMaxRequest = 32u << 20;
  static vhdx::Status ReadOnly() {
    return vhdx::Status(vhdx::Errc::kReadOnly, "the vhdx filter serves images read-only");
  }

  // Reads [offset, offset+n) of the container from the plugin.
  vhdx::Status Fetch(uint64_t offset, void* buf, size_t n) const {
    for (size_t done = 0; done < n;) {
      // next_ops take 32-bit counts.
      const uint32_t count = static_cast<uint32_t>(std::min<size_t>(n - done, kMaxRequest));
      int err = 0;
      if (next_->pread(next_, static_cast<uint8_t*>(buf) + done, count, offset + done, 0, &err) == -1)
        return vhdx::Status(vhdx::Errc::kIoError,
                            "the plugin failed to read " + std::to_string(count) + " bytes at offset " +
                                std::to_string(offset + done) + ": " + std::strerror(err ? err : EIO));
      done += count;
    }
    return vhdx::Status::Ok();
  }

  // The page at `page` (shorter at the end of the container), from the
  // cache or the plugin. The lock is not held while fetching: concurrent
  // requests for other pages go on; two for the same page may both fetch.
  vhdx::Status Page(uint64_t page, std::shared_ptr<const std::vector<uint8_t>>* out) const {
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

  nbdkit_next* next_;
  uint64_t size_;
  std::string name_ = "VHDX image from the plugin";
  mutable std::mutex mutex_;
  mutable std::list<std::pair<uint64_t, std::shared_ptr<const std::vector<uint8_t>>>> pages_;
};

// One connection: its image, opened in prepare over that connection's next.
struct Handle {
  std::unique_ptr<vhdx::Image> image;
};

// A failure outside a request (open, prepare): the log line is what the
// user sees; the client's connection fails.
int Fail(const vhdx::Status& status) {
  nbdkit_error("vhdx: %s", status.message().c_str());
  return -1;
}

void* vhdx_open(nbdkit_next_open* next, nbdkit_context* context, int, const char* exportname, int) {
  // The container is only ever read: the plugin below is opened read-only
  // whatever the client asked, so a read-only URL or file serves.
  if (next(context, 1, exportname) == -1) return nullptr;
  return new Handle;
}

void vhdx_close(void* handle) { delete static_cast<Handle*>(handle); }

int vhdx_prepare(nbdkit_next* next, void* handle, int) {
  const int64_t size = next->get_size(next);
  if (size == -1) return -1;
  vhdx::OpenOptions options;
  options.read_only = true;
  auto image = vhdx::Image::Open(std::make_unique<NextFile>(next, static_cast<uint64_t>(size)), options);
  if (!image.ok()) return Fail(image.status());
  static_cast<Handle*>(handle)->image = std::move(*image);
  return 0;
}

vhdx::Image& ImageOf(void* handle) { return *static_cast<Handle*>(handle)->image; }

int64_t vhdx_get_size(nbdkit_next*, void* handle) { return static_cast<int64_t>(ImageOf(handle).virtual_size()); }

int vhdx_can_write(nbdkit_next*, void*) { return 0; }
int vhdx_can_extents(nbdkit_next*, void*) { return 1; }
// Every connection reads the same bytes; nothing is written.
int vhdx_can_multi_conn(nbdkit_next*, void*) { return 1; }
// Requests are answered from the image, never passed down as they are.
int vhdx_can_cache(nbdkit_next*, void*) { return NBDKIT_CACHE_NONE; }
int vhdx_can_fast_zero(nbdkit_next*, void*) { return 0; }

int vhdx_pread(nbdkit_next*, void* handle, void* buf, uint32_t count, uint64_t offset, uint32_t, int* err) {
  vhdx::Status s = ImageOf(handle).Read(offset, buf, count);
  if (s.ok()) return 0;
  *err = vhdx::ErrnoOf(s.code());
  nbdkit_error("vhdx: %s", s.message().c_str());
  return -1;
}

// NBD block status from Image::Map, as the vhdx plugin reports it: HOLE|ZERO
// where no file bytes back the range and it reads as zeros.
int vhdx_extents(nbdkit_next*, void* handle, uint32_t count, uint64_t offset, uint32_t flags,
                 struct nbdkit_extents* extents, int* err) {
  const bool req_one = (flags & NBDKIT_FLAG_REQ_ONE) != 0;
  bool add_failed = false;
  vhdx::Status s = ImageOf(handle).Map(offset, count, [&](const vhdx::MapExtent& x) {
    uint32_t type = 0;
    if (!x.data) type = x.zero ? (NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) : 0;
    if (nbdkit_add_extent(extents, x.start, x.length, type) == -1) {
      add_failed = true;
      return false;
    }
    return !req_one;
  });
  if (add_failed) {
    *err = errno ? errno : ENOMEM;
    return -1;
  }
  if (s.ok()) return 0;
  *err = vhdx::ErrnoOf(s.code());
  nbdkit_error("vhdx: %s", s.message().c_str());
  return -1;
}

// No exception may unwind into nbdkit's C frames: one that escapes a
// callback fails that request (ENOMEM or EIO, through the callback's
// `int *err`, the filter API's way) with a logged line.
inline void SetErr(int* err, int value) { *err = value; }
template <typename T>
void SetErr(T, int) {}

template <auto Callback>
struct Guarded;
template <typename R, typename... Args, R (*Callback)(Args...)>
struct Guarded<Callback> {
  static R Call(Args... args) noexcept {
    int error = EIO;
    try {
      return Callback(args...);
    } catch (const std::bad_alloc&) {
      nbdkit_error("vhdx: out of memory");
      error = ENOMEM;
    } catch (const std::exception& e) {
      nbdkit_error("vhdx: internal error: %s", e.what());
    }
    (SetErr(args, error), ...);
    if constexpr (std::is_pointer_v<R>) {
      return nullptr;
    } else if constexpr (!std::is_void_v<R>) {
      return -1;
    }
  }
};

struct nbdkit_filter MakeFilter() {
  struct nbdkit_filter f = {};
  f.name = "vhdx";
  f.longname = "libvhdx nbdkit filter";
  f.description = "Serves the virtual disk inside a VHDX image that the plugin serves.";
  f.open = Guarded<vhdx_open>::Call;
  f.close = Guarded<vhdx_close>::Call;
  f.prepare = Guarded<vhdx_prepare>::Call;
  f.get_size = Guarded<vhdx_get_size>::Call;
  f.can_write = vhdx_can_write;
  f.can_extents = vhdx_can_extents;
  f.can_multi_conn = vhdx_can_multi_conn;
  f.can_cache = vhdx_can_cache;
  f.can_fast_zero = vhdx_can_fast_zero;
  f.pread = Guarded<vhdx_pread>::Call;
  f.extents = Guarded<vhdx_extents>::Call;
  return f;
}

struct nbdkit_filter filter = MakeFilter();

}  // namespace

NBDKIT_REGISTER_FILTER(filter)
