// Crash consistency of differencing chains: writes into a child (part 1)
// and CommitImage (part 2).
//
// Part 1 runs random workloads through Image on a child whose file records
// every mutating call (tests/support/crash_file.h), over a parent on disk
// that is never written. For many points of each recording it rebuilds the
// file a crash there could leave (everything up to the last file flush,
// plus a random subset of the later calls, some torn at 512-byte sectors)
// and requires what crash_test.cc requires of plain images, with the parent
// attached: the file opens read-only and read-write with the same content,
// vhdx::Check finds no errors, every byte reads its value as of the last
// completed flush or a value a later request wrote (for a sector the child
// never wrote, the old value is the parent's byte), and the image takes new
// writes. The workloads exercise what is particular to children: partial
// sectors (filled from the parent), partial blocks (PARTIALLY_PRESENT and
// sector bitmap allocation), whole blocks (FULLY_PRESENT, ZERO), blocks
// filled piece by piece (promotion to FULLY_PRESENT), discards and
// write-zeroes that must hide the parent, on disks of more than one chunk.
//
// Part 2 tests CommitImage, which opens both files by path with POSIX
// files, so no recording File can be slipped under it:
//   - The `vhdx commit` process runs under strace, which logs every
//     mutating syscall on the two files with its data. The log is replayed
//     into one CrashRecorder per file (and must reproduce the files the run
//     left), and crash states of the pair are built at every point of the
//     merged sequence: per file, everything up to its own last fdatasync
//     plus a random subset of its later writes, torn. That is a power
//     failure: unflushed writes are lost, so the ordering of the flushes of
//     the two files is tested too. Recorded twice: a commit of a clean
//     chain, and the re-run of a commit killed (strace's syscall injection)
//     after it started writing the parent.
//   - `vhdx commit` is killed with SIGKILL at random moments, its re-run
//     too on half of the trials. A killed process loses nothing that
//     reached the page cache, so this tests the order of the steps at
//     process granularity only, not their durability.
// Either way the chain must read exactly as before the commit, both files
// must check without errors, and the commit run again must complete,
// leaving the parent reading like the chain and the child empty.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "core_test_util.h"
#include "support/crash_file.h"
#include "support/strace_replay.h"
#include "support/test_util.h"
#include "vhdx/chain.h"
#include "vhdx/create.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

// Sanitizer builds run several times slower: fewer crash points.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// ---- Shared helpers -------------------------------------------------------

std::string Findings(const CheckReport& report, bool errors_only) {
  std::string out;
  for (const auto& f : report.findings) {
    if (errors_only && f.severity != CheckFinding::Severity::kError) continue;
    out += fmt::format("[{} {} at {:#x}: {}] ",
                       f.severity == CheckFinding::Severity::kError ? "error" : "warning",
                       f.structure, f.offset, f.message);
  }
  return out;
}

// "" when Check finds no error in `file`, else what it found.
std::string CheckErrors(const File& file) {
  auto report = Check(file);
  if (!report.ok()) return "check failed: " + report.status().message();
  return report->errors() == 0 ? std::string() : Findings(*report, true);
}

// Opens a child over `file` with `parent` as its immediate parent.
Result<std::unique_ptr<Image>> OpenChild(std::unique_ptr<File> file, bool read_only,
                                         const std::shared_ptr<const Image>& parent) {
  return Image::Open(std::move(file), {.read_only = read_only, .parent = parent});
}

// ---- Part 1: writes into a child -------------------------------------------

enum class Start {
  kEmpty,      // a new child
  kPrefilled,  // the child holds data (partial and whole blocks), closed cleanly
  kDirtyLog,   // the same, its log never applied (a crashed session)
};

struct ChildSpec {
  uint64_t seed = 0;
  uint64_t parent_size = 0;            // the parent's virtual size
  uint64_t child_size = 0;             // 0: the parent's; larger: past it reads zeros
  uint32_t parent_block_size = 1 * MiB;
  uint32_t block_size = 1 * MiB;       // the child's
  uint32_t logical_sector_size = 512;  // both
  Start start = Start::kEmpty;
  int requests = 60;
  int flush_percent = 14;
  bool reopen = true;            // close and reopen now and then
  int whole_block_percent = 15;  // changes of whole blocks (FULLY_PRESENT, ZERO, UNMAPPED)
  int piecewise_percent = 25;    // writes that continue filling one block front to back
  // Child blocks the requests stay in (ascending); empty: every block. A
  // request may run from one into the next when that is listed too.
  std::vector<uint64_t> hot_blocks{};
  // With hot blocks: only the first `window` bytes of each are modelled
  // and checked; 0: whole blocks.
  uint64_t window = 0;
  // With a window: request i goes to hot block i % n, inside its window
  // (writes, every third sweep write-zeroes), and a flush follows every
  // sweep over all of them: each commit carries one sector bitmap page per
  // 16 hot blocks apart, more than one log entry holds.
  bool sweep = false;
  // Crash points are sampled inside flushes and closes only.
  bool focus_commits = false;
  // The workload is meant to write at least this many log entries in its
  // recorded session (to split commits, or wrap the log).
  uint64_t min_log_entries = 0;
  int points_percent = 100;

  uint64_t size() const { return child_size ? child_size : parent_size; }
  std::string Describe() const {
    static const char* kStart[] = {"empty", "prefilled", "dirty log"};
    return fmt::format(
        "workload seed {}: child of {:#x} bytes ({} MiB blocks) over a parent of {:#x} ({} MiB "
        "blocks), {}-byte sectors, child {}, {} requests{}",
        seed, size(), block_size / MiB, parent_size, parent_block_size / MiB,
        logical_sector_size, kStart[static_cast<int>(start)], requests,
        hot_blocks.empty()      ? ""
        : hot_blocks.size() > 8 ? fmt::format(" in {} blocks", hot_blocks.size())
                                : fmt::format(" in blocks {}", fmt::join(hot_blocks, ",")));
  }
};

// The child blocks a workload may change, laid end to end in its model.
// Only the disk's last block may be partial, and it is listed last.
struct ModelLayout {
  uint64_t block_size = 0, virtual_size = 0;
  std::vector<uint64_t> blocks;  // ascending
  uint64_t window = 0;           // 0: whole blocks

  static ModelLayout For(const ChildSpec& spec) {
    ModelLayout m{spec.block_size, spec.size(), spec.hot_blocks, spec.window};
    if (m.blocks.empty())
      for (uint64_t b = 0; b * spec.block_size < spec.size(); ++b) m.blocks.push_back(b);
    return m;
  }
  uint64_t Used(uint64_t b) const { return std::min(block_size, virtual_size - b * block_size); }
  uint64_t Window(uint64_t b) const { return window ? std::min(window, Used(b)) : Used(b); }
  uint64_t stride() const { return window ? window : block_size; }
  uint64_t size() const { return (blocks.size() - 1) * stride() + Window(blocks.back()); }
  bool Listed(uint64_t b) const { return std::binary_search(blocks.begin(), blocks.end(), b); }
  // Model offset of virtual offset `v`, whose block must be listed; a range
  // is contiguous in the model while its blocks are consecutive in both.
  uint64_t ModelOffset(uint64_t v) const {
    auto it = std::lower_bound(blocks.begin(), blocks.end(), v / block_size);
    return static_cast<uint64_t>(it - blocks.begin()) * stride() + v % block_size;
  }
  // How many bytes from the start of [v, v+n) the model holds.
  uint64_t ModelLength(uint64_t v, uint64_t n) const {
    if (!window) return n;
    const uint64_t in = v % block_size;
    return in < window ? std::min(n, window - in) : 0;
  }
  uint64_t VirtualOffset(uint64_t model_offset) const {
    return blocks[model_offset / stride()] * block_size + model_offset % stride();
  }
  // End of the modelled run of consecutive listed blocks from `b`, at most
  // two long.
  uint64_t RunEnd(uint64_t b) const {
    const uint64_t next = b + 1;
    if (window) return b * block_size + Window(b);
    return Listed(next) ? next * block_size + Used(next) : b * block_size + Used(b);
  }
  Status ReadAll(const Image& image, std::vector<uint8_t>* out) const {
    out->resize(size());
    for (size_t i = 0; i < blocks.size(); ++i) {
      const uint64_t b = blocks[i];
      VHDX_RETURN_IF_ERROR(image.Read(b * block_size, out->data() + i * stride(), Window(b)));
    }
    return Status::Ok();
  }
};

