// What the tests of the nbdkit plugin and filter share: NBD block status
// as comparable extents, JSON parsing that fails the test instead of
// throwing, and hashes of sparse copies.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <initializer_list>
#include <string>
#include <vector>

#include "corpus/manifest.h"

namespace vhdx::test {

// `text` as JSON; an ADD_FAILURE and null when it is not.
nlohmann::json ParseJson(const std::string& text);

// SHA-256 of a file, with its holes fed as zeros without reading them (a
// sparse copy of a 10 GiB disk is mostly holes).
std::string SparseSha256(const std::string& path);

// One NBD block-status range: offset, length, NBD type (bit 0 hole, bit 1
// zero).
struct NbdExtent {
  uint64_t offset, length;
  int type;
  bool operator==(const NbdExtent&) const = default;
};
std::ostream& operator<<(std::ostream& os, const NbdExtent& e);
// Appends `e`, merged into the last extent when they touch and agree.
void AppendMerged(std::vector<NbdExtent>* out, NbdExtent e);

// `nbdinfo --map --json` output as merged extents.
std::vector<NbdExtent> ExtentsOfNbdinfoMap(const nlohmann::json& map);
// `vhdx map --output=json` output as the block status an NBD server
// derives from it (qemu's rule, which the plugin and filter follow): a hole
// reading zeros where no file bytes back the range, else data.
std::vector<NbdExtent> ExtentsOfVhdxMap(const nlohmann::json& map);

// ---- Running nbdkit with our modules -----------------------------------

// In a sanitizer build our plugin and filter need the ASan runtime loaded
// first into (uninstrumented) nbdkit: `server` goes before nbdkit's
// command, `client` before the --run command (which must run without it).
// Both empty otherwise.
struct SanitizerPrefixes {
  std::string server, client;
};
const SanitizerPrefixes& NbdkitSanitizerPrefixes();

// build/lib/nbdkit-vhdx-filter.so, beside the plugin.
std::string NbdkitFilterPath();
// Why the filter's tests cannot run here ("" when they can): one of
// `tools` missing, or the filter not built.
std::string MissingNbdkitFilter(std::initializer_list<const char*> tools);

// ---- The corpus as test parameters -------------------------------------

// The manifest's images (without differencing ones when asked), or one
// placeholder when there are none, so that the suite shows a skip.
std::vector<CorpusImage> CorpusImagesOrPlaceholder(bool skip_differencing = false);
// A gtest name for an image: its file name before the first dot, letters
// and digits only ("iotest-dynamic-1G.vhdx.bz2" -> "iotestdynamic1G").
std::string CorpusStem(const CorpusImage& image);
// gtest prints a corpus image by its file, not its bytes.
void PrintTo(const CorpusImage& image, std::ostream* os);

}  // namespace vhdx::test
