// nbdkit filter: decodes a VHDX image that any nbdkit plugin serves (file,
// curl, ssh, nbd, S3 ...) and serves the virtual disk inside it.
//
//   nbdkit --filter=vhdx file disk.vhdx
//   nbdkit --filter=vhdx curl https://example.com/disk.vhdx
//
// Each connection opens the image through the plugin below it (NextFile:
// the library's File interface over nbdkit's next_ops). Read-only (nbdkit
// -r, or a plugin that cannot write) a dirty log is replayed in memory, so
// a read-only URL serves the image as its writer left it. Read-write where
// the plugin writes and flushes: writes, trims and zeroes go through the
// image's log, crash-safe as on a local file, and the image is closed
// clean when the connection ends; one such connection at a time, and no
// other meanwhile (two images over one container would overwrite each
// other's metadata). Uses the public API only (include/vhdx).
#include <nbdkit-filter.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <memory>
#include <new>
#include <string>
#include <type_traits>

#include <curl/curl.h>

#include "block_status.h"
#include "next_file.h"
#include "url_file.h"
#include "vhdx/file.h"
#include "vhdx/image.h"

namespace {

using vhdx_filter::NextFile;

// vhdx-parent=PATH|URL: the parent of a differencing image, a local file
// or an http(s) URL (the locator's paths mean nothing on the plugin's side).
std::string parent_path;

void vhdx_load() { curl_global_init(CURL_GLOBAL_DEFAULT); }
void vhdx_unload() { curl_global_cleanup(); }

int vhdx_config(nbdkit_next_config* next, nbdkit_backend* nxdata, const char* key, const char* value) {
  if (std::string(key) != "vhdx-parent") return next(nxdata, key, value);
  if (vhdx_filter::IsUrl(value)) {
    parent_path = value;
    return 0;
  }
  char* path = nbdkit_absolute_path(value);
  if (!path) return -1;
  parent_path = path;
  free(path);
  return 0;
}

// Connections using the container: a writer excludes everything else.
std::mutex users_mutex;
int readers = 0;
bool writer = false;

// One connection: its image, opened in prepare over that connection's next.
struct Handle {
  bool client_readonly = true;
  bool writable = false;  // opened read-write (counted in `writer`)
  bool counted = false;   // counted in `readers` or `writer`
  std::unique_ptr<vhdx::Image> image;
};

// A failure outside a request (open, prepare): the log line is what the
// user sees; the client's connection fails.
int Fail(const vhdx::Status& status) {
  nbdkit_error("vhdx: %s", status.message().c_str());
  return -1;
}

void* vhdx_open(nbdkit_next_open* next, nbdkit_context* context, int readonly, const char* exportname, int) {
  if (next(context, readonly, exportname) == -1) return nullptr;
  auto* h = new Handle;
  h->client_readonly = readonly != 0;
  return h;
}

void Uncount(Handle* h) {
  if (!h->counted) return;
  std::lock_guard<std::mutex> lock(users_mutex);
  if (h->writable)
    writer = false;
  else
    --readers;
  h->counted = false;
}

void vhdx_close(void* handle) {
  auto* h = static_cast<Handle*>(handle);
  Uncount(h);
  delete h;
}

int vhdx_prepare(nbdkit_next* next, void* handle, int readonly) {
  auto* h = static_cast<Handle*>(handle);
  const int64_t size = next->get_size(next);
  if (size == -1) return -1;
  bool writable = !readonly && !h->client_readonly && next->can_write(next) == 1;
  if (writable && next->can_flush(next) != 1) {
    // Without flush nothing is ever durable, and the log's order of writes
    // means nothing: such an image is not written at all.
    nbdkit_error("vhdx: the plugin cannot flush, so writes could not be made crash-safe: serving read-only");
    writable = false;
  }
  {
    std::lock_guard<std::mutex> lock(users_mutex);
    if (writer || (writable && readers > 0)) {
      nbdkit_error("vhdx: the image is in use by another connection%s; one connection may write it, and only "
                   "when no other is open",
                   writer ? " that writes it" : "");
      return -1;
    }
    if (writable)
      writer = true;
    else
      ++readers;
    h->writable = writable;
    h->counted = true;
  }
  vhdx::OpenOptions options;
  options.read_only = !writable;
  if (vhdx_filter::IsUrl(parent_path)) {
    // Opened here, read-only, and given to the child's open, which checks
    // it as any parent (linkage, sector size).
    auto url = vhdx_filter::UrlFile::Open(parent_path);
    if (!url.ok()) {
      Uncount(h);
      return Fail(url.status());
    }
    auto parent = vhdx::Image::Open(std::move(*url), vhdx::OpenOptions{});
    if (!parent.ok()) {
      Uncount(h);
      return Fail(parent.status());
    }
    options.parent = std::shared_ptr<const vhdx::Image>(std::move(*parent));
  } else {
    options.parent_path = parent_path;  // checked as any parent: linkage, sector size
  }
  auto image = vhdx::Image::Open(std::make_unique<NextFile>(next, static_cast<uint64_t>(size), writable), options);
  if (!image.ok()) {
    Uncount(h);
    return Fail(image.status());
  }
  h->image = std::move(*image);
  return 0;
}

// The connection ends while the plugin is still there: a written image is
// closed now (log applied, LogGuid cleared, flushed), so that the file is
// clean for any reader afterwards.
int vhdx_finalize(nbdkit_next*, void* handle) {
  auto* h = static_cast<Handle*>(handle);
  if (!h->image || !h->writable) return 0;
  vhdx::Status s = h->image->Close();
  h->image.reset();
  return s.ok() ? 0 : Fail(s);
}

vhdx::Image& ImageOf(void* handle) { return *static_cast<Handle*>(handle)->image; }

int64_t vhdx_get_size(nbdkit_next*, void* handle) { return static_cast<int64_t>(ImageOf(handle).virtual_size()); }

bool Writable(void* handle) { return static_cast<Handle*>(handle)->writable; }

int vhdx_can_write(nbdkit_next*, void* handle) { return Writable(handle); }
int vhdx_can_flush(nbdkit_next*, void* handle) { return Writable(handle); }
int vhdx_can_trim(nbdkit_next*, void* handle) { return Writable(handle); }
int vhdx_can_zero(nbdkit_next*, void* handle) { return Writable(handle); }
int vhdx_can_fua(nbdkit_next*, void* handle) { return Writable(handle) ? NBDKIT_FUA_NATIVE : NBDKIT_FUA_NONE; }
int vhdx_can_extents(nbdkit_next*, void*) { return 1; }
// Read-only, every connection reads the same bytes. A writer is alone.
int vhdx_can_multi_conn(nbdkit_next*, void* handle) { return !Writable(handle); }
// Requests are answered from the image, never passed down as they are.
int vhdx_can_cache(nbdkit_next*, void*) { return NBDKIT_CACHE_NONE; }
int vhdx_can_fast_zero(nbdkit_next*, void*) { return 0; }

// A request's failure: the library's errno and its message.
int RequestFailed(const vhdx::Status& s, int* err) {
  *err = vhdx::ErrnoOf(s.code());
  nbdkit_error("vhdx: %s", s.message().c_str());
  return -1;
}

int FlushIfFua(void* handle, uint32_t flags, int* err) {
  if (!(flags & NBDKIT_FLAG_FUA)) return 0;
  vhdx::Status s = ImageOf(handle).Flush();
  return s.ok() ? 0 : RequestFailed(s, err);
}

int vhdx_pread(nbdkit_next*, void* handle, void* buf, uint32_t count, uint64_t offset, uint32_t, int* err) {
  vhdx::Status s = ImageOf(handle).Read(offset, buf, count);
  return s.ok() ? 0 : RequestFailed(s, err);
}

int vhdx_pwrite(nbdkit_next*, void* handle, const void* buf, uint32_t count, uint64_t offset, uint32_t flags,
                int* err) {
  vhdx::WriteOptions options;
  options.fua = (flags & NBDKIT_FLAG_FUA) != 0;
  vhdx::Status s = ImageOf(handle).Write(offset, buf, count, options);
  return s.ok() ? 0 : RequestFailed(s, err);
}

int vhdx_flush(nbdkit_next*, void* handle, uint32_t, int* err) {
  vhdx::Status s = ImageOf(handle).Flush();
  return s.ok() ? 0 : RequestFailed(s, err);
}

int vhdx_trim(nbdkit_next*, void* handle, uint32_t count, uint64_t offset, uint32_t flags, int* err) {
  vhdx::Status s = ImageOf(handle).Discard(offset, count);
  if (!s.ok()) return RequestFailed(s, err);
  return FlushIfFua(handle, flags, err);
}

int vhdx_zero(nbdkit_next*, void* handle, uint32_t count, uint64_t offset, uint32_t flags, int* err) {
  vhdx::Status s = ImageOf(handle).WriteZeroes(offset, count, (flags & NBDKIT_FLAG_MAY_TRIM) != 0);
  if (!s.ok()) return RequestFailed(s, err);
  return FlushIfFua(handle, flags, err);
}

// NBD block status (block_status.h), as the vhdx plugin reports it.
int vhdx_extents(nbdkit_next*, void* handle, uint32_t count, uint64_t offset, uint32_t flags,
                 struct nbdkit_extents* extents, int* err) {
  bool add_failed = false;
  vhdx::Status s = vhdx_nbdkit::AddBlockStatus(ImageOf(handle), count, offset, flags, extents, &add_failed);
  if (add_failed) {
    *err = errno ? errno : ENOMEM;
    return -1;
  }
  return s.ok() ? 0 : RequestFailed(s, err);
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
    (void)error;  // callbacks without `int *err` only log
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
  f.load = Guarded<vhdx_load>::Call;
  f.unload = Guarded<vhdx_unload>::Call;
  f.config = Guarded<vhdx_config>::Call;
  f.config_help = "vhdx-parent=<PATH|URL>  The parent of a differencing image (a local file, or http(s)).";
  f.open = Guarded<vhdx_open>::Call;
  f.close = Guarded<vhdx_close>::Call;
  f.prepare = Guarded<vhdx_prepare>::Call;
  f.finalize = Guarded<vhdx_finalize>::Call;
  f.get_size = Guarded<vhdx_get_size>::Call;
  f.can_write = vhdx_can_write;
  f.can_flush = vhdx_can_flush;
  f.can_trim = vhdx_can_trim;
  f.can_zero = vhdx_can_zero;
  f.can_fua = vhdx_can_fua;
  f.can_extents = vhdx_can_extents;
  f.can_multi_conn = vhdx_can_multi_conn;
  f.can_cache = vhdx_can_cache;
  f.can_fast_zero = vhdx_can_fast_zero;
  f.pread = Guarded<vhdx_pread>::Call;
  f.pwrite = Guarded<vhdx_pwrite>::Call;
  f.flush = Guarded<vhdx_flush>::Call;
  f.trim = Guarded<vhdx_trim>::Call;
  f.zero = Guarded<vhdx_zero>::Call;
  f.extents = Guarded<vhdx_extents>::Call;
  return f;
}

struct nbdkit_filter filter = MakeFilter();

}  // namespace

NBDKIT_REGISTER_FILTER(filter)