// One request made through Image, and the recorded file ops it issued.
struct ApiOp {
  enum class Kind { kOpen, kWrite, kWriteZeroes, kDiscard, kFlush, kClose };
  Kind kind = Kind::kWrite;
  uint64_t offset = 0, length = 0;  // on the virtual disk
  uint64_t model_offset = 0;  // where the range lies in the model
  uint64_t model_length = 0;  // how much of it the model holds
  std::vector<uint8_t> data;  // kWrite; the other changes write zeros
  bool fua = false;
  bool may_unmap = false;
  bool piecewise = false;
  size_t begin = 0, end = 0;  // file ops [begin, end) of the recording

  bool durable() const {
    return kind == Kind::kFlush || kind == Kind::kClose || kind == Kind::kOpen || fua;
  }
  bool changes_content() const {
    return kind == Kind::kWrite || kind == Kind::kWriteZeroes || kind == Kind::kDiscard;
  }
  uint8_t ByteAt(uint64_t model_offset_of_byte) const {
    return kind == Kind::kWrite ? data[model_offset_of_byte - model_offset] : 0;
  }
  std::string Describe() const {
    std::string what;
    switch (kind) {
      case Kind::kOpen: what = "open read-write"; break;
      case Kind::kWrite:
        what = fmt::format("{}{}write {:#x}+{:#x}", fua ? "fua " : "",
                           piecewise ? "piecewise " : "", offset, length);
        break;
      case Kind::kWriteZeroes:
        what = fmt::format("write_zeroes {:#x}+{:#x} may_unmap={}", offset, length, may_unmap);
        break;
      case Kind::kDiscard: what = fmt::format("discard {:#x}+{:#x}", offset, length); break;
      case Kind::kFlush: what = "flush"; break;
      case Kind::kClose: what = "close"; break;
    }
    return fmt::format("{} [file ops {}..{})", what, begin, end);
  }
};

void ApplyToModel(const ApiOp& op, std::vector<uint8_t>* model) {
  if (op.kind == ApiOp::Kind::kWrite)
    std::memcpy(model->data() + op.model_offset, op.data.data(), op.model_length);
  else if (op.changes_content())
    std::memset(model->data() + op.model_offset, 0, op.model_length);
}

struct ChildWorkload {
  ChildSpec spec;
  ModelLayout layout;
  std::shared_ptr<const Image> parent;
  uint64_t log_offset = 0, log_length = 0;  // the child's log region
  std::vector<uint8_t> initial;             // the model when recording starts
  std::unique_ptr<CrashRecorder> recorder;
  std::vector<ApiOp> ops;
  // What the workload reached: PARTIALLY_PRESENT blocks counted at each
  // flush, blocks promoted to FULLY_PRESENT by the write that filled them,
  // sector bitmap blocks at the end.
  uint64_t partial_at_flushes = 0, promotions = 0, bitmaps = 0;
};

// Random ranges of the listed blocks: whole blocks, small or large ones at
// any byte alignment, ones straddling a block boundary (a chunk boundary
// when the hot blocks sit there).
struct RangePicker {
  const ModelLayout& layout;
  std::mt19937_64& rng;

  void Whole(ApiOp& op) {
    const uint64_t b = layout.blocks[rng() % layout.blocks.size()];
    op.offset = b * layout.block_size;
    op.length = (!layout.window && rng() % 2 ? layout.RunEnd(b) : op.offset + layout.Used(b)) -
                op.offset;
  }
  void Partial(ApiOp& op) {
    const uint64_t b = layout.blocks[rng() % layout.blocks.size()];
    const uint64_t start = b * layout.block_size, end = layout.RunEnd(b);
    const uint64_t shape = rng() % 10;
    op.length = std::min(end - start, 1 + rng() % (shape < 6 ? 8 * KiB : 300 * KiB));
    const uint64_t block_end = start + layout.Used(b);
    if (shape == 9 && end > block_end && op.length > 1) {  // across the boundary
      op.offset = block_end - 1 - rng() % std::min(op.length - 1, block_end - start);
      op.length = std::min(op.length, end - op.offset);
    } else {
      op.offset = start + rng() % (end - start - op.length + 1);
    }
  }
};

// Writes random content into the parent, over the listed child blocks:
// each left unallocated, written whole, or written in a few random runs
// (the rest reading zeros). Returns the parent's path; `model` takes its
// content (zeros past the parent's size).
std::string BuildParent(const ChildSpec& spec, const ModelLayout& layout, std::mt19937_64& rng,
                        std::vector<uint8_t>* model) {
  const std::string path = ScratchPath(fmt::format("chain-crash-parent-{}.vhdx", spec.seed));
  std::error_code ec;
  fs::remove(path, ec);
  CreateOptions o;
  o.virtual_size = spec.parent_size;
  o.block_size = spec.parent_block_size;
  o.logical_sector_size = spec.logical_sector_size;
  Status st = CreateImage(path, o);
  EXPECT_TRUE(st.ok()) << st.message();
  auto opened = Image::Open(path, {.read_only = false});
  EXPECT_TRUE(opened.ok()) << opened.status().message();
  if (!opened.ok()) return path;
  Image& parent = **opened;
  auto put = [&](uint64_t offset, uint64_t length) {
    if (offset >= spec.parent_size) return;
    length = std::min(length, spec.parent_size - offset);
    auto data = PatternBytes(length, rng());
    Status s = parent.Write(offset, data.data(), length);
    EXPECT_TRUE(s.ok()) << s.message();
    std::memcpy(model->data() + layout.ModelOffset(offset), data.data(), length);
  };
  for (uint64_t b : layout.blocks) {
    const uint64_t start = b * layout.block_size, used = layout.Window(b);
    switch (rng() % 4) {
      case 0: break;
      case 1: put(start, used); break;
      default:
        for (int k = 1 + static_cast<int>(rng() % 3); k > 0; --k) {
          const uint64_t len = 1 + rng() % (used / 2);
          put(start + rng() % (used - len + 1), len);
        }
    }
  }
  st = parent.Close();
  EXPECT_TRUE(st.ok()) << st.message();
  return path;
}

// Data written into the child before recording starts, in every shape a
// child block can take; the session is closed, or left with its log active.
std::unique_ptr<SparseMemoryFile> PrefillChild(const SparseMemoryFile& created, ChildWorkload& w,
                                               std::mt19937_64& rng, std::vector<uint8_t>* model) {
  auto copy = std::make_unique<SparseMemoryFile>(created, created.name(), true);
  SparseMemoryFile* raw = copy.get();
  auto opened = OpenChild(std::move(copy), false, w.parent);
  EXPECT_TRUE(opened.ok()) << opened.status().message();
  if (!opened.ok()) return nullptr;
  Image& child = **opened;
  const ModelLayout& layout = w.layout;
  RangePicker picker{layout, rng};
  for (size_t i = 0; i < layout.blocks.size() * 2; ++i) {
    ApiOp op;
    const int what = static_cast<int>(rng() % 6);
    if (what == 0 || what == 5) picker.Whole(op);
    else picker.Partial(op);
    op.model_offset = layout.ModelOffset(op.offset);
    op.model_length = layout.ModelLength(op.offset, op.length);
    Status st;
    if (what <= 2) {
      op.kind = ApiOp::Kind::kWrite;
      op.data = PatternBytes(op.length, rng());
      st = child.Write(op.offset, op.data.data(), op.length);
    } else if (what == 3) {
      op.kind = ApiOp::Kind::kWriteZeroes;
      st = child.WriteZeroes(op.offset, op.length, rng() % 2 == 0);
    } else {
      op.kind = ApiOp::Kind::kDiscard;
      st = child.Discard(op.offset, op.length);
    }
    EXPECT_TRUE(st.ok()) << "prefill " << op.Describe() << ": " << st.message();
    if (!st.ok()) return nullptr;
    ApplyToModel(op, model);
  }
  Status st = w.spec.start == Start::kDirtyLog ? child.Flush() : child.Close();
  EXPECT_TRUE(st.ok()) << st.message();
  if (!st.ok()) return nullptr;
  // For a dirty log: the file as a crash right after the flush leaves it.
  return std::make_unique<SparseMemoryFile>(*raw, created.name(), true);
}

