// File-level helpers shared by the ImageImpl source files: the write path
// (image_write.cc, image_write_child.cc, image_commit.cc), then reads and
// maps (image.cc, image_map.cc).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "format/bat.h"
#include "format/constants.h"
#include "vhdx/file.h"
#include "vhdx/status.h"

namespace vhdx {

inline bool AllZero(const uint8_t* p, size_t n) {
  static constexpr uint8_t kZero[256] = {};
  while (n >= sizeof(kZero)) {
    if (std::memcmp(p, kZero, sizeof(kZero)) != 0) return false;
    p += sizeof(kZero);
    n -= sizeof(kZero);
  }
  return std::memcmp(p, kZero, n) == 0;
}

inline const uint8_t* ZeroMiB() {
  static const std::vector<uint8_t> zeros(format::MiB, 0);
  return zeros.data();
}

inline bool ReadsAsZero(uint8_t state) {
  return state == format::kPayloadNotPresent || state == format::kPayloadUndefined ||
         state == format::kPayloadZero || state == format::kPayloadUnmapped;
}

inline uint64_t RoundUpMiB(uint64_t x) { return (x + format::MiB - 1) / format::MiB * format::MiB; }

inline Status WriteZeros(File& file, uint64_t offset, uint64_t n) {
  while (n > 0) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, format::MiB));
    VHDX_RETURN_IF_ERROR(file.WriteAt(offset, ZeroMiB(), k));
    offset += k;
    n -= k;
  }
  return Status::Ok();
}

inline Status BadWriteState(const format::Geometry& g, uint64_t b, const format::BatEntry& e) {
  return Status(Errc::kCorrupt, fmt::format("BAT entry {} (payload block {}): state {} cannot be "
                                            "written in a {} image",
                                            g.PayloadIndex(b), b, e.state,
                                            g.has_parent ? "differencing" : "non-differencing"));
}

inline Status BadState(const format::Geometry& g, uint64_t b, const format::BatEntry& e) {
  const char* why = e.state == format::kPayloadPartiallyPresent
                        ? "PARTIALLY_PRESENT is only valid in a differencing image"
                        : "reserved state";
  return Status(Errc::kCorrupt, fmt::format("BAT entry {} (payload block {}): state {} ({})",
                                            g.PayloadIndex(b), b, e.state, why));
}

}  // namespace vhdx
