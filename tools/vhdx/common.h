// Shared helpers of the vhdx subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

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

// Opens IMAGE read-only for a subcommand; on failure prints the one-line
// error, sets `result` to kExitError and returns nullptr.
std::unique_ptr<Image> OpenImageOrFail(const std::string& path, int& result);

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

// Adds --output=human|json.
void AddOutputOption(CLI::App* sub, std::string& output);

}  // namespace vhdx::cli
