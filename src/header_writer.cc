#include "header_writer.h"

#include <fmt/format.h>

#include "format/constants.h"

namespace vhdx {

using namespace format;

Status UpdateHeaders(File& file, HeaderSet* set, const std::function<void(Header&)>& change) {
  if (set->current < 0) return Status(Errc::kCorrupt, "no current header to update");
  Header next = set->Current();
  change(next);
  for (int pass = 0; pass < 2; ++pass) {
    int slot = 1 - set->current;
    next.sequence_number = set->Current().sequence_number + 1;
    std::vector<uint8_t> raw(kHeaderSize);
    SerializeHeader(next, raw.data());
    uint64_t offset = kHeaderOffsets[slot];
    VHDX_RETURN_IF_ERROR(file.WriteAt(offset, raw.data(), raw.size())
                             .WithContext(fmt::format("header at offset {:#x}", offset)));
    VHDX_RETURN_IF_ERROR(file.Flush());
    set->headers[slot] = next;
    set->raw[slot] = std::move(raw);
    set->problems[slot] = Status::Ok();
    set->current = slot;
  }
  return Status::Ok();
}

Result<size_t> ReplayLogInPlace(File& file, HeaderSet* set) {
  VHDX_ASSIGN_OR_RETURN(uint64_t size, file.Size());
  // Everything is validated before the first byte changes.
  VHDX_ASSIGN_OR_RETURN(LogState log, LoadLog(file, set->Current(), size));
  if (!log.active) return size_t{0};
  const Header h = set->Current();
  VHDX_RETURN_IF_ERROR(UpdateHeaders(file, set, [](Header& next) { next.file_write_guid = Guid::Random(); }));
  VHDX_RETURN_IF_ERROR(ApplyActiveLog(file, h.log_offset, *log.active));
  VHDX_RETURN_IF_ERROR(UpdateHeaders(file, set, [](Header& next) { next.log_guid = Guid{}; }));
  return log.active->entries.size();
}

}  // namespace vhdx