ChildWorkload RecordChild(const ChildSpec& spec) {
  ChildWorkload w;
  w.spec = spec;
  std::mt19937_64 rng(spec.seed);
  w.layout = ModelLayout::For(spec);
  const ModelLayout& layout = w.layout;
  w.initial.assign(layout.size(), 0);
  const std::string parent_path = BuildParent(spec, layout, rng, &w.initial);
  if (::testing::Test::HasFailure()) return w;
  {
    auto parent = Image::Open(parent_path);
    EXPECT_TRUE(parent.ok()) << parent.status().message();
    if (!parent.ok()) return w;
    w.parent = std::move(parent).value();
  }
  auto created = std::make_unique<SparseMemoryFile>(
      ScratchPath(fmt::format("chain-crash-child-{}.avhdx", spec.seed)), true);
  CreateOptions o;
  o.parent_path = parent_path;
  o.virtual_size = spec.child_size;
  o.block_size = spec.block_size;
  o.logical_sector_size = spec.logical_sector_size;
  Status st = CreateImage(*created, o);
  EXPECT_TRUE(st.ok()) << st.message();
  if (!st.ok()) return w;
  {
    // The new child reads as its parent (zeros past the parent's end).
    auto child = OpenChild(std::make_unique<ReadOnlyView>(*created), true, w.parent);
    EXPECT_TRUE(child.ok()) << child.status().message();
    if (!child.ok()) return w;
    EXPECT_EQ((*child)->info().type, DiskType::kDifferencing);
    std::vector<uint8_t> got;
    st = layout.ReadAll(**child, &got);
    EXPECT_TRUE(st.ok()) << st.message();
    EXPECT_TRUE(got == w.initial) << "the new child does not read as its parent";
    if (::testing::Test::HasFailure()) return w;
  }
  if (spec.start != Start::kEmpty) {
    created = PrefillChild(*created, w, rng, &w.initial);
    if (!created) return w;
  }
  w.recorder = std::make_unique<CrashRecorder>(*created);
  CrashRecorder& rec = *w.recorder;

  auto begin = [&](ApiOp::Kind kind) {
    ApiOp op;
    op.kind = kind;
    op.begin = rec.op_count();
    return op;
  };
  auto finish = [&](ApiOp op, const Status& status) {
    EXPECT_TRUE(status.ok()) << spec.Describe() << ": " << op.Describe() << ": "
                             << status.message();
    op.end = rec.op_count();
    w.ops.push_back(std::move(op));
    return status.ok();
  };
  auto open = [&] {
    ApiOp op = begin(ApiOp::Kind::kOpen);
    auto image = OpenChild(rec.OpenFile(), false, w.parent);
    finish(std::move(op), image.ok() ? Status::Ok() : image.status());
    return image.ok() ? std::move(image).value() : nullptr;
  };
  std::unique_ptr<Image> image = open();
  if (!image) return w;
  // A request without data (the call is made after `begin` counted the
  // file ops issued so far).
  auto plain = [&](ApiOp::Kind kind, Status (Image::*call)()) {
    ApiOp op = begin(kind);
    Status s = ((*image).*call)();
    return finish(std::move(op), s);
  };
  w.log_offset = image->info().log.offset;
  w.log_length = image->info().log.length;

  RangePicker picker{layout, rng};
  std::optional<uint64_t> fill_block;  // the block being filled piece by piece
  uint64_t fill_cursor = 0;
  for (int request = 0; request < spec.requests; ++request) {
    if (spec.sweep) {
      const size_t n = layout.blocks.size();
      if (request > 0 && request % n == 0) {
        if (!plain(ApiOp::Kind::kFlush, &Image::Flush)) return w;
        if (auto counts = image->CountAllocation(); counts.ok())
          w.partial_at_flushes += counts->payload[static_cast<int>(BlockState::kPartiallyPresent)];
      }
      const uint64_t b = layout.blocks[request % n];
      const bool zeroes = (request / n) % 3 == 2;
      ApiOp op = begin(zeroes ? ApiOp::Kind::kWriteZeroes : ApiOp::Kind::kWrite);
      op.length = 1 + rng() % std::min<uint64_t>(6000, layout.Window(b));
      op.offset = b * layout.block_size + rng() % (layout.Window(b) - op.length + 1);
      op.model_offset = layout.ModelOffset(op.offset);
      op.model_length = op.length;
      Status s;
      if (zeroes) {
        op.may_unmap = rng() % 2 == 0;
        s = image->WriteZeroes(op.offset, op.length, op.may_unmap);
      } else {
        op.data = PatternBytes(op.length, rng());
        s = image->Write(op.offset, op.data.data(), op.length);
      }
      if (!finish(std::move(op), s)) return w;
      continue;
    }
    // flush_percent flushes, 3% close and reopen; of the rest 55% writes,
    // 13% write-zeroes, 32% discards.
    const int pick = static_cast<int>(rng() % 100);
    const int flush_at = 100 - spec.flush_percent;
    const int change = static_cast<int>(rng() % 100);
    const bool whole = static_cast<int>(rng() % 100) < spec.whole_block_percent;
    if (pick >= flush_at) {
      if (!plain(ApiOp::Kind::kFlush, &Image::Flush)) return w;
      if (auto counts = image->CountAllocation(); counts.ok())
        w.partial_at_flushes += counts->payload[static_cast<int>(BlockState::kPartiallyPresent)];
    } else if (spec.reopen && pick >= flush_at - 3) {
      if (!plain(ApiOp::Kind::kClose, &Image::Close)) return w;
      image.reset();
      image = open();
      if (!image) return w;
      EXPECT_EQ(w.ops.back().begin, w.ops.back().end) << "a clean image opens without writing";
    } else if (change < 55) {
      ApiOp op = begin(ApiOp::Kind::kWrite);
      if (static_cast<int>(rng() % 100) < spec.piecewise_percent) {
        // The next piece of a block filled front to back: NOT_PRESENT, then
        // PARTIALLY_PRESENT, then (if nothing else touched it) promoted.
        if (!fill_block || fill_cursor >= *fill_block * layout.block_size + layout.Used(*fill_block)) {
          fill_block = layout.blocks[rng() % layout.blocks.size()];
          fill_cursor = *fill_block * layout.block_size;
        }
        const uint64_t block_end = *fill_block * layout.block_size + layout.Used(*fill_block);
        op.offset = fill_cursor;
        op.length = std::min(block_end - fill_cursor, 1 + rng() % (layout.block_size / 3));
        op.piecewise = true;
        fill_cursor += op.length;
      } else if (whole) {
        picker.Whole(op);
      } else {
        picker.Partial(op);
      }
      op.model_offset = layout.ModelOffset(op.offset);
      op.model_length = layout.ModelLength(op.offset, op.length);
      op.fua = rng() % 12 == 0;
      op.data = rng() % 8 == 0 ? std::vector<uint8_t>(op.length, 0) : PatternBytes(op.length, rng());
      const bool completes = op.piecewise && op.offset + op.length ==
                                                 *fill_block * layout.block_size +
                                                     layout.Used(*fill_block);
      auto counts_before = image->CountAllocation();
      Status s = image->Write(op.offset, op.data.data(), op.length, {.fua = op.fua});
      if (!finish(std::move(op), s)) return w;
      if (auto counts = image->CountAllocation(); completes && counts.ok() && counts_before.ok()) {
        constexpr int kPartial = static_cast<int>(BlockState::kPartiallyPresent);
        constexpr int kFull = static_cast<int>(BlockState::kFullyPresent);
        w.promotions += counts->payload[kPartial] + 1 == counts_before->payload[kPartial] &&
                        counts->payload[kFull] == counts_before->payload[kFull] + 1;
      }
    } else {
      ApiOp op = begin(change < 68 ? ApiOp::Kind::kWriteZeroes : ApiOp::Kind::kDiscard);
      if (whole) picker.Whole(op);
      else picker.Partial(op);
      op.model_offset = layout.ModelOffset(op.offset);
      op.model_length = layout.ModelLength(op.offset, op.length);
      Status s;
      if (op.kind == ApiOp::Kind::kWriteZeroes) {
        op.may_unmap = rng() % 2 == 0;
        s = image->WriteZeroes(op.offset, op.length, op.may_unmap);
      } else {
        s = image->Discard(op.offset, op.length);
      }
      if (!finish(std::move(op), s)) return w;
    }
  }
  if (auto counts = image->CountAllocation(); counts.ok())
    w.bitmaps = counts->sector_bitmap[6];  // SB_BLOCK_PRESENT
  plain(ApiOp::Kind::kClose, &Image::Close);
  EXPECT_GE(image->write_stats().log_entries, spec.min_log_entries) << spec.Describe();
  return w;
}

