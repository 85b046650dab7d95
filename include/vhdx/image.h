// libvhdx public API: open a VHDX image, describe it, map it, read and
// write it.
//
//   auto image = vhdx::Image::Open("disk.vhdx", {.read_only = false});
//   if (!image.ok()) { puts(image.status().message().c_str()); return 1; }
//   std::vector<char> buf(4096);
//   vhdx::Status s = (*image)->Read(0, buf.data(), buf.size());
//   s = (*image)->Write(0, buf.data(), buf.size());
//   s = (*image)->Close();  // flushes, empties the log
//
// Thread safety: every member of Image except Close may be called from many
// threads at once. Reads do not serialise on a shared lock; writes to
// different blocks proceed in parallel, and readers are not blocked by
// writers to other blocks.
//
// Durability contract (read-write images): after Flush() returns ok, every
// write, discard and write-zeroes that completed before Flush() was called
// survives a crash or power failure. A crash before that may lose any of
// those recent changes (each byte then reads as its old or its new value)
// but never leaves the image inconsistent: the next open replays the log and
// no read ever returns bytes that were not written to the virtual disk (no
// stale host data, no other block's data). A write with `fua` set is
// durable when it returns. Close() flushes, applies the log and clears
// LogGuid, so readers without log support open the file.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "vhdx/export.h"
#include "vhdx/file.h"
#include "vhdx/guid.h"
#include "vhdx/status.h"

namespace vhdx {

enum class DiskType { kFixed, kDynamic, kDifferencing };
VHDX_API const char* DiskTypeName(DiskType type);

// Payload block states (BAT entry bits 0-2).
enum class BlockState : uint8_t {
  kNotPresent = 0,
  kUndefined = 1,
  kZero = 2,
  kUnmapped = 3,
  kFullyPresent = 6,
  kPartiallyPresent = 7,
};
VHDX_API const char* BlockStateName(unsigned state);

struct HeaderInfo {
  bool valid = false;
  std::string problem;  // why it is not valid
  uint64_t sequence_number = 0;
  Guid file_write_guid, data_write_guid, log_guid;
  uint16_t log_version = 0;
  uint16_t version = 0;
  uint32_t log_length = 0;
  uint64_t log_offset = 0;
};

struct RegionInfo {
  Guid guid;
  std::string name;  // "bat", "metadata" or "unknown"
  uint64_t file_offset = 0;
  uint32_t length = 0;
  bool required = false;
};

struct MetadataItemInfo {
  Guid item_id;
  std::string name;  // known system item name, or "unknown"
  uint32_t offset = 0;
  uint32_t length = 0;
  bool is_user = false, is_virtual_disk = false, is_required = false;
};

struct LogInfo {
  uint64_t offset = 0;
  uint32_t length = 0;
  bool dirty = false;              // header LogGuid non-zero: needs replay
  uint32_t active_entries = 0;     // entries in the active sequence (tail..head)
  uint32_t active_descriptors = 0;
  uint64_t head_sequence_number = 0;
  uint32_t replayed_entries = 0;   // entries a read-write open applied to the file
};

struct VHDX_API ParentLocatorInfo {
  Guid locator_type;
  std::vector<std::pair<std::string, std::string>> entries;  // key, value (UTF-8)
  // The value for `key`, if present.
  std::optional<std::string> Get(const std::string& key) const;
};

struct ImageInfo {
  std::string filename;
  std::string creator;
  DiskType type = DiskType::kDynamic;
  uint64_t virtual_size = 0;
  uint32_t block_size = 0;
  uint32_t logical_sector_size = 0;
  uint32_t physical_sector_size = 0;
  uint64_t file_size = 0;  // logical length (after in-memory log replay)
  Guid virtual_disk_id;
  std::array<HeaderInfo, 2> headers;
  int current_header = 0;  // index into headers
  int region_table_used = 0;  // 0 = first copy, 1 = second copy
  std::vector<RegionInfo> regions;
  std::vector<MetadataItemInfo> metadata_items;
  LogInfo log;
  uint64_t bat_offset = 0;
  uint64_t bat_entries = 0;   // TotalBATEntries
  uint64_t payload_blocks = 0;
  uint32_t chunk_ratio = 0;
  std::optional<ParentLocatorInfo> parent;
  // The path the parent was opened from (empty: no parent opened).
  std::string parent_filename;
};

// Count of BAT entries per state (payload entries and sector-bitmap entries).
struct AllocationSummary {
  std::array<uint64_t, 8> payload{};        // indexed by state value
  std::array<uint64_t, 8> sector_bitmap{};  // indexed by state value
};

// One range of the virtual disk, qemu-img map style.
struct MapExtent {
  uint64_t start = 0;
  uint64_t length = 0;
  int depth = 0;
  bool present = false;  // defined by this image (not left to a parent)
  bool zero = false;     // reads as zeros
  bool data = false;     // backed by bytes in the file
  std::optional<uint64_t> offset;  // file offset of the data when data
};

struct CheckFinding {
  enum class Severity { kWarning, kError };
  Severity severity = Severity::kError;
  std::string structure;  // "header 1", "region table 2", "BAT entry 17", ...
  uint64_t offset = 0;    // file offset of the structure
  std::string message;
  // As qemu-img check counts them, every error is a corruption. So is a
  // damaged redundant copy (a header or region table copy that readers skip
  // because the other one is valid): only a warning, since the image reads
  // fine, but damage that `check -r all` repairs.
  bool redundant_copy_damaged = false;
  bool corruption() const { return severity == Severity::kError || redundant_copy_damaged; }
};

// File space that nothing references (no header, log, region or BAT entry)
// but that holds data: [offset, offset + length), in whole 1 MiB units of
// the file except that the last unit of a file whose size is not a MiB
// multiple ends at the file size.
struct CheckLeak {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t units = 0;  // 1 MiB units (a partial last unit counts as one)
};

// A BAT entry whose file space is unusable: the repair's work list.
struct CheckBadBatEntry {
  enum class Problem {
    kPlacement,  // past the end of the file, in the header section, over the log or a region
    kOverlap,    // shares file space with another entry
  };
  uint64_t index = 0;  // BAT index
  uint64_t value = 0;  // the raw entry
  bool sector_bitmap = false;
  Problem problem = Problem::kPlacement;
  // kOverlap only: false when every entry it overlaps is clearly the bad
  // one (its reserved bits 3-19 are set, i.e. the entry is garbage), so
  // this one keeps its space.
  bool repair = true;
};

struct VHDX_API CheckReport {
  std::vector<CheckFinding> findings;
  uint64_t bat_entries_checked = 0;
  uint64_t log_entries_checked = 0;
  size_t errors() const;
  size_t warnings() const;
  // Findings that are corruptions (CheckFinding::corruption).
  size_t corruptions() const;

