// The installed libvhdx.so exports the public API and nothing of src/: its
// users can bind only to what include/vhdx/ declares (VHDX_API), so src/ can
// change without breaking them. Checked on the dynamic symbol table.
#include <cxxabi.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "install_paths.h"
#include "support/test_util.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

struct Symbol {
  std::string mangled;
  std::string demangled;  // == mangled for C names
};

std::string Demangle(const std::string& name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  if (status != 0 || d == nullptr) return name;
  std::string out(d);
  std::free(d);
  return out;
}

// Defined dynamic symbols (nm -D --defined-only, POSIX format: "name type
// value size").
std::vector<Symbol> ExportedSymbols(const std::string& library) {
  CommandResult r = ::vhdx::test::Run("timeout 60 nm -D --defined-only -P " + ShellQuote(library));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<Symbol> out;
  std::istringstream lines(r.output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string name;
    if (!(fields >> name)) continue;
    name = name.substr(0, name.find('@'));  // versioned references: name@@VER
    out.push_back({name, Demangle(name)});
  }
  return out;
}

// What src/ declares and include/vhdx/ does not: namespaces nested in vhdx
// ("namespace vhdx::format {") and namespace-scope classes ("class
// BatCache {", "struct Header;"). Read from the sources, so a class added
// to src/ is covered without touching this test.
struct Internals {
  std::set<std::string> namespaces;  // "vhdx::format"
  std::set<std::string> classes;     // "vhdx::BatCache"
};

void Scan(const fs::path& root, std::set<std::string>& namespaces, std::set<std::string>& classes) {
  const std::regex ns_re(R"(^namespace vhdx::(\w+))");
  const std::regex class_re(R"(^(?:class|struct)\s+(?:VHDX_API\s+)?(?:\[\[\w+\]\]\s+)?(?:VHDX_API\s+)?(\w+)\b)");
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    const std::string ext = e.path().extension().string();
    if (ext != ".h" && ext != ".cc") continue;
    std::ifstream in(e.path());
    std::string line;
    // Only lines at column 0: namespace scope in this code base's layout.
    while (std::getline(in, line)) {
      std::smatch m;
      if (std::regex_search(line, m, ns_re)) namespaces.insert("vhdx::" + m[1].str());
      if (std::regex_search(line, m, class_re)) classes.insert("vhdx::" + m[1].str());
    }
  }
}

Internals FindInternals() {
  Internals src, pub;
  Scan(fs::path(VHDX_SOURCE_DIR) / "src", src.namespaces, src.classes);
  Scan(fs::path(VHDX_SOURCE_DIR) / "include", pub.namespaces, pub.classes);
  Internals out;
  for (const auto& n : src.namespaces) {
    if (!pub.namespaces.count(n)) out.namespaces.insert(n);
  }
  for (const auto& c : src.classes) {
    if (!pub.classes.count(c)) out.classes.insert(c);
  }
  return out;
}

// The reason `s` must not be exported, or "" when it may be.
std::string Violation(const Symbol& s, const Internals& internals) {
  // What the static linker defines in every shared object.
  static const std::set<std::string> kLinker = {"_init", "_fini", "_edata", "_end", "__bss_start"};
  if (kLinker.count(s.mangled)) return "";
  // The C API (include/vhdx/vhdx.h): plain C names, all prefixed vhdx_.
  if (s.mangled.rfind("vhdx_", 0) == 0) return "";
  if (s.mangled.rfind("_Z", 0) != 0) return "a C name outside the vhdx_ prefix";

  const std::string& d = s.demangled;
  for (const auto& n : internals.namespaces) {
    if (d.find(n + "::") != std::string::npos) return "names the internal namespace " + n;
  }
  for (const auto& c : internals.classes) {
    const std::regex word(c + R"((?!\w))");  // c is vhdx::Name: no regex syntax
    if (std::regex_search(d, word)) return "names " + c + ", a class declared only in src/";
  }
  if (d.find("(anonymous namespace)") != std::string::npos) return "names an anonymous namespace";

  // Strip "typeinfo for " and the like: what follows is the entity.
  std::string entity = d;
  static const std::regex special(
      R"(^(typeinfo name for |typeinfo for |vtable for |VTT for |construction vtable for |guard variable for |(?:non-)?virtual thunk to |covariant return thunk to )+)");
  entity = std::regex_replace(entity, special, "");
  if (entity.rfind("vhdx::", 0) == 0) return "";
  // libstdc++ templates instantiated in the library: std (and __gnu_cxx)
  // declare themselves visibility("default"), which wins over the
  // library's -fvisibility=hidden. Unavoidable short of a version script,
  // and harmless: any copy of one is as good as another (ODR), and the
  // checks above reject those instantiated over a type of src/. Told by
  // the mangled name (a function template's demangled name starts with its
  // return type): _Z, maybe a special-name prefix, maybe N and qualifiers,
  // then Z for a function's local static (libstdc++'s own
  // _Sp_make_shared_tag::_S_ti()::__tag), maybe N and qualifiers, then std
  // (St, or a standard abbreviation) or __gnu_cxx.
  static const std::regex std_entity(
      R"(^_Z(?:T[IVST]|GV|T[hv]n?\d+_(?:n?\d+_)?)?Z?(?:N[rVKRO]*)?(?:S[tabsiod]|9__gnu_cxx))");
  if (std::regex_search(s.mangled, std_entity)) return "";
  return "outside namespace vhdx";
}

