#include "fs/partitions.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>

#include "util/strings.h"

namespace vhdx::fs {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr size_t kPage = 4096;
// Rounds of probing that follow an EBR chain one link further each; libblkid
// itself stops a chain after 100 links.
constexpr int kMaxProbeRounds = 128;

bool AllZero(const uint8_t* p, size_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

struct ProbeDeleter {
  void operator()(blkid_probe pr) const { blkid_free_probe(pr); }
};
using Probe = std::unique_ptr<std::remove_pointer_t<blkid_probe>, ProbeDeleter>;

Result<Probe> NewProbe(const DiskMirror& mirror, uint64_t offset, uint64_t length) {
  Probe pr(blkid_new_probe());
  if (!pr) return Status(Errc::kNoMemory, "libblkid: cannot allocate a probe");
  if (blkid_probe_set_device(pr.get(), mirror.fd(), static_cast<blkid_loff_t>(offset),
                             static_cast<blkid_loff_t>(length)) != 0)
    return Status(Errc::kIoError, fmt::format("libblkid: cannot probe the region at {}", Hex(offset)));
  blkid_probe_set_sectorsize(pr.get(), mirror.sector_size());
  return pr;
}

struct Scan {
  PartitionTable table;
  // Where the EBR chains may continue: the windows to populate next round.
  std::vector<uint64_t> next_windows;
};

Result<Scan> ScanOnce(const DiskMirror& mirror) {
  VHDX_ASSIGN_OR_RETURN(Probe pr, NewProbe(mirror, 0, mirror.size()));
  blkid_probe_enable_superblocks(pr.get(), 0);
  blkid_probe_enable_partitions(pr.get(), 1);
  blkid_probe_set_partitions_flags(pr.get(), BLKID_PARTS_ENTRY_DETAILS);
  Scan scan;
  // blkid_probe_get_partitions answers NULL both for "no table" and for an
  // error; the safe probe tells them apart (and refuses two tables at once).
  const int rc = blkid_do_safeprobe(pr.get());
  if (rc == 1) return scan;  // kNone
  blkid_partlist list = rc == 0 ? blkid_probe_get_partitions(pr.get()) : nullptr;
  if (list == nullptr) {
    scan.table.kind = PartitionTable::kUnreadable;
    scan.table.name = rc == -2 ? "ambiguous: more than one partition table" : "";
    return scan;
  }
  blkid_parttable root = blkid_partlist_get_table(list);
  const int count = blkid_partlist_numof_partitions(list);
  scan.table.kind = PartitionTable::kTable;
  if (root != nullptr && blkid_parttable_get_type(root) != nullptr)
    scan.table.name = blkid_parttable_get_type(root);
  for (int i = 0; i < count; i++) {
    blkid_partition par = blkid_partlist_get_partition(list, i);
    if (par == nullptr) continue;
    // libblkid counts partitions in 512-byte units whatever the sector size.
    const blkid_loff_t start = blkid_partition_get_start(par);
    const blkid_loff_t size = blkid_partition_get_size(par);
    if (start < 0 || size < 0 || static_cast<uint64_t>(start) > UINT64_MAX / 512 ||
        static_cast<uint64_t>(size) > UINT64_MAX / 512)
      continue;  // not representable: cannot be inside the disk either
    Partition p;
    p.number = blkid_partition_get_partno(par);
    p.offset = static_cast<uint64_t>(start) * 512;
    p.length = static_cast<uint64_t>(size) * 512;
    p.container = blkid_partition_is_extended(par) != 0;
    const char* type = blkid_partition_get_type_string(par);
    p.type = type != nullptr ? type : fmt::format("{:#x}", blkid_partition_get_type(par));
    if (p.container) scan.next_windows.push_back(p.offset);
    if (blkid_partition_is_logical(par) && p.length <= UINT64_MAX - p.offset)
      scan.next_windows.push_back(p.offset + p.length);
    scan.table.partitions.push_back(std::move(p));
  }
  std::sort(scan.table.partitions.begin(), scan.table.partitions.end(),
            [](const Partition& a, const Partition& b) {
              return a.offset != b.offset ? a.offset < b.offset : a.number < b.number;
            });
  return scan;
}

}  // namespace

DiskMirror::DiskMirror(const Image& image, int fd)
    : image_(&image),
      fd_(fd),
      size_(image.virtual_size()),
      sector_size_(image.info().logical_sector_size) {}

DiskMirror::DiskMirror(DiskMirror&& other) noexcept
    : image_(other.image_), fd_(other.fd_), size_(other.size_), sector_size_(other.sector_size_) {
  other.fd_ = -1;
}

DiskMirror::~DiskMirror() {
  if (fd_ >= 0) close(fd_);
}

Result<DiskMirror> DiskMirror::Create(const Image& image) {
  int fd = memfd_create("vhdx-partition-probe", MFD_CLOEXEC);
  if (fd < 0)
    return Status(Errc::kIoError, fmt::format("memfd_create for the partition probe: {}",
                                              std::strerror(errno)));
  DiskMirror mirror(image, fd);
  if (ftruncate(fd, static_cast<off_t>(mirror.size_)) != 0)
    return Status(Errc::kIoError, fmt::format("sizing the partition-probe memfd to {} bytes: {}",
                                              mirror.size_, std::strerror(errno)));
  return mirror;
}

Status DiskMirror::Populate(uint64_t offset, uint64_t length) {
  if (offset >= size_) return Status::Ok();
  length = std::min(length, size_ - offset);
  // Whole pages, so that a page is either stored or a hole.
  uint64_t begin = offset / kPage * kPage;
  const uint64_t end = std::min(size_, (offset + length + kPage - 1) / kPage * kPage);
  std::vector<uint8_t> buf(64 * 1024);
  while (begin < end) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - begin));
    VHDX_RETURN_IF_ERROR(image_->Read(begin, buf.data(), n));
    for (size_t at = 0; at < n; at += kPage) {
      const size_t k = std::min(kPage, n - at);
      if (AllZero(buf.data() + at, k)) continue;
      if (pwrite(fd_, buf.data() + at, k, static_cast<off_t>(begin + at)) != static_cast<ssize_t>(k))
        return Status(Errc::kNoMemory, fmt::format("partition-probe memfd write at {}: {}",
                                                   Hex(begin + at), std::strerror(errno)));
    }
    begin += n;
  }
  return Status::Ok();
}