  // Every structure was reached and the whole BAT read: `leaks`,
  // `bad_bat_entries` and `image_end_offset` are complete. False when the
  // check stopped early (no usable header, region table or metadata, an
  // unreadable BAT, too many overlaps to list).
  bool complete = false;
  // Unreferenced file space holding data (sorted, merged). Not findings:
  // leaks waste space but put no data at risk, and a crash in the middle
  // of an allocation leaves them by design.
  std::vector<CheckLeak> leaks;
  uint64_t leaked_units() const;
  // End of the last 1 MiB unit any structure or BAT entry references
  // (clipped to the file size): qemu-img's image-end-offset.
  uint64_t image_end_offset = 0;
  std::vector<CheckBadBatEntry> bad_bat_entries;
};

class Image;

struct OpenOptions {
  // false: open the file read-write. A dirty log is then replayed into the
  // file (new FileWriteGuid, replay, flush, LogGuid cleared) before the
  // image is read. Read-only opens never write: they replay in memory.
  bool read_only = true;
  // Open the host file with O_DIRECT (qemu's cache=none): bypass the host
  // page cache. The file layer aligns every request to 4 KiB itself.
  bool direct_io = false;
  // Image files are locked against other processes while open (QEMU's
  // locks, see FileLockMode): a read-only open fails with kBusy while
  // another process writes the image, a read-write open while another
  // process has it open at all. `force_share` (read-only opens only; as
  // qemu-img's -U) takes no lock: the image is read as it is at that
  // moment, maybe half-written, possibly with a log the writer is using.
  // Parents are opened the same way. Opens from a File are never locked.
  bool force_share = false;

  // ---- Differencing images: finding and checking the parent chain ------
  // A differencing image opens with its whole chain. Each parent is looked
  // for, in this order: `parent_path` (the immediate parent only), the
  // locator's file name in each of `parent_dirs`, the locator's
  // relative_path (against the child's directory), volume_path,
  // absolute_win32_path mapped to a POSIX path, and the locator's file name
  // in the child's own directory. The first candidate that exists is
  // opened read-only and must pass the linkage check. Parents are never
  // written.
  std::string parent_path{};
  std::vector<std::string> parent_dirs{};  // for every level of the chain
  // Open even when a parent's DataWriteGuid matches neither parent_linkage
  // nor parent_linkage2 (the parent changed after the child was made: the
  // chain may read wrong). For forensics and repair only.
  bool ignore_parent_linkage = false;
  // Use this open image as the immediate parent instead of resolving one
  // (still checked: linkage, sector size). Tests, in-memory chains.
  std::shared_ptr<const Image> parent{};
  // Open only this file, not its parent: info() works, reading and writing
  // a differencing image fail. For rebase and info of a broken chain.
  bool skip_parent = false;
};

struct WriteOptions {
  // Force unit access: the write is durable when Write returns (it flushes).
  bool fua = false;
};

// What the write path has done since the image was opened.
struct WriteStats {
  uint64_t flushes = 0;           // File::Flush calls (fsyncs) issued
  uint64_t log_entries = 0;       // log entries written
  uint64_t blocks_allocated = 0;  // payload blocks given file space
  uint64_t blocks_released = 0;   // payload blocks whose space was released
  uint64_t header_updates = 0;    // alternating header writes (2 per update)
};

class VHDX_API Image {
 public:
  virtual ~Image() = default;

