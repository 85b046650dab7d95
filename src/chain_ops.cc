// The ImageImpl side of chain operations (chain.cc): the parent locator
// rewritten through the log, the DataWriteGuid of the next session, and
// a child emptied of its blocks.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "format/constants.h"
#include "image_impl.h"
#include "util/coding.h"

namespace vhdx {

using namespace format;

void ImageImpl::SetNextDataWriteGuid(const Guid& guid) { next_data_write_guid_ = guid; }

Status ImageImpl::StageMetadataLocked(uint64_t file_offset, const uint8_t* p, size_t n) {
  while (n > 0) {
    // The sector as it is now, or as an earlier staged change left it.
    const uint64_t at = file_offset / 4096 * 4096;
    auto it = pending_metadata_.find(at);
    if (it == pending_metadata_.end()) {
      std::vector<uint8_t> bytes(4096);
      VHDX_RETURN_IF_ERROR(ReadExact(*physical_, at, bytes.data(), bytes.size(), "metadata region"));
      it = pending_metadata_.emplace(at, std::move(bytes)).first;
    }
    const size_t in = file_offset % 4096;
    const size_t k = std::min<size_t>(n, 4096 - in);
    std::memcpy(it->second.data() + in, p, k);
    file_offset += k;
    p += k;
    n -= k;
  }
  return Status::Ok();
}

Status ImageImpl::RewriteParentLocator(const ParentLocator& locator) {
  if (!writable_) return Status(Errc::kReadOnly, "parent locator: the image is open read-only");
  if (closed_) return Status(Errc::kInvalidArgument, "parent locator: the image is closed");
  if (!locator_) return Status(Errc::kInvalidArgument, "not a differencing image: it has no parent locator");
  std::vector<uint8_t> item = SerializeParentLocator(locator);
  {
    // The new locator must read back as valid before anything changes.
    ParentLocator check;
    VHDX_RETURN_IF_ERROR(ParseParentLocator(item.data(), item.size(), 0, &check));
  }
  VHDX_RETURN_IF_ERROR(BeginChange());
  std::lock_guard lock(commit_mu_);
  size_t which = meta_table_.entries.size();
  for (size_t i = 0; i < meta_table_.entries.size(); ++i)
    if (!meta_table_.entries[i].is_user() && meta_table_.entries[i].item_id == kParentLocatorGuid) which = i;
  if (which == meta_table_.entries.size())
    return Status(Errc::kCorrupt, "metadata table: no parent locator entry");
  MetadataEntry& entry = meta_table_.entries[which];
  // In place when it fits before the next item; else after every item.
  uint64_t place = entry.offset;
  uint64_t items_end = kMetadataTableSize;
  bool fits = true;
  for (size_t i = 0; i < meta_table_.entries.size(); ++i) {
    const MetadataEntry& m = meta_table_.entries[i];
    if (m.length == 0) continue;
    items_end = std::max<uint64_t>(items_end, uint64_t{m.offset} + m.length);
    if (i != which && m.offset < place + item.size() && uint64_t{m.offset} + m.length > place) fits = false;
  }
  if (!fits) place = (items_end + 7) / 8 * 8;
  if (place + item.size() > meta_region_length_)
    return Status(Errc::kNoSpace, fmt::format("metadata region at offset {:#x}: no room for a parent "
                                              "locator of {} bytes",
                                              meta_region_offset_, item.size()));
  uint8_t fields[8];
  EncodeFixed32(fields, static_cast<uint32_t>(place));
  EncodeFixed32(fields + 4, static_cast<uint32_t>(item.size()));
  Status s = StageMetadataLocked(meta_region_offset_ + 32 + 32 * which + 16, fields, 8);
  if (s.ok()) s = StageMetadataLocked(meta_region_offset_ + place, item.data(), item.size());
  if (!s.ok()) {
    pending_metadata_.clear();
    return s;
  }
  entry.offset = static_cast<uint32_t>(place);
  entry.length = static_cast<uint32_t>(item.size());
  // Table entry and item in one entry of the log: durable when we return.
  VHDX_RETURN_IF_ERROR(CommitLocked());
  locator_ = locator;
  info_.parent = ParentLocatorInfo{locator.locator_type, locator.entries};
  return Status::Ok();
}

Status ImageImpl::DropAllBlocks() {
  if (!geo_.has_parent) return Status(Errc::kInvalidArgument, "not a differencing image");
  VHDX_RETURN_IF_ERROR(CheckWritable(0, 0, "empty the image"));
  VHDX_RETURN_IF_ERROR(BeginChange());
  VHDX_ASSIGN_OR_RETURN(BlockAllocator * alloc, Allocator());
  constexpr uint64_t kBatch = 65536;
  std::vector<uint64_t> entries;
  for (uint64_t b0 = 0; b0 < geo_.payload_blocks; b0 += kBatch) {
    const uint64_t b1 = std::min(geo_.payload_blocks, b0 + kBatch) - 1;
    const uint64_t i0 = geo_.PayloadIndex(b0);
    VHDX_RETURN_IF_ERROR(bat_->ReadRange(i0, geo_.PayloadIndex(b1) - i0 + 1, &entries));
    for (uint64_t b = b0; b <= b1; ++b) {
      if (BatEntry::Decode(entries[geo_.PayloadIndex(b) - i0]).state == kPayloadNotPresent) continue;
      std::unique_lock lock(BlockLock(b));
      VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(geo_.PayloadIndex(b)));
      BatEntry e = BatEntry::Decode(raw);
      if (e.state == kPayloadNotPresent) continue;
      if ((e.state == kPayloadFullyPresent || e.state == kPayloadPartiallyPresent) &&
          CheckPayload(b, e).ok()) {
        if (release_space_) alloc->Release(e.file_offset);
        ++stat_released_;
      }
      VHDX_RETURN_IF_ERROR(bat_->Set(geo_.PayloadIndex(b), BatEntry{kPayloadNotPresent, 0}.Encode()));
    }
    VHDX_RETURN_IF_ERROR(MaybeCommit());
  }
  // Bitmap entries last: a BAT page holding a chunk's bitmap entry comes
  // after the pages of its payload entries, so no entry of the log makes a
  // bitmap NOT_PRESENT while a block of its chunk is still PARTIALLY_PRESENT.
  std::lock_guard lock(commit_mu_);
  for (uint64_t c = 0; c < geo_.bitmap_blocks; ++c) {
    const uint64_t index = geo_.BitmapIndex(c);
    if (index >= geo_.total_entries) break;
    VHDX_ASSIGN_OR_RETURN(uint64_t raw, bat_->Get(index));
    BatEntry sb = BatEntry::Decode(raw);
    if (sb.state == kSectorBitmapNotPresent && sb.file_offset == 0) continue;
    if (sb.state == kSectorBitmapPresent && release_space_ &&
        CheckAllocatedEntry(index, sb, MiB, file_size_, reserved_, EntryLabel{}).ok())
      released_bitmaps_.push_back(sb.file_offset);
    VHDX_RETURN_IF_ERROR(bat_->Set(index, BatEntry{kSectorBitmapNotPresent, 0}.Encode()));
  }
  return CommitLocked();
}

}  // namespace vhdx