void DiskMirror::Forget(uint64_t offset, uint64_t length) {
  if (offset >= size_) return;
  length = std::min(length, size_ - offset);
  // Only memory is at stake: a failure leaves the pages in place, harmlessly.
  (void)fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length));
}

Result<PartitionTable> ReadPartitionTable(DiskMirror& mirror) {
  const uint64_t size = mirror.size();
  const uint64_t edge = std::min(size, kMiB);
  VHDX_RETURN_IF_ERROR(mirror.Populate(0, edge));
  VHDX_RETURN_IF_ERROR(mirror.Populate(size - edge, edge));
  // Each round lets libblkid follow an MBR extended partition's EBR chain
  // one link further, until no new window turns up.
  std::set<uint64_t> populated;
  for (int round = 0;; round++) {
    VHDX_ASSIGN_OR_RETURN(Scan scan, ScanOnce(mirror));
    bool grew = false;
    for (uint64_t window : scan.next_windows) {
      if (window >= size || !populated.insert(window).second) continue;
      VHDX_RETURN_IF_ERROR(mirror.Populate(window, kMiB));
      grew = true;
    }
    if (!grew || round + 1 >= kMaxProbeRounds) return std::move(scan.table);
  }
}

Result<std::string> ProbeFsType(DiskMirror& mirror, uint64_t offset, uint64_t length) {
  const uint64_t edge = std::min(length, kMiB);
  VHDX_RETURN_IF_ERROR(mirror.Populate(offset, edge));
  VHDX_RETURN_IF_ERROR(mirror.Populate(offset + length - edge, edge));
  std::string type;
  {
    VHDX_ASSIGN_OR_RETURN(Probe pr, NewProbe(mirror, offset, length));
    blkid_probe_enable_partitions(pr.get(), 0);
    blkid_probe_enable_superblocks(pr.get(), 1);
    blkid_probe_set_superblocks_flags(pr.get(), BLKID_SUBLKS_TYPE);
    const char* value = nullptr;
    const int rc = blkid_do_safeprobe(pr.get());
    if (rc == 0 && blkid_probe_lookup_value(pr.get(), "TYPE", &value, nullptr) == 0 &&
        value != nullptr)
      type = value;
    else if (rc == -2)
      type = "ambiguous signatures";
  }
  mirror.Forget(offset, edge);
  mirror.Forget(offset + length - edge, edge);
  return type;
}

}  // namespace vhdx::fs