// First byte of `got` the contract does not allow: neither `durable` (the
// model at the last completed flush) nor a value one of `since` wrote.
// Returns an empty string when every byte is allowed.
std::string FirstForbiddenByte(const ModelLayout& layout, const std::vector<uint8_t>& got,
                               const std::vector<uint8_t>& durable,
                               const std::vector<const ApiOp*>& since) {
  constexpr size_t kChunk = 4096;
  size_t bad = got.size(), count = 0;
  std::vector<const ApiOp*> covering;
  for (size_t c = 0; c < got.size(); c += kChunk) {
    const size_t n = std::min(kChunk, got.size() - c);
    if (std::memcmp(got.data() + c, durable.data() + c, n) == 0) continue;
    covering.clear();
    for (const ApiOp* op : since)
      if (op->changes_content() && op->model_offset < c + n &&
          op->model_offset + op->model_length > c)
        covering.push_back(op);
    for (size_t i = c; i < c + n; ++i) {
      if (got[i] == durable[i]) continue;
      bool ok = false;
      for (const ApiOp* op : covering)
        if (i >= op->model_offset && i < op->model_offset + op->model_length &&
            got[i] == op->ByteAt(i)) {
          ok = true;
          break;
        }
      if (!ok) {
        bad = std::min(bad, i);
        ++count;
      }
    }
  }
  if (bad == got.size()) return {};
  std::string covered;
  for (const ApiOp* op : since)
    if (op->changes_content() && bad >= op->model_offset &&
        bad < op->model_offset + op->model_length)
      covered += fmt::format(" [{} wrote {:#04x}]", op->Describe(), op->ByteAt(bad));
  return fmt::format(
      "virtual offset {:#x} reads {:#04x}; allowed: {:#04x} (as of the last flush){} "
      "({} forbidden bytes in all)",
      layout.VirtualOffset(bad), got[bad], durable[bad],
      covered.empty() ? " and nothing else" : covered, count);
}

struct CrashStats {
  uint64_t points = 0, states = 0;
  uint64_t torn = 0, kept = 0, lost = 0, with_pending = 0, rewritten = 0;
};

