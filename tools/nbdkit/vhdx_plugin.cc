// nbdkit plugin: serves one VHDX image (a differencing image with its whole
// chain) as an NBD export.
//
//   nbdkit vhdx file=disk.vhdx [readonly=true] [parent-dir=DIR]...
//
// One Image serves every connection: the library is thread safe, so the
// thread model is PARALLEL, and a flush on any connection makes every
// connection's completed writes durable (multi-conn). Before serving, the
// image (and its chain) is opened read-only once, so a missing or damaged
// file stops nbdkit at startup with the library's one-line message. The
// image is then opened for serving when the first client connects, because
// only then does the plugin learn whether nbdkit was started with -r. It is
// closed (log applied, LogGuid cleared) when nbdkit shuts down.
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "block_status.h"
#include "vhdx/image.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

namespace {

struct PluginState {
  std::string file;
  bool readonly_param = false;
  std::vector<std::string> parent_dirs;

  std::mutex open_mutex;  // guards the lazy open below
  std::unique_ptr<vhdx::Image> image;
  bool image_read_only = true;
};

PluginState* state = nullptr;

// Reports a failed library call to nbdkit (log line + NBD error) and
// returns the callback's failure value.
int Fail(const vhdx::Status& status) {
  nbdkit_error("%s: %s", state->file.c_str(), status.message().c_str());
  nbdkit_set_error(vhdx::ErrnoOf(status.code()));
  return -1;
}

// Makes the range durable for a request that carried NBD_CMD_FLAG_FUA.
int FlushIfFua(uint32_t flags) {
  if (!(flags & NBDKIT_FLAG_FUA)) return 0;
  vhdx::Status s = state->image->Flush();
  return s.ok() ? 0 : Fail(s);
}

void vhdx_load() { state = new PluginState; }

void vhdx_unload() {
  delete state;
  state = nullptr;
}

int vhdx_config(const char* key, const char* value) {
  std::string k = key;
  if (k == "file") {
    // Absolute (nbdkit changes directory when it daemonises); whether it
    // exists and is a VHDX image is for the library to say, in get_ready.
    char* path = nbdkit_absolute_path(value);
    if (!path) return -1;
    state->file = path;
    free(path);
  } else if (k == "readonly") {
    int b = nbdkit_parse_bool(value);
    if (b == -1) return -1;
    state->readonly_param = b != 0;
  } else if (k == "parent-dir") {
    char* path = nbdkit_absolute_path(value);
    if (!path) return -1;
    state->parent_dirs.emplace_back(path);
    free(path);
  } else {
    nbdkit_error("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

int vhdx_config_complete() {
  if (state->file.empty()) {
    nbdkit_error("you must supply the file=DISK.vhdx parameter");
    return -1;
  }
  return 0;
}

vhdx::OpenOptions OptionsFor(bool read_only) {
  vhdx::OpenOptions options;
  options.read_only = read_only;
  options.parent_dirs = state->parent_dirs;
  return options;
}

// Validates the image before nbdkit serves (and before it daemonises), so
// errors reach the user who started it. A read-only open writes nothing: a
// dirty log is replayed in memory. The image is closed again: nbdkit may
// fork after this, and the one that serves is opened in the serving process.
int vhdx_get_ready() {
  auto image = vhdx::Image::Open(state->file, OptionsFor(true));
  if (!image.ok()) return Fail(image.status());
  return 0;
}

// Flush, apply the log, clear LogGuid: the file is clean for any reader
// once nbdkit has exited. Runs after the last connection closed.
void vhdx_cleanup() {
  if (!state || !state->image) return;
  vhdx::Status s = state->image->Close();
  if (!s.ok()) nbdkit_error("%s: close: %s", state->file.c_str(), s.message().c_str());
  state->image.reset();  // drops the image's lock: the file is clean by then
}

void* vhdx_open(int readonly) {
  std::lock_guard<std::mutex> lock(state->open_mutex);
  if (!state->image) {
    const bool read_only = state->readonly_param || readonly;
    // The library locks the image while it is open (QEMU's locks): it is
    // not served while another process writes it (qemu, vhdx mount,
    // another nbdkit), nor served read-write while others read it.
    auto image = vhdx::Image::Open(state->file, OptionsFor(read_only));
    if (!image.ok()) {
      Fail(image.status());
      return nullptr;
    }
    state->image = std::move(*image);
    state->image_read_only = read_only;
  }
  // Every connection shares the one image; the handle only has to be
  // non-null.
  return state;
}

int64_t vhdx_get_size(void*) { return static_cast<int64_t>(state->image->virtual_size()); }

int vhdx_can_write(void*) { return state->image_read_only ? 0 : 1; }
int vhdx_can_flush(void*) { return 1; }
int vhdx_can_trim(void*) { return state->image_read_only ? 0 : 1; }
int vhdx_can_zero(void*) { return state->image_read_only ? 0 : 1; }
int vhdx_can_fua(void*) { return NBDKIT_FUA_NATIVE; }
int vhdx_can_extents(void*) { return 1; }
int vhdx_can_multi_conn(void*) { return 1; }

int vhdx_pread(void*, void* buf, uint32_t count, uint64_t offset, uint32_t) {
  vhdx::Status s = state->image->Read(offset, buf, count);
  return s.ok() ? 0 : Fail(s);
}

int vhdx_pwrite(void*, const void* buf, uint32_t count, uint64_t offset, uint32_t flags) {
  vhdx::WriteOptions options;
  options.fua = (flags & NBDKIT_FLAG_FUA) != 0;
  vhdx::Status s = state->image->Write(offset, buf, count, options);
  return s.ok() ? 0 : Fail(s);
}

int vhdx_flush(void*, uint32_t) {
  // A read-only image has nothing to make durable (clients may still flush).
  if (state->image_read_only) return 0;
  vhdx::Status s = state->image->Flush();
  return s.ok() ? 0 : Fail(s);
}

int vhdx_trim(void*, uint32_t count, uint64_t offset, uint32_t flags) {
  vhdx::Status s = state->image->Discard(offset, count);
  if (!s.ok()) return Fail(s);
  return FlushIfFua(flags);
}

int vhdx_zero(void*, uint32_t count, uint64_t offset, uint32_t flags) {
  vhdx::Status s = state->image->WriteZeroes(offset, count, (flags & NBDKIT_FLAG_MAY_TRIM) != 0);
  if (!s.ok()) return Fail(s);
  return FlushIfFua(flags);
}

// NBD block status from Image::Map, as qemu's NBD server derives it:
// HOLE when no bytes of any file in the chain back the range, ZERO when it
// reads as zeros.
int vhdx_extents(void*, uint32_t count, uint64_t offset, uint32_t flags,
                 struct nbdkit_extents* extents) {
  bool add_failed = false;
  vhdx::Status s = vhdx_nbdkit::AddBlockStatus(*state->image, count, offset, flags, extents, &add_failed);
  if (add_failed) return -1;  // nbdkit_add_extent reported the error
  return s.ok() ? 0 : Fail(s);
}

// An exception must not unwind into nbdkit's C frames (std::terminate: the
// server gone, clients' unflushed writes with it). Each callback runs
// behind this; one that throws fails its request (ENOMEM when an
// allocation failed, else EIO) with a logged line, and nbdkit goes on.
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
    nbdkit_set_error(error);
    if constexpr (std::is_pointer_v<R>) {
      return nullptr;
    } else if constexpr (!std::is_void_v<R>) {
      return -1;
    }
  }
};

struct nbdkit_plugin MakePlugin() {
  struct nbdkit_plugin p = {};
  p.name = "vhdx";
  p.longname = "libvhdx nbdkit plugin";
  p.version = vhdx::Version();
  p.description = "Serves a VHDX virtual disk (fixed, dynamic, differencing) over NBD.";
  p.load = Guarded<vhdx_load>::Call;
  p.unload = Guarded<vhdx_unload>::Call;
  p.config = Guarded<vhdx_config>::Call;
  p.config_complete = Guarded<vhdx_config_complete>::Call;
  p.config_help =
      "file=<DISK.vhdx>     (required) The VHDX image to serve.\n"
      "readonly=true|false  Open the image read-only (a dirty log is replayed in memory).\n"
      "parent-dir=<DIR>     Where to look for the parents of a differencing image (repeatable).";
  p.magic_config_key = "file";
  p.get_ready = Guarded<vhdx_get_ready>::Call;
  p.open = Guarded<vhdx_open>::Call;
  p.get_size = Guarded<vhdx_get_size>::Call;
  p.can_write = vhdx_can_write;
  p.can_flush = vhdx_can_flush;
  p.can_trim = vhdx_can_trim;
  p.can_zero = vhdx_can_zero;
  p.can_fua = vhdx_can_fua;
  p.can_extents = vhdx_can_extents;
  p.can_multi_conn = vhdx_can_multi_conn;
  p.pread = Guarded<vhdx_pread>::Call;
  p.pwrite = Guarded<vhdx_pwrite>::Call;
  p.flush = Guarded<vhdx_flush>::Call;
  p.trim = Guarded<vhdx_trim>::Call;
  p.zero = Guarded<vhdx_zero>::Call;
  p.extents = Guarded<vhdx_extents>::Call;
  p.cleanup = Guarded<vhdx_cleanup>::Call;
  p.errno_is_preserved = 0;
  return p;
}

struct nbdkit_plugin plugin = MakePlugin();

}  // namespace

NBDKIT_REGISTER_PLUGIN(plugin)
