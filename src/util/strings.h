// Small string helpers shared by the library and the CLI.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <optional>

namespace vhdx {

// "0x1f000" style offsets for error messages.
std::string Hex(uint64_t v);
// UTF-16LE bytes to UTF-8; nullopt on invalid UTF-16 (unpaired surrogates)
// or, when `reject_nul`, an embedded NUL code unit.
std::optional<std::string> Utf16LeToUtf8(const uint8_t* p, size_t bytes, bool reject_nul);
// UTF-16LE up to the first NUL (creator field); invalid units become U+FFFD.
std::string Utf16LeZToUtf8Lossy(const uint8_t* p, size_t bytes);
// UTF-8 to UTF-16LE bytes.
std::string Utf8ToUtf16Le(std::string_view utf8);

}  // namespace vhdx