// Tries crash points of `w` (an even sample of at most `max_points`, plus
// points right after log writes, each with several states). Returns false
// on the first failure, reported with what is needed to replay it.
bool CheckChildCrashPoints(ChildWorkload& w, size_t max_points, CrashStats* stats) {
  const std::vector<FileOp>& file_ops = w.recorder->ops();
  const size_t total = file_ops.size();
  std::vector<size_t> candidates;
  for (size_t c = 0; c <= total; ++c) candidates.push_back(c);
  if (w.spec.focus_commits) {
    candidates.clear();
    for (const ApiOp& op : w.ops)
      if (op.kind == ApiOp::Kind::kFlush || op.kind == ApiOp::Kind::kClose)
        for (size_t c = op.begin; c <= op.end; ++c) candidates.push_back(c);
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  }
  std::vector<size_t> points;
  if (candidates.size() <= max_points) {
    points = candidates;
  } else {
    for (size_t k = 0; k < max_points; ++k)
      points.push_back(candidates[k * (candidates.size() - 1) / (max_points - 1)]);
  }
  std::vector<size_t> after_log_write;
  for (size_t i = 0; i < total; ++i)
    if (file_ops[i].kind == FileOp::Kind::kWrite && file_ops[i].offset >= w.log_offset &&
        file_ops[i].offset < w.log_offset + w.log_length)
      after_log_write.push_back(i + 1);
  if (after_log_write.size() > max_points / 3) {
    std::vector<size_t> sample;
    for (size_t k = 0; k < max_points / 3; ++k)
      sample.push_back(after_log_write[k * after_log_write.size() / (max_points / 3)]);
    after_log_write = sample;
  }
  points.insert(points.end(), after_log_write.begin(), after_log_write.end());
  std::sort(points.begin(), points.end());
  points.erase(std::unique(points.begin(), points.end()), points.end());
  struct Trial {
    size_t point;
    int attempt;  // 0: a random policy; 1-2: more states after a log write
  };
  std::vector<Trial> trials;
  for (size_t point : points) {
    trials.push_back({point, 0});
    if (std::binary_search(after_log_write.begin(), after_log_write.end(), point))
      for (int attempt = 1; attempt <= 2; ++attempt) trials.push_back({point, attempt});
  }
  stats->points += points.size();

  CrashStateBuilder builder(*w.recorder);
  std::vector<uint8_t> durable = w.initial;
  size_t applied = 0;  // requests [0, applied) are in `durable`
  const ModelLayout& layout = w.layout;
  const uint64_t bs = layout.block_size;
  std::vector<uint8_t> ro_disk, rw_disk;

  for (const auto& [point, attempt] : trials) {
    size_t last_durable = 0;
    bool have_durable = false;
    for (size_t k = 0; k < w.ops.size() && w.ops[k].end <= point; ++k)
      if (w.ops[k].durable()) last_durable = k, have_durable = true;
    if (have_durable)
      for (; applied <= last_durable; ++applied) ApplyToModel(w.ops[applied], &durable);
    std::vector<const ApiOp*> since;
    for (size_t k = applied; k < w.ops.size() && w.ops[k].begin < point; ++k)
      since.push_back(&w.ops[k]);

    std::mt19937_64 rng((w.spec.seed * 1000003 + point) * 4 + attempt);
    static constexpr double kKeep[] = {0.15, 0.5, 0.85, 1.0};
    static constexpr double kTear[] = {0.0, 0.35, 0.8};
    static constexpr TearPolicy kAfterLogWrite[] = {{1.0, 1.0}, {0.5, 0.8}};
    const TearPolicy policy =
        attempt == 0 ? TearPolicy{kKeep[rng() % 4], kTear[rng() % 3]} : kAfterLogWrite[attempt - 1];
    CrashState state = builder.Build(point, rng, policy);

    auto where = [&] {
      std::string s = fmt::format(
          "{}\n  crash after {} of {} file ops (state {}): ops [0, {}) durable, {} pending ({} "
          "kept, {} torn; keep {}, tear {})",
          w.spec.Describe(), point, total, attempt, state.durable_ops, state.pending_ops,
          state.kept, state.torn, policy.keep, policy.tear);
      for (size_t i = state.durable_ops; i < point && i < state.durable_ops + 12; ++i)
        s += fmt::format("\n    pending file op {}: {} {:#x}+{:#x}", i,
                         FileOpKindName(file_ops[i].kind), file_ops[i].offset, file_ops[i].length);
      s += "\n  requests since the last completed flush:";
      for (const ApiOp* op : since) s += "\n    " + op->Describe();
      return s;
    };
    auto fail = [&](const std::string& what) {
      ADD_FAILURE() << what << "\n" << where();
      return false;
    };

    ++stats->states;
    stats->torn += state.torn;
    stats->kept += state.kept;
    stats->lost += state.pending_ops - state.kept;
    stats->with_pending += state.pending_ops > 0;

    // 1. Read-only, over the parent: the log replayed in memory.
    {
      auto ro = OpenChild(std::make_unique<ReadOnlyView>(*state.file), true, w.parent);
      if (!ro.ok()) return fail("read-only open failed: " + ro.status().message());
      Status st = layout.ReadAll(**ro, &ro_disk);
      if (!st.ok()) return fail("read-only read failed: " + st.message());
    }
    // 2. Check, before any replay.
    if (std::string errors = CheckErrors(*state.file); !errors.empty())
      return fail("check of the crashed file: " + errors);
    // 3. Read-write: the log replayed into the file.
    File* raw = state.file.get();
    auto rw = OpenChild(std::move(state.file), false, w.parent);
    if (!rw.ok()) return fail("read-write open failed: " + rw.status().message());
    Image& image = **rw;
    const ImageInfo& info = image.info();
    if (!info.headers[info.current_header].log_guid.IsZero())
      return fail("LogGuid still set after a read-write open");
    if (Status st = layout.ReadAll(image, &rw_disk); !st.ok())
      return fail("read-write read failed: " + st.message());
    if (rw_disk != ro_disk) {
      size_t i = 0;
      while (rw_disk[i] == ro_disk[i]) ++i;
      return fail(fmt::format(
          "read-only and read-write opens disagree at virtual offset {:#x}: {:#04x} vs {:#04x}",
          layout.VirtualOffset(i), ro_disk[i], rw_disk[i]));
    }
    // 4. Every byte is one the contract allows.
    if (std::string forbidden = FirstForbiddenByte(layout, rw_disk, durable, since);
        !forbidden.empty())
      return fail("forbidden content: " + forbidden);
    // Blocks outside the model were never written: the child holds no data
    // there (what the parent holds there is depth 1).
    if (!w.spec.hot_blocks.empty()) {
      std::string stray;
      Status st = image.Map(0, layout.virtual_size, [&](const MapExtent& x) {
        if (x.depth != 0 || !x.present || x.zero) return true;
        for (uint64_t b = x.start / bs; b * bs < x.start + x.length; ++b)
          if (!layout.Listed(b)) {
            stray = fmt::format("block {} has data in the child", b);
            return false;
          }
        return true;
      });
      if (!st.ok() || !stray.empty())
        return fail("map of the recovered child: " + (st.ok() ? stray : st.message()));
    }
    // 5. After the replay: only a header torn before the log was started
    // may remain (a warning; the other header is used).
    {
      auto report = Check(*raw);
      if (!report.ok()) return fail("check after replay: " + report.status().message());
      for (const auto& f : report->findings)
        if (f.severity == CheckFinding::Severity::kError || f.structure.rfind("header ", 0) != 0)
          return fail("check after replay: " + Findings(*report, false));
    }
    // 6. On a share of the points: the recovered child takes new writes
    // (a partial unaligned one through the sector bitmap, a whole block,
    // zeros over part of a block) and closes clean.
    if (point % 5 == 0) {
      ++stats->rewritten;
      std::vector<uint8_t> expect = rw_disk;
      Status st;
      // A random range of at most `max` bytes inside one listed block.
      auto inside = [&](uint64_t max, uint64_t* off, uint64_t* len) {
        const uint64_t b = layout.blocks[rng() % layout.blocks.size()];
        *len = 1 + rng() % std::min(max, layout.Window(b));
        *off = b * bs + rng() % (layout.Window(b) - *len + 1);
      };
      {
        uint64_t off, len;
        inside(20000, &off, &len);
        auto data = PatternBytes(len, rng());
        st = image.Write(off, data.data(), len);
        std::memcpy(expect.data() + layout.ModelOffset(off), data.data(), len);
      }
      if (st.ok()) {
        const uint64_t b = layout.blocks[rng() % layout.blocks.size()];
        auto data = PatternBytes(layout.Used(b), rng());
        st = image.Write(b * bs, data.data(), data.size());
        std::memcpy(expect.data() + layout.ModelOffset(b * bs), data.data(), layout.Window(b));
      }
      if (st.ok()) {
        uint64_t off, len;
        inside(9000, &off, &len);
        st = image.WriteZeroes(off, len, rng() % 2 == 0);
        std::memset(expect.data() + layout.ModelOffset(off), 0, len);
      }
      if (st.ok()) st = image.Close();
      if (!st.ok()) return fail("writing the recovered child: " + st.message());
      auto report = Check(*raw);
      if (!report.ok() || !report->findings.empty())
        return fail("check after writing the recovered child: " +
                    (report.ok() ? Findings(*report, false) : report.status().message()));
      auto again = OpenChild(std::make_unique<ReadOnlyView>(*raw), true, w.parent);
      if (!again.ok() || !layout.ReadAll(**again, &rw_disk).ok() || rw_disk != expect)
        return fail("the recovered child does not read back what was written to it");
    }
  }
  return true;
}

