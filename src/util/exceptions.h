// Where the library calls code that can throw (allocation, std::thread), the
// exception becomes a Status: nothing crosses the library's boundary
// (status.h), and one escaping a thread would be std::terminate.
#pragma once

#include <exception>
#include <new>
#include <string>
#include <system_error>
#include <type_traits>

#include "vhdx/status.h"

namespace vhdx {

inline Status OutOfMemory(const std::string& what) { return Status(Errc::kNoMemory, what + ": out of memory"); }

// Runs `f` (returning Status or nothing) and returns its Status, or the
// exception it threw as one; `what` names the operation.
template <typename F>
Status StatusFromException(const char* what, F&& f) noexcept {
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
  }
}

}  // namespace vhdx
