// The staged install (install.stage: `cmake --install` into a DESTDIR) as a
// user of libvhdx meets it: what is installed where, the public headers, and
// programs built outside the tree against it with CMake and with pkg-config.
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "install_paths.h"
#include "manifest.h"
#include "support/test_util.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

// Every command a test runs ends within this (a hung compiler or loader
// fails the test instead of the whole ctest run).
constexpr const char* kTimeout = "timeout 300 ";

std::string Q(const std::string& s) { return ShellQuote(s); }

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Relative paths of the regular files under `root`.
std::set<std::string> FilesUnder(const fs::path& root) {
  std::set<std::string> files;
  if (!fs::exists(root)) return files;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_regular_file()) files.insert(fs::relative(e.path(), root).string());
  }
  return files;
}

TEST(InstallLayout, LibrariesPackagesAndProgramsWhereUsersLookForThem) {
  VHDX_REQUIRE(MissingStage());
  const std::string lib = StagedLibDir();
  // The shared library: the real file carries the full version, the SONAME
  // the ABI version, and the development link points at it.
  EXPECT_TRUE(fs::is_regular_file(lib + "/libvhdx.so." VHDX_PROJECT_VERSION));
  EXPECT_TRUE(fs::is_symlink(lib + "/libvhdx.so.0"));
  EXPECT_TRUE(fs::is_symlink(lib + "/libvhdx.so"));
  EXPECT_EQ(fs::canonical(lib + "/libvhdx.so"), fs::canonical(lib + "/libvhdx.so." VHDX_PROJECT_VERSION));
  CommandResult dyn = ::vhdx::test::Run(kTimeout + std::string("readelf -d ") + Q(lib + "/libvhdx.so." VHDX_PROJECT_VERSION));
  ASSERT_EQ(dyn.exit_code, 0) << dyn.output;
  EXPECT_NE(dyn.output.find("Library soname: [libvhdx.so.0]"), std::string::npos) << dyn.output;
  EXPECT_TRUE(fs::is_regular_file(lib + "/libvhdx.a"));

  for (const char* f : {"vhdx-config.cmake", "vhdx-config-version.cmake", "vhdx-targets.cmake",
                        "vhdx-static-targets.cmake"}) {
    EXPECT_TRUE(fs::is_regular_file(lib + "/cmake/vhdx/" + f)) << f;
  }
  EXPECT_TRUE(fs::is_regular_file(lib + "/pkgconfig/vhdx.pc"));
  EXPECT_TRUE(fs::is_regular_file(StagedPrefix() + "/" VHDX_INSTALL_BINDIR "/vhdx"));
  // The CLI links libvhdx.a: it runs without the shared library in the
  // loader's path.
  CommandResult cli_dyn = ::vhdx::test::Run(kTimeout + std::string("readelf -d ") + Q(StagedPrefix() + "/" VHDX_INSTALL_BINDIR "/vhdx"));
  EXPECT_EQ(cli_dyn.output.find("libvhdx"), std::string::npos) << cli_dyn.output;
  // The nbdkit plugin, in nbdkit's plugin directory (under DESTDIR).
  if (std::string(VHDX_NBDKIT_PLUGIN_DIR).empty()) {
    std::cout << "note: the nbdkit plugin is not built here, so not installed\n";
  } else {
    EXPECT_TRUE(fs::is_regular_file(std::string(VHDX_INSTALL_STAGE) + VHDX_NBDKIT_PLUGIN_DIR +
                                    "/nbdkit-vhdx-plugin.so"));
  }
  // vhdx(1), as written.
  const std::string man = StagedPrefix() + "/" VHDX_INSTALL_MANDIR "/man1/vhdx.1";
  ASSERT_TRUE(fs::is_regular_file(man));
  EXPECT_TRUE(ReadWholeFile(man) == ReadWholeFile(VHDX_MAN_PAGE_SOURCE));
  // Installed build artefacts that are not the library's: none.
  for (const std::string& f : FilesUnder(lib)) {
    EXPECT_EQ(f.find("test"), std::string::npos) << "installed: " << f;
  }
}

// The installed headers are include/vhdx/, byte for byte, and nothing else:
// no header of src/ (whose types the ABI must not depend on) got installed.
TEST(InstallHeaders, ExactlyThePublicHeaders) {
  VHDX_REQUIRE(MissingStage());
  const fs::path source_include = fs::path(VHDX_SOURCE_DIR) / "include";
  const std::set<std::string> expected = FilesUnder(source_include);
  const std::set<std::string> installed = FilesUnder(StagedIncludeDir());
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(installed, expected);
  for (const std::string& h : installed) {
    if (expected.count(h)) {
      EXPECT_EQ(ReadText(fs::path(StagedIncludeDir()) / h), ReadText(source_include / h)) << h;
    }
  }
  std::set<std::string> installed_names;
  for (const std::string& h : installed) installed_names.insert(fs::path(h).filename().string());
  for (const std::string& h : FilesUnder(fs::path(VHDX_SOURCE_DIR) / "src")) {
    if (fs::path(h).extension() == ".h") {
      EXPECT_EQ(installed_names.count(fs::path(h).filename().string()), 0u) << "src/" << h << " looks installed";
    }
  }
}

