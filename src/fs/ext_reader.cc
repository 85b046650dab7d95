#include "fs/ext_reader.h"

// com_err.h declares error_message without C linkage for C++.
extern "C" {
#include <et/com_err.h>
}
#include <ext2fs/ext2fs.h>
#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

namespace vhdx::fs {
namespace {

// Caps that keep a hostile superblock from making libext2fs allocate what
// the disk cannot justify. A genuine 32 TiB file system of 4 KiB blocks needs
// a 1 GiB bitmap and 16 MiB of group descriptors.
constexpr uint64_t kMaxBitmapBytes = uint64_t{1} << 30;
constexpr uint64_t kMaxDescriptorBytes = uint64_t{256} << 20;
// A free-space report of more runs than this (256 MiB of ranges) means a
// bitmap fragmented beyond any real file system: left alone.
constexpr size_t kMaxRuns = size_t{16} << 20;

// The region of the disk a channel reads, and the first image read that
// failed (an error of the image, reported as such rather than as a notice).
struct Region {
  const Image* image = nullptr;
  uint64_t offset = 0;
  uint64_t length = 0;
  Status error;
};

// libext2fs opens a channel by name only, so the Region travels through a
// registry keyed by a name made unique per open.
std::mutex g_registry_mu;
std::map<std::string, Region*> g_registry;
uint64_t g_next_name = 0;

class Registration {
 public:
  explicit Registration(Region* region) {
    std::lock_guard<std::mutex> lock(g_registry_mu);
    name_ = fmt::format("vhdx-region-{}", g_next_name++);
    g_registry[name_] = region;
  }
  ~Registration() {
    std::lock_guard<std::mutex> lock(g_registry_mu);
    g_registry.erase(name_);
  }
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

io_manager ImageIoManager();

errcode_t ChannelOpen(const char* name, int flags, io_channel* channel) {
  if (name == nullptr || channel == nullptr) return EXT2_ET_BAD_DEVICE_NAME;
  if (flags & IO_FLAG_RW) return EXT2_ET_RO_FILSYS;  // free-space reading never writes
  Region* region = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_registry_mu);
    auto it = g_registry.find(name);
    if (it == g_registry.end()) return EXT2_ET_BAD_DEVICE_NAME;
    region = it->second;
  }
  // libext2fs frees nothing of a channel itself: ChannelClose does, with the
  // same allocator.
  auto* io = new (std::nothrow) struct_io_channel{};
  char* copy = strdup(name);
  if (io == nullptr || copy == nullptr) {
    delete io;
    std::free(copy);
    return EXT2_ET_NO_MEMORY;
  }
  io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
  io->manager = ImageIoManager();
  io->name = copy;
  io->block_size = 1024;
  io->refcount = 1;
  io->private_data = region;
  *channel = io;
  return 0;
}

errcode_t ChannelClose(io_channel channel) {
  if (--channel->refcount > 0) return 0;
  std::free(channel->name);
  delete channel;
  return 0;
}

errcode_t ChannelSetBlksize(io_channel channel, int blksize) {
  if (blksize <= 0) return EXT2_ET_INVALID_ARGUMENT;
  channel->block_size = blksize;
  return 0;
}

errcode_t ChannelRead64(io_channel channel, unsigned long long block, int count, void* data) {
  auto* region = static_cast<Region*>(channel->private_data);
  const uint64_t block_size = static_cast<uint64_t>(channel->block_size);
  // A negative count is a byte count (libext2fs's convention).
  const uint64_t size = count < 0 ? uint64_t{0} - static_cast<uint64_t>(static_cast<int64_t>(count))
                                  : static_cast<uint64_t>(count) * block_size;
  // Nothing outside the region is read: a file system that points past its
  // partition gets a short read, as at the end of a device.
  if (block > region->length / block_size || size > region->length - block * block_size) {
    std::memset(data, 0, size);
    return EXT2_ET_SHORT_READ;
  }
  Status st = region->image->Read(region->offset + block * block_size, data, size);
  if (!st.ok()) {
    if (region->error.ok()) region->error = st;
    return EXT2_ET_SHORT_READ;
  }
  return 0;
}

errcode_t ChannelRead(io_channel channel, unsigned long block, int count, void* data) {
  return ChannelRead64(channel, block, count, data);
}

errcode_t ChannelWrite(io_channel, unsigned long, int, const void*) { return EXT2_ET_RO_FILSYS; }
errcode_t ChannelWrite64(io_channel, unsigned long long, int, const void*) {
  return EXT2_ET_RO_FILSYS;
}
errcode_t ChannelWriteByte(io_channel, unsigned long, int, const void*) { return EXT2_ET_RO_FILSYS; }
errcode_t ChannelFlush(io_channel) { return 0; }
errcode_t ChannelSetOption(io_channel, const char*, const char*) { return EXT2_ET_INVALID_ARGUMENT; }

io_manager ImageIoManager() {
  // discard, cache_readahead, zeroout and get_stats stay null: libext2fs
  // checks for them before calling.
  static struct_io_manager manager = [] {
    struct_io_manager m{};
    m.magic = EXT2_ET_MAGIC_IO_MANAGER;
    m.name = "vhdx image region";
    m.open = ChannelOpen;
    m.close = ChannelClose;
    m.set_blksize = ChannelSetBlksize;
    m.read_blk = ChannelRead;
    m.write_blk = ChannelWrite;
    m.flush = ChannelFlush;
    m.write_byte = ChannelWriteByte;
    m.set_option = ChannelSetOption;
    m.read_blk64 = ChannelRead64;
    m.write_blk64 = ChannelWrite64;
    return m;
  }();
  return &manager;
}

struct FsCloser {
  void operator()(ext2_filsys fs) const { ext2fs_free(fs); }  // never flushes: nothing written
};
using FsHandle = std::unique_ptr<struct_ext2_filsys, FsCloser>;

ExtOutcome LeftAlone(std::string why) { return {ExtOutcome::kLeftAlone, std::move(why)}; }

std::string Describe(errcode_t err) {
  // com_err knows libext2fs's codes only once its table is registered.
  static std::once_flag once;
  std::call_once(once, [] { initialize_ext2_error_table(); });
  return fmt::format("libext2fs: {}", error_message(err));
}

// The superblock's own state and size, checked before libext2fs allocates
// group descriptors and bitmaps by them. "" when the file system may be read.
std::string RefusalOf(ext2_filsys fs, uint64_t region_length) {
  ext2_super_block* sb = fs->super;  // libext2fs's accessors take it non-const
  if (ext2fs_has_feature_journal_needs_recovery(sb))
    return "its journal needs recovery (mounted, or not cleanly unmounted)";
  if (sb->s_state & EXT2_ERROR_FS) return "errors are flagged in its superblock (run e2fsck)";
  if (!(sb->s_state & EXT2_VALID_FS)) return "it was not cleanly unmounted (run e2fsck)";
  if (sb->s_feature_ro_compat & ~EXT2_LIB_FEATURE_RO_COMPAT_SUPP)
    return fmt::format("read-only-compatible features {:#x} unknown to libext2fs",
                       sb->s_feature_ro_compat & ~EXT2_LIB_FEATURE_RO_COMPAT_SUPP);
  const uint64_t block_size = fs->blocksize;
  const uint64_t blocks = ext2fs_blocks_count(sb);
  if (block_size == 0 || blocks > region_length / block_size)
    return fmt::format("its superblock claims {} blocks of {} bytes, past the end of its {} bytes",
                       blocks, block_size, region_length);
  if (blocks <= sb->s_first_data_block)
    return fmt::format("its superblock claims {} blocks, first data block {}", blocks,
                       sb->s_first_data_block);
  // Where mke2fs puts the first data block: block 1 after the boot block
  // when blocks are 1 KiB (and not clustered), else 0. libext2fs sizes its
  // bitmaps from it but reads whole groups from it: another value makes
  // it write past a bitmap (found by ASan on a damaged superblock).
  const uint32_t first_data_block = block_size == 1024 && EXT2FS_CLUSTER_RATIO(fs) == 1 ? 1 : 0;
  if (sb->s_first_data_block != first_data_block)
    return fmt::format("its first data block is {}, not {} as for {}-byte blocks", sb->s_first_data_block,
                       first_data_block, block_size);
  const uint64_t per_group = sb->s_blocks_per_group;
  if (per_group == 0) return "its superblock claims 0 blocks per group";
  // A group's block bitmap is one block: at most 8 bits per byte of it.
  const uint64_t clusters_per_group = EXT2_CLUSTERS_PER_GROUP(sb);
  if (clusters_per_group == 0 || clusters_per_group % 8 != 0 || clusters_per_group > 8 * block_size ||
      clusters_per_group * EXT2FS_CLUSTER_RATIO(fs) != per_group)
    return fmt::format("its superblock claims {} blocks and {} clusters per group, which no bitmap of {} bytes "
                       "holds",
                       per_group, clusters_per_group, block_size);
  const uint64_t groups = (blocks - sb->s_first_data_block + per_group - 1) / per_group;
  const uint64_t descriptor_bytes = groups * EXT2_DESC_SIZE(sb);
  if (descriptor_bytes > kMaxDescriptorBytes)
    return fmt::format("its {} block groups would need {} bytes of descriptors", groups,
                       descriptor_bytes);
  if (blocks / 8 > kMaxBitmapBytes)
    return fmt::format("its block bitmap would need {} bytes", blocks / 8);
  return "";
}

// Opens the file system read-only: the superblock alone first, to check it,
// then with its group descriptors.
Result<ExtOutcome> Open(const std::string& name, Region& region, FsHandle& out) {
  ext2_filsys raw = nullptr;
  errcode_t err = ext2fs_open2(name.c_str(), nullptr, EXT2_FLAG_64BITS | EXT2_FLAG_SUPER_ONLY, 0,
                               0, ImageIoManager(), &raw);
  FsHandle fs(raw);
  if (!region.error.ok()) return region.error;
  if (err == EXT2_ET_BAD_MAGIC || (err == EXT2_ET_SHORT_READ && region.length < 2048))
    return ExtOutcome{ExtOutcome::kNotExt, ""};
  if (err) return LeftAlone(Describe(err));
  std::string refusal = RefusalOf(fs.get(), region.length);
  if (!refusal.empty()) return LeftAlone(std::move(refusal));
  fs.reset();

  raw = nullptr;
  err = ext2fs_open2(name.c_str(), nullptr, EXT2_FLAG_64BITS, 0, 0, ImageIoManager(), &raw);
  fs.reset(raw);
  if (!region.error.ok()) return region.error;
  if (err) return LeftAlone(Describe(err));
  // The same superblock, read again: check it again rather than assume.
  refusal = RefusalOf(fs.get(), region.length);
  if (!refusal.empty()) return LeftAlone(std::move(refusal));
  out = std::move(fs);
  return ExtOutcome{ExtOutcome::kRead, ""};
}

}  // namespace

