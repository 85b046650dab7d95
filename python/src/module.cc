// The extension module vhdx._vhdx; the public package is python/vhdx/,
// which re-exports it and adds what is better written in Python (the
// exceptions, as_file, the map iterator).
#include "common.h"

#include "vhdx/image.h"

namespace py = pybind11;

PYBIND11_MODULE(_vhdx, m) {
  m.doc() = "libvhdx bindings (use the vhdx package, not this module)";
  m.attr("library_version") = vhdx::Version();
  vhdx::py_binding::RegisterImage(m);
  vhdx::py_binding::RegisterOperations(m);
}