// Every installed header includes only installed headers and the standard
// library: `#include "x"` and `<vhdx/x>` resolve inside the installed tree,
// and any other <...> is a standard header (no directory in its name). A
// third-party header (fmt/, ext2fs/, blkid/) would make that library a
// public dependency, which neither vhdx.pc nor the CMake package declares.
TEST(InstallHeaders, IncludeOnlyInstalledOrStandardHeaders) {
  VHDX_REQUIRE(MissingStage());
  const fs::path root = StagedIncludeDir();
  const std::regex include_re(R"(^\s*#\s*include\s*([<"])([^>"]+)[>"])");
  const std::regex standard_re(R"(^[a-z_][a-z0-9_]*(\.h)?$)");
  int includes = 0;
  for (const std::string& h : FilesUnder(root)) {
    std::istringstream lines(ReadText(root / h));
    std::string line;
    while (std::getline(lines, line)) {
      std::smatch m;
      if (!std::regex_search(line, m, include_re)) continue;
      ++includes;
      const std::string target = m[2];
      const bool quoted = m[1] == "\"";
      if (quoted || target.rfind("vhdx/", 0) == 0) {
        const bool found = fs::is_regular_file(root / target) ||
                           (quoted && fs::is_regular_file((root / h).parent_path() / target));
        EXPECT_TRUE(found) << h << " includes " << target << ", which is not installed";
      } else {
        EXPECT_TRUE(std::regex_match(target, standard_re))
            << h << " includes <" << target << ">, not a standard header";
      }
    }
  }
  EXPECT_GT(includes, 0);
}

// Each installed header compiles on its own, included as users include it,
// with only the installed tree on the include path (nothing of src/, no -I
// of a dependency).
TEST(InstallHeaders, EachCompilesAlone) {
  VHDX_REQUIRE(MissingStage());
  for (const std::string& h : FilesUnder(StagedIncludeDir())) {
    const std::string cmd = "echo " + Q("#include <" + h + ">") + " | " + kTimeout + Q(VHDX_CXX_COMPILER) +
                            " -std=c++20 -fsyntax-only -Wall -Wextra -Werror -x c++ -I" + Q(StagedIncludeDir()) + " -";
    CommandResult r = ::vhdx::test::Run(cmd);
    EXPECT_EQ(r.exit_code, 0) << h << ":\n" << r.output;
  }
}

// ---- Consumers ------------------------------------------------------------

struct Expected {
  std::string image;  // decompressed corpus image
  uint64_t virtual_size = 0;
  std::string sha256;
};

// Two small corpus images (10 MiB disks): a fixed and a dynamic one. Their
// content as the manifest gives it, which the in-tree library must agree
// with too (else the comparison below would test the corpus, not the
// install).
std::vector<Expected> ExpectedImages() {
  std::vector<Expected> out;
  const CorpusManifest& manifest = LoadCorpusManifest();
  for (const char* name : {"fixed.vhdx.gz", "dynamic.vhdx.gz"}) {
    const CorpusImage* entry = nullptr;
    for (const CorpusImage& i : manifest.images) {
      if (i.file == name) entry = &i;
    }
    EXPECT_NE(entry, nullptr) << name << " is not in the corpus manifest";
    if (entry == nullptr) continue;
    Expected e{DecompressCorpusImage(name), entry->virtual_size, entry->content_sha256};
    auto image = Image::Open(e.image);
    EXPECT_TRUE(image.ok()) << image.status().message();
    if (!image.ok()) continue;
    EXPECT_EQ((*image)->virtual_size(), e.virtual_size) << name;
    EXPECT_EQ(Sha256OfImage(**image), e.sha256) << name;
    out.push_back(e);
  }
  return out;
}

