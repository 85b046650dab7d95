#include "io/file_lock.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <utility>

namespace vhdx {
namespace {

// QEMU's lock bytes (see the header): 100 + p uses permission p, 200 + p
// refuses it to others.
constexpr off_t kUseBase = 100;
constexpr off_t kRefuseBase = 200;
constexpr int kPermConsistentRead = 0;
constexpr int kPermWrite = 1;
constexpr int kPermResize = 3;

// One file's locks in this process: a descriptor of its own (a duplicate of
// the first opener's, so the locks stay whatever the openers close) and how
// many readers and writers of the process hold it. The duplicate shares its
// open file description with the opener's descriptor, which may outlive
// the entry: the locks are always dropped explicitly, never by close.
struct Entry {
  int fd = -1;
  int readers = 0;
  int writers = 0;
  bool unsupported = false;  // the file system has no OFD locks: lock nothing
  std::set<off_t> held;      // the bytes locked now
};

struct Registry {
  std::mutex mu;
  std::map<std::pair<dev_t, ino_t>, Entry> entries;
};

Registry& TheRegistry() {
  static Registry* registry = new Registry;  // never destroyed: holds outlive static destruction
  return *registry;
}

std::set<off_t> WantedBytes(int readers, int writers) {
  std::set<off_t> bytes;
  if (readers + writers == 0) return bytes;
  bytes = {kUseBase + kPermConsistentRead, kRefuseBase + kPermWrite, kRefuseBase + kPermResize};
  if (writers > 0) {
    bytes.insert(kUseBase + kPermWrite);
    bytes.insert(kUseBase + kPermResize);
  }
  return bytes;
}

int SetByte(int fd, off_t byte, short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  return ::fcntl(fd, F_OFD_SETLK, &fl);
}

// True when another open file description holds a lock on `byte`.
Result<bool> HeldElsewhere(int fd, off_t byte) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0)
    return Status(Errc::kIoError, fmt::format("cannot test the lock at byte {}: {}", byte, std::strerror(errno)));
  return fl.l_type != F_UNLCK;
}

bool LockingUnsupported(int err) { return err == EINVAL || err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS; }

// The bytes `held` conflict with, held by other processes? Returns the
// message for the first conflict, or an empty string.
Result<std::string> FindConflict(int fd, const std::set<off_t>& held, FileLockMode mode) {
  bool conflict = false;
  for (off_t byte : held) {
    // Using p conflicts with a refusal of p; refusing p with a use of p.
    const off_t other = byte >= kRefuseBase ? byte - (kRefuseBase - kUseBase) : byte + (kRefuseBase - kUseBase);
    VHDX_ASSIGN_OR_RETURN(bool busy, HeldElsewhere(fd, other));
    conflict = conflict || busy;
  }
  if (!conflict) return std::string();
  constexpr const char* kWho = "(a VM, qemu-nbd, nbdkit, vhdx mount, ...)";
  if (mode == FileLockMode::kRead)
    return fmt::format("in use: another process has it open for writing {}; force-share (-U) reads it anyway, "
                       "as it is at this moment",
                       kWho);
  VHDX_ASSIGN_OR_RETURN(bool writer, HeldElsewhere(fd, kUseBase + kPermWrite));
  if (writer) return fmt::format("in use: another process has it open for writing {}", kWho);
  return fmt::format("in use: another process has it open for reading {}; it cannot be written meanwhile", kWho);
}

// Brings entry.held to `wanted`: locks the missing bytes, unlocks the
// others. On failure nothing has changed.
Status ApplyBytes(Entry& entry, const std::set<off_t>& wanted) {
  std::set<off_t> added;
  for (off_t byte : wanted) {
    if (entry.held.count(byte)) continue;
    if (SetByte(entry.fd, byte, F_RDLCK) != 0) {
      const int err = errno;
      for (off_t b : added) SetByte(entry.fd, b, F_UNLCK);
      if (LockingUnsupported(err)) return Status(Errc::kUnsupported, std::strerror(err));
      if (err == EAGAIN || err == EACCES)
        return Status(Errc::kBusy, "in use: another process holds an exclusive lock on it");
      return Status(Errc::kIoError, fmt::format("cannot lock: {}", std::strerror(err)));
    }
    added.insert(byte);
  }
  for (off_t byte : entry.held)
    if (!wanted.count(byte)) SetByte(entry.fd, byte, F_UNLCK);
  entry.held = wanted;
  return Status::Ok();
}

class Hold final : public FileLockHold {
 public:
  Hold(std::pair<dev_t, ino_t> key, FileLockMode mode) : key_(key), mode_(mode) {}
  ~Hold() override {
    if (mode_ == FileLockMode::kNone) return;
    Registry& r = TheRegistry();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.entries.find(key_);
    if (it == r.entries.end()) return;
    Entry& e = it->second;
    (mode_ == FileLockMode::kWrite ? e.writers : e.readers)--;
    if (!e.unsupported) (void)ApplyBytes(e, WantedBytes(e.readers, e.writers));
    if (e.readers + e.writers == 0) {
      ::close(e.fd);
      r.entries.erase(it);
    }
  }

 private:
  std::pair<dev_t, ino_t> key_;
  FileLockMode mode_;
};

}  // namespace

Result<std::unique_ptr<FileLockHold>> LockFile(int fd, const std::string& path, FileLockMode mode) {
  if (mode == FileLockMode::kNone) return std::unique_ptr<FileLockHold>(std::make_unique<Hold>(std::make_pair(dev_t{}, ino_t{}), mode));
  struct stat st;
  if (::fstat(fd, &st) != 0)
    return Status(Errc::kIoError, fmt::format("cannot stat {}: {}", path, std::strerror(errno)));
  const auto key = std::make_pair(st.st_dev, st.st_ino);
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  // Not a structured binding: clang 14 (the fuzz build) cannot capture one.
  const auto emplaced = r.entries.try_emplace(key);
  const auto it = emplaced.first;
  Entry& e = it->second;
  if (emplaced.second) {
    e.fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (e.fd < 0) {
      const int err = errno;
      r.entries.erase(it);
      return Status(Errc::kIoError, fmt::format("cannot lock: {}", std::strerror(err)));
    }
  }
  auto undo_new = [&] {
    if (e.readers + e.writers == 0) {  // nothing is locked (ApplyBytes restored it)
      ::close(e.fd);
      r.entries.erase(it);
    }
  };
  const int readers = e.readers + (mode == FileLockMode::kRead ? 1 : 0);
  const int writers = e.writers + (mode == FileLockMode::kWrite ? 1 : 0);
  if (!e.unsupported) {
    const std::set<off_t> before = e.held;
    Status applied = ApplyBytes(e, WantedBytes(readers, writers));
    if (applied.code() == Errc::kUnsupported) {
      e.unsupported = true;  // as QEMU's locking=auto: go on without locks
    } else if (!applied.ok()) {
      undo_new();
      return applied;
    } else {
      auto conflict = FindConflict(e.fd, e.held, mode);
      if (!conflict.ok() || !conflict->empty()) {
        (void)ApplyBytes(e, before);
        undo_new();
        if (!conflict.ok()) return conflict.status();
        return Status(Errc::kBusy, *conflict);
      }
    }
  }
  e.readers = readers;
  e.writers = writers;
  return std::unique_ptr<FileLockHold>(std::make_unique<Hold>(key, mode));
}

}  // namespace vhdx
