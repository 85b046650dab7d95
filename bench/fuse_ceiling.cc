// The FUSE ceiling for fuse_read_vs_vhdimount.sh: a read-only mount whose
// one file, MOUNTPOINT/disk, has SIZE bytes that come from memory (a fixed
// pattern), mounted with the settings `vhdx mount -r` uses (the kernel's
// page cache kept, allow_other as root). It reads no file and decodes no
// format: how fast a first sequential read through FUSE can go on this
// machine at all. No daemon, whatever it does, reads faster through the
// same path.
//
//   fuse_ceiling SIZE_BYTES MOUNTPOINT     (daemonises; fusermount -u to stop)
#define FUSE_USE_VERSION 31
#include <fuse.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr size_t kPatternBytes = 4 << 20;  // larger than any FUSE request
uint64_t g_size = 0;
std::vector<char> g_pattern;

void* OnInit(fuse_conn_info*, fuse_config* config) {
  config->direct_io = 0;
  config->kernel_cache = 1;
  return nullptr;
}

int OnGetattr(const char* path, struct stat* st, fuse_file_info*) {
  std::memset(st, 0, sizeof *st);
  if (std::strcmp(path, "/") == 0) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (std::strcmp(path, "/disk") != 0) return -ENOENT;
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_size = static_cast<off_t>(g_size);
  return 0;
}

int OnReaddir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*, fuse_readdir_flags) {
  if (std::strcmp(path, "/") != 0) return -ENOENT;
  fill(buf, "disk", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  return 0;
}

int OnOpen(const char* path, fuse_file_info* fi) {
  if (std::strcmp(path, "/disk") != 0) return -ENOENT;
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  fi->keep_cache = 1;
  return 0;
}

int OnRead(const char*, char* buf, size_t n, off_t offset, fuse_file_info*) {
  const uint64_t off = static_cast<uint64_t>(offset);
  if (off >= g_size) return 0;
  if (n > g_size - off) n = static_cast<size_t>(g_size - off);
  if (n > kPatternBytes) n = kPatternBytes;
  std::memcpy(buf, g_pattern.data(), n);
  return static_cast<int>(n);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s SIZE_BYTES MOUNTPOINT\n", argv[0]);
    return 2;
  }
  g_size = std::strtoull(argv[1], nullptr, 10);
  g_pattern.assign(kPatternBytes, 0x5a);
  fuse_operations ops{};
  ops.init = OnInit;
  ops.getattr = OnGetattr;
  ops.readdir = OnReaddir;
  ops.open = OnOpen;
  ops.read = OnRead;
  std::string options = "ro,fsname=fuse-ceiling,subtype=ceiling";
  if (geteuid() == 0) options += ",allow_other";
  std::vector<std::string> args = {argv[0], "-o", options, argv[2]};
  std::vector<char*> c_args;
  for (auto& a : args) c_args.push_back(a.data());
  return fuse_main(static_cast<int>(c_args.size()), c_args.data(), &ops, nullptr);
}
