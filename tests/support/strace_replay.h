// Real-process crash testing of the CLI: run `vhdx ...` as a process
// (optionally killed), or under strace, whose log of every mutating syscall
// on the image files is replayed into CrashRecorders (crash_file.h) started
// from the files as they were. A CrashStateBuilder over such a recorder
// then yields what a power failure after any syscall of the real run could
// leave, for code paths that open their files by path (no recording File
// can be slipped under them).
//
//   auto strace = UsableStrace();           // VHDX_REQUIRE it
//   RecordedRun r;
//   RecordCliRun(*strace, {"resize", path, "1G"}, {path}, dir + "/t.strace", &r);
//   CrashStateBuilder states(*r.files[0]);  // r.ops[i] went to r.files[r.order[i]]
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/crash_file.h"
#include "support/image_builder.h"
#include "vhdx/file.h"

namespace vhdx::test {

// ---- Running a process ------------------------------------------------------

struct ProcessEnd {
  bool killed = false;     // by SIGKILL (ours, or strace's injection)
  bool timed_out = false;  // still running at the deadline, then killed
  int exit_code = -1;
  double seconds = 0;
};

// Runs argv[0] (a path) with its output discarded; with `kill_after`, sends
// SIGKILL that long after the fork. One still running `timeout` after the
// fork is killed and reported timed_out: a hung CLI fails its test instead
// of holding the binary until ctest's own timeout.
ProcessEnd RunProcess(const std::vector<std::string>& argv,
                      std::optional<std::chrono::microseconds> kill_after = std::nullopt,
                      std::chrono::seconds timeout = std::chrono::seconds(120));

// strace's path, if it is installed and may trace here (ptrace allowed).
std::optional<std::string> UsableStrace();
// "" when UsableStrace() finds one, else why `what` (a subcommand) cannot
// be recorded: for VHDX_REQUIRE.
std::string MissingStrace(const std::string& what);

// ---- strace's log as file operations -------------------------------------------

// One mutating syscall on one of the traced files.
struct TracedOp {
  int file = 0;  // index in the `paths` given to ParseTrace
  FileOp op;
};

// Appends the `want` bytes of one line of strace's hex dump (" | 00000  ab
// cd ..."); false when the line does not hold them.
bool ParseDumpLine(const std::string& line, size_t want, std::vector<uint8_t>* data);

// Reads strace's log (-y: paths after descriptors; -e write=all: the data
// of every write as a hex dump) and returns the mutating syscalls on
// `paths` (canonical), in order. Anything it cannot turn into a FileOp is
// an error.
Status ParseTrace(const std::string& trace_path, const std::vector<std::string>& paths,
                  std::vector<TracedOp>* out);

// ---- Files between disk and memory ------------------------------------------------

// The file at `path` in memory (its all-zero 64 KiB pieces left unwritten).
std::unique_ptr<SparseMemoryFile> LoadFile(const std::string& path);
// Every byte of `f`.
std::vector<uint8_t> FileBytes(const File& f);
// Writes `f` to `path` (all-zero MiBs left as holes).
Status SaveFile(const File& f, const std::string& path);

// ---- Recording a CLI run ------------------------------------------------------------

// A run as strace saw it, replayed into one recorder per file.
struct RecordedRun {
  std::vector<std::unique_ptr<CrashRecorder>> files;  // from their state before the run
  std::vector<int> order;                             // file of each op, in issue order
  std::vector<TracedOp> ops;
};

// Runs the CLI with `cli_args` under strace (log at `trace_path`, removed
// afterwards), which must exit 0, and replays every mutating syscall on
// `files` into recorders started from the files as they were; the replay
// must reproduce the files the real run left (gtest failures otherwise).
void RecordCliRun(const std::string& strace, const std::vector<std::string>& cli_args,
                  const std::vector<std::string>& files, const std::string& trace_path,
                  RecordedRun* r);

}  // namespace vhdx::test
