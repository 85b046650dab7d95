// Names and errno values of the library's error codes.
#include <cerrno>

#include "vhdx/status.h"

namespace vhdx {

const char* ErrcName(Errc code) {
  switch (code) {
    case Errc::kOk: return "ok";
    case Errc::kIoError: return "I/O error";
    case Errc::kCorrupt: return "corrupt image";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kInvalidArgument: return "invalid argument";
    case Errc::kNotFound: return "not found";
    case Errc::kReadOnly: return "read-only";
    case Errc::kNoSpace: return "no space left";
    case Errc::kOutOfRange: return "out of range";
    case Errc::kBusy: return "in use";
    case Errc::kNoMemory: return "out of memory";
  }
  return "unknown";
}

int ErrnoOf(Errc code) {
  switch (code) {
    case Errc::kOk: return 0;
    case Errc::kIoError: return EIO;
    case Errc::kCorrupt: return EIO;  // as the kernel answers a read of a damaged file system
    case Errc::kUnsupported: return ENOTSUP;
    case Errc::kInvalidArgument: return EINVAL;
    case Errc::kNotFound: return ENOENT;
    case Errc::kReadOnly: return EROFS;
    case Errc::kNoSpace: return ENOSPC;
    case Errc::kOutOfRange: return EINVAL;  // a request outside the disk is a bad argument
    case Errc::kBusy: return EBUSY;
    case Errc::kNoMemory: return ENOMEM;
  }
  return EIO;
}

}  // namespace vhdx
