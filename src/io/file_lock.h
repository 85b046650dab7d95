// Locks that keep two processes from using one image file in ways that
// corrupt it or read it half-written: a writer excludes every other
// process's reader and writer; readers share.
//
// The locks are QEMU's, so that qemu, qemu-img, qemu-nbd and libvhdx keep
// off each other's images too: open file description (OFD) read locks of
// one byte each, 100 + p for "I use permission p" and 200 + p for "I let
// no one else use p", where p is 0 (consistent read), 1 (write) or 3
// (resize). A reader holds 100, 201 and 203; a writer 100, 101, 103, 201
// and 203. A process takes its own bytes, then tests (F_OFD_GETLK) that no
// other open file description holds the bytes that conflict with them; two
// processes that race both see each other and at least one fails. Nothing
// here blocks.
//
// Within one process every open of a file shares one set of locks (their
// union), so a process never conflicts with itself: a commit writes the
// parent that its child's chain holds open for reading.
#pragma once

#include <memory>
#include <string>

#include "vhdx/file.h"
#include "vhdx/status.h"

namespace vhdx {

// This process's hold on a file's locks; released (and the locks dropped
// that no other hold of this process needs) when destroyed.
class FileLockHold {
 public:
  virtual ~FileLockHold() = default;
};

// Locks the file open as `fd` (named `path` in messages) for `mode`. Fails
// with kBusy naming who is in the way. A file system without OFD locks
// (some network file systems) gives a hold that locks nothing, as QEMU's
// locking=auto does. kNone returns an empty hold.
Result<std::unique_ptr<FileLockHold>> LockFile(int fd, const std::string& path, FileLockMode mode);

}  // namespace vhdx
