// Status -> vhdx.Error, and the small conversions every file needs.
#include "common.h"

#include "vhdx/status.h"

namespace vhdx::py_binding {

void RaiseStatus(const Status& status) {
  // The classes live in Python (multiple inheritance from OSError
  // subclasses); _make picks the one for the code.
  py::object make = py::module_::import("vhdx._errors").attr("_make");
  py::object exc = make(static_cast<int>(status.code()), ErrcName(status.code()), ErrnoOf(status.code()),
                        Text(status.message()));
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw py::error_already_set();
}

std::string PathArg(py::handle path) {
  py::object encoded = py::module_::import("os").attr("fsencode")(path);
  return std::string(py::bytes(encoded));
}

std::vector<std::string> PathListArg(py::handle paths) {
  std::vector<std::string> out;
  if (paths.is_none()) return out;
  // A lone str would otherwise be iterated character by character.
  if (py::isinstance<py::str>(paths) || py::isinstance<py::bytes>(paths)) {
    out.push_back(PathArg(paths));
    return out;
  }
  for (py::handle p : paths) out.push_back(PathArg(p));
  return out;
}

py::str Text(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

std::function<void(uint64_t, uint64_t)> Progress::Callback() {
  if (fn_.is_none()) return {};
  return [this](uint64_t done, uint64_t total) {
    py::gil_scoped_acquire gil;
    if (error_) return;
    try {
      // Ctrl-C during a long conversion: reported as soon as it ends.
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      fn_(done, total);
    } catch (py::error_already_set& e) {
      error_.emplace(std::move(e));
    }
  };
}

void Progress::RethrowIfFailed() {
  if (!error_) return;
  py::error_already_set e = std::move(*error_);
  error_.reset();
  throw e;
}

}  // namespace vhdx::py_binding
