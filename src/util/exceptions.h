// Where the library calls code that can throw (allocation, std::thread), the
// exception becomes a Status: nothing crosses the library's boundary
// (status.h), and one escaping a thread would be std::terminate.
#pragma once

#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

#include "vhdx/status.h"

namespace vhdx {

// The message is "what: out of memory", or when even that cannot be had,
// "out of memory", short enough for std::string's own small buffer: no
// allocation, so this never throws (it runs where memory just ran out, in
// handlers whose throw would be std::terminate).
inline Status OutOfMemory(std::string_view what) noexcept {
  try {
    std::string message(what);
    message += ": out of memory";
    return Status(Errc::kNoMemory, std::move(message));
  } catch (...) {
    return Status(Errc::kNoMemory, "out of memory");
  }
}

// Runs `f` (returning Status or nothing) and returns its Status, or the
// exception it threw as one; `what` names the operation.
template <typename F>
Status StatusFromException(const char* what, F&& f) noexcept {
  // The handlers build messages, which need memory: one that throws (out
  // of memory again) lands in the outer handler instead of escaping this
  // noexcept function, which would be std::terminate.
  try {
    try {
      if constexpr (std::is_void_v<std::invoke_result_t<F&>>) {
        f();
        return Status::Ok();
      } else {
        return f();
      }
    } catch (const std::bad_alloc&) {
      return OutOfMemory(what);
    } catch (const std::system_error& e) {
      // std::thread reports a thread it could not start (no memory for its
      // stack, or the process's thread limit) as EAGAIN.
      if (e.code() == std::errc::resource_unavailable_try_again)
        return Status(Errc::kNoMemory, std::string(what) + ": cannot start a thread (out of memory or threads)");
      return Status(Errc::kIoError, std::string(what) + ": " + e.what());
    } catch (const std::exception& e) {
      return Status(Errc::kIoError, std::string(what) + ": " + e.what());
    } catch (...) {
      return Status(Errc::kIoError, std::string(what) + ": an exception of unknown type");
    }
  } catch (...) {
    return Status(Errc::kNoMemory, "out of memory");  // fits the small buffer: allocates nothing
  }
}

}  // namespace vhdx
