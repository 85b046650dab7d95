// The Image implementation, split by concern: image.cc opens and reads
// (image_open_chain.cc: the parent chain); image_map.cc maps;
// image_write.cc writes and discards (image_write_child.cc: the blocks of
// differencing images); image_commit.cc commits, flushes and closes;
// chain_ops.cc holds the hooks of the chain operations.
#pragma once

#include <array>
#include <map>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <vector>

#include "bat_cache.h"
#include "block_allocator.h"
#include "format/bat.h"
#include "image_loader.h"
#include "log_writer.h"
#include "sector_bitmap_cache.h"
#include "vhdx/image.h"
#include "vhdx/compact.h"
#include "vhdx/resize.h"

namespace vhdx {

class ImageImpl final : public Image {
 public:
  ~ImageImpl() override;
  static Result<std::unique_ptr<Image>> Open(std::unique_ptr<File> file, bool read_only);

  // Differencing images: finds, opens and checks the parent chain (image_open_chain.cc).
  struct ChainGuard;
  Status AttachParent(const OpenOptions& options, ChainGuard& guard);

  // For chain operations (chain.cc; chain_ops.cc). The DataWriteGuid the session's first
  // change gives the file (instead of a random one).
  void SetNextDataWriteGuid(const Guid& guid);
  // Replaces the parent locator; committed through the log with the next
  // flush (the metadata table entry and item change in one entry).
  Status RewriteParentLocator(const format::ParentLocator& locator);
  const format::ParentLocator* parent_locator() const { return locator_ ? &*locator_ : nullptr; }
  // Every payload block NOT_PRESENT (reads through to the parent), its space
  // and the sector bitmaps released. Differencing images only.
  Status DropAllBlocks();
  // Resize-VHD (resize.cc): sets the virtual size to `new_size` through the
  // log, then closes the image. Sizes and chain rules checked by the caller.
  Result<ResizeResult> ResizeAndClose(uint64_t new_size, const ResizeOptions& options);
  // Optimize-VHD (compact.cc): releases all-zero blocks, moves blocks down
  // into the holes and truncates the file, then closes the image. The image
  // is the caller's alone meanwhile (no other thread uses it).
  Result<CompactResult> CompactAndClose(const CompactOptions& options);

  const ImageInfo& info() const override { return info_; }
  const Image* parent() const override { return parent_.get(); }
  Status Read(uint64_t offset, void* buf, size_t n) const override;
  Status Map(uint64_t start, uint64_t length,
             const std::function<bool(const MapExtent&)>& sink) const override;
  Result<AllocationSummary> CountAllocation() const override;
  void Prefetch(uint64_t offset, uint64_t length) const override;

  Status Write(uint64_t offset, const void* buf, size_t n, const WriteOptions& options) override;
  Status Flush() override;
  Status Discard(uint64_t offset, uint64_t length) override;
  Status WriteZeroes(uint64_t offset, uint64_t length, bool may_unmap) override;
  Status Close() override;
  WriteStats write_stats() const override;

 private:
  // Blocks are guarded by a fixed array of reader/writer locks (block number
  // modulo the array size): readers and in-place writers share a block's
  // lock, state changes (allocation, release) take it exclusively. So a
  // block's file space is never released or reused under a reader.
  static constexpr size_t kBlockLocks = 1024;
  std::shared_mutex& BlockLock(uint64_t block) const { return block_locks_[block % kBlockLocks]; }

  Status ParentNeeded() const;
  Status CheckRange(uint64_t offset, uint64_t n, const char* op) const;
  // Validates payload entry `e` of block `b` for reading.
  Status CheckPayload(uint64_t b, const format::BatEntry& e) const;
  // Checks the linkage and sector size of a candidate parent.
  Status CheckParent(const Image& parent, const std::string& path, bool ignore_linkage) const;
  // Reads [offset, offset+n) from the parent (zeros past its end).
  Status ReadParent(uint64_t offset, uint8_t* out, size_t n) const;
  // The sector bitmap block of the chunk of block `b`, checked present.
  Result<uint64_t> BitmapOf(uint64_t b) const;
  // First bit of block `b` in its chunk's bitmap.
  uint64_t FirstBit(uint64_t b) const {
    return (b % geo_.chunk_ratio) * geo_.SectorsPerBlock();
  }
  // Reads part of a PARTIALLY_PRESENT block: present sectors from the file,
  // the others from the parent.
  Status ReadPartial(uint64_t b, const format::BatEntry& e, uint64_t in_block, uint8_t* out,
                     size_t n) const;

