// CRC-32C (Castagnoli), the checksum of every VHDX header, region table and
// log entry: reflected polynomial 0x82F63B78, init and final XOR 0xFFFFFFFF.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vhdx::crc32c {

// Continues a CRC: Extend(Extend(0, a), b) == Value(a ++ b).
uint32_t Extend(uint32_t crc, const void* data, size_t n);
inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }

// The portable table-driven path, always available; Extend() uses the
// SSE4.2 instruction instead when the CPU has it. Exposed so that tests can
// check both paths agree.
uint32_t SoftwareExtend(uint32_t crc, const void* data, size_t n);

// CRC of `data` as if the 4 bytes at `checksum_offset` were zero (how every
// VHDX checksum is defined).
uint32_t ValueWithZeroedField(const uint8_t* data, size_t n, size_t checksum_offset);

}  // namespace vhdx::crc32c
