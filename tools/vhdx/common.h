// Shared helpers of the vhdx subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vhdx/image.h"
#include "vhdx/status.h"

namespace vhdx::cli {

// Exit statuses, as qemu-img: 0 success, 1 error, 2 usage.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

// Prints "vhdx: FILE: message" on stderr and returns kExitError.
int Fail(const std::string& file, const Status& status);
int Fail(const std::string& file, const std::string& message);

// Opens IMAGE (read-only unless `options` says otherwise) with its parent
// chain for a subcommand; on failure prints the one-line error, sets
// `result` to kExitError and returns nullptr.
std::unique_ptr<Image> OpenImageOrFail(const std::string& path, int& result, const OpenOptions& options = {});

// Adds `--parent-dir DIR` (repeatable: one DIR each) to a subcommand that
// opens an image: directories searched by file name for the parents of a
// differencing image, at every level of the chain (OpenOptions::parent_dirs).
void AddParentDirOption(CLI::App* sub, std::vector<std::string>& dirs);

// Adds `-U, --force-share` to a subcommand that opens images: read them
// while another process writes them, without taking a lock
// (OpenOptions::force_share). Read-write opens refuse it. Every
// *OpenOptions below carry it.
void AddForceShareOption(CLI::App* sub);
bool ForceShare();

// OpenOptions that open an image with its chain, parents also looked for
// in `parent_dirs`.
OpenOptions ChainOpenOptions(const std::vector<std::string>& parent_dirs, bool read_only = true);
// OpenOptions that open the file alone (skip_parent): for its info, or to
// replay its log, when its parent may be missing.
OpenOptions FileOnlyOpenOptions(bool read_only = true);

// The image `depth` levels below `top` in its chain (0 = top; walks
// Image::parent()), or nullptr when the chain is not that deep.
const Image* ImageAtDepth(const Image& top, int depth);

// "10G", "512K", "1.5M", "4096" -> bytes (K/M/G/T/P/E powers of 1024).
std::optional<uint64_t> ParseSize(const std::string& text);
// "64 MiB" style, as qemu-img prints sizes.
std::string HumanSize(uint64_t bytes);

// A progress bar on stderr like qemu-img's "    (42.00/100%)".
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled) {}
  ~Progress();
  void Update(uint64_t done, uint64_t total);

 private:
  bool enabled_;
  int last_ = -1;
};

// Each subcommand registers itself on the app and returns the exit code
// through `result` when it runs.
void RegisterInfo(CLI::App& app, int& result);
void RegisterMap(CLI::App& app, int& result);
void RegisterCheck(CLI::App& app, int& result);
void RegisterConvert(CLI::App& app, int& result);
void RegisterCreate(CLI::App& app, int& result);
void RegisterIo(CLI::App& app, int& result);
void RegisterBench(CLI::App& app, int& result);
void RegisterCommit(CLI::App& app, int& result);
void RegisterRebase(CLI::App& app, int& result);
void RegisterResize(CLI::App& app, int& result);
void RegisterCompact(CLI::App& app, int& result);
// Registers both `mount` and `unmount`.
void RegisterMount(CLI::App& app, int& result);

// Adds --output=human|json.
void AddOutputOption(CLI::App* sub, std::string& output);

}  // namespace vhdx::cli
