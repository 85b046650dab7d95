// Shared by the C API's translation units (include/vhdx/vhdx.h): the
// thread's error message, the exception barrier every entry point runs its
// body in, and conversions of C arguments to the C++ API's.
#pragma once

#include <cstring>
#include <new>
#include <type_traits>
#include <string>
#include <vector>

#include "util/exceptions.h"
#include "vhdx/image.h"
#include "vhdx/status.h"
#include "vhdx/vhdx.h"

struct vhdx_image {
  std::unique_ptr<vhdx::Image> image;
  // Copies made at open, so that the pointers vhdx_get_info hands out stay
  // valid and unchanged while the handle lives, whatever writes do.
  std::string filename, creator, parent_filename;
};

namespace vhdx::capi {

// Records `status` as the calling thread's result (message "" when ok) and
// returns its code. Never throws: without memory for the message, a fixed
// one is used.
vhdx_status Finish(const Status& status) noexcept;

// "FILE: message" on one line, as the CLI's Fail prints it (tools/vhdx).
Status InFile(const std::string& file, const Status& status);

// VHDX_E_INVALID_ARGUMENT naming the NULL argument.
Status NullArgument(const char* name);

// Runs `body` (returning Status) behind the exception barrier: whatever it
// throws becomes an error code (std::bad_alloc: VHDX_E_NO_MEMORY), so
// nothing unwinds into C.
template <typename F>
vhdx_status Run(const char* what, F&& body) noexcept {
  return Finish(StatusFromException(what, body));
}

// The integer in a C enum field or argument. C lets a caller store any int
// there, while in C++ loading a value outside the enumerators' range is
// undefined (UBSan's -fsanitize=enum): it is read as its integer, and only
// then compared with the enumerators.
template <typename E>
int EnumValue(const E& field) {
  std::underlying_type_t<E> v;
  std::memcpy(&v, &field, sizeof v);
  return static_cast<int>(v);
}

// The C directory list as the C++ API's vector; a NULL list with a count,
// or a NULL entry, is an invalid argument.
Result<std::vector<std::string>> Dirs(const char* const* dirs, size_t count);

// Copies `text` into a malloc'd NUL-terminated string for the caller
// (freed with vhdx_free).
Status MallocString(const std::string& text, char** out);

}  // namespace vhdx::capi
