// The C API's errors, version and memory (include/vhdx/vhdx.h).
#include <cstdlib>
#include <cstring>

#include "c_api/c_api_internal.h"

namespace vhdx::capi {
namespace {

// The thread's last message. `text` points into `storage`, or at a static
// string when the message could not be stored.
thread_local std::string storage;
thread_local const char* text = "";

}  // namespace

vhdx_status Finish(const Status& status) noexcept {
  if (status.ok()) {
    storage.clear();  // keeps its capacity: a success never allocates
    text = "";
    return VHDX_OK;
  }
  try {
    storage = status.message();
    // One line, as the CLI prints it.
    for (char& c : storage)
      if (c == '\n') c = ' ';
    text = storage.c_str();
  } catch (...) {
    text = "out of memory (the error message could not be stored)";
  }
  static_assert(static_cast<int>(Errc::kNoMemory) == VHDX_E_NO_MEMORY, "vhdx_status follows vhdx::Errc");
  return static_cast<vhdx_status>(status.code());
}

Status InFile(const std::string& file, const Status& status) {
  if (status.ok() || file.empty()) return status;
  return status.WithContext(file);
}

Status NullArgument(const char* name) {
  return Status(Errc::kInvalidArgument, std::string(name) + " is NULL");
}

Result<std::vector<std::string>> Dirs(const char* const* dirs, size_t count) {
  std::vector<std::string> out;
  if (count == 0) return out;
  if (!dirs) return NullArgument("parent_dirs (with parent_dir_count > 0)");
  for (size_t i = 0; i < count; ++i) {
    if (!dirs[i]) return NullArgument(("parent_dirs[" + std::to_string(i) + "]").c_str());
    out.emplace_back(dirs[i]);
  }
  return out;
}

Status MallocString(const std::string& s, char** out) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (!p) return OutOfMemory("the returned string");
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  *out = p;
  return Status::Ok();
}

}  // namespace vhdx::capi

using namespace vhdx::capi;  // NOLINT: the extern "C" functions below only

extern "C" {

const char* vhdx_version(void) noexcept { return vhdx::Version(); }

const char* vhdx_status_name(vhdx_status status) noexcept {
  switch (EnumValue(status)) {
    case VHDX_OK: return "VHDX_OK";
    case VHDX_E_IO: return "VHDX_E_IO";
    case VHDX_E_CORRUPT: return "VHDX_E_CORRUPT";
    case VHDX_E_UNSUPPORTED: return "VHDX_E_UNSUPPORTED";
    case VHDX_E_INVALID_ARGUMENT: return "VHDX_E_INVALID_ARGUMENT";
    case VHDX_E_NOT_FOUND: return "VHDX_E_NOT_FOUND";
    case VHDX_E_READ_ONLY: return "VHDX_E_READ_ONLY";
    case VHDX_E_NO_SPACE: return "VHDX_E_NO_SPACE";
    case VHDX_E_OUT_OF_RANGE: return "VHDX_E_OUT_OF_RANGE";
    case VHDX_E_BUSY: return "VHDX_E_BUSY";
    case VHDX_E_NO_MEMORY: return "VHDX_E_NO_MEMORY";
  }
  return "VHDX_E_UNKNOWN";
}

const char* vhdx_last_error(void) noexcept { return text; }

void vhdx_free(void* p) noexcept { std::free(p); }

}  // extern "C"
