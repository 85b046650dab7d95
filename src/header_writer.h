// Updating the two headers (digest §2.4). Headers never go through the log:
// the new header is written over the non-current slot and flushed, then
// again over the other slot, so that both slots hold the new contents and
// the file still opens if either write is torn.
#pragma once

#include <functional>

#include "format/header.h"
#include "image_loader.h"
#include "vhdx/file.h"

namespace vhdx {

// Applies `change` to a copy of the current header and writes it twice
// (sequence numbers current+1 and current+2), flushing after each write.
// `set` is updated to describe the file afterwards.
Status UpdateHeaders(File& file, HeaderSet* set, const std::function<void(format::Header&)>& change);

// Replays the active log of a dirty image into the file, in the order the
// spec requires (§7.5 Apply): new FileWriteGuid, replay and flush, then
// LogGuid cleared. DataWriteGuid is kept so differencing children stay
// linked. Returns the number of entries replayed (0 when clean).
Result<size_t> ReplayLogInPlace(File& file, HeaderSet* set);

}  // namespace vhdx