// Runs a consumer program on each image; it must print the virtual size and
// the library's version, and write exactly the manifest's content.
void RunConsumer(const std::string& program, const std::string& env = "") {
  const std::vector<Expected> images = ExpectedImages();
  ASSERT_EQ(images.size(), 2u);
  for (const Expected& e : images) {
    const std::string raw = ScratchPath("consumer.raw");
    CommandResult r = ::vhdx::test::Run(env + kTimeout + Q(program) + " " + Q(e.image) + " " + Q(raw));
    ASSERT_EQ(r.exit_code, 0) << program << " " << e.image << ":\n" << r.output;
    EXPECT_NE(r.output.find("virtual_size " + std::to_string(e.virtual_size) + "\n"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(std::string("version ") + Version() + "\n"), std::string::npos) << r.output;
    EXPECT_EQ(Sha256OfFile(raw), e.sha256) << program << " on " << e.image;
    fs::remove(raw);
  }
}

// `program` loads libvhdx.so.0 from the stage (its RUNPATH, no
// LD_LIBRARY_PATH): the installed library, not the build tree's.
void ExpectLoadsStagedLibrary(const std::string& program) {
  CommandResult r = ::vhdx::test::Run(kTimeout + std::string("ldd ") + Q(program));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string want = "libvhdx.so.0 => " + fs::weakly_canonical(StagedLibDir()).string() + "/libvhdx.so.0";
  EXPECT_NE(r.output.find(want), std::string::npos) << "want " << want << " in:\n" << r.output;
}

// `program` has libvhdx.a linked in: no libvhdx.so.0 among its needs.
void ExpectStaticallyLinked(const std::string& program) {
  CommandResult r = ::vhdx::test::Run(kTimeout + std::string("readelf -d ") + Q(program));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("libvhdx"), std::string::npos) << r.output;
}

// A CMake project (tests/install/consumer) configured with only the stage on
// CMAKE_PREFIX_PATH: find_package(vhdx COMPONENTS shared static), programs
// linking vhdx::vhdx and vhdx::vhdx_static.
TEST(InstallConsumer, CMakeFindPackage) {
  VHDX_REQUIRE(MissingStage());
  VHDX_REQUIRE(MissingCorpus());
  const std::string build = ScratchPath("consumer-cmake");
  CommandResult configure = ::vhdx::test::Run(kTimeout + Q(VHDX_CMAKE_COMMAND) + " -S " + Q(VHDX_CONSUMER_DIR) + " -B " + Q(build) +
                                " -G Ninja -DCMAKE_MAKE_PROGRAM=" + Q(VHDX_MAKE_PROGRAM) + " -DCMAKE_CXX_COMPILER=" +
                                Q(VHDX_CXX_COMPILER) + " -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=" +
                                Q(StagedPrefix()) + " -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF");
  ASSERT_EQ(configure.exit_code, 0) << configure.output;
  // The package found is the staged one.
  const std::string cache = ReadText(build + "/CMakeCache.txt");
  EXPECT_NE(cache.find("vhdx_DIR:PATH=" + StagedLibDir() + "/cmake/vhdx"), std::string::npos)
      << "vhdx_DIR is not " << StagedLibDir() << "/cmake/vhdx";
  CommandResult compile = ::vhdx::test::Run(kTimeout + Q(VHDX_CMAKE_COMMAND) + " --build " + Q(build));
  ASSERT_EQ(compile.exit_code, 0) << compile.output;

  ExpectLoadsStagedLibrary(build + "/vhdx_consumer");
  RunConsumer(build + "/vhdx_consumer");
  ExpectStaticallyLinked(build + "/vhdx_consumer_static");
  RunConsumer(build + "/vhdx_consumer_static");
}

std::string PkgConfig(const std::string& args) {
  CommandResult r = ::vhdx::test::Run("PKG_CONFIG_PATH=" + Q(StagedLibDir() + "/pkgconfig") + " " + kTimeout + Q(VHDX_PKG_CONFIG) +
                        " " + args + " vhdx");
  EXPECT_EQ(r.exit_code, 0) << "pkg-config " << args << ":\n" << r.output;
  while (!r.output.empty() && (r.output.back() == '\n' || r.output.back() == ' ')) r.output.pop_back();
  return r.output;
}

// `g++ main.cc $(pkg-config --cflags --libs vhdx)`, with only the -std the
// public headers need and a RUNPATH to the stage.
TEST(InstallConsumer, PkgConfigShared) {
  VHDX_REQUIRE(MissingStage());
  VHDX_REQUIRE(MissingCorpus());
  // The .pc finds its prefix from its own location (${pcfiledir}).
  EXPECT_EQ(fs::weakly_canonical(PkgConfig("--variable=prefix")), fs::weakly_canonical(StagedPrefix()));
  EXPECT_EQ(PkgConfig("--modversion"), VHDX_PROJECT_VERSION);
  const std::string flags = PkgConfig("--cflags --libs");
  const std::string program = ScratchPath("consumer-pkgconfig");
  CommandResult compile = ::vhdx::test::Run(kTimeout + Q(VHDX_CXX_COMPILER) + " -std=c++20 -Wall -Wextra -Werror -o " + Q(program) +
                              " " + Q(std::string(VHDX_CONSUMER_DIR) + "/main.cc") + " " + flags + " -Wl,-rpath," +
                              Q(StagedLibDir()));
  ASSERT_EQ(compile.exit_code, 0) << flags << "\n" << compile.output;
  ExpectLoadsStagedLibrary(program);
  RunConsumer(program);
}

