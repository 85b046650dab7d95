#include "util/strings.h"

#include <fmt/format.h>

namespace vhdx {

std::string Hex(uint64_t v) { return fmt::format("{:#x}", v); }

namespace {
void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes units [0, count); returns false on a bad surrogate (strict) and
// stops at NUL when `stop_at_nul`.
bool DecodeUtf16(const uint8_t* p, size_t count, bool strict, bool stop_at_nul, bool reject_nul,
                 std::string& out) {
  for (size_t i = 0; i < count; ++i) {
    uint32_t u = p[2 * i] | (p[2 * i + 1] << 8);
    if (u == 0) {
      if (stop_at_nul) return true;
      if (reject_nul) return false;
    }
    if (u >= 0xD800 && u <= 0xDBFF) {
      if (i + 1 < count) {
        uint32_t lo = p[2 * i + 2] | (p[2 * i + 3] << 8);
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
          AppendUtf8(out, 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00));
          ++i;
          continue;
        }
      }
      if (strict) return false;
      AppendUtf8(out, 0xFFFD);
    } else if (u >= 0xDC00 && u <= 0xDFFF) {
      if (strict) return false;
      AppendUtf8(out, 0xFFFD);
    } else {
      AppendUtf8(out, u);
    }
  }
  return true;
}
}  // namespace

std::optional<std::string> Utf16LeToUtf8(const uint8_t* p, size_t bytes, bool reject_nul) {
  if (bytes % 2 != 0) return std::nullopt;
  std::string out;
  if (!DecodeUtf16(p, bytes / 2, /*strict=*/true, /*stop_at_nul=*/false, reject_nul, out))
    return std::nullopt;
  return out;
}

std::string Utf16LeZToUtf8Lossy(const uint8_t* p, size_t bytes) {
  std::string out;
  DecodeUtf16(p, bytes / 2, /*strict=*/false, /*stop_at_nul=*/true, false, out);
  return out;
}

std::string Utf8ToUtf16Le(std::string_view s) {
  std::string out;
  auto put = [&](uint32_t u) {
    out.push_back(static_cast<char>(u & 0xFF));
    out.push_back(static_cast<char>(u >> 8));
  };
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<uint8_t>(s[i]);
    uint32_t cp;
    size_t len;
    if (c < 0x80) { cp = c; len = 1; }
    else if ((c >> 5) == 6) { cp = c & 0x1F; len = 2; }
    else if ((c >> 4) == 14) { cp = c & 0x0F; len = 3; }
    else { cp = c & 0x07; len = 4; }
    for (size_t k = 1; k < len && i + k < s.size(); ++k)
      cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
    i += len;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      put(0xD800 + (cp >> 10));
      put(0xDC00 + (cp & 0x3FF));
    } else {
      put(cp);
    }
  }
  return out;
}

}  // namespace vhdx
