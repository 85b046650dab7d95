// A GUID exactly as VHDX stores it: 16 bytes in Microsoft's mixed-endian
// layout (Data1..Data3 little-endian, Data4 as-is). Compare as raw bytes;
// text only for display and parent-locator strings.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "vhdx/export.h"

namespace vhdx {

struct VHDX_API Guid {
  std::array<uint8_t, 16> bytes{};

  bool IsZero() const;
  // Lowercase "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
  std::string ToString() const;
  // Accepts the text form with or without braces, any case.
  static std::optional<Guid> Parse(std::string_view text);
  // A random (version 4) GUID from the OS random source.
  static Guid Random();

  friend bool operator==(const Guid&, const Guid&) = default;
};

}  // namespace vhdx