// `pkg-config --static --libs vhdx`: libvhdx.a and what it needs
// (Requires.private, Libs.private). -lvhdx becomes -l:libvhdx.a, since the
// linker prefers the shared library of the same directory.
TEST(InstallConsumer, PkgConfigStatic) {
  VHDX_REQUIRE(MissingStage());
  VHDX_REQUIRE(MissingCorpus());
  std::string libs = PkgConfig("--static --libs");
  for (const char* dep : {"-lfmt", "-lext2fs", "-lcom_err", "-lblkid"}) {
    EXPECT_NE((" " + libs + " ").find(std::string(" ") + dep + " "), std::string::npos) << dep << " missing: " << libs;
  }
  const std::regex lvhdx(R"((^|\s)-lvhdx(\s|$))");
  ASSERT_TRUE(std::regex_search(libs, lvhdx)) << libs;
  libs = std::regex_replace(libs, lvhdx, "$1-l:libvhdx.a$2");
  const std::string program = ScratchPath("consumer-pkgconfig-static");
  CommandResult compile = ::vhdx::test::Run(kTimeout + Q(VHDX_CXX_COMPILER) + " -std=c++20 -Wall -Wextra -Werror -o " + Q(program) +
                              " " + Q(std::string(VHDX_CONSUMER_DIR) + "/main.cc") + " " + PkgConfig("--cflags") + " " +
                              libs);
  ASSERT_EQ(compile.exit_code, 0) << libs << "\n" << compile.output;
  ExpectStaticallyLinked(program);
  RunConsumer(program);
}

// docs/API.md's worked example, the ```c block as written, compiled as a C
// user would (`cc -std=c11 ... $(pkg-config --cflags --libs vhdx)`, every
// warning an error) against the stage, and run on a corpus image: its
// size, extents and checksum are what the library reads, and its new image
// round-trips.
TEST(InstallConsumer, DocsApiExampleInC) {
  VHDX_REQUIRE(MissingStage());
  VHDX_REQUIRE(MissingCorpus());
  const std::string doc = ReadText(VHDX_API_DOC);
  const size_t begin = doc.find("```c\n");
  ASSERT_NE(begin, std::string::npos) << "no ```c block in docs/API.md";
  const size_t end = doc.find("\n```", begin + 5);
  ASSERT_NE(end, std::string::npos);
  const std::string dir = ScratchPath("api-example");
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir + "/example.c") << doc.substr(begin + 5, end + 1 - (begin + 5));
  const std::string program = dir + "/example";
  CommandResult compile = ::vhdx::test::Run(kTimeout + Q(VHDX_C_COMPILER) + " -std=c11 -Wall -Wextra -Werror -o " +
                                            Q(program) + " " + Q(dir + "/example.c") + " " +
                                            PkgConfig("--cflags --libs") + " -Wl,-rpath," + Q(StagedLibDir()));
  ASSERT_EQ(compile.exit_code, 0) << compile.output;
  ExpectLoadsStagedLibrary(program);

  const std::string image = DecompressCorpusImage("dynamic.vhdx.gz");
  CommandResult r = ::vhdx::test::Run(kTimeout + Q(program) + " " + Q(image) + " " + Q(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // What the example must have printed, from the in-tree library.
  auto opened = Image::Open(image);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  const Image& img = **opened;
  uint64_t data = 0, zero = 0, h = 14695981039346656037ull;
  ASSERT_TRUE(img.Map(0, img.virtual_size(), [&](const MapExtent& x) {
                   x.data ? ++data : x.zero ? ++zero : 0;
                   return true;
                 }).ok());
  std::vector<uint8_t> buf(1 << 20);
  for (uint64_t off = 0; off < img.virtual_size(); off += buf.size()) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), img.virtual_size() - off));
    ASSERT_TRUE(img.Read(off, buf.data(), n).ok());
    for (size_t i = 0; i < n; ++i) h = (h ^ buf[i]) * 1099511628211ull;
  }
  char fnv[17];
  std::snprintf(fnv, sizeof fnv, "%016llx", static_cast<unsigned long long>(h));
  const std::string want = "virtual size: " + std::to_string(img.virtual_size()) + "\ntype: dynamic\nextents: " +
                           std::to_string(data) + " data, " + std::to_string(zero) + " zero\nfnv1a: " + fnv +
                           "\nround trip: ok\nmissing: /nonexistent.vhdx: cannot open: No such file or directory\n";
  EXPECT_EQ(r.output, want);
  EXPECT_GT(data, 0u);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace vhdx::test
