// The partition table of the virtual disk, read by libblkid, and the
// file-system type of a region (for notices), also by libblkid.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vhdx/image.h"
#include "vhdx/status.h"

namespace vhdx::fs {

// libblkid probes only file descriptors; it has no read callback, and
// neither has libfdisk. So the disk is mirrored into a sparse memfd of the
// disk's size holding only the bytes libblkid is meant to look at: the
// first and last MiB (the MBR, both GPT headers and their entry arrays at
// their standard places for 512- and 4096-byte sectors), the first MiB of
// every extended partition and the MiB after every logical one (where
// partitioning tools put the EBRs of a chain). Only non-zero 4 KiB pages are
// stored; holes cost no memory, so a 64 TiB disk costs a few KiB. A table
// whose parts lie elsewhere reads as zeros there: partitions libblkid then
// does not see are left alone, never reported free.
class DiskMirror {
 public:
  static Result<DiskMirror> Create(const Image& image);
  DiskMirror(DiskMirror&& other) noexcept;
  DiskMirror& operator=(DiskMirror&&) = delete;
  DiskMirror(const DiskMirror&) = delete;
  ~DiskMirror();

  // Copies the non-zero pages of [offset, offset + length) (clamped to the
  // disk) from the image into the mirror.
  Status Populate(uint64_t offset, uint64_t length);
  // Drops [offset, offset + length) from the mirror again (memory only).
  void Forget(uint64_t offset, uint64_t length);

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  uint32_t sector_size() const { return sector_size_; }

 private:
  DiskMirror(const Image& image, int fd);
  const Image* image_;
  int fd_;
  uint64_t size_;
  uint32_t sector_size_;
};

struct Partition {
  int number = 0;                // as the table numbers it (blkid's partno)
  uint64_t offset = 0;           // bytes of the disk
  uint64_t length = 0;           // bytes
  bool container = false;        // an MBR extended partition (holds logical ones)
  std::string type;              // "0x83", or a GPT type GUID
};

struct PartitionTable {
  enum Kind {
    kNone,        // no partition table: the whole disk is one candidate
    kTable,       // `name` ("dos", "gpt") with `partitions`
    kUnreadable,  // libblkid failed on it: nothing on the disk is trusted
  };
  Kind kind = kNone;
  std::string name;
  std::vector<Partition> partitions;  // sorted by offset
};

Result<PartitionTable> ReadPartitionTable(DiskMirror& mirror);

// The file-system type libblkid sees in [offset, offset + length) ("vfat",
// "xfs", ...), "" when it sees none. Populates the region's first and last
// MiB in the mirror for the probe and drops them afterwards.
Result<std::string> ProbeFsType(DiskMirror& mirror, uint64_t offset, uint64_t length);

}  // namespace vhdx::fs
