// fuzz_seeds DIR: writes small valid images for fuzz_image to start from,
// each a few MiB (the format puts every structure on a 1 MiB boundary, so
// this is as small as real structure gets): both layouts, fixed, dynamic and
// differencing disks, 4 KiB sectors, every block state, sector-bitmap slots
// in the BAT, user metadata and an unknown region, and logs that must be
// replayed (with zero descriptors, and wrapping around the ring end).
#include <cstdio>
#include <string>
#include <vector>

#include "format/constants.h"
#include "support/image_builder.h"

namespace {

using namespace vhdx;
using namespace vhdx::format;
using test::ImageBuilder;
using test::ImageSpec;

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return v;
}

ImageBuilder Dynamic() {
  ImageBuilder b({.type = DiskType::kDynamic, .virtual_size = 8 * MiB, .block_size = 1 * MiB});
  b.WriteVirtual(0, Pattern(64 * KiB, 1));
  b.WriteVirtual(5 * MiB + 4 * KiB, Pattern(8 * KiB, 2));
  b.SetBlock(2, kPayloadZero);
  b.SetBlock(3, kPayloadUnmapped);
  b.SetBlock(4, kPayloadUndefined);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  int written = 0;
  auto save = [&](const std::string& name, const ImageBuilder& b) {
    b.WriteTo(dir + "/" + name + ".vhdx");
    ++written;
  };

  save("dynamic-windows-layout", Dynamic());

  ImageBuilder fixed({.type = DiskType::kFixed,
                      .virtual_size = 2 * MiB,
                      .block_size = 2 * MiB,
                      .logical_sector_size = 4096,
                      .layout = test::Layout::kQemu});
  fixed.WriteVirtual(0, Pattern(2 * MiB, 3));
  save("fixed-4k-sectors-qemu-layout", fixed);

  // 8 GiB of 1 MiB blocks: the BAT interleaves sector-bitmap slots.
  ImageBuilder wide({.virtual_size = 8 * GiB + 512, .block_size = 1 * MiB});
  wide.WriteVirtual(4 * GiB + 4 * KiB, Pattern(4 * KiB, 4));
  wide.SetBlock(4097, kPayloadZero);
  save("sector-bitmap-slots", wide);

  ImageBuilder diff(
      {.type = DiskType::kDifferencing, .virtual_size = 8 * MiB, .block_size = 1 * MiB});
  diff.WriteVirtual(1 * MiB, Pattern(1 * MiB, 5));
  uint64_t partial = diff.AppendSpace(1 * MiB);
  diff.WriteFile(partial, Pattern(64 * KiB, 6));
  diff.SetBlock(3, kPayloadPartiallyPresent, partial);
  uint64_t bitmap = diff.AppendSpace(1 * MiB);
  std::vector<uint8_t> bits(512, 0xF0);  // block 3 of chunk 0: sectors 6144..
  diff.WriteFile(bitmap + 3 * (MiB / 512) / 8, bits);
  diff.SetBatEntry(diff.geometry().BitmapIndex(0), kSectorBitmapPresent, bitmap);
  save("differencing-with-bitmap", diff);

  ImageBuilder extras = Dynamic();
  extras.AddMetadataItem(Guid{{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}},
                         Pattern(40, 7), kMetaIsUser);
  extras.AddRegion(Guid{{16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1}}, 1 * MiB, false);
  save("user-item-unknown-region", extras);

  // The BAT in the file lacks block 6; only replaying the log maps it, and
  // a zero descriptor clears part of block 0.
  ImageBuilder dirty = Dynamic();
  uint64_t spare = dirty.AppendSpace(1 * MiB);
  dirty.WriteFile(spare, Pattern(1 * MiB, 8));
  dirty.MarkLogDirty();
  dirty.WriteLogEntry({.sequence_number = 40,
                       .updates = {dirty.BatSectorUpdate(dirty.geometry().PayloadIndex(6),
                                                         kPayloadFullyPresent, spare),
                                   ImageBuilder::ZeroUpdate(4 * MiB, 8 * KiB)}});
  save("dirty-log", dirty);

  // Two entries in sequence, the second running past the end of the ring.
  ImageBuilder wrapped = Dynamic();
  wrapped.MarkLogDirty();
  uint32_t tail =
      wrapped.WriteLogEntry({.sequence_number = 7,
                             .updates = {ImageBuilder::ZeroUpdate(4 * MiB + 64 * KiB, 4 * KiB)},
                             .position = wrapped.log_length() - 3 * 4096});
  wrapped.WriteLogEntry({.sequence_number = 8,
                         .updates = {wrapped.BatSectorUpdate(wrapped.geometry().PayloadIndex(2),
                                                             kPayloadNotPresent, 0),
                                     ImageBuilder::DataUpdate(4 * MiB, Pattern(4096, 9))},
                         .tail = tail});
  save("dirty-log-wrapped", wrapped);

  std::printf("fuzz_seeds: wrote %d seed images to %s\n", written, dir.c_str());
  return 0;
}
