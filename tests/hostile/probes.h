// Runs the library and the CLI on a (damaged) image under time and memory
// bounds and checks that whatever happens is clean: success, or an error
// with a one-line message; never a crash, a hang, runaway memory or a write.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hostile/hostile_image.h"

namespace vhdx::hostile {

// What the library did with one image. Observed in a forked child with
// RLIMIT_AS and a deadline, so a crash, hang or huge allocation becomes a
// test failure instead of taking the test binary down.
struct LibraryOutcome {
  std::string failure;  // the child crashed, hung, ran out of memory, or never reported
  bool opened = false;
  std::string open_error;
  uint64_t virtual_size = 0;
  std::string count_error;  // CountAllocation
  std::string map_error;    // Map over the whole disk
  std::string read_error;   // Read of the data extents and samples of the rest
  // The map said "zero" but the bytes read were not (a library bug).
  std::string inconsistency;
  std::string digest;       // ContentDigest when everything read fine
  std::string full_sha256;  // SHA-256 of the whole disk when it is at most kFullReadLimit
  // With full_sha256: the first 16 hex digits of each MiB's SHA-256, comma-separated
  // (which parts of the disk read as before, after a repair).
  std::string mib_sha256;
  std::string check_error;  // Check() itself failed (it must not on a memory file)
  uint64_t check_errors = 0;
  uint64_t check_warnings = 0;
  uint64_t check_corruptions = 0;  // errors, and damaged redundant copies (`vhdx check` exits 2)
  uint64_t check_leaks = 0;        // leaked 1 MiB units (`vhdx check` exits 3 if nothing else)
  std::string check_first_error;

  bool ReadsFine() const {
    return opened && count_error.empty() && map_error.empty() && read_error.empty();
  }
  std::string Describe() const;
};

inline constexpr uint64_t kFullReadLimit = 64ull << 20;

// Opens `image` from memory (read-only) and runs info, CountAllocation,
// Map, bounded reads and Check in a child process.
LibraryOutcome ProbeLibrary(const Bytes& image, const std::string& name);

// Every error message of `outcome` is a single non-empty line that names
// what is wrong; nothing crashed; Check ran.
void ExpectClean(const LibraryOutcome& outcome);

struct CliRun {
  int exit_code = -1;
  std::string failure;  // crashed, hung or ran out of memory
  std::string stderr_text;
};
// Runs `vhdx ARGS...` directly (no shell) with stdout discarded (or written
// to `stdout_path`), under the same deadline and address-space limit as
// ProbeLibrary.
CliRun RunCli(const std::vector<std::string>& args, const std::string& stdout_path = "");

// An image file for the CLI to run on. Write() brings it to a new version
// of the image writing only the bytes that differ from what is on disk (the
// damaged variants differ from their base in a few KiB).
class ImageFile {
 public:
  explicit ImageFile(std::string path) : path_(std::move(path)) {}
  ~ImageFile();
  ImageFile(const ImageFile&) = delete;
  ImageFile& operator=(const ImageFile&) = delete;

  void Write(const Bytes& image);
  const std::string& path() const { return path_; }
  const Bytes& contents() const { return on_disk_; }

 private:
  std::string path_;
  Bytes on_disk_;
  bool created_ = false;
};

// Runs `vhdx info`, `map`, `check` and `convert -O raw` on `file` (each
// with a deadline and a 2 GiB address-space limit). A command whose work
// failed in `outcome` must exit 1 with exactly one stderr line
// "vhdx: PATH: ..."; the others must exit 0 with nothing on stderr. The
// file must be byte for byte unchanged afterwards. When `raw_sha256` is
// given and convert succeeds, its output must hash to it.
void ExpectCliAgrees(const ImageFile& file, const LibraryOutcome& outcome,
                     const std::optional<std::string>& raw_sha256);

}  // namespace vhdx::hostile
