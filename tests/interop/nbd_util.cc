#include "interop/nbd_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "support/test_util.h"

namespace vhdx::test {

using json = nlohmann::json;

json ParseJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    ADD_FAILURE() << "not JSON:\n" << text;
    return json();
  }
  return j;
}

std::string SparseSha256(const std::string& path) {
  constexpr size_t kChunk = 4 << 20;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "cannot open " + path;
  const off_t size = lseek(fd, 0, SEEK_END);
  Sha256Stream sha;
  std::vector<uint8_t> buf(kChunk);
  const std::vector<uint8_t> zeros(kChunk, 0);
  off_t pos = 0;
  while (pos < size) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) data = size;  // ENXIO: only a hole is left
    for (off_t n; pos < data; pos += n) {
      n = std::min<off_t>(data - pos, static_cast<off_t>(zeros.size()));
      sha.Update(zeros.data(), static_cast<size_t>(n));
    }
    off_t hole = lseek(fd, pos, SEEK_HOLE);
    if (hole < 0) hole = size;
    while (pos < hole) {
      ssize_t n = pread(fd, buf.data(), std::min<size_t>(buf.size(), hole - pos), pos);
      if (n <= 0) {
        close(fd);
        return "read error in " + path;
      }
      sha.Update(buf.data(), static_cast<size_t>(n));
      pos += n;
    }
  }
  close(fd);
  return sha.Final();
}

std::ostream& operator<<(std::ostream& os, const NbdExtent& e) {
  return os << "{" << e.offset << "+" << e.length << " type " << e.type << "}";
}

void AppendMerged(std::vector<NbdExtent>* out, NbdExtent e) {
  if (!out->empty() && out->back().type == e.type && out->back().offset + out->back().length == e.offset)
    out->back().length += e.length;
  else
    out->push_back(e);
}

std::vector<NbdExtent> ExtentsOfNbdinfoMap(const json& map) {
  std::vector<NbdExtent> out;
  for (const json& x : map)
    AppendMerged(&out, {x["offset"].get<uint64_t>(), x["length"].get<uint64_t>(), x["type"].get<int>()});
  return out;
}

std::vector<NbdExtent> ExtentsOfVhdxMap(const json& map) {
  std::vector<NbdExtent> out;
  for (const json& x : map) {
    const int type = x["data"].get<bool>() ? 0 : (x["zero"].get<bool>() ? 3 : 0);
    AppendMerged(&out, {x["start"].get<uint64_t>(), x["length"].get<uint64_t>(), type});
  }
  return out;
}

const SanitizerPrefixes& NbdkitSanitizerPrefixes() {
#if defined(__SANITIZE_ADDRESS__)
  static const SanitizerPrefixes p{
      "LD_PRELOAD=\"$(gcc -print-file-name=libasan.so)\" ASAN_OPTIONS=detect_leaks=0 ",
      "unset LD_PRELOAD ASAN_OPTIONS; "};
#else
  static const SanitizerPrefixes p;
#endif
  return p;
}

std::string NbdkitFilterPath() {
  return (std::filesystem::path(NbdkitPluginPath()).parent_path() / "nbdkit-vhdx-filter.so").string();
}

std::string MissingNbdkitFilter(std::initializer_list<const char*> tools) {
  if (std::string m = MissingTools(tools); !m.empty()) return m;
  return std::filesystem::exists(NbdkitFilterPath()) ? "" : NbdkitFilterPath() + " was not built (no nbdkit-filter.h)";
}

std::vector<CorpusImage> CorpusImagesOrPlaceholder(bool skip_differencing) {
  std::vector<CorpusImage> images = LoadCorpusManifest().images;
  if (skip_differencing) std::erase_if(images, [](const CorpusImage& i) { return i.type == "differencing"; });
  if (images.empty()) {
    CorpusImage none;
    none.file = "none";
    images.push_back(none);
  }
  return images;
}

std::string CorpusStem(const CorpusImage& image) {
  std::string name = image.file.substr(0, image.file.find('.'));
  std::erase_if(name, [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); });
  return name;
}

void PrintTo(const CorpusImage& image, std::ostream* os) { *os << image.file; }

}  // namespace vhdx::test
