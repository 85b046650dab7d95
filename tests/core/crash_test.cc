// Crash consistency of the write path. Random workloads run through Image on
// a file that records every mutating call (tests/support/crash_file.h).
// Then, for many points of each recording, the file a crash there could
// leave is rebuilt: everything up to the last file flush before the point,
// plus a random subset of the later calls, some of their writes torn at
// 512-byte sectors. Each such file must
//   - open read-only (log replayed in memory) and read-write (log replayed
//     into the file), both reading the same virtual disk;
//   - pass vhdx::Check with no errors before and after the replay;
//   - read, byte by byte, only values the durability contract allows: the
//     model's value as of the last Flush (or FUA write, or Close) that
//     returned before the crash, or a value one of the requests issued after
//     it wrote. Never stale host bytes, never another block's data;
//   - take new writes and close cleanly (checked on a share of the points).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core_test_util.h"
#include "support/crash_file.h"
#include "vhdx/create.h"

namespace vhdx::test {
namespace {

// One request made through Image, and the recorded file ops it issued.
struct ApiOp {
  enum class Kind { kOpen, kWrite, kWriteZeroes, kDiscard, kFlush, kClose };
  Kind kind = Kind::kWrite;
  uint64_t offset = 0, length = 0;  // on the virtual disk
  uint64_t model_offset = 0;        // where the range lies in the model
  uint64_t model_length = 0;        // how much of it the model holds
  std::vector<uint8_t> data;        // kWrite; the other kinds of change write zeros
  bool fua = false;
  bool may_unmap = false;
  size_t begin = 0, end = 0;  // file ops [begin, end) of the recording

