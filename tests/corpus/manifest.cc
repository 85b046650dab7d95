#include "manifest.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <sstream>

#include "support/test_util.h"

namespace vhdx::test {
namespace {

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  size_t e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "| a | b |" -> {"a", "b"}
std::vector<std::string> Cells(const std::string& line) {
  std::vector<std::string> cells;
  std::string body = Trim(line);
  if (body.size() < 2 || body.front() != '|' || body.back() != '|') return cells;
  std::stringstream in(body.substr(1, body.size() - 2));
  std::string cell;
  while (std::getline(in, cell, '|')) cells.push_back(Trim(cell));
  return cells;
}

// "2 MiB", "1 MiB (despite the name)", "10485760" -> bytes.
std::optional<uint64_t> ParseSize(const std::string& text) {
  std::istringstream in(text);
  uint64_t value;
  if (!(in >> value)) return std::nullopt;
  std::string unit;
  in >> unit;
  static const std::map<std::string, int> kShift = {{"", 0}, {"B", 0}, {"KiB", 10}, {"MiB", 20}, {"GiB", 30}};
  auto it = kShift.find(unit.starts_with("(") ? "" : unit);
  if (it == kShift.end()) return std::nullopt;
  return value << it->second;
}

// The first "N.N.N" in text (digits separated by two dots), or "".
std::string FirstVersion(const std::string& text) {
  auto digits = [&](size_t i) {
    size_t j = i;
    while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
    return j - i;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    if (i > 0 && std::isdigit(static_cast<unsigned char>(text[i - 1]))) continue;
    size_t end = i, parts = 0;
    while (parts < 3 && digits(end) > 0) {
      end += digits(end);
      if (++parts < 3) {
        if (end >= text.size() || text[end] != '.') break;
        ++end;
      }
    }
    if (parts == 3) return text.substr(i, end - i);
  }
  return "";
}

bool IsHex64(const std::string& s) {
  return s.size() == 64 &&
         std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(c) && !std::isupper(c); });
}

}  // namespace

CorpusManifest ParseCorpusManifest(const std::string& markdown) {
  CorpusManifest m;
  std::istringstream in(markdown);
  std::string line;
  std::map<std::string, size_t> column;
  while (std::getline(in, line)) {
    std::vector<std::string> cells = Cells(line);
    if (cells.empty()) {
      if (!column.empty()) break;  // the table ended
      continue;
    }
    if (column.empty()) {
      for (size_t i = 0; i < cells.size(); ++i) column[Lower(cells[i])] = i;
      for (const char* need : {"file", "type", "block size", "logical / physical sector", "virtual size",
                               "content sha256", "what it exercises", "written by"})
        if (!column.count(need)) m.problems.push_back(fmt::format("manifest table has no '{}' column", need));
      if (!m.problems.empty()) return m;
      continue;
    }
    if (cells[0].starts_with("---")) continue;  // the header separator
    auto cell = [&](const char* name) {
      size_t i = column.at(name);
      return i < cells.size() ? cells[i] : std::string();
    };
    CorpusImage img;
    img.file = cell("file");
    img.type = Lower(cell("type"));
    img.content_sha256 = Lower(cell("content sha256"));
    img.dirty_log = Lower(cell("what it exercises")).find("dirty log") != std::string::npos;
    img.writer_version = FirstVersion(cell("written by"));
    auto block = ParseSize(cell("block size"));
    auto vsize = ParseSize(cell("virtual size"));
    unsigned logical = 0, physical = 0;
    char slash = 0;
    std::istringstream sectors(cell("logical / physical sector"));
    bool sectors_ok = static_cast<bool>(sectors >> logical >> slash >> physical) && slash == '/';
    if (img.file.empty() || !block || !vsize || !sectors_ok || !IsHex64(img.content_sha256)) {
      m.problems.push_back("unreadable manifest row: " + line);
      continue;
    }
    img.block_size = static_cast<uint32_t>(*block);
    img.virtual_size = *vsize;
    img.logical_sector_size = logical;
    img.physical_sector_size = physical;
    m.images.push_back(img);
  }
  if (column.empty()) m.problems.push_back("manifest has no table");
  return m;
}

const CorpusManifest& LoadCorpusManifest() {
  static const CorpusManifest manifest = [] {
    auto dir = CorpusDir();
    if (!dir) return CorpusManifest{};
    auto bytes = ReadWholeFile(*dir + "/MANIFEST.md");
    return ParseCorpusManifest(std::string(bytes.begin(), bytes.end()));
  }();
  return manifest;
}

}  // namespace vhdx::test
