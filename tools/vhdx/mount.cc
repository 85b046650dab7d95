// vhdx mount / vhdx unmount: the virtual disk as one file, MOUNTPOINT/disk,
// through FUSE (libfuse3, high-level API).
//
// How `vhdx unmount` knows the image is closed: before mounting, the daemon
// opens the mount point directory (the directory the mount will cover) and
// holds an exclusive flock on it until it exits, which is after
// Image::Close() applied the log. `vhdx unmount` unmounts, then takes that
// same lock: it gets it when the daemon is gone. The image itself is locked
// by the library while open (QEMU's locks: one writer, or any readers), so
// two mounts, or a mount and qemu or nbdkit, never write one image at once.
#define FUSE_USE_VERSION 31
#include <fuse.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <mutex>
#include <new>
#include <sstream>
#include <thread>

#include "common.h"

namespace vhdx::cli {
namespace {

constexpr const char* kDiskName = "disk";
constexpr const char* kDiskPath = "/disk";
constexpr const char* kFuseType = "fuse.vhdx";

struct MountState {
  Image* image = nullptr;
  bool read_only = true;
  uint64_t size = 0;
  // Splice: for each level of the chain (index = MapExtent::depth), a
  // read-only descriptor of its file, from which FULLY_PRESENT data is
  // spliced to the kernel instead of copied through this process. Empty
  // when reads must go through Image::Read (see SpliceFds).
  std::vector<int> splice_fds;
  struct stat host{};  // the image file: owner and times of the disk file
  std::string mountpoint;  // absolute
  std::once_flag readahead_set;
};

MountState& State() { return *static_cast<MountState*>(fuse_get_context()->private_data); }

// Unescapes the octal escapes (\040 ...) of /proc/self/mounts fields.
std::string Unescape(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      out += static_cast<char>(std::stoi(field.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

// Readahead of the mount's page cache. FUSE starts every mount at 128 KiB,
// which splits a large sequential read into many small round trips; 2 MiB
// (the best of 0.5-4 MiB measured with bench/fuse_read_vs_vhdimount.sh)
// makes a first read about 1.5 times as fast. Only root may set it (sysfs);
// others keep 128 KiB. It must be set after FUSE's INIT exchange (which
// resets it) and before the disk file is opened (an open copies it).
constexpr int kReadaheadKiB = 2048;

// The "major:minor" of the filesystem mounted at `mountpoint`, from
// /proc/self/mountinfo (the last mount there), without asking the mount
// itself (its loop is not running yet).
std::string MountDevice(const std::string& mountpoint) {
  std::ifstream info("/proc/self/mountinfo");
  std::string line, device;
  while (std::getline(info, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, target;
    fields >> id >> parent >> dev >> root >> target;
    if (Unescape(target) == mountpoint) device = dev;
  }
  return device;
}

void RaiseReadahead(const std::string& mountpoint) {
  std::string device = MountDevice(mountpoint);
  if (device.empty()) return;
  std::ofstream knob("/sys/class/bdi/" + device + "/read_ahead_kb");
  if (knob) knob << kReadaheadKiB << '\n';  // best effort: not root, no sysfs
}


// The library's errno (vhdx::ErrnoOf), but for a request past the end of
// the disk: ENOSPC, as the kernel's block devices answer a write there.
int ErrnoOf(const Status& status) {
  if (status.code() == Errc::kOutOfRange) return ENOSPC;
  return vhdx::ErrnoOf(status.code());
}

// The largest read request on a splicing mount. libfuse splices a reply
// only through a pipe that holds it whole plus a page per buffer, and a
// pipe cannot grow past /proc/sys/fs/pipe-max-size (1 MiB by default)
// without CAP_SYS_RESOURCE; the kernel's own 1 MiB requests would always
// fall back to copying (through a fresh 1 MiB buffer per reply: slower than
// not splicing at all). Env VHDX_MOUNT_MAX_READ overrides, for measuring.
size_t SpliceMaxRead() {
  static const size_t value = [] {
    const char* env = std::getenv("VHDX_MOUNT_MAX_READ");
    size_t v = env ? std::strtoull(env, nullptr, 0) : 0;
    return v >= 4096 ? v / 4096 * 4096 : size_t{512} << 10;
  }();
  return value;
}

void* OnInit(fuse_conn_info* conn, fuse_config* config) {
  // Replies built from image file descriptors go to the kernel by
  // splice(2): file pages into a pipe by reference, then into /dev/fuse,
  // one copy fewer than read-then-write. SPLICE_MOVE lets the kernel take
  // the pages over where it can.
  if (!static_cast<MountState*>(fuse_get_context()->private_data)->splice_fds.empty()) {
    conn->want |= conn->capable & FUSE_CAP_SPLICE_WRITE;
    conn->max_read = SpliceMaxRead();
  }
  // The kernel's page cache in front of the disk file: readahead turns
  // small sequential reads (dd's 512 bytes, cat's 128 KiB) into large
  // requests, and re-reads cost no round trip. Every change to the image
  // goes through this file (the image is locked), so the cache is kept
  // across opens; writes go through to us at once (no writeback cache), so
  // fsync's durability contract is unchanged.
  config->direct_io = 0;
  config->kernel_cache = 1;
  config->use_ino = 0;
  return fuse_get_context()->private_data;
}

int OnGetattr(const char* path, struct stat* st, fuse_file_info*) {
  MountState& s = State();
  // The first request after INIT: the lookup before any open of the disk.
  std::call_once(s.readahead_set, [&s] { RaiseReadahead(s.mountpoint); });
  std::memset(st, 0, sizeof *st);
  st->st_uid = s.host.st_uid;
  st->st_gid = s.host.st_gid;
  st->st_atim = s.host.st_atim;
  st->st_mtim = s.host.st_mtim;
  st->st_ctim = s.host.st_ctim;
  if (std::strcmp(path, "/") == 0) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (std::strcmp(path, kDiskPath) != 0) return -ENOENT;
  st->st_mode = S_IFREG | (s.read_only ? 0444 : 0644);
  st->st_nlink = 1;
  st->st_size = static_cast<off_t>(s.size);
  // Claim every block: tools that take st_blocks == 0 for "all holes" (old
  // tar --sparse) must not skip data; SEEK_HOLE tells the real holes.
  st->st_blocks = static_cast<blkcnt_t>((s.size + 511) / 512);
  st->st_blksize = 4096;
  return 0;
}

int OnReaddir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*,
              fuse_readdir_flags) {
  if (std::strcmp(path, "/") != 0) return -ENOENT;
  fill(buf, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buf, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buf, kDiskName, nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  return 0;
}

int OnOpen(const char* path, fuse_file_info* fi) {
  if (std::strcmp(path, kDiskPath) != 0) return -ENOENT;
  if (State().read_only && (fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  fi->keep_cache = 1;
  return 0;
}

// The size is the virtual disk's: only "resizing" to the same size works.
int OnTruncate(const char* path, off_t size, fuse_file_info*) {
  if (std::strcmp(path, kDiskPath) != 0) return -ENOENT;
  if (State().read_only) return -EROFS;
  return static_cast<uint64_t>(size) == State().size ? 0 : -EPERM;
}

int OnRead(const char*, char* buf, size_t n, off_t offset, fuse_file_info*) {
  const MountState& s = State();
  if (offset < 0) return -EINVAL;
  uint64_t off = static_cast<uint64_t>(offset);
  if (off >= s.size) return 0;
  n = static_cast<size_t>(std::min<uint64_t>({n, s.size - off, INT_MAX}));
  Status st = s.image->Read(off, buf, n);
  return st.ok() ? static_cast<int>(n) : -ErrnoOf(st);
}

// A bufvec of `count` buffers, malloc'd as libfuse frees it (free() of the
// vector and of each memory buffer).
fuse_bufvec* NewBufvec(size_t count) {
  auto* v = static_cast<fuse_bufvec*>(std::calloc(1, sizeof(fuse_bufvec) + (count - 1) * sizeof(fuse_buf)));
  if (v) v->count = count;
  return v;
}

// Reads on a spliceable mount (the only mounts that register read_buf, so
// splice_fds holds every level): the map of the range becomes the reply, data
// extents as (descriptor, offset) buffers that libfuse splices, zero
// extents as zeroed memory. Anything else (an extent with no file data
// that does not read as zeros) is read through Image::Read.
int OnReadBuf(const char*, fuse_bufvec** bufp, size_t n, off_t offset, fuse_file_info*) {
  const MountState& s = State();
  if (offset < 0) return -EINVAL;
  uint64_t off = static_cast<uint64_t>(offset);
  n = off >= s.size ? 0 : static_cast<size_t>(std::min<uint64_t>({n, s.size - off, INT_MAX}));
  std::vector<fuse_buf> parts;
  bool readable = true;
  if (n > 0) {
    Status st = s.image->Map(off, n, [&](const MapExtent& x) {
      fuse_buf b{};
      b.size = x.length;
      if (x.data && x.offset && static_cast<size_t>(x.depth) < s.splice_fds.size()) {
        b.flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
        b.fd = s.splice_fds[x.depth];
        b.pos = static_cast<off_t>(*x.offset);
        // Adjacent pieces of one file become one splice.
        if (!parts.empty() && parts.back().flags == b.flags && parts.back().fd == b.fd &&
            parts.back().pos + static_cast<off_t>(parts.back().size) == b.pos) {
          parts.back().size += b.size;
          return true;
        }
      } else if (x.zero) {
        b.mem = nullptr;  // zeroed below
      } else {
        readable = false;
        return false;
      }
      parts.push_back(b);
      return true;
    });
    if (!st.ok()) return -ErrnoOf(st);
  }
  if (n == 0 || !readable) {
    fuse_bufvec* v = NewBufvec(1);
    void* mem = n ? std::malloc(n) : nullptr;
    if (!v || (n && !mem)) {
      std::free(v);
      std::free(mem);
      return -ENOMEM;
    }
    v->buf[0].mem = mem;
    v->buf[0].size = n;
    Status st = n ? s.image->Read(off, mem, n) : Status::Ok();
    if (!st.ok()) {
      std::free(mem);
      std::free(v);
      return -ErrnoOf(st);
    }
    *bufp = v;
    return 0;
  }
  fuse_bufvec* v = NewBufvec(parts.size());
  if (!v) return -ENOMEM;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!(parts[i].flags & FUSE_BUF_IS_FD)) {
      parts[i].mem = std::calloc(1, parts[i].size);
      if (!parts[i].mem) {
        v->count = i;  // free what was allocated so far
        for (size_t k = 0; k < i; ++k)
          if (!(parts[k].flags & FUSE_BUF_IS_FD)) std::free(parts[k].mem);
        std::free(v);
        return -ENOMEM;
      }
    }
    v->buf[i] = parts[i];
  }
  *bufp = v;
  return 0;
}

int OnWrite(const char*, const char* buf, size_t n, off_t offset, fuse_file_info*) {
  const MountState& s = State();
  if (s.read_only) return -EROFS;
  if (offset < 0) return -EINVAL;
  uint64_t off = static_cast<uint64_t>(offset);
  if (n == 0) return 0;
  if (off >= s.size) return -ENOSPC;  // a disk does not grow
  n = static_cast<size_t>(std::min<uint64_t>({n, s.size - off, INT_MAX}));
  Status st = s.image->Write(off, buf, n);
  return st.ok() ? static_cast<int>(n) : -ErrnoOf(st);
}

int FlushImage() {
  const MountState& s = State();
  if (s.read_only) return 0;
  return -ErrnoOf(s.image->Flush());
}

// close(2) flushes too: a disk file closed is a disk written.
int OnFlush(const char*, fuse_file_info*) { return FlushImage(); }
int OnFsync(const char*, int, fuse_file_info*) { return FlushImage(); }

int OnFallocate(const char*, int mode, off_t offset, off_t length, fuse_file_info*) {
  const MountState& s = State();
  if (s.read_only) return -EROFS;
  if (offset < 0 || length <= 0) return -EINVAL;
  if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) return -EOPNOTSUPP;
  uint64_t off = static_cast<uint64_t>(offset);
  uint64_t end = off + static_cast<uint64_t>(length);
  // Without KEEP_SIZE a range past the end would grow the file.
  if (!(mode & FALLOC_FL_KEEP_SIZE) && end > s.size) return -EPERM;
  end = std::min(end, s.size);
  if (off >= end) return 0;
  if (mode & FALLOC_FL_PUNCH_HOLE) {
    if (!(mode & FALLOC_FL_KEEP_SIZE) || (mode & FALLOC_FL_ZERO_RANGE)) return -EINVAL;
    return -ErrnoOf(s.image->Discard(off, end - off));
  }
  if (mode & FALLOC_FL_ZERO_RANGE) return -ErrnoOf(s.image->WriteZeroes(off, end - off, false));
  // Plain allocation: every byte of the disk already exists; host space is
  // given at the first write of a block.
  return 0;
}

// SEEK_DATA / SEEK_HOLE from the allocation map: a hole is a range that
// reads as zeros (unallocated, ZERO or UNMAPPED blocks, parent holes), data
// everything else.
off_t OnLseek(const char*, off_t offset, int whence, fuse_file_info*) {
  const MountState& s = State();
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return -EINVAL;
  if (offset < 0) return -EINVAL;
  uint64_t off = static_cast<uint64_t>(offset);
  if (off >= s.size) return -ENXIO;
  bool want_zero = whence == SEEK_HOLE;
  std::optional<uint64_t> found;
  Status st = s.image->Map(off, s.size - off, [&](const MapExtent& x) {
    if (x.zero == want_zero) {
      found = std::max(off, x.start);
      return false;
    }
    return true;
  });
  if (!st.ok()) return -ErrnoOf(st);
  if (found) return static_cast<off_t>(*found);
  return want_zero ? static_cast<off_t>(s.size) : -ENXIO;  // the end is a hole
}

// Read-only descriptors of every file of the chain, for splicing, or none
// when the mount cannot splice: a read-write mount (a discarded block's
// space is reused while the kernel may still splice from it), or a level
// whose log is dirty (its true contents are the in-memory replay, not the
// file). Each file is opened again by the path the library opened and must
// still be that image (its size and signature); the library's locks keep
// writers away meanwhile.
std::vector<int> SpliceFds(const Image& image, bool read_only) {
  std::vector<int> fds;
  if (!read_only) return fds;
  for (const Image* level = &image; level; level = level->parent()) {
    const ImageInfo& info = level->info();
    int fd = info.log.dirty ? -1 : open(info.filename.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st{};
    char signature[8] = {};
    bool same = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                static_cast<uint64_t>(st.st_size) == info.file_size &&
                pread(fd, signature, sizeof signature, 0) == static_cast<ssize_t>(sizeof signature) &&
                std::memcmp(signature, "vhdxfile", sizeof signature) == 0;
    if (!same) {
      if (fd >= 0) close(fd);
      for (int f : fds) close(f);
      return {};
    }
    fds.push_back(fd);
  }
  return fds;
}

// An exception must not unwind into libfuse's C frames (std::terminate, and
// the mount gone with its unflushed writes): each operation runs behind
// this, and one that throws fails its request (ENOMEM when an allocation
// failed, else EIO, with a line on stderr) while the daemon goes on.
template <auto Op>
struct Guarded;
template <typename R, typename... Args, R (*Op)(Args...)>
struct Guarded<Op> {
  static R Call(Args... args) noexcept {
    try {
      return Op(args...);
    } catch (const std::bad_alloc&) {
      return static_cast<R>(-ENOMEM);
    } catch (const std::exception& e) {
      fmt::print(stderr, "vhdx mount: internal error: {}\n", e.what());
      return static_cast<R>(-EIO);
    }
  }
};

fuse_operations MakeOperations(bool splice) {
  fuse_operations ops{};
  ops.init = OnInit;  // sets flags and returns a pointer: nothing that throws
  ops.getattr = Guarded<OnGetattr>::Call;
  ops.readdir = Guarded<OnReaddir>::Call;
  ops.open = Guarded<OnOpen>::Call;
  ops.truncate = Guarded<OnTruncate>::Call;
  ops.read = Guarded<OnRead>::Call;
  if (splice) ops.read_buf = Guarded<OnReadBuf>::Call;
  ops.write = Guarded<OnWrite>::Call;
  ops.flush = Guarded<OnFlush>::Call;
  ops.fsync = Guarded<OnFsync>::Call;
  ops.fallocate = Guarded<OnFallocate>::Call;
  ops.lseek = Guarded<OnLseek>::Call;
  return ops;
}

// fuse's -o option lists split at commas; a backslash escapes one.
std::string EscapeOption(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::string AbsolutePath(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : path;
}

int RunMount(const std::string& image_path, const std::string& mountpoint, bool read_only,
             bool foreground, bool splice, const std::vector<std::string>& parent_dirs) {
  MountState state;
  std::string absolute_image = AbsolutePath(image_path);
  // The library locks the image (and its parents) for as long as it is
  // open, before it reads a byte: no other process writes it meanwhile, so
  // the kernel's cache of the disk file stays true.
  int result = kExitOk;
  auto image = OpenImageOrFail(image_path, result, ChainOpenOptions(parent_dirs, read_only));
  if (!image) return result;
  if (stat(absolute_image.c_str(), &state.host) != 0) return Fail(image_path, std::strerror(errno));
  state.image = image.get();
  state.read_only = read_only;
  state.size = image->virtual_size();
  if (splice) state.splice_fds = SpliceFds(*image, read_only);
  struct stat mp{};
  if (stat(mountpoint.c_str(), &mp) != 0) return Fail(mountpoint, std::strerror(errno));
  if (!S_ISDIR(mp.st_mode)) return Fail(mountpoint, "not a directory");
  // Held until this process exits: `vhdx unmount` waits for it.
  int mountpoint_lock = open(mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (mountpoint_lock < 0 || flock(mountpoint_lock, LOCK_EX | LOCK_NB) != 0) {
    return Fail(mountpoint, mountpoint_lock >= 0 && errno == EWOULDBLOCK ? "a vhdx mount is still exiting there"
                                                                        : std::strerror(errno));
  }

  std::string options = "fsname=" + EscapeOption(absolute_image) + ",subtype=vhdx,default_permissions";
  if (read_only) options += ",ro";
  if (!state.splice_fds.empty()) options += fmt::format(",max_read={}", SpliceMaxRead());
  // Root mounts for everyone (the mode bits still apply); other users
  // would need user_allow_other in /etc/fuse.conf.
  if (geteuid() == 0) options += ",allow_other";
  std::vector<std::string> arg_strings = {"vhdx", "-o", options};
  std::vector<char*> argv;
  for (auto& a : arg_strings) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  // fuse_new rewrites the argument list into memory of its own (allocated
  // once it adds an argument); freed whichever way this function returns.
  struct ArgsFree {
    fuse_args* a;
    ~ArgsFree() { fuse_opt_free_args(a); }
  } args_free{&args};
  fuse_operations ops = MakeOperations(!state.splice_fds.empty());
  fuse* fs = fuse_new(&args, &ops, sizeof ops, &state);
  if (!fs) return Fail(mountpoint, "cannot set up FUSE");
  // Absolute: fuse_daemonize changes to "/", and fuse_unmount runs after.
  std::string absolute_mountpoint = AbsolutePath(mountpoint);
  state.mountpoint = absolute_mountpoint;
  if (fuse_mount(fs, absolute_mountpoint.c_str()) != 0) {
    fuse_destroy(fs);
    return Fail(mountpoint, "cannot mount (is /dev/fuse usable and fusermount3 installed?)");
  }
  fuse_session* session = fuse_get_session(fs);
  if (fuse_set_signal_handlers(session) != 0) {
    fuse_unmount(fs);
    fuse_destroy(fs);
    return Fail(mountpoint, "cannot install signal handlers");
  }
  // From here on errors have no terminal unless -f: syslog them too.
  fuse_daemonize(foreground ? 1 : 0);
  int loop_result = fuse_loop_mt(fs, 0);
  fuse_remove_signal_handlers(session);
  fuse_unmount(fs);
  // Apply the log and clear LogGuid before anyone sees the lock released.
  Status closed = image->Close();
  for (int fd : state.splice_fds) close(fd);
  fuse_destroy(fs);
  if (!closed.ok()) {
    syslog(LOG_ERR, "vhdx: %s: %s", image_path.c_str(), closed.message().c_str());
    return Fail(image_path, closed);
  }
  // A signal (SIGTERM, Ctrl-C under -f) ends the loop with its number: a
  // normal way to stop.
  if (loop_result < 0) return Fail(mountpoint, fmt::format("FUSE loop failed: {}", std::strerror(-loop_result)));
  return kExitOk;
}

// True when `mountpoint` (absolute) is mounted by vhdx mount.
bool IsVhdxMount(const std::string& mountpoint) {
  std::ifstream mounts("/proc/self/mounts");
  std::string line;
  bool found = false;
  while (std::getline(mounts, line)) {
    std::istringstream fields(line);
    std::string source, target, type;
    fields >> source >> target >> type;
    if (Unescape(target) == mountpoint) found = type == kFuseType;  // the last mount there counts
  }
  return found;
}

int RunUnmount(const std::string& mountpoint_arg, double timeout_seconds) {
  std::string mountpoint = AbsolutePath(mountpoint_arg);
  if (!IsVhdxMount(mountpoint)) return Fail(mountpoint_arg, "not a vhdx mount");
  if (geteuid() == 0) {
    if (umount2(mountpoint.c_str(), 0) != 0) return Fail(mountpoint_arg, fmt::format("cannot unmount: {}", std::strerror(errno)));
  } else {
    pid_t child = fork();
    if (child == 0) {
      execlp("fusermount3", "fusermount3", "-u", "--", mountpoint.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return Fail(mountpoint_arg, "cannot unmount (fusermount3 -u failed)");
    }
  }
  // The directory is uncovered now: its lock is the daemon's until it exits.
  int lock = open(mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock < 0) return Fail(mountpoint_arg, std::strerror(errno));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  while (flock(lock, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) {
      close(lock);
      return Fail(mountpoint_arg, std::strerror(errno));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      close(lock);
      return Fail(mountpoint_arg, "unmounted, but the vhdx mount process has not exited yet");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  close(lock);
  return kExitOk;
}

}  // namespace

void RegisterMount(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand("mount", "Expose the virtual disk as the file MOUNTPOINT/disk (FUSE)");
  static std::string image_path, mountpoint;
  static bool read_only = false, foreground = false, no_splice = false;
  static std::vector<std::string> parent_dirs;
  sub->add_flag("-r,--read-only", read_only, "Mount read-only (the disk file is 0444, writes fail with EROFS)");
  sub->add_flag("-f,--foreground", foreground, "Stay in the foreground until unmounted (default: daemonise)");
  sub->add_flag("--no-splice", no_splice,
                "Copy every read through this process, even on a read-only mount of a clean chain "
                "(which otherwise splices the image's data to the kernel)");
  AddParentDirOption(sub, parent_dirs);
  sub->add_option("IMAGE", image_path, "VHDX image")->required();
  sub->add_option("MOUNTPOINT", mountpoint, "Existing directory to mount on")->required();
  sub->callback([&result] { result = RunMount(image_path, mountpoint, read_only, foreground, !no_splice, parent_dirs);
  });

  auto* unmount = app.add_subcommand("unmount", "Unmount a vhdx mount and wait until its image is closed");
  static std::string unmount_point;
  static double timeout_seconds = 60;
  unmount->add_option("MOUNTPOINT", unmount_point, "Where `vhdx mount` mounted the image")->required();
  unmount->add_option("--timeout", timeout_seconds, "Seconds to wait for the image to be closed")
      ->capture_default_str();
  unmount->callback([&result] { result = RunUnmount(unmount_point, timeout_seconds); });
}

}  // namespace vhdx::cli
