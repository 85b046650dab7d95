// Sizes, signatures and well-known GUIDs of the VHDX format (digest §0-§5).
#pragma once

#include <cstdint>

#include "vhdx/guid.h"

namespace vhdx::format {

inline constexpr uint64_t KiB = 1024;
inline constexpr uint64_t MiB = 1024 * KiB;
inline constexpr uint64_t GiB = 1024 * MiB;
inline constexpr uint64_t TiB = 1024 * GiB;

inline constexpr uint64_t kFileIdentifierOffset = 0;
inline constexpr uint64_t kHeader1Offset = 64 * KiB;
inline constexpr uint64_t kHeader2Offset = 128 * KiB;
inline constexpr uint64_t kRegionTable1Offset = 192 * KiB;
inline constexpr uint64_t kRegionTable2Offset = 256 * KiB;
inline constexpr uint64_t kHeaderSectionSize = 1 * MiB;
// By slot (0 = first copy).
inline constexpr uint64_t kHeaderOffsets[2] = {kHeader1Offset, kHeader2Offset};
inline constexpr uint64_t kRegionTableOffsets[2] = {kRegionTable1Offset, kRegionTable2Offset};

inline constexpr size_t kHeaderSize = 4096;
inline constexpr size_t kRegionTableSize = 64 * KiB;
inline constexpr size_t kMetadataTableSize = 64 * KiB;
inline constexpr size_t kLogSectorSize = 4096;
inline constexpr uint32_t kMaxTableEntries = 2047;
inline constexpr uint32_t kMaxUserMetadataEntries = 1024;
inline constexpr uint32_t kMaxMetadataItemLength = 1 * MiB;

inline constexpr uint64_t kMaxVirtualSize = 64 * TiB;
inline constexpr uint32_t kMinBlockSize = 1 * MiB;
inline constexpr uint32_t kMaxBlockSize = 256 * MiB;
inline constexpr uint64_t kSectorBitmapBlockSize = 1 * MiB;
// No structure of a valid image lies beyond this: 64 TiB of payload plus a
// 513 MiB BAT, metadata and log fit comfortably. Caps hostile offsets.
inline constexpr uint64_t kMaxFileOffset = 128 * TiB;

// Signatures as bytes (compare with memcmp).
inline constexpr char kFileSignature[8] = {'v', 'h', 'd', 'x', 'f', 'i', 'l', 'e'};
inline constexpr char kHeaderSignature[4] = {'h', 'e', 'a', 'd'};
inline constexpr char kRegionSignature[4] = {'r', 'e', 'g', 'i'};
inline constexpr char kMetadataSignature[8] = {'m', 'e', 't', 'a', 'd', 'a', 't', 'a'};
inline constexpr char kLogEntrySignature[4] = {'l', 'o', 'g', 'e'};
inline constexpr char kZeroDescriptorSignature[4] = {'z', 'e', 'r', 'o'};
inline constexpr char kDataDescriptorSignature[4] = {'d', 'e', 's', 'c'};
inline constexpr char kDataSectorSignature[4] = {'d', 'a', 't', 'a'};

// GUIDs in their on-disk byte order.
inline constexpr Guid kBatRegionGuid{{0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64,
                                      0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08}};
inline constexpr Guid kMetadataRegionGuid{{0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B, 0xB8,
                                           0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E}};
inline constexpr Guid kFileParametersGuid{{0x37, 0x67, 0xA1, 0xCA, 0x36, 0xFA, 0x43, 0x4D, 0xB3,
                                           0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B}};
inline constexpr Guid kVirtualDiskSizeGuid{{0x24, 0x42, 0xA5, 0x2F, 0x1B, 0xCD, 0x76, 0x48, 0xB2,
                                            0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8}};
inline constexpr Guid kVirtualDiskIdGuid{{0xAB, 0x12, 0xCA, 0xBE, 0xE6, 0xB2, 0x23, 0x45, 0x93,
                                          0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46}};
inline constexpr Guid kLogicalSectorSizeGuid{{0x1D, 0xBF, 0x41, 0x81, 0x6F, 0xA9, 0x09, 0x47,
                                              0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F}};
inline constexpr Guid kPhysicalSectorSizeGuid{{0xC7, 0x48, 0xA3, 0xCD, 0x5D, 0x44, 0x71, 0x44,
                                               0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56}};
inline constexpr Guid kParentLocatorGuid{{0x2D, 0x5F, 0xD3, 0xA8, 0x0B, 0xB3, 0x4D, 0x45, 0xAB,
                                          0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C}};
inline constexpr Guid kVhdxParentLocatorType{{0xB7, 0xEF, 0x4A, 0xB0, 0x9E, 0xD1, 0x81, 0x4A,
                                              0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13}};

}  // namespace vhdx::format
