// Shared by the binding's translation units: turning a vhdx::Status into a
// Python exception, path and text conversion, progress callbacks.
//
// The rule of the whole binding: the library never throws, and every
// failed Status is raised explicitly through RaiseStatus as the matching
// vhdx.Error subclass (python/vhdx/_errors.py). The only C++ exceptions that
// cross into pybind11 are its own (error_already_set, cast_error), which it
// translates.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "vhdx/status.h"

namespace vhdx::py_binding {

namespace py = pybind11;

// Raises `status` (not ok) as a vhdx.Error subclass. Needs the GIL.
[[noreturn]] void RaiseStatus(const Status& status);

inline void ThrowIfError(const Status& status) {
  if (!status.ok()) RaiseStatus(status);
}

template <typename T>
T ValueOrRaise(Result<T>&& result) {
  if (!result.ok()) RaiseStatus(result.status());
  return std::move(result).value();
}

// A str, bytes or os.PathLike as the bytes the OS sees (os.fsencode), so
// that any path Python can open can be passed on.
std::string PathArg(py::handle path);
std::vector<std::string> PathListArg(py::handle paths);

// Library text (file names, messages, locator entries) as str. File names
// need not be UTF-8: undecodable bytes become surrogates (as os.fsdecode).
py::str Text(const std::string& s);

// A Python progress(done, total) callable behind the library's
// std::function, called from library threads while the GIL is released.
// The library cannot be interrupted through its callbacks (they return
// nothing and it never throws), so an exception the callable raises (or
// a KeyboardInterrupt pending when it is called) is kept, the callable is
// not called again, and RethrowIfFailed raises it once the operation ends.
class Progress {
 public:
  explicit Progress(py::object fn) : fn_(std::move(fn)) {}
  // Empty when no callable was given (the library then skips the calls).
  std::function<void(uint64_t, uint64_t)> Callback();
  void RethrowIfFailed();

 private:
  py::object fn_;
  std::optional<py::error_already_set> error_;
};

void RegisterImage(py::module_& m);
void RegisterOperations(py::module_& m);

}  // namespace vhdx::py_binding
