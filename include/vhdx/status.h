// The one error type of libvhdx: an error code plus a message that names the
// structure and the file offset involved. Every fallible call returns a
// Status or a Result<T>; nothing in the library throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "vhdx/export.h"

namespace vhdx {

enum class Errc {
  kOk = 0,
  kIoError,          // the host file could not be read/written
  kCorrupt,          // the image violates the format (bad checksum, range, ...)
  kUnsupported,      // valid VHDX, but uses something we do not implement
  kInvalidArgument,  // the caller asked for something impossible
  kNotFound,         // a file (image, parent) does not exist
  kReadOnly,         // a write on something opened read-only
  kNoSpace,          // ENOSPC from the host
  kOutOfRange,       // offset/length outside the virtual disk
  kBusy,             // another process has the file open in a conflicting way (its lock)
  kNoMemory,         // an allocation (or a thread) the operation needs could not be had
};

VHDX_API const char* ErrcName(Errc code);

// The errno a front end reports for `code` (an NBD error, a FUSE reply, a
// qemu-io style message): one mapping for all of them, which a front end
// departs from only where the peer it mimics does.
VHDX_API int ErrnoOf(Errc code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Errc code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Errc::kOk; }
  Errc code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is "prefix: message" (adds context on the way up).
  Status WithContext(const std::string& prefix) const {
    if (ok()) return *this;
    return Status(code_, prefix + ": " + message_);
  }

 private:
  Errc code_ = Errc::kOk;
  std::string message_;
};

// A value or an error. Small on purpose: GCC 12 with clang 14 (the fuzz
// build) cannot share std::expected.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace vhdx

#define VHDX_CONCAT_INNER_(a, b) a##b
#define VHDX_CONCAT_(a, b) VHDX_CONCAT_INNER_(a, b)

// Returns the Status of `expr` from the enclosing function if it failed.
#define VHDX_RETURN_IF_ERROR(expr)             \
  do {                                         \
    ::vhdx::Status vhdx_status_ = (expr);      \
    if (!vhdx_status_.ok()) return vhdx_status_; \
  } while (0)

// `lhs = value of expr`, or return its Status from the enclosing function.
#define VHDX_ASSIGN_OR_RETURN(lhs, expr) \
  VHDX_ASSIGN_OR_RETURN_IMPL_(VHDX_CONCAT_(vhdx_result_, __LINE__), lhs, expr)
#define VHDX_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