Result<ExtOutcome> ReadExtFreeSpace(const Image& image, uint64_t offset, uint64_t length,
                                    uint64_t min_length, std::vector<FreeRange>& free) {
  Region region{&image, offset, length, Status::Ok()};
  Registration registration(&region);
  FsHandle fs;
  VHDX_ASSIGN_OR_RETURN(ExtOutcome opened, Open(registration.name(), region, fs));
  if (opened.kind != ExtOutcome::kRead) return opened;

  // A bit array costs blocks/8 bytes, known (and capped) in advance; the
  // default red-black tree grows with the bitmap's fragmentation instead.
  fs->default_bitmap_type = EXT2FS_BMAP64_BITARRAY;
  errcode_t err = ext2fs_read_block_bitmap(fs.get());
  if (!region.error.ok()) return region.error;
  if (err) return LeftAlone(Describe(err));

  const uint64_t block_size = fs->blocksize;
  const blk64_t last = ext2fs_blocks_count(fs->super) - 1;
  std::vector<FreeRange> runs;
  blk64_t start = fs->super->s_first_data_block;
  while (start <= last) {
    blk64_t zero = 0;
    err = ext2fs_find_first_zero_block_bitmap2(fs->block_map, start, last, &zero);
    if (err == ENOENT) break;
    if (err) return LeftAlone(Describe(err));
    blk64_t set = 0;
    err = ext2fs_find_first_set_block_bitmap2(fs->block_map, zero, last, &set);
    if (err != 0 && err != ENOENT) return LeftAlone(Describe(err));
    const blk64_t end = err == ENOENT ? last + 1 : set;
    // Each step must move forward, or a bitmap walk could spin for ever.
    if (zero < start || end <= zero)
      return LeftAlone(fmt::format("its block bitmap walk stalled at block {}", start));
    const uint64_t run_length = (end - zero) * block_size;
    if (run_length >= min_length) {
      if (runs.size() >= kMaxRuns)
        return LeftAlone(fmt::format("its free space is in more than {} runs", kMaxRuns));
      runs.push_back({offset + zero * block_size, run_length});
    }
    start = end;
  }
  free.insert(free.end(), runs.begin(), runs.end());
  return opened;
}

}  // namespace vhdx::fs
