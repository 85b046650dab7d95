// Helpers shared by the repair tests (in-process, repair_test.cc, and
// through the CLI, repair_cli_crash_test.cc): the image they damage, and
// what a damaged, repaired or half-repaired image reads.
#pragma once

#include <fmt/format.h>

#include <memory>
#include <string>
#include <vector>

#include "core_test_util.h"
#include "format/bat.h"
#include "support/crash_file.h"
#include "support/test_util.h"
#include "vhdx/repair.h"

namespace vhdx::test {

inline std::string Describe(const CheckReport& r) {
  std::string out;
  for (const auto& f : r.findings)
    out += fmt::format("\n  [{}] {} @{:#x}: {}", f.severity == CheckFinding::Severity::kError ? "error" : "warning",
                       f.structure, f.offset, f.message);
  for (const auto& l : r.leaks) out += fmt::format("\n  [leak] {:#x}+{:#x}", l.offset, l.length);
  return out;
}

inline std::string Describe(const RepairReport& r) {
  std::string out = "before:" + Describe(r.before) + "\nactions:";
  for (const auto& a : r.actions) out += fmt::format("\n  {} @{:#x}: {}", a.structure, a.offset, a.action);
  out += "\nnot repaired:";
  for (const auto& f : r.not_repaired) out += fmt::format("\n  {} @{:#x}: {}", f.structure, f.offset, f.message);
  return out + "\nafter:" + Describe(r.after);
}

// 16 MiB of 1 MiB blocks; blocks 0-5 hold distinct data.
inline ImageBuilder RepairBase(DiskType type = DiskType::kDynamic) {
  ImageBuilder b({.type = type, .virtual_size = 16 * MiB, .block_size = 1 * MiB});
  if (type != DiskType::kFixed)
    for (uint64_t blk = 0; blk < 6; ++blk) b.WriteVirtual(blk * MiB, PatternBytes(MiB, 100 + blk));
  return b;
}

// File offset of payload block `block` as the builder's BAT has it.
inline uint64_t OffsetOf(const ImageBuilder& b, uint64_t block) {
  return format::BatEntry::Decode(b.bat_entry(b.geometry().PayloadIndex(block))).file_offset;
}

// SHA-256 of each 1 MiB block of `image` as it reads (empty: unreadable).
inline std::vector<std::string> BlockHashes(const Image& image) {
  std::vector<std::string> out;
  std::vector<uint8_t> buf(MiB);
  for (uint64_t off = 0; off < image.virtual_size(); off += MiB) {
    Status st = image.Read(off, buf.data(), buf.size());
    out.push_back(st.ok() ? Sha256Hex(buf.data(), buf.size()) : std::string());
  }
  return out;
}

// The same of the image in `file`, opened over a copy-on-write overlay (a
// dirty log replayed in memory, the file untouched).
inline std::vector<std::string> BlockHashes(const File& file) {
  auto image = Image::Open(std::make_unique<OverlayFile>(file, "hash-view"));
  EXPECT_TRUE(image.ok()) << image.status().message();
  if (!image.ok()) return {};
  return BlockHashes(**image);
}

inline const std::string& ZeroBlockHash() {
  static const std::string h = [] {
    std::vector<uint8_t> z(MiB, 0);
    return Sha256Hex(z.data(), z.size());
  }();
  return h;
}

}  // namespace vhdx::test
