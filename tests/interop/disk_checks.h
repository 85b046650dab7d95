// Checks shared by the corpus and interop tests: one virtual disk seen
// through several outputs (the CLI's map JSON, raw files, a stdout stream)
// compared with a reference reader, without hashing gigabytes of zeros
// more often than needed.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "vhdx/image.h"
#include "vhdx/status.h"

namespace vhdx::test {

// Fills `buf` with `n` bytes of a virtual disk starting at `offset`.
using DiskReader = std::function<Status(uint64_t offset, uint8_t* buf, size_t n)>;
DiskReader ImageReader(const Image& image);

// One object of `vhdx map --output=json`.
struct MapRange {
  uint64_t start = 0;
  uint64_t length = 0;
  bool present = false, zero = false, data = false;
  std::optional<uint64_t> offset;
};

// Parses `vhdx map --output=json` output. Fails (message in *problem) when it
// is not JSON, lacks a field, or its ranges are not contiguous and exactly
// covering [0, virtual_size).
std::optional<std::vector<MapRange>> ParseMapJson(const std::string& text, uint64_t virtual_size,
                                                  std::string* problem);

// "" when the raw file at `path` is exactly `size` bytes equal to
// `reference`; otherwise what differs and where. Holes are found with
// SEEK_HOLE, so only the reference is read there.
std::string CompareRawFile(const std::string& path, uint64_t size, const DiskReader& reference);

// "" when `command` exits 0 and writes exactly `size` bytes on stdout equal to
// `reference`; otherwise what went wrong. stderr is kept out of the stream.
std::string CompareCommandOutput(const std::string& command, uint64_t size, const DiskReader& reference);

// A digest of a (sparse) file's size, data-segment layout and data bytes:
// any write changes it, yet holes cost nothing to digest.
std::string SparseFileDigest(const std::string& path);

// st_blocks * 512 of `path`.
uint64_t AllocatedBytes(const std::string& path);

// True when the n bytes at p are all zero.
bool AllZero(const uint8_t* p, size_t n);

// What libvhdi makes of the VHDX image at `path`: vhdiinfo must report
// `sector_size`-byte sectors and `virtual_size` bytes, and the disk that
// vhdimount exposes must be `virtual_size` bytes with SHA-256 `sha256`
// (GoogleTest failures otherwise). Returns "" once checked, or why the disk
// could not be mounted here (no FUSE, say) for the caller to skip on.
std::string ExpectLibvhdiReads(const std::string& path, uint64_t virtual_size, uint32_t sector_size,
                               const std::string& sha256);

}  // namespace vhdx::test
