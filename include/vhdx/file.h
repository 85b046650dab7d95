// The host-file interface every byte of libvhdx goes through (LevelDB's Env,
// SQLite's VFS). Tests swap in the in-memory or fault-injecting file; the
// fuzzer opens images from memory.
//
// Implementations must be safe for concurrent ReadAt calls from many
// threads; writes to disjoint ranges may also run concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vhdx/export.h"
#include "vhdx/status.h"

namespace vhdx {

class VHDX_API File {
 public:
  virtual ~File() = default;

  // Reads up to `n` bytes at `offset`. Returns the number of bytes read,
  // which is less than `n` only when the end of the file is reached.
  virtual Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const = 0;
  virtual Status WriteAt(uint64_t offset, const void* buf, size_t n) = 0;
  // Makes every completed write durable (fdatasync).
  virtual Status Flush() = 0;
  virtual Result<uint64_t> Size() const = 0;
  virtual Status Truncate(uint64_t size) = 0;
  // Deallocates the range; it reads as zeros afterwards. The size is kept.
  virtual Status PunchHole(uint64_t offset, uint64_t length) = 0;
  // Reserves real disk space for the range (fallocate), extending the file
  // if needed; the range reads as zeros where it was not written before.
  virtual Status Allocate(uint64_t offset, uint64_t length) = 0;
  // Bytes the file occupies on the host (st_blocks * 512 for POSIX files).
  virtual Result<uint64_t> AllocatedSize() const { return Size(); }
  // The first offset at or after `offset` that may hold data: every byte
  // before it (from `offset`) reads as zeros, a hole (SEEK_DATA for POSIX
  // files). At least the size when nothing follows. Scans of mostly empty
  // space (check's leak search) skip holes with it; the default knows of
  // no hole.
  virtual Result<uint64_t> NextData(uint64_t offset) const { return offset; }
  virtual bool writable() const = 0;
  // A hint that [offset, offset+length) will be read soon, so the host can
  // start reading it (posix_fadvise WILLNEED). Returns at once; no errors.
  virtual void WillNeed(uint64_t /*offset*/, uint64_t /*length*/) const {}
  // Drops the file's lock against other processes (FileLockMode) before
  // the file is closed: called once the image is closed and clean.
  virtual void ReleaseLock() {}
  // Name used in error messages (the path, or a label for memory files).
  virtual const std::string& name() const = 0;
};

// How an open host file is locked against other processes, for as long as
// it is open (QEMU's image locks, so qemu and libvhdx respect each other):
// kRead shares the file with other readers and refuses writers; kWrite
// refuses every other process's reader and writer. Opens within one process
// never conflict with each other. A refused open fails with kBusy.
enum class FileLockMode { kNone, kRead, kWrite };

// Opens a host file. `writable` opens O_RDWR, otherwise O_RDONLY. `direct`
// adds O_DIRECT; the file then bounces unaligned requests through aligned
// buffers (read-modify-write of partial 4 KiB sectors). `lock`: see
// FileLockMode (kWrite needs `writable`).
VHDX_API Result<std::unique_ptr<File>> OpenPosixFile(const std::string& path, bool writable,
                                                     bool direct = false,
                                                     FileLockMode lock = FileLockMode::kNone);
// Creates (or truncates) a host file for writing, locked kWrite: a file
// another process has open is refused (kBusy) before it is truncated.
VHDX_API Result<std::unique_ptr<File>> CreatePosixFile(const std::string& path);

// A file held in memory; `writable` false makes every write fail.
VHDX_API std::unique_ptr<File> NewMemoryFile(std::string name, std::vector<uint8_t> contents,
                                             bool writable = true);

// Reads exactly `n` bytes at `offset`, or fails with kCorrupt naming `what`
// when the file ends first (a structure runs past the end of the file).
VHDX_API Status ReadExact(const File& file, uint64_t offset, void* buf, size_t n, const char* what);

}  // namespace vhdx