  // Every change made before this request returned is durable.
  bool durable() const {
    return kind == Kind::kFlush || kind == Kind::kClose || kind == Kind::kOpen || fua;
  }
  bool changes_content() const {
    return kind == Kind::kWrite || kind == Kind::kWriteZeroes || kind == Kind::kDiscard;
  }
  std::string Describe() const {
    std::string what;
    switch (kind) {
      case Kind::kOpen: what = "open read-write"; break;
      case Kind::kWrite:
        what = fmt::format("{}write {:#x}+{:#x}", fua ? "fua " : "", offset, length);
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

enum class Start {
  kEmpty,      // a new image
  kPrefilled,  // committed content, closed cleanly
  kDirtyLog,   // committed content whose log was never applied (a crashed session)
};

struct WorkloadSpec {
  uint64_t seed = 0;
  DiskType type = DiskType::kDynamic;
  uint32_t block_size = 1 * MiB;
  uint32_t logical_sector_size = 512;
  uint64_t virtual_size = 0;
  Start start = Start::kEmpty;
  int requests = 60;
  int flush_percent = 16;
  bool reopen = true;            // close and reopen now and then
  int whole_block_percent = 30;  // requests on whole blocks (allocate, release)
  bool fua_writes = true;        // one write in 12 is a FUA write (a commit)
  // Empty: requests anywhere on the disk. Else requests stay inside these
  // blocks (one at a time), so that a large disk, whose BAT spans several
  // pages, costs only these blocks to read and compare.
  std::vector<uint64_t> hot_blocks{};
  // With hot blocks: only the first `window` bytes of each are modelled
  // and checked (requests other than whole-block ones stay inside them).
  // 0: the whole block.
  uint64_t window = 0;
  // With hot blocks: request i goes to hot block i % n, and a flush follows
  // every sweep over all of them. Sweeps alternate: data written into each
  // block, then each block discarded whole, so that every commit changes
  // one BAT entry per hot block.
  bool sweep = false;
  // Crash points are sampled inside flushes and closes only.
  bool focus_commits = false;
  // The workload is meant to write at least this many log entries in its
  // last session (to wrap the log, or split a commit).
  uint64_t min_log_entries = 0;
  // Costly crash states (every open scans a full log): a share of the usual
  // number of crash points.
  int points_percent = 100;

  std::string Describe() const {
    static const char* kStart[] = {"empty", "prefilled", "dirty log"};
    return fmt::format(
        "workload seed {}: {} image, {} MiB blocks, {}-byte sectors, virtual size {:#x}, "
        "start {}, {} requests{}",
        seed, DiskTypeName(type), block_size / MiB, logical_sector_size, virtual_size,
        kStart[static_cast<int>(start)], requests,
        hot_blocks.empty()      ? ""
        : hot_blocks.size() > 8 ? fmt::format(" in {} blocks", hot_blocks.size())
                                : fmt::format(" in blocks {}", fmt::join(hot_blocks, ",")));
  }
};

// The blocks a workload may change (the start of each, with a window), laid
// end to end in its model. Only the disk's last block may be partial, and
// it is listed last.
struct ModelLayout {
  uint64_t block_size = 0, virtual_size = 0;
  std::vector<uint64_t> blocks;  // ascending
  uint64_t window = 0;           // 0: whole blocks

  static ModelLayout For(const WorkloadSpec& spec) {
    ModelLayout m{spec.block_size, spec.virtual_size, spec.hot_blocks, spec.window};
    if (m.blocks.empty())
      for (uint64_t b = 0; b * spec.block_size < spec.virtual_size; ++b) m.blocks.push_back(b);
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
  uint64_t VirtualOffset(uint64_t model_offset) const {
    return blocks[model_offset / stride()] * block_size + model_offset % stride();
  }
  // Reads the modelled part of every listed block into `out`.
  Status ReadAll(const Image& image, std::vector<uint8_t>* out) const {
    out->resize(size());
    for (size_t i = 0; i < blocks.size(); ++i) {
      const uint64_t b = blocks[i];
      VHDX_RETURN_IF_ERROR(image.Read(b * block_size, out->data() + i * stride(), Window(b)));
    }
    return Status::Ok();
  }
};

struct Workload {
  WorkloadSpec spec;
  uint64_t log_offset = 0, log_length = 0;  // the image's log region
  ModelLayout layout;
  std::vector<uint8_t> initial;  // the model when recording starts
  std::unique_ptr<CrashRecorder> recorder;
  std::vector<ApiOp> ops;
};

std::unique_ptr<Image> OpenOrFail(std::unique_ptr<File> file, bool read_only, const char* what) {
  auto image = Image::Open(std::move(file), {.read_only = read_only});
  EXPECT_TRUE(image.ok()) << what << ": " << image.status().message();
  return image.ok() ? std::move(image).value() : nullptr;
}

// Random content written through Image before recording starts; the
// session is closed (clean) or left open with its log active. Returns the
// file as recording starts.
std::unique_ptr<SparseMemoryFile> Prefill(const SparseMemoryFile& created,
                                          const ModelLayout& layout, std::mt19937_64& rng,
                                          std::vector<uint8_t>* model, bool leave_log_dirty) {
  auto copy = std::make_unique<SparseMemoryFile>(created, "prefill.vhdx", true);
  SparseMemoryFile* raw = copy.get();
  auto image = OpenOrFail(std::move(copy), false, "prefill open");
  if (!image) return nullptr;
  for (uint64_t b : layout.blocks) {
    if (rng() % 3 == 0) continue;  // some blocks stay unallocated
    const uint64_t start = b * layout.block_size;
    const uint64_t len = layout.Window(b);
    auto data = PatternBytes(len, rng());
    Status st = image->Write(start, data.data(), len);
    EXPECT_TRUE(st.ok()) << st.message();
    if (!st.ok()) return nullptr;
    std::memcpy(model->data() + layout.ModelOffset(start), data.data(), len);
  }
  Status st = leave_log_dirty ? image->Flush() : image->Close();
  EXPECT_TRUE(st.ok()) << st.message();
  if (!st.ok()) return nullptr;
  // For a dirty log: the file as a crash right after the flush leaves it
  // (BAT changes in the log and applied in place, the log still active).
  auto start = std::make_unique<SparseMemoryFile>(*raw, "start.vhdx", true);
  return start;
}

// Runs the workload's requests on a recording file.
Workload Record(const WorkloadSpec& spec) {
  Workload w;
  w.spec = spec;
  std::mt19937_64 rng(spec.seed);
  auto created = std::make_unique<SparseMemoryFile>("start.vhdx", true);
  CreateOptions o;
  o.type = spec.type;
  o.virtual_size = spec.virtual_size;
  o.block_size = spec.block_size;
  o.logical_sector_size = spec.logical_sector_size;
  Status st = CreateImage(*created, o);
  EXPECT_TRUE(st.ok()) << st.message();
  w.layout = ModelLayout::For(spec);
  w.initial.assign(w.layout.size(), 0);
  if (spec.start != Start::kEmpty) {
    created = Prefill(*created, w.layout, rng, &w.initial, spec.start == Start::kDirtyLog);
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

  ApiOp open = begin(ApiOp::Kind::kOpen);
  auto image = OpenOrFail(rec.OpenFile(), false, "recorded open");
  if (!finish(std::move(open), image ? Status::Ok() : Status(Errc::kIoError, "open failed")))
    return w;
  w.log_offset = image->info().log.offset;
  w.log_length = image->info().log.length;

  const uint64_t size = spec.virtual_size, bs = spec.block_size;
  const ModelLayout& layout = w.layout;
  int request = 0;
  auto range = [&](ApiOp& op, bool force_whole = false) {
    const bool whole = static_cast<int>(rng() % 100) < spec.whole_block_percent || force_whole;
    const uint64_t shape = rng() % 10;
    if (!spec.hot_blocks.empty()) {  // inside one listed block
      const uint64_t b = spec.sweep ? layout.blocks[request % layout.blocks.size()]
                                    : layout.blocks[rng() % layout.blocks.size()];
      const uint64_t win = layout.Window(b);
      if (whole) {
        op.offset = b * bs;
        op.length = layout.Used(b);
      } else {
        op.length = std::min<uint64_t>(win, 1 + rng() % (shape < 7 ? 8 * KiB : 192 * KiB));
        op.offset = b * bs + rng() % (win - op.length + 1);
      }
      op.model_offset = layout.ModelOffset(op.offset);
      op.model_length = std::min(op.length, win - op.offset % bs);
      return;
    } else if (whole) {  // whole blocks: allocation, unmapping, reuse of space
      const uint64_t first = rng() % ((size + bs - 1) / bs);
      op.offset = first * bs;
      op.length = std::min(size, (first + 1 + rng() % 2) * bs) - op.offset;
    } else {
      op.length = std::min(size, 1 + rng() % (shape < 7 ? 8 * KiB : 192 * KiB));
      op.offset = rng() % (size - op.length + 1);
    }
    op.model_offset = layout.ModelOffset(op.offset);
    op.model_length = op.length;
  };
  for (; request < spec.requests; ++request) {
    // flush_percent flushes, 3% close and reopen; of the rest 55% writes,
    // 13% write-zeroes, 32% discards.
    const int pick = static_cast<int>(rng() % 100);
    const int flush_at = 100 - spec.flush_percent;
    const int change = static_cast<int>(rng() % 100);
    const size_t n = layout.blocks.size();
    const bool sweep_done = spec.sweep && request > 0 && request % n == 0;
    const bool write_sweep = spec.sweep && (request / n) % 2 == 0;
    const bool discard_sweep = spec.sweep && (request / n) % 2 == 1;
    if (pick >= flush_at || sweep_done) {
      ApiOp op = begin(ApiOp::Kind::kFlush);
      if (!finish(std::move(op), image->Flush())) return w;
    } else if (spec.reopen && pick >= flush_at - 3) {
      ApiOp op = begin(ApiOp::Kind::kClose);
      if (!finish(std::move(op), image->Close())) return w;
      image.reset();
      ApiOp reopen = begin(ApiOp::Kind::kOpen);
      image = OpenOrFail(rec.OpenFile(), false, "reopen");
      if (!finish(std::move(reopen),
                  image ? Status::Ok() : Status(Errc::kIoError, "reopen failed")))
        return w;
      // A clean image opens without writing a byte.
      EXPECT_EQ(w.ops.back().begin, w.ops.back().end);
    } else if (write_sweep || (!discard_sweep && change < 55)) {
      ApiOp op = begin(ApiOp::Kind::kWrite);
      range(op);
      op.fua = spec.fua_writes && rng() % 12 == 0;
      const bool zeros = !write_sweep && rng() % 8 == 0;
      op.data = zeros ? std::vector<uint8_t>(op.length, 0) : PatternBytes(op.length, rng());
      Status s = image->Write(op.offset, op.data.data(), op.length, {.fua = op.fua});
      if (!finish(std::move(op), s)) return w;
    } else if (!discard_sweep && change < 68) {
      ApiOp op = begin(ApiOp::Kind::kWriteZeroes);
      range(op);
      op.may_unmap = rng() % 2 == 0;
      Status s = image->WriteZeroes(op.offset, op.length, op.may_unmap);
      if (!finish(std::move(op), s)) return w;
    } else {
      ApiOp op = begin(ApiOp::Kind::kDiscard);
      range(op, discard_sweep);
      Status s = image->Discard(op.offset, op.length);
      if (!finish(std::move(op), s)) return w;
    }
  }
  ApiOp close = begin(ApiOp::Kind::kClose);
  finish(std::move(close), image->Close());
  EXPECT_GE(image->write_stats().log_entries, spec.min_log_entries) << spec.Describe();
  return w;
}

void ApplyToModel(const ApiOp& op, std::vector<uint8_t>* model) {
  if (op.kind == ApiOp::Kind::kWrite)
    std::memcpy(model->data() + op.model_offset, op.data.data(), op.model_length);
  else if (op.changes_content())
    std::memset(model->data() + op.model_offset, 0, op.model_length);
}

// First byte of `got` the contract does not allow: neither `durable` (the
// model at the last completed flush) nor a value one of `since` wrote.
// Returns an empty string when every byte is allowed.
std::string FirstForbiddenByte(const ModelLayout& layout, const std::vector<uint8_t>& got,
                               const std::vector<uint8_t>& durable,
                               const std::vector<const ApiOp*>& since) {
  // Most of the disk equals the durable model: compare 4 KiB at a time and
  // look at single bytes, against the requests covering that chunk, only
  // where that differs.
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
            got[i] == (op->kind == ApiOp::Kind::kWrite ? op->data[i - op->model_offset] : 0)) {
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
      covered +=
          fmt::format(" [{} wrote {:#04x}]", op->Describe(),
                      op->kind == ApiOp::Kind::kWrite ? op->data[bad - op->model_offset] : 0);
  const uint64_t virtual_offset = layout.VirtualOffset(bad);
  return fmt::format(
      "virtual offset {:#x} reads {:#04x}; allowed: {:#04x} (as of the last flush){} "
      "({} forbidden bytes in all)",
      virtual_offset, got[bad], durable[bad], covered.empty() ? " and nothing else" : covered,
      count);
}

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

struct CrashStats {
  uint64_t points = 0;  // distinct crash points (positions in a recording)
  uint64_t states = 0;  // crash states built and checked (several at some points)
  uint64_t torn = 0, kept = 0, lost = 0, with_pending = 0, rewritten = 0;
};

// Tries crash points of `w`: every point when `max_points` covers them,
// else an even sample (always including the last). Returns false on the
// first failure, reported with everything needed to replay it.
bool CheckCrashPoints(const Workload& w, size_t max_points, CrashStats* stats) {
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
  // Also right after log entries are written (the entry kept, lost or torn
  // over older entries; up to max_points / 2 of them), and there several
  // crash states.
  std::vector<size_t> after_log_write;
  for (size_t i = 0; i < total; ++i)
    if (file_ops[i].kind == FileOp::Kind::kWrite && file_ops[i].offset >= w.log_offset &&
        file_ops[i].offset < w.log_offset + w.log_length)
      after_log_write.push_back(i + 1);
  if (after_log_write.size() > max_points / 2) {
    std::vector<size_t> sample;
    for (size_t k = 0; k < max_points / 2; ++k)
      sample.push_back(after_log_write[k * after_log_write.size() / (max_points / 2)]);
    after_log_write = sample;
  }
  points.insert(points.end(), after_log_write.begin(), after_log_write.end());
  std::sort(points.begin(), points.end());
  points.erase(std::unique(points.begin(), points.end()), points.end());
  struct Trial {
    size_t point;
    int attempt;  // 0: a random policy; 1-3: more states after a log write
  };
  std::vector<Trial> trials;
  for (size_t point : points) {
    trials.push_back({point, 0});
    if (std::binary_search(after_log_write.begin(), after_log_write.end(), point))
      for (int attempt = 1; attempt <= 3; ++attempt) trials.push_back({point, attempt});
  }
  stats->points += points.size();

  CrashStateBuilder builder(*w.recorder);
  std::vector<uint8_t> durable = w.initial;
  size_t applied = 0;  // ops [0, applied) are in `durable`
  const ModelLayout& layout = w.layout;
  std::vector<uint8_t> ro_disk, rw_disk;

  for (const auto& [point, attempt] : trials) {
    // The last request that made everything before it durable and returned
    // before the crash.
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
    static constexpr TearPolicy kAfterLogWrite[] = {{1.0, 1.0}, {0.5, 0.8}, {1.0, 0.5}};
    const TearPolicy policy =
        attempt == 0 ? TearPolicy{kKeep[rng() % 4], kTear[rng() % 3]} : kAfterLogWrite[attempt - 1];
    CrashState state = builder.Build(point, rng, policy);

    auto where = [&] {
      std::string s = fmt::format(
          "{}\n  crash after {} of {} file ops (state {}): ops [0, {}) durable, {} "
          "pending ({} kept, {} torn; keep {}, tear {})",
          w.spec.Describe(), point, total, attempt, state.durable_ops, state.pending_ops,
          state.kept, state.torn, policy.keep, policy.tear);
      for (size_t i = state.durable_ops; i < point && i < state.durable_ops + 12; ++i)
        s += fmt::format("\n    pending file op {}: {} {:#x}+{:#x}", i,
                         FileOpKindName(file_ops[i].kind), file_ops[i].offset, file_ops[i].length);
      s += "\n  requests since the last completed flush:";
      for (const ApiOp* op : since) s += "\n    " + op->Describe();
      return s;
    };

    ++stats->states;
    stats->torn += state.torn;
    stats->kept += state.kept;
    stats->lost += state.pending_ops - state.kept;
    stats->with_pending += state.pending_ops > 0;

    // 1. Read-only: replayed in memory (the view refuses writes).
    const uint64_t crashed_size = *state.file->Size();
    {
      auto ro = Image::Open(std::make_unique<ReadOnlyView>(*state.file));
      if (!ro.ok()) {
        ADD_FAILURE() << "read-only open failed: " << ro.status().message() << "\n" << where();
        return false;
      }
      Status st = layout.ReadAll(**ro, &ro_disk);
      if (!st.ok()) {
        ADD_FAILURE() << "read-only read failed: " << st.message() << "\n" << where();
        return false;
      }
    }
    if (*state.file->Size() != crashed_size) {
      ADD_FAILURE() << "a read-only open changed the file size\n" << where();
      return false;
    }
    // 2. Check, before any replay.
    auto report = Check(*state.file);
    if (!report.ok() || report->errors() != 0) {
      ADD_FAILURE() << "check of the crashed file: "
                    << (report.ok() ? Findings(*report, true) : report.status().message()) << "\n"
                    << where();
      return false;
    }
    // 3. Read-write: replayed into the file.
    File* raw = state.file.get();
    auto rw = Image::Open(std::move(state.file), {.read_only = false});
    if (!rw.ok()) {
      ADD_FAILURE() << "read-write open failed: " << rw.status().message() << "\n" << where();
      return false;
    }
    const ImageInfo& info = (*rw)->info();
    if (!info.headers[info.current_header].log_guid.IsZero()) {
      ADD_FAILURE() << "LogGuid still set after a read-write open\n" << where();
      return false;
    }
    Status st = layout.ReadAll(**rw, &rw_disk);
    if (!st.ok()) {
      ADD_FAILURE() << "read-write read failed: " << st.message() << "\n" << where();
      return false;
    }
    if (rw_disk != ro_disk) {
      size_t i = 0;
      while (rw_disk[i] == ro_disk[i]) ++i;
      ADD_FAILURE() << fmt::format(
                           "read-only and read-write opens disagree at virtual offset {:#x}: "
                           "{:#04x} vs {:#04x}",
                           layout.VirtualOffset(i), ro_disk[i], rw_disk[i])
                    << "\n"
                    << where();
      return false;
    }
    // 4. Every byte is one the contract allows.
    std::string forbidden = FirstForbiddenByte(layout, rw_disk, durable, since);
    if (!forbidden.empty()) {
      ADD_FAILURE() << "forbidden content: " << forbidden << "\n" << where();
      return false;
    }
    // Blocks outside the model were never written: they hold no data.
    if (!w.spec.hot_blocks.empty()) {
      std::string stray;
      st = (*rw)->Map(0, layout.virtual_size, [&](const MapExtent& x) {
        for (uint64_t b = x.start / layout.block_size;
             x.data && b * layout.block_size < x.start + x.length; ++b)
          if (!layout.Listed(b)) {
            stray = fmt::format("block {} has data", b);
            return false;
          }
        return true;
      });
      if (!st.ok() || !stray.empty()) {
        ADD_FAILURE() << "map of the recovered image: " << (st.ok() ? stray : st.message()) << "\n"
                      << where();
        return false;
      }
    }
    // 5. After the replay: a clean log; only a header torn before the log
    // was started may remain (a warning, the other header is used).
    report = Check(*raw);
    if (!report.ok()) {
      ADD_FAILURE() << "check after replay: " << report.status().message() << "\n" << where();
      return false;
    }
    for (const auto& f : report->findings)
      if (f.severity == CheckFinding::Severity::kError || f.structure.rfind("header ", 0) != 0) {
        ADD_FAILURE() << "check after replay: " << Findings(*report, false) << "\n" << where();
        return false;
      }
    // 6. On a share of the points: the recovered image takes new writes
    // (new blocks must not land on space a recovered entry points at) and
    // closes clean.
    if (point % 5 == 0) {
      ++stats->rewritten;
      const uint64_t bs = w.spec.block_size;
      std::vector<uint8_t> expect = rw_disk;
      for (int k = 0; k < 3; ++k) {
        const uint64_t b = layout.blocks[rng() % layout.blocks.size()];
        const uint64_t len = layout.Used(b);
        auto data = PatternBytes(len, rng());
        st = (*rw)->Write(b * bs, data.data(), len);
        if (!st.ok()) break;
        std::memcpy(expect.data() + layout.ModelOffset(b * bs), data.data(), layout.Window(b));
      }
      const uint64_t first = layout.blocks[0];
      if (st.ok()) st = (*rw)->Discard(first * bs, layout.Used(first));
      if (st.ok()) std::memset(expect.data(), 0, layout.Window(first));
      if (st.ok()) st = (*rw)->Close();
      if (!st.ok()) {
        ADD_FAILURE() << "writing the recovered image: " << st.message() << "\n" << where();
        return false;
      }
      report = Check(*raw);
      if (!report.ok() || !report->findings.empty()) {
        ADD_FAILURE() << "check after writing the recovered image: "
                      << (report.ok() ? Findings(*report, false) : report.status().message())
                      << "\n"
                      << where();
        return false;
      }
      auto again = Image::Open(std::make_unique<ReadOnlyView>(*raw));
      if (!again.ok() || !layout.ReadAll(**again, &rw_disk).ok() || rw_disk != expect) {
        ADD_FAILURE() << "the recovered image does not read back what was written to it\n"
                      << where();
        return false;
      }
    }
  }
  return true;
}

// Workloads of every shape.
std::vector<WorkloadSpec> Workloads() {
  std::vector<WorkloadSpec> specs;
  auto add = [&](WorkloadSpec s) { specs.push_back(std::move(s)); };
  uint64_t seed = 1;
  for (int round = 0; round < 2; ++round) {
    add({.seed = seed++,
         .type = DiskType::kDynamic,
         .block_size = 1 * MiB,
         .logical_sector_size = 512,
         .virtual_size = 6 * MiB + 12 * KiB,
         .start = Start::kPrefilled});
    add({.seed = seed++,
         .type = DiskType::kDynamic,
         .block_size = 2 * MiB,
         .logical_sector_size = 4096,
         .virtual_size = 9 * MiB + 4 * KiB,
         .start = Start::kEmpty});
    add({.seed = seed++,
         .type = DiskType::kFixed,
         .block_size = 1 * MiB,
         .logical_sector_size = 512,
         .virtual_size = 5 * MiB + 512 * KiB,
         .start = Start::kPrefilled});
    add({.seed = seed++,
         .type = DiskType::kDynamic,
         .block_size = 1 * MiB,
         .logical_sector_size = 4096,
         .virtual_size = 7 * MiB + 8 * KiB,
         .start = Start::kDirtyLog});
    add({.seed = seed++,
         .type = DiskType::kDynamic,
         .block_size = 1 * MiB,
         .logical_sector_size = 512,
         .virtual_size = 4 * MiB + 4 * KiB,
         .start = Start::kEmpty,
         .requests = 40,
         .flush_percent = 5,
         .reopen = false});
  }
  // A 2 GiB disk whose BAT spans five 4 KiB pages, written in blocks on
  // each: commits carry several pages, and a page missing from the newest
  // log entry must already be durable in place.
  for (Start start : {Start::kEmpty, Start::kDirtyLog})
    add({.seed = seed++,
         .type = DiskType::kDynamic,
         .block_size = 1 * MiB,
         .logical_sector_size = 512,
         .virtual_size = 2 * GiB + 4 * KiB,
         .start = start,
         .requests = 80,
         .flush_percent = 20,
         .hot_blocks = {0, 1, 700, 1300, 1801, 2048}});
  // Commits of 270 BAT pages (each sweep writes, then discards, every hot
  // block; blocks 512 apart each have their own BAT page): more than one
  // entry of the 1 MiB log holds, so each commit is split over entries.
  std::vector<uint64_t> spread;
  for (uint64_t p = 0; p < 270; ++p) spread.push_back(p * 512 + p % 5);
  add({.seed = seed++,
       .type = DiskType::kDynamic,
       .block_size = 1 * MiB,
       .logical_sector_size = 4096,
       .virtual_size = 160 * GiB,
       .start = Start::kEmpty,
       .requests = 270 * 5 / 2,
       .flush_percent = 0,
       .reopen = false,
       .fua_writes = false,
       .hot_blocks = spread,
       .window = 4096,
       .sweep = true,
       .focus_commits = true,
       .min_log_entries = 4});
  // Commits of 150 BAT pages, just over half of the log: in one entry each,
  // the next entry would wrap over the start of the previous one (the only
  // valid sequence while it is written).
  spread.resize(150);
  add({.seed = seed++,
       .type = DiskType::kDynamic,
       .block_size = 1 * MiB,
       .logical_sector_size = 4096,
       .virtual_size = 160 * GiB,
       .start = Start::kEmpty,
       .requests = 150 * 4,
       .flush_percent = 0,
       .reopen = false,
       .fua_writes = false,
       .hot_blocks = spread,
       .window = 4096,
       .sweep = true,
       .focus_commits = true,
       .min_log_entries = 4});
  // Many small commits in one session: the 1 MiB log wraps (an entry with
  // one BAT page takes 8 KiB of it).
  add({.seed = seed++,
       .type = DiskType::kDynamic,
       .block_size = 1 * MiB,
       .logical_sector_size = 512,
       .virtual_size = 5 * MiB,
       .start = Start::kPrefilled,
       .requests = 800,
       .flush_percent = 45,
       .reopen = false,
       .whole_block_percent = 100,
       .min_log_entries = 140,
       .points_percent = 50});
  return specs;
}

// The harness itself: crash states are what the model says.
std::vector<uint8_t> FileBytes(const File& f) {
  std::vector<uint8_t> out(*f.Size());
  EXPECT_EQ(*f.ReadAt(0, out.data(), out.size()), out.size());
  return out;
}

TEST(CrashHarnessTest, OverlayFileCopiesOnWriteAndLeavesItsBaseAlone) {
  SparseMemoryFile base("base", true);
  auto a = PatternBytes(100000, 1);
  ASSERT_TRUE(base.WriteAt(0, a.data(), a.size()).ok());
  OverlayFile over(base, "over");
  EXPECT_EQ(FileBytes(over), a);
  auto b = PatternBytes(30000, 2);
  ASSERT_TRUE(over.WriteAt(20000, b.data(), b.size()).ok());
  ASSERT_TRUE(over.PunchHole(70000, 5000).ok());
  ASSERT_TRUE(over.WriteAt(120000, b.data(), 10).ok());  // past the end: grows, gap reads zero
  std::vector<uint8_t> expect = a;
  std::copy(b.begin(), b.end(), expect.begin() + 20000);
  std::fill(expect.begin() + 70000, expect.begin() + 75000, 0);
  expect.resize(120010, 0);
  std::copy(b.begin(), b.begin() + 10, expect.begin() + 120000);
  EXPECT_EQ(FileBytes(over), expect);
  EXPECT_EQ(FileBytes(base), a);
  // A shrink then a grow: the cut bytes read as zeros, from the base too.
  ASSERT_TRUE(over.Truncate(50000).ok());
  ASSERT_TRUE(over.Truncate(90000).ok());
  expect.resize(50000);
  expect.resize(90000, 0);
  EXPECT_EQ(FileBytes(over), expect);
}

TEST(CrashHarnessTest, CrashStatesKeepEverythingBeforeTheLastFlushAndOnlyIssuedOpsAfterIt) {
  SparseMemoryFile start("start", true);
  ASSERT_TRUE(start.Truncate(64 * KiB).ok());
  CrashRecorder rec(start);
  auto f = rec.OpenFile();
  auto a = PatternBytes(8192, 3), b = PatternBytes(8192, 4);
  ASSERT_TRUE(f->WriteAt(0, a.data(), a.size()).ok());     // op 0
  ASSERT_TRUE(f->Flush().ok());                            // op 1
  ASSERT_TRUE(f->WriteAt(8192, b.data(), b.size()).ok());  // op 2
  ASSERT_TRUE(f->PunchHole(0, 4096).ok());                 // op 3
  ASSERT_TRUE(f->Truncate(128 * KiB).ok());                // op 4
  ASSERT_EQ(rec.op_count(), 5u);
  EXPECT_EQ(FileBytes(*f), FileBytes(rec.live()));

  std::vector<uint8_t> durable(64 * KiB, 0);
  std::copy(a.begin(), a.end(), durable.begin());
  std::mt19937_64 rng(1);
  CrashStateBuilder builder(rec);
  // Before the flush, nothing is durable: op 0 is kept or not, whole or torn.
  CrashState s0 = builder.Build(1, rng, {.keep = 0.0, .tear = 0.0});
  EXPECT_EQ(FileBytes(*s0.file), std::vector<uint8_t>(64 * KiB, 0));
  // After it: op 0 always; the later ops none, all, or torn.
  CrashState none = builder.Build(2, rng, {.keep = 0.0, .tear = 0.0});
  EXPECT_EQ(none.durable_ops, 2u);
  EXPECT_EQ(FileBytes(*none.file), durable);
  int torn_seen = 0;
  for (int i = 0; i < 50; ++i) {
    CrashState t = builder.Build(3, rng, {.keep = 1.0, .tear = 1.0});
    auto bytes = FileBytes(*t.file);
    ASSERT_EQ(bytes.size(), 64 * KiB);
    // Each 512-byte sector of op 2 is old (zeros) or new, nothing else.
    bool torn = false;
    for (size_t sec = 0; sec < 16; ++sec) {
      const uint8_t* got = bytes.data() + 8192 + sec * 512;
      const bool is_new = std::equal(got, got + 512, b.begin() + sec * 512);
      const bool is_old = std::all_of(got, got + 512, [](uint8_t x) { return x == 0; });
      EXPECT_TRUE(is_new || is_old) << "sector " << sec;
      torn |= !is_new;
    }
    torn_seen += torn;
    EXPECT_TRUE(std::equal(a.begin(), a.end(), bytes.begin()));  // durable part intact
  }
  EXPECT_GT(torn_seen, 0);
  CrashState all = builder.Build(5, rng, {.keep = 1.0, .tear = 0.0});
  EXPECT_EQ(all.kept, 3u);
  EXPECT_EQ(FileBytes(*all.file), FileBytes(rec.live()));
}

// Crash points tried per workload at most (sampled evenly when it has
// more). Sanitizer builds run about four times slower: fewer points, still
// more than 1000 in all.
#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kPointsPerWorkload = 75;
#else
constexpr size_t kPointsPerWorkload = 200;
#endif

TEST(CrashTest, EveryCrashPointOpensChecksCleanAndReadsOnlyAllowedBytes) {
  CrashStats stats;
  uint64_t workloads = 0, file_ops = 0;
  for (const WorkloadSpec& spec : Workloads()) {
    Workload w = Record(spec);
    ASSERT_FALSE(HasFailure()) << spec.Describe();
    ++workloads;
    file_ops += w.recorder->op_count();
    const uint64_t before = stats.points;
    const auto started = std::chrono::steady_clock::now();
    ASSERT_TRUE(CheckCrashPoints(w, kPointsPerWorkload * spec.points_percent / 100, &stats));
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
    fmt::print("  {}: {} file ops, {} crash points, {:.1f} s\n", spec.Describe(),
               w.recorder->op_count(), stats.points - before, took.count());
  }
  fmt::print("crash points tried: {}\n", stats.points);
  fmt::print(
      "  {} workloads, {} recorded file ops; {} crash states checked, {} with pending ops; pending "
      "ops kept {}, torn {}, lost {}; {} recovered images written again\n",
      workloads, file_ops, stats.states, stats.with_pending, stats.kept, stats.torn, stats.lost,
      stats.rewritten);
  EXPECT_GE(stats.points, 1000u);
  EXPECT_GT(stats.torn, 100u);
}

}  // namespace
}  // namespace vhdx::test