std::vector<ChildSpec> ChildWorkloads() {
  std::vector<ChildSpec> specs;
  uint64_t seed = 101;
  // Small disks, every block modelled.
  specs.push_back({.seed = seed++, .parent_size = 16 * MiB, .start = Start::kEmpty});
  specs.push_back({.seed = seed++,
                   .parent_size = 10 * MiB,
                   .parent_block_size = 1 * MiB,
                   .block_size = 2 * MiB,
                   .logical_sector_size = 4096,
                   .start = Start::kPrefilled});
  // A child larger than its parent (the parent's last block partial): past
  // the parent's end a never-written sector reads zeros.
  specs.push_back({.seed = seed++,
                   .parent_size = 5 * MiB + 512 * KiB + 512,
                   .child_size = 8 * MiB + 4 * KiB,
                   .parent_block_size = 1 * MiB,
                   .block_size = 2 * MiB,
                   .start = Start::kDirtyLog});
  // Blocks filled piece by piece, few flushes: promotions inside one commit.
  specs.push_back({.seed = seed++,
                   .parent_size = 6 * MiB,
                   .logical_sector_size = 4096,
                   .start = Start::kEmpty,
                   .flush_percent = 6,
                   .reopen = false,
                   .whole_block_percent = 10,
                   .piecewise_percent = 70});
  // 4.5 GiB, 512-byte sectors: a chunk is 4 GiB (4096 blocks of 1 MiB, 2048
  // of 2 MiB), so blocks on both sides of the boundary have sector bitmaps
  // of their own, and requests straddle it.
  specs.push_back({.seed = seed++,
                   .parent_size = 4 * GiB + 512 * MiB,
                   .start = Start::kEmpty,
                   .requests = 80,
                   .hot_blocks = {0, 1, 2047, 4095, 4096, 4097, 4607}});
  specs.push_back({.seed = seed++,
                   .parent_size = 4 * GiB + 512 * MiB,
                   .parent_block_size = 1 * MiB,
                   .block_size = 2 * MiB,
                   .start = Start::kPrefilled,
                   .requests = 70,
                   .hot_blocks = {0, 1023, 2047, 2048, 2303}});
  // 4096-byte sectors: a chunk is 32 GiB (16384 blocks of 2 MiB).
  specs.push_back({.seed = seed++,
                   .parent_size = 33 * GiB,
                   .parent_block_size = 2 * MiB,
                   .block_size = 2 * MiB,
                   .logical_sector_size = 4096,
                   .start = Start::kDirtyLog,
                   .requests = 70,
                   .hot_blocks = {5, 16383, 16384, 16895}});
  // Commits larger than one log entry: 200 blocks 16 apart (each sector
  // bitmap page covers 16 blocks of 1 MiB) in both chunks, written in
  // sweeps; the first sweep also allocates each chunk's bitmap and takes
  // its blocks PARTIALLY_PRESENT. Entries carry bitmap pages before BAT
  // pages, so a crash between two entries of one commit is covered.
  std::vector<uint64_t> spread;
  for (uint64_t k = 0; k < 170; ++k) spread.push_back(16 * k + k % 7);
  for (uint64_t k = 0; k < 30; ++k) spread.push_back(4096 + 16 * k + k % 5);
  specs.push_back({.seed = seed++,
                   .parent_size = 4 * GiB + 512 * MiB,
                   .start = Start::kEmpty,
                   .requests = 200 * 3,
                   .flush_percent = 0,
                   .reopen = false,
                   .hot_blocks = spread,
                   .window = 4096,
                   .sweep = true,
                   .focus_commits = true,
                   .min_log_entries = 8});
  // Many small commits in one session: the child's 1 MiB log wraps.
  specs.push_back({.seed = seed++,
                   .parent_size = 5 * MiB,
                   .start = Start::kPrefilled,
                   .requests = 900,
                   .flush_percent = 45,
                   .reopen = false,
                   .whole_block_percent = 90,
                   .piecewise_percent = 0,
                   .min_log_entries = 140,
                   .points_percent = 60});
  return specs;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kChildPointsPerWorkload = 40;
#else
constexpr size_t kChildPointsPerWorkload = 110;
#endif

TEST(ChainCrashTest, ChildWritesSurviveEveryCrashPointOverAnUnchangedParent) {
  CrashStats stats;
  uint64_t file_ops = 0, partial = 0, promotions = 0, bitmaps = 0;
  const auto started_all = std::chrono::steady_clock::now();
  for (const ChildSpec& spec : ChildWorkloads()) {
    const auto started = std::chrono::steady_clock::now();
    ChildWorkload w = RecordChild(spec);
    ASSERT_FALSE(HasFailure()) << spec.Describe();
    ASSERT_NE(w.recorder, nullptr);
    file_ops += w.recorder->op_count();
    partial += w.partial_at_flushes;
    promotions += w.promotions;
    bitmaps += w.bitmaps;
    const uint64_t before = stats.points;
    ASSERT_TRUE(
        CheckChildCrashPoints(w, kChildPointsPerWorkload * spec.points_percent / 100, &stats));
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
    fmt::print("  {}: {} file ops, {} crash points; {} partially present blocks at flushes, {} "
               "promotions, {} sector bitmaps; {:.1f} s\n",
               spec.Describe(), w.recorder->op_count(), stats.points - before,
               w.partial_at_flushes, w.promotions, w.bitmaps, took.count());
  }
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started_all;
  fmt::print(
      "child crash points tried: {} ({} crash states, {} with pending ops; pending ops kept {}, "
      "torn {}, lost {}; {} recovered children written again), {} recorded file ops, {:.1f} s\n",
      stats.points, stats.states, stats.with_pending, stats.kept, stats.torn, stats.lost,
      stats.rewritten, file_ops, took.count());
  EXPECT_GE(stats.points, kSanitized ? 250u : 700u);
  EXPECT_GT(stats.torn, 50u);
  // The workloads reached the states they are about.
  EXPECT_GT(partial, 20u);
  EXPECT_GT(promotions, 0u);
  EXPECT_GE(bitmaps, 9u);  // one per chunk written; two in each large disk
}

// ---- Part 2: CommitImage ----------------------------------------------------

// The chain a commit test starts from: base.vhdx (1 MiB blocks, random
// content) and its child snap.avhdx (2 MiB blocks) holding every kind of
// child block, in `dir`.
struct CommitChain {
  std::string dir, base, snap;
  std::string chain_sha;  // SHA-256 of the chain's virtual disk before any commit
};

CommitChain ChainIn(const std::string& dir, const std::string& chain_sha) {
  return {dir, dir + "/base.vhdx", dir + "/snap.avhdx", chain_sha};
}

// SHA-256 of the virtual disk, or why it could not be read.
std::string Sha(const Image& image) {
  try {
    return Sha256OfImage(image);
  } catch (const std::exception& e) {
    return std::string("unreadable: ") + e.what();
  }
}

void MakeCommitChain(const std::string& dir, uint64_t seed, CommitChain* out) {
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  *out = ChainIn(dir, "");
  std::mt19937_64 rng(seed);
  constexpr uint64_t kSize = 24 * MiB;
  CreateOptions po;
  po.virtual_size = kSize;
  po.block_size = 1 * MiB;
  Status st = CreateImage(out->base, po);
  ASSERT_TRUE(st.ok()) << st.message();
  {
    auto base = Image::Open(out->base, {.read_only = false});
    ASSERT_TRUE(base.ok()) << base.status().message();
    for (uint64_t b = 0; b < kSize / MiB; ++b) {
      const uint64_t what = rng() % 3;
      if (what == 0) continue;
      const uint64_t len = what == 1 ? MiB : 1 + rng() % (MiB / 2);
      const uint64_t off = b * MiB + rng() % (MiB - len + 1);
      auto data = PatternBytes(len, rng());
      st = (*base)->Write(off, data.data(), len);
      ASSERT_TRUE(st.ok()) << st.message();
    }
    st = (*base)->Close();
    ASSERT_TRUE(st.ok()) << st.message();
  }
  CreateOptions co;
  co.parent_path = out->base;
  co.block_size = 2 * MiB;
  st = CreateImage(out->snap, co);
  ASSERT_TRUE(st.ok()) << st.message();
  {
    auto snap = Image::Open(out->snap, {.read_only = false});
    ASSERT_TRUE(snap.ok()) << snap.status().message();
    Image& child = **snap;
    constexpr uint64_t bs = 2 * MiB;
    auto write = [&](uint64_t off, uint64_t len) {
      auto data = PatternBytes(len, rng());
      Status s = child.Write(off, data.data(), len);
      EXPECT_TRUE(s.ok()) << s.message();
    };
    write(0 * bs, bs);  // FULLY_PRESENT
    for (int k = 0; k < 3; ++k)  // PARTIALLY_PRESENT, partial sectors
      write(1 * bs + rng() % (bs / 2), 1 + rng() % 70000);
    EXPECT_TRUE(child.WriteZeroes(2 * bs + 1000, 300000, true).ok());  // present zeros
    EXPECT_TRUE(child.Discard(3 * bs, bs).ok());                      // UNMAPPED over data
    EXPECT_TRUE(child.WriteZeroes(4 * bs, bs, false).ok());           // ZERO
    write(6 * bs - 12345, 50000);                                     // across a boundary
    for (uint64_t off = 7 * bs; off < 8 * bs;) {                      // promoted
      const uint64_t len = std::min<uint64_t>(8 * bs - off, 1 + rng() % (bs / 3));
      write(off, len);
      off += len;
    }
    write(8 * bs, bs);
    EXPECT_TRUE(child.Discard(8 * bs + 4096, 8192).ok());
    // Blocks 9-11 are left to the parent.
    auto counts = child.CountAllocation();
    ASSERT_TRUE(counts.ok());
    EXPECT_GE(counts->payload[static_cast<int>(BlockState::kPartiallyPresent)], 3u);
    EXPECT_GE(counts->payload[static_cast<int>(BlockState::kFullyPresent)], 3u);
    st = child.Close();
    ASSERT_TRUE(st.ok()) << st.message();
  }
  auto chain = Image::Open(out->snap);
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  out->chain_sha = Sha(**chain);
  auto parent = Image::Open(out->base);
  ASSERT_TRUE(parent.ok());
  ASSERT_NE(Sha(**parent), out->chain_sha) << "the child must change what the chain reads";
}

// "" when both files of the chain check without errors and the chain
// reads as before the commit; else what is wrong.
std::string VerifyChain(const CommitChain& c) {
  for (const std::string& path : {c.base, c.snap}) {
    auto report = Check(path);
    if (!report.ok()) return path + ": check failed: " + report.status().message();
    if (report->errors()) return path + ": check: " + Findings(*report, true);
  }
  auto chain = Image::Open(c.snap);
  if (!chain.ok()) return "the chain does not open: " + chain.status().message();
  const std::string sha = Sha(**chain);
  if (sha != c.chain_sha) return "the chain reads differently: SHA-256 " + sha;
  return {};
}

// "" when a commit completed: both files check clean, the parent alone
// reads like the chain did, the child is empty and reads through to it.
std::string VerifyCommitted(const CommitChain& c) {
  for (const std::string& path : {c.base, c.snap}) {
    auto report = Check(path);
    if (!report.ok()) return path + ": check failed: " + report.status().message();
    if (report->errors()) return path + ": check: " + Findings(*report, false);
  }
  auto parent = Image::Open(c.base);
  if (!parent.ok()) return "the parent does not open: " + parent.status().message();
  if (const std::string sha = Sha(**parent); sha != c.chain_sha)
    return "the parent does not read like the chain: SHA-256 " + sha;
  auto chain = Image::Open(c.snap);
  if (!chain.ok()) return "the chain does not open after the commit: " + chain.status().message();
  if (const std::string sha = Sha(**chain); sha != c.chain_sha)
    return "the chain reads differently after the commit: SHA-256 " + sha;
  auto counts = (*chain)->CountAllocation();
  if (!counts.ok()) return counts.status().message();
  uint64_t held = 0;
  for (int state = 1; state < 8; ++state) held += counts->payload[state];
  if (held != 0) return fmt::format("the child still has {} blocks not NOT_PRESENT", held);
  return {};
}

std::string CommitAndVerify(const CommitChain& c) {
  auto committed = CommitImage(c.snap);
  if (!committed.ok()) return "commit failed: " + committed.status().message();
  if (committed->parent_path.empty()) return "commit names no parent";
  return VerifyCommitted(c);
}

void CopyChain(const CommitChain& from, const CommitChain& to) {
  fs::create_directories(to.dir);
  fs::copy_file(from.base, to.base, fs::copy_options::overwrite_existing);
  fs::copy_file(from.snap, to.snap, fs::copy_options::overwrite_existing);
}

// ---- Recording a commit with strace ------------------------------------------

// Runs `vhdx commit` on the chain under strace and replays every mutating
// syscall into recorders (files[0]: base, files[1]: snap) started from the
// files as they were; the replay must reproduce the files the real run left.
void RecordCommit(const std::string& strace, const CommitChain& c, RecordedRun* r) {
  RecordCliRun(strace, {"commit", c.snap}, {c.base, c.snap}, c.dir + "/commit.strace", r);
}

struct CommitCrashStats {
  uint64_t points = 0, torn = 0, kept = 0, lost = 0, recommits = 0;
};

// Every crash point of a recorded commit (an even sample of `max_points`
// when there are more, plus the points around every flush): the pair of
// files a power failure there could leave holds a chain that checks clean
// and reads as before; on a share of the points, the commit run again on
// them completes.
bool CheckCommitCrashPoints(const CommitChain& c, const RecordedRun& r, size_t max_points,
                            uint64_t seed, CommitCrashStats* stats) {
  const size_t total = r.order.size();
  std::vector<size_t> points;
  if (total + 1 <= max_points) {
    for (size_t g = 0; g <= total; ++g) points.push_back(g);
  } else {
    for (size_t k = 0; k < max_points; ++k) points.push_back(k * total / (max_points - 1));
    for (size_t g = 0; g < total; ++g)
      if (r.ops[g].op.kind == FileOp::Kind::kFlush) points.insert(points.end(), {g, g + 1});
    std::sort(points.begin(), points.end());
    points.erase(std::unique(points.begin(), points.end()), points.end());
  }
  CrashStateBuilder builders[2] = {CrashStateBuilder(*r.files[0]), CrashStateBuilder(*r.files[1])};
  const char* kNames[2] = {"base", "snap"};
  const CommitChain crashed = ChainIn(c.dir + "/crashed", c.chain_sha);
  fs::create_directories(crashed.dir);
  size_t local[2] = {0, 0}, g_done = 0;
  for (size_t n = 0; n < points.size(); ++n) {
    const size_t g = points[n];
    for (; g_done < g; ++g_done) ++local[r.order[g_done]];
    std::mt19937_64 rng(seed * 1000003 + g);
    static constexpr double kKeep[] = {0.0, 0.3, 0.7, 1.0};
    static constexpr double kTear[] = {0.0, 0.4, 0.9};
    const TearPolicy policy{kKeep[rng() % 4], kTear[rng() % 3]};
    CrashState states[2] = {builders[0].Build(local[0], rng, policy),
                            builders[1].Build(local[1], rng, policy)};
    ++stats->points;
    for (const CrashState& s : states) {
      stats->torn += s.torn;
      stats->kept += s.kept;
      stats->lost += s.pending_ops - s.kept;
    }
    auto fail = [&](const std::string& what) {
      std::string s = fmt::format(
          "{}\n  power failure after {} of {} syscalls of the commit (keep {}, tear {}); base: "
          "{} ops durable, {} pending ({} kept, {} torn); snap: {} durable, {} pending ({} kept, "
          "{} torn)",
          what, g, total, policy.keep, policy.tear, states[0].durable_ops, states[0].pending_ops,
          states[0].kept, states[0].torn, states[1].durable_ops, states[1].pending_ops,
          states[1].kept, states[1].torn);
      for (size_t i = g > 8 ? g - 8 : 0; i < g; ++i)
        s += fmt::format("\n    syscall {}: {} {} {:#x}+{:#x}", i, kNames[r.order[i]],
                         FileOpKindName(r.ops[i].op.kind), r.ops[i].op.offset,
                         r.ops[i].op.length);
      ADD_FAILURE() << s;
      return false;
    };
    for (int i = 0; i < 2; ++i)
      if (std::string errors = CheckErrors(*states[i].file); !errors.empty())
        return fail(fmt::format("check of the crashed {}: {}", kNames[i], errors));
    {
      auto parent = Image::Open(std::make_unique<ReadOnlyView>(*states[0].file));
      if (!parent.ok()) return fail("the crashed parent does not open: " + parent.status().message());
      std::shared_ptr<const Image> shared = std::move(parent).value();
      auto chain = OpenChild(std::make_unique<ReadOnlyView>(*states[1].file), true, shared);
      if (!chain.ok()) return fail("the crashed chain does not open: " + chain.status().message());
      if (const std::string sha = Sha(**chain); sha != c.chain_sha)
        return fail("the crashed chain reads differently: SHA-256 " + sha);
    }
    // The commit run again on the crashed files completes.
    if (n % 4 == 0 || n + 1 == points.size()) {
      ++stats->recommits;
      for (int i = 0; i < 2; ++i) {
        Status st = SaveFile(*states[i].file, i == 0 ? crashed.base : crashed.snap);
        if (!st.ok()) return fail(st.message());
      }
      if (std::string problem = CommitAndVerify(crashed); !problem.empty())
        return fail("committing again after the crash: " + problem);
    }
  }
  return true;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kCommitPoints = 40;
#else
constexpr size_t kCommitPoints = 120;
#endif

TEST(ChainCrashTest, PowerFailureDuringCommitNeverBreaksTheChain) {
  VHDX_REQUIRE(MissingStrace("commit"));
  const auto strace = UsableStrace();
  const auto started = std::chrono::steady_clock::now();
  CommitChain c;
  MakeCommitChain(ScratchPath("commit-power"), 7, &c);
  ASSERT_FALSE(HasFailure());
  const CommitChain pristine = ChainIn(c.dir + "/pristine", c.chain_sha);
  CopyChain(c, pristine);
  RecordedRun r;
  RecordCommit(*strace, c, &r);
  ASSERT_FALSE(HasFailure());
  // The run recorded was a complete commit.
  EXPECT_EQ(VerifyCommitted(c), "");
  CommitCrashStats stats;
  ASSERT_TRUE(CheckCommitCrashPoints(c, r, kCommitPoints, 7, &stats));
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  fmt::print(
      "commit: {} syscalls recorded; {} power-failure points (pending ops kept {}, torn {}, lost "
      "{}), {} commits run again to completion, {:.1f} s\n",
      r.order.size(), stats.points, stats.kept, stats.torn, stats.lost, stats.recommits,
      took.count());
  EXPECT_GE(stats.points, std::min<uint64_t>(r.order.size() + 1, kCommitPoints));
}

// A commit interrupted once (killed after it started writing the parent:
// the parent's DataWriteGuid is already the one the child's
// parent_linkage2 names) is run again, and that run loses power.
TEST(ChainCrashTest, PowerFailureWhileRerunningAnInterruptedCommitNeverBreaksTheChain) {
  VHDX_REQUIRE(MissingStrace("commit"));
  const auto strace = UsableStrace();
  const auto started = std::chrono::steady_clock::now();
  CommitChain c;
  MakeCommitChain(ScratchPath("commit-rerun"), 8, &c);
  ASSERT_FALSE(HasFailure());
  // Where the parent's payload writes start: a dry run on a copy.
  size_t kill_at = 0;
  {
    const CommitChain dry = ChainIn(c.dir + "/dry", c.chain_sha);
    CopyChain(c, dry);
    const std::string trace = dry.dir + "/dry.strace";
    ASSERT_EQ(RunProcess({*strace, "-y", "-s", "0", "-o", trace, "-e", "trace=pwrite64", CliPath(),
                          "commit", dry.snap})
                  .exit_code,
              0);
    std::ifstream in(trace);
    size_t nth = 0, parent_payload = 0;
    const std::string base = fs::canonical(dry.base).string();
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("pwrite64(", 0) != 0) continue;
      ++nth;
      const size_t comma = line.rfind(", ");
      const size_t eq = line.rfind(") = ");
      if (line.find("<" + base + ">") == std::string::npos || comma == std::string::npos) continue;
      if (std::stoull(line.substr(comma + 2, eq - comma - 2)) >= 4 * MiB && ++parent_payload == 2) {
        kill_at = nth;
        break;
      }
    }
    ASSERT_GT(kill_at, 0u) << "the dry run wrote no parent payload";
  }
  ProcessEnd end = RunProcess({*strace, "-o", "/dev/null", "-e", "trace=pwrite64", "-e",
                               fmt::format("inject=pwrite64:signal=SIGKILL:when={}", kill_at),
                               CliPath(), "commit", c.snap});
  ASSERT_TRUE(end.killed) << "exit code " << end.exit_code;
  ASSERT_EQ(VerifyChain(c), "");
  {
    // The state meant: the parent is changed, the child names it in its
    // second linkage slot only.
    auto parent = Image::Open(c.base);
    auto child = Image::Open(c.snap, {.skip_parent = true});
    ASSERT_TRUE(parent.ok() && child.ok());
    const ImageInfo& pi = (*parent)->info();
    const std::string dwg = "{" + pi.headers[pi.current_header].data_write_guid.ToString() + "}";
    ASSERT_TRUE((*child)->info().parent.has_value());
    auto l1 = (*child)->info().parent->Get("parent_linkage");
    auto l2 = (*child)->info().parent->Get("parent_linkage2");
    ASSERT_TRUE(l1 && l2);
    EXPECT_NE(*l1, dwg);
    EXPECT_EQ(*l2, dwg);
  }
  RecordedRun r;
  RecordCommit(*strace, c, &r);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(VerifyCommitted(c), "");
  CommitCrashStats stats;
  ASSERT_TRUE(CheckCommitCrashPoints(c, r, kCommitPoints, 8, &stats));
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  fmt::print(
      "commit re-run: killed at pwrite64 #{}; {} syscalls recorded; {} power-failure points, {} "
      "commits run again to completion, {:.1f} s\n",
      kill_at, r.order.size(), stats.points, stats.recommits, took.count());
}