  // Write path (image_write.cc, image_write_child.cc, image_commit.cc).
  Status CheckWritable(uint64_t offset, uint64_t n, const char* op) const;
  // The session's first change of the file: new FileWriteGuid and
  // DataWriteGuid in the headers, durable before anything else changes.
  Status BeginChange();
  Status WriteInBlock(uint64_t block, uint64_t in_block, const uint8_t* data, size_t n);
  // A FULLY_PRESENT block `e`: checked, then written where it lies.
  Status WriteInPlace(uint64_t block, const format::BatEntry& e, uint64_t in_block, const uint8_t* data,
                      size_t n);
  // Allocates a FULLY_PRESENT block for `block` (whose entry `e` reads as
  // zeros), the rest of it zeroed (block lock held exclusively).
  Status AllocateFull(uint64_t block, const format::BatEntry& e, uint64_t in_block, const uint8_t* data,
                      size_t n);
  // Differencing images: a write into a block that is not FULLY_PRESENT.
  Status WriteInChildBlock(uint64_t block, uint64_t in_block, const uint8_t* data, size_t n);
  // The chunk's sector bitmap block, allocated (and committed) if needed.
  Result<uint64_t> EnsureBitmap(uint64_t block);
  Status ZeroChildRange(uint64_t block, uint64_t in_block, uint64_t n, bool whole, bool unmap,
                        uint8_t new_state);
  Status ZeroInBlock(uint64_t block, uint64_t in_block, uint64_t n, bool whole, uint8_t new_state);
  Status ZeroRange(uint64_t offset, uint64_t length, bool may_unmap, uint8_t whole_block_state);
  // The allocator, created on first use by scanning the BAT (commit_mu_ held).
  Result<BlockAllocator*> Allocator();
  Status CreateAllocator();
  // Commits pending BAT changes through the log and applies them.
  Status Commit();
  Status CommitLocked();
  Status MaybeCommit();
  Status Fail(Status s);  // remembers the first failure of the write path
  Status Failure() const;
  Status FlushFile();
  uint64_t UsedBytes(uint64_t block) const;
  // Raises file_size_ (the view's size, which reads check) to `end`.
  void GrowFileSize(uint64_t end);

  std::unique_ptr<File> physical_;
  std::unique_ptr<ReplayOverlayFile> overlay_;
  const File* view_ = nullptr;  // overlay when the log is dirty, else physical
  // Logical size of view_: as opened, then grown by allocations.
  std::atomic<uint64_t> file_size_{0};
  uint64_t open_file_size_ = 0;  // file_size_ as opened
  format::Geometry geo_;
  ImageInfo info_;
  std::vector<Reserved> reserved_;
  std::unique_ptr<BatCache> bat_;
  std::unique_ptr<SectorBitmapCache> bitmaps_;  // differencing images
  // Read-only differencing images: each chunk's checked bitmap offset once
  // known (0: not yet). Their BAT never changes.
  mutable std::unique_ptr<std::atomic<uint64_t>[]> known_bitmaps_;
  std::shared_ptr<const Image> parent_;
  std::optional<format::ParentLocator> locator_;
  uint64_t meta_region_offset_ = 0, meta_region_length_ = 0;
  format::MetadataTable meta_table_;
  mutable std::array<std::shared_mutex, kBlockLocks> block_locks_;

  // Write state. The headers change only under commit_mu_.
  bool writable_ = false;
  HeaderSet headers_;
  std::atomic<bool> closed_{false};
  std::atomic<bool> changed_{false};  // BeginChange done
  std::mutex commit_mu_;              // commits, header updates, allocator setup
  std::unique_ptr<LogWriter> log_;    // once the session's log is started
  std::unique_ptr<BlockAllocator> allocator_;
  std::atomic<BlockAllocator*> allocator_ready_{nullptr};
  bool release_space_ = true;  // false when BAT entries share file space
  Status allocator_refusal_;   // why a damaged image cannot allocate
  mutable std::mutex failure_mu_;
  Status failure_;                    // sticky: the write path stopped
  std::atomic<bool> failed_{false};
  size_t max_dirty_pages_ = 1024;
  std::optional<Guid> next_data_write_guid_;
  // Metadata region sectors changed (under commit_mu_), logged with the next
  // commit: file offset -> 4 KiB.
  std::map<uint64_t, std::vector<uint8_t>> pending_metadata_;
  // Sector bitmap blocks released (under commit_mu_), punched once committed.
  std::vector<uint64_t> released_bitmaps_;
  // Stages a change of `n` bytes at `file_offset` (metadata region or region
  // table) in pending_metadata_, logged first by the next CommitLocked
  // (commit_mu_ held).
  Status StageMetadataLocked(uint64_t file_offset, const uint8_t* p, size_t n);

  std::atomic<uint64_t> stat_flushes_{0}, stat_log_entries_{0}, stat_allocated_{0},
      stat_released_{0}, stat_header_updates_{0};
};

}  // namespace vhdx
