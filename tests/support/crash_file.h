// Crash simulation for the write path: a File that records every mutating
// call in order (with its data), and a builder that turns a prefix of that
// recording into the bytes a crash at that point could leave on disk.
//
//   CrashRecorder rec(start_file);                  // the durable start state
//   auto image = Image::Open(rec.OpenFile(), {.read_only = false});
//   ... writes, flushes ...
//   CrashStateBuilder states(rec);
//   for (size_t point = 0; point <= rec.op_count(); ++point) {
//     CrashState crashed = states.Build(point, rng, TearPolicy{});
//     ... open crashed.file (valid until the next Build) ...
//   }
//
// The model of a crash (what a disk with a volatile write cache may do):
// every op before the last Flush among the first `point` ops is durable, in
// order; of the ops issued after that Flush, any subset reached the disk (in
// issue order), and a write that did may have reached it only in part, torn
// at 512-byte sector boundaries of the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <vector>

#include "support/image_builder.h"
#include "vhdx/file.h"

namespace vhdx::test {

// One mutating call on a File, as it was issued.
struct FileOp {
  enum class Kind { kWrite, kFlush, kTruncate, kPunchHole, kAllocate };
  Kind kind = Kind::kWrite;
  uint64_t offset = 0;  // kTruncate: the new size
  uint64_t length = 0;
  std::vector<uint8_t> data;  // kWrite only
};
const char* FileOpKindName(FileOp::Kind kind);

// Owns the live file (the state every op has reached) and the recording.
// Files handed out by OpenFile record into it; several may exist one after
// the other (close, reopen), each owned by an Image.
class CrashRecorder {
 public:
  explicit CrashRecorder(const SparseMemoryFile& start);
  CrashRecorder(const CrashRecorder&) = delete;
  CrashRecorder& operator=(const CrashRecorder&) = delete;

  // A writable File over the live state; every mutation is applied and
  // recorded under one lock, so the recording's order is the applied order.
  // It must not outlive the recorder.
  std::unique_ptr<File> OpenFile();

  size_t op_count() const;
  // The recording; call only while no File from OpenFile is being written.
  const std::vector<FileOp>& ops() const { return ops_; }
  const SparseMemoryFile& start() const { return start_; }
  const SparseMemoryFile& live() const { return live_; }

 private:
  class Recording;
  Status Apply(FileOp op);

  SparseMemoryFile start_;
  SparseMemoryFile live_;
  mutable std::mutex mu_;
  std::vector<FileOp> ops_;
};

// How ops issued after the last flush reach the disk.
struct TearPolicy {
  double keep = 0.5;  // probability that an op reached the disk at all
  double tear = 0.3;  // probability that a kept write (or punch) is torn
};

// A writable file that reads as `base` until written: changes go to its
// own pages (copy on write), so a crash state costs only the pages that
// differ from the durable state. `base` must not change while it lives.
class OverlayFile final : public File {
 public:
  OverlayFile(const File& base, std::string name);

  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override;
  Status WriteAt(uint64_t offset, const void* buf, size_t n) override;
  Status Flush() override { return Status::Ok(); }
  Result<uint64_t> Size() const override;
  Status Truncate(uint64_t size) override;
  Status PunchHole(uint64_t offset, uint64_t length) override;
  Status Allocate(uint64_t offset, uint64_t length) override;
  Result<uint64_t> NextData(uint64_t offset) const override;
  bool writable() const override { return true; }
  const std::string& name() const override { return name_; }

 private:
  static constexpr uint64_t kPageSize = 16 * 1024;
  // The page's bytes, copied from the base on first use. Lock held.
  std::vector<uint8_t>& PageLocked(uint64_t page_no);
  void ReadBaseLocked(uint64_t offset, uint8_t* out, size_t n) const;

  const File& base_;
  std::string name_;
  mutable std::shared_mutex mu_;
  uint64_t size_ = 0;
  uint64_t base_end_ = 0;  // base bytes at or past this read as zeros (cut by a truncate)
  std::map<uint64_t, std::vector<uint8_t>> pages_;
};

// What one Build did, for messages and statistics.
struct CrashState {
  // The crashed file, over the builder's durable state: valid until the
  // builder's next Build.
  std::unique_ptr<File> file;
  size_t durable_ops = 0;  // ops [0, durable_ops) applied whole: up to the last flush
  size_t pending_ops = 0;  // ops after it, each kept, torn or lost
  size_t kept = 0, torn = 0;
};

// Builds crash states of one recording for non-decreasing crash points.
class CrashStateBuilder {
 public:
  explicit CrashStateBuilder(const CrashRecorder& recorder);

  // The file as a crash could leave it after the first `point` ops were
  // issued. `point` must not be smaller than in the previous call.
  CrashState Build(size_t point, std::mt19937_64& rng, const TearPolicy& policy);

 private:
  const std::vector<FileOp>& ops_;
  SparseMemoryFile durable_;  // every op before durable_end_ applied
  size_t durable_end_ = 0;
  size_t last_point_ = 0;
};

// Applies `op` to `file` whole.
Status ApplyFileOp(File& file, const FileOp& op);

}  // namespace vhdx::test
