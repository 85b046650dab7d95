// The corpus manifest (MANIFEST.md beside the images), read at test time so
// that an image added to the table is tested without touching the tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vhdx::test {

struct CorpusImage {
  std::string file;  // compressed file name, e.g. "fixed.vhdx.gz"
  std::string type;  // "fixed", "dynamic", "differencing"
  uint32_t block_size = 0;
  uint32_t logical_sector_size = 0;
  uint32_t physical_sector_size = 0;
  uint64_t virtual_size = 0;
  std::string content_sha256;
  bool dirty_log = false;  // its "what it exercises" names a dirty log
  // First "N.N.N" of "written by" (e.g. "10.0.18363"), which the image's
  // creator string carries too; empty if there is none.
  std::string writer_version;
};

struct CorpusManifest {
  std::vector<CorpusImage> images;
  std::vector<std::string> problems;  // rows or columns that could not be read
};

// Parses the markdown table of a manifest.
CorpusManifest ParseCorpusManifest(const std::string& markdown);
// The manifest of test::CorpusDir(); empty when there is no corpus.
const CorpusManifest& LoadCorpusManifest();

}  // namespace vhdx::test
