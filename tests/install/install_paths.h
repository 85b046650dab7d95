// Where tests/install finds the staged install and the tools it builds
// consumers with. The ctest fixture install.stage (stage.cmake) runs
// `DESTDIR=<stage> cmake --install <build> --prefix /prefix` first.
#pragma once

#include <filesystem>
#include <string>

namespace vhdx::test {

// <stage>/prefix: what --prefix named, as DESTDIR put it.
inline std::string StagedPrefix() { return std::string(VHDX_INSTALL_STAGE) + VHDX_INSTALL_PREFIX; }
inline std::string StagedLibDir() { return StagedPrefix() + "/" + VHDX_INSTALL_LIBDIR; }
inline std::string StagedIncludeDir() { return StagedPrefix() + "/" + VHDX_INSTALL_INCLUDEDIR; }
// "" when the stage is there, else why not (the tests fail with it: the
// install is what they test, so a missing one is no reason to skip).
inline std::string MissingStage() {
  if (std::filesystem::exists(StagedLibDir() + "/libvhdx.so")) return "";
  return "no staged install in " + std::string(VHDX_INSTALL_STAGE) +
         ": run these tests through ctest, whose fixture install.stage stages it";
}

}  // namespace vhdx::test