// `vhdx commit` killed at random moments, and its re-run killed too on
// half of the trials. SIGKILL loses nothing the process wrote (the page
// cache survives it): this tests the order of the commit's steps at process
// granularity, not their durability (the tests above do).
TEST(ChainCrashTest, KilledCommitProcessLeavesTheChainReadable) {
  const auto started = std::chrono::steady_clock::now();
  CommitChain c;
  MakeCommitChain(ScratchPath("commit-kill"), 9, &c);
  ASSERT_FALSE(HasFailure());
  const CommitChain pristine = ChainIn(c.dir + "/pristine", c.chain_sha);
  CopyChain(c, pristine);
  // How long a whole commit takes here: the kills are spread over it.
  ProcessEnd calibration = RunProcess({CliPath(), "commit", c.snap});
  ASSERT_EQ(calibration.exit_code, 0);
  ASSERT_EQ(VerifyCommitted(c), "");
  const auto span = std::chrono::microseconds(
      std::max<int64_t>(2000, static_cast<int64_t>(calibration.seconds * 1e6)));
  std::mt19937_64 rng(9);
  const int trials = kSanitized ? 10 : 20;
  int killed = 0, killed_twice = 0;
  for (int t = 0; t < trials; ++t) {
    CopyChain(pristine, c);
    const auto delay = std::chrono::microseconds(rng() % span.count());
    ProcessEnd first = RunProcess({CliPath(), "commit", c.snap}, delay);
    killed += first.killed;
    ASSERT_TRUE(first.killed || first.exit_code == 0) << "exit code " << first.exit_code;
    ASSERT_EQ(VerifyChain(c), "") << "trial " << t << ": commit killed after " << delay.count()
                                  << " us";
    if (t % 2 == 1) {
      const auto again = std::chrono::microseconds(rng() % span.count());
      ProcessEnd second = RunProcess({CliPath(), "commit", c.snap}, again);
      killed_twice += first.killed && second.killed;
      ASSERT_TRUE(second.killed || second.exit_code == 0) << "exit code " << second.exit_code;
      ASSERT_EQ(VerifyChain(c), "") << "trial " << t << ": commit killed after " << delay.count()
                                    << " us, its re-run after " << again.count() << " us";
    }
    ASSERT_EQ(CommitAndVerify(c), "") << "trial " << t;
  }
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  fmt::print("commit killed: {} of {} runs killed mid-way ({} re-runs killed too; a whole commit "
             "takes {:.1f} ms), {:.1f} s\n",
             killed, trials, killed_twice, calibration.seconds * 1e3, took.count());
  EXPECT_GT(killed, 0);
}

}  // namespace
}  // namespace vhdx::test