TEST(SharedLibrary, ExportsThePublicApiOnly) {
  VHDX_REQUIRE(MissingStage());
  const Internals internals = FindInternals();
  // The scan found what it is about: else the checks below check nothing.
  EXPECT_TRUE(internals.namespaces.count("vhdx::format"));
  EXPECT_TRUE(internals.namespaces.count("vhdx::fs"));
  EXPECT_TRUE(internals.classes.count("vhdx::ImageImpl"));
  EXPECT_TRUE(internals.classes.count("vhdx::BatCache"));
  EXPECT_FALSE(internals.classes.count("vhdx::Image"));

  const std::vector<Symbol> symbols = ExportedSymbols(StagedLibDir() + "/libvhdx.so.0");
  std::set<std::string> demangled;
  int violations = 0;
  for (const Symbol& s : symbols) {
    demangled.insert(s.demangled);
    const std::string why = Violation(s, internals);
    if (!why.empty() && ++violations <= 40) ADD_FAILURE() << "exported: " << s.demangled << " (" << why << ")";
  }
  EXPECT_EQ(violations, 0);

  // And the public API is there: a free function, a static member, a
  // polymorphic interface users derive from (typeinfo, for their vtables).
  for (const char* want : {"vhdx::Version()", "vhdx::ErrcName(vhdx::Errc)", "typeinfo for vhdx::File",
                           "typeinfo for vhdx::Image", "vhdx::Guid::ToString[abi:cxx11]() const"}) {
    EXPECT_TRUE(demangled.count(want)) << want << " is not exported";
  }
  bool open = false;
  for (const std::string& d : demangled) open |= d.rfind("vhdx::Image::Open(", 0) == 0;
  EXPECT_TRUE(open) << "vhdx::Image::Open is not exported";
}

// The classifier itself, on names it must reject and accept.
TEST(SharedLibrary, ViolationRecognisesInternalNames) {
  Internals internals{{"vhdx::format"}, {"vhdx::BatCache"}};
  auto check = [&](const char* mangled) { return Violation({mangled, Demangle(mangled)}, internals); };
  EXPECT_EQ(check("_ZN4vhdx7VersionEv"), "");                      // vhdx::Version()
  EXPECT_EQ(check("_ZTIN4vhdx4FileE"), "");                        // typeinfo for vhdx::File
  EXPECT_EQ(check("_ZNSt6vectorImSaImEE17_M_realloc_insertIJRKmEEEvN9__gnu_cxx17__normal_iteratorIPmS1_EEDpOT_"), "");
  EXPECT_EQ(check("_ZZNSt19_Sp_make_shared_tag5_S_tiEvE5__tag"), "");
  EXPECT_EQ(check("vhdx_open"), "");
  EXPECT_NE(check("_ZN4vhdx6format11ParseHeaderEPKh"), "");       // vhdx::format::ParseHeader
  EXPECT_NE(check("_ZN4vhdx8BatCache3GetEm"), "");                // vhdx::BatCache::Get
  EXPECT_NE(check("_ZNSt6vectorIN4vhdx6format8BatEntryESaIS2_EE7reserveEm"), "");  // std::vector<vhdx::format::BatEntry>
  EXPECT_NE(check("_ZN3fmt2v96detail10vformat_toEv"), "");        // fmt::
  EXPECT_NE(check("ext2fs_open"), "");
  EXPECT_EQ(check("_ZN4vhdx9BatCacheXEv"), "");                   // a longer name is not BatCache
}

}  // namespace
}  // namespace vhdx::test
