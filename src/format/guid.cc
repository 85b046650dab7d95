#include "vhdx/guid.h"

#include <fmt/format.h>
#include <sys/random.h>

#include <cstring>
#include <random>

#include "util/coding.h"

namespace vhdx {

bool Guid::IsZero() const {
  for (uint8_t b : bytes)
    if (b) return false;
  return true;
}

std::string Guid::ToString() const {
  const uint8_t* g = bytes.data();
  return fmt::format("{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                     DecodeFixed32(g), DecodeFixed16(g + 4), DecodeFixed16(g + 6), g[8], g[9],
                     g[10], g[11], g[12], g[13], g[14], g[15]);
}

std::optional<Guid> Guid::Parse(std::string_view text) {
  if (text.size() == 38 && text.front() == '{' && text.back() == '}')
    text = text.substr(1, 36);
  if (text.size() != 36) return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  uint8_t raw[16];  // the 16 bytes in text order
  size_t k = 0;
  for (size_t i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    int hi = hex(text[i]), lo = hex(text[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    raw[k++] = static_cast<uint8_t>(hi << 4 | lo);
    i += 2;
  }
  Guid g;
  // Data1, Data2, Data3 are stored little-endian; Data4 in text order.
  g.bytes = {raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6],
             raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]};
  return g;
}

Guid Guid::Random() {
  Guid g;
  size_t got = 0;
  while (got < g.bytes.size()) {
    ssize_t r = getrandom(g.bytes.data() + got, g.bytes.size() - got, 0);
    if (r <= 0) {  // no kernel source: fall back to the C++ engine
      std::random_device rd;
      for (auto& b : g.bytes) b = static_cast<uint8_t>(rd());
      break;
    }
    got += static_cast<size_t>(r);
  }
  g.bytes[7] = static_cast<uint8_t>((g.bytes[7] & 0x0F) | 0x40);  // version 4 (Data3 high nibble)
  g.bytes[8] = static_cast<uint8_t>((g.bytes[8] & 0x3F) | 0x80);  // RFC 4122 variant
  return g;
}

}  // namespace vhdx