  static Result<std::unique_ptr<Image>> Open(const std::string& path,
                                             const OpenOptions& options = {});
  // Opens an image from any File (in-memory, fault-injecting, ...).
  static Result<std::unique_ptr<Image>> Open(std::unique_ptr<File> file,
                                             const OpenOptions& options = {});

  virtual const ImageInfo& info() const = 0;
  uint64_t virtual_size() const { return info().virtual_size; }
  // The open parent of a differencing image (nullptr for other images, or
  // when opened with skip_parent). Walk it for the whole chain.
  virtual const Image* parent() const = 0;

  // Reads `n` bytes of the virtual disk at `offset` (any byte alignment).
  virtual Status Read(uint64_t offset, void* buf, size_t n) const = 0;

  // Calls `sink` for consecutive extents covering [start, start+length),
  // adjacent equal extents merged. Stops early if `sink` returns false.
  virtual Status Map(uint64_t start, uint64_t length,
                     const std::function<bool(const MapExtent&)>& sink) const = 0;

  // Counts BAT entries by state (reads the whole BAT).
  virtual Result<AllocationSummary> CountAllocation() const = 0;
  // A hint that [offset, offset+length) of the virtual disk will be read
  // soon: the host file ranges holding its data, at every level of the
  // chain, are passed to File::WillNeed. Returns at once; errors (a range
  // out of bounds, a damaged BAT entry) are left for the read to report.
  virtual void Prefetch(uint64_t offset, uint64_t length) const = 0;

  // ---- Writing (images opened with read_only = false) -------------------
  // Every call on a read-only image fails with kReadOnly; a range past the
  // virtual size with kOutOfRange. Any byte alignment is accepted.
  // In a differencing image, a write makes the written sectors present in
  // the child (sector bitmap); discard and write-zeroes make the range read
  // as zeros there, never exposing the parent's data again.

  // Writes `n` bytes at `offset`. A block that was not allocated gets file
  // space at a 1 MiB-aligned offset; the parts of it not written read as
  // zeros. All-zero data for an unallocated block allocates nothing.
  virtual Status Write(uint64_t offset, const void* buf, size_t n,
                       const WriteOptions& options = {}) = 0;
  // Makes every completed change durable (see the contract above): flushes
  // payload data, commits the pending BAT changes as log entries, applies
  // them. Costs a constant number of fsyncs however many blocks changed.
  virtual Status Flush() = 0;
  // The range reads as zeros afterwards. Whole blocks of a dynamic image
  // become UNMAPPED and their file space is released (hole punched, reused
  // by later allocations); partial blocks are written with zeros.
  virtual Status Discard(uint64_t offset, uint64_t length) = 0;
  // The range reads as zeros afterwards. With `may_unmap`, whole blocks of a
  // dynamic image become ZERO and their space is released; without it,
  // allocated blocks keep their space and are zeroed in place. Fixed images
  // are always zeroed in place (they stay fully allocated).
  virtual Status WriteZeroes(uint64_t offset, uint64_t length, bool may_unmap) = 0;
  // Flushes, applies the log and clears LogGuid (a clean file), and drops
  // the file's lock (OpenOptions::force_share) so that other processes may
  // open it. Further calls other than info() fail. The parents of a
  // differencing image stay locked for reading until the Image is
  // destroyed. The destructor closes an image that was
  // not closed, ignoring errors; call Close to see them.
  virtual Status Close() = 0;
  virtual WriteStats write_stats() const = 0;
};

// Read-only validation of every structure. Never fails on a damaged image:
// problems become findings. A non-ok Status means the file itself could
// not be read.
VHDX_API Result<CheckReport> Check(const File& file);
// The file is locked for reading (see OpenOptions::force_share).
VHDX_API Result<CheckReport> Check(const std::string& path, bool force_share = false);

// Library version, "MAJOR.MINOR.PATCH".
VHDX_API const char* Version();

}  // namespace vhdx
