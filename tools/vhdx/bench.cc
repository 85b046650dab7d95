// vhdx bench: qemu-img bench's sequential I/O benchmark on a VHDX image,
// with qemu-img 7.2's options, defaults, offsets and output lines, so that
// `vhdx bench` and `qemu-img bench -f vhdx` can be run on the same workload
// and their outputs compared line by line.
//
// qemu keeps DEPTH asynchronous requests in flight on one thread. The
// library's calls are synchronous, so DEPTH is approximated by a pool of
// min(DEPTH, kMaxWorkers) threads, each issuing one Image::Read or
// Image::Write at a time; request k goes to whichever worker claims k from a
// shared atomic counter, and is written at the offset qemu gives request k.
#include <fmt/format.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common.h"

namespace vhdx::cli {
namespace {

// Worker threads at most, whatever the depth: the library's write path
// scales with a few writers, and a 2-core host gains nothing from more
// threads blocked in pread/pwrite.
constexpr uint64_t kMaxWorkers = 4;
// Request buffers are aligned like qemu's blk_blockalign, so that with
// -t none (O_DIRECT) aligned requests reach the kernel without a bounce.
constexpr size_t kBufferAlign = 4096;

// An integer as qemu-img 7.2 reads -c, -d, --flush-interval and --pattern:
// strtoul with base 0 (decimal, 0x hex or 0 octal), no suffix.
std::optional<uint64_t> ParseInteger(const std::string& text) {
  if (text.empty() || text[0] == '-' || text[0] == '+' || std::isspace(static_cast<unsigned char>(text[0])))
    return std::nullopt;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(text.c_str(), &end, 0);
  if (errno != 0 || end == text.c_str() || *end != '\0') return std::nullopt;
  return static_cast<uint64_t>(v);
}

struct BenchSpec {
  uint64_t count = 75000;
  uint64_t depth = 64;
  uint64_t size = 4096;
  uint64_t step = 4096;  // 0 on the command line means `size`
  uint64_t offset = 0;
  uint64_t flush_interval = 0;
  bool write = false;
  bool drain = true;
  uint8_t pattern = 0;
  uint64_t image_size = 0;

  // qemu-img 7.2 advances its offset by STEP after each request and wraps it
  // modulo the virtual size: the first request is at OFFSET as given, request
  // k > 0 at (OFFSET + k * STEP) mod size. (A request that then runs past the
  // end fails, in qemu-img as here.)
  uint64_t OffsetOf(uint64_t k) const {
    if (k == 0) return offset;
    if (image_size == 0) return 0;
    unsigned __int128 at = static_cast<unsigned __int128>(offset) +
                           static_cast<unsigned __int128>(k) * step;
    return static_cast<uint64_t>(at % image_size);
  }

  // qemu flushes when the number of requests not yet sent is a multiple of
  // the interval, checked as requests complete: so after s requests were
  // sent, for each s from the first batch (min(depth, count)) to count with
  // (count - s) % interval == 0.
  bool IsFlushPoint(uint64_t sent) const {
    return flush_interval != 0 && sent >= std::min(depth, count) && sent <= count &&
           (count - sent) % flush_interval == 0;
  }
};

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, FreeDeleter>;

// A 4 KiB-aligned buffer of `n` bytes (at least one) filled with `fill`.
Result<AlignedBuffer> NewAlignedBuffer(size_t n, uint8_t fill) {
  void* p = nullptr;
  if (::posix_memalign(&p, kBufferAlign, std::max<size_t>(n, 1)) != 0)
    return Status(Errc::kNoSpace, fmt::format("cannot allocate a {}-byte request buffer", n));
  std::memset(p, fill, std::max<size_t>(n, 1));
  return AlignedBuffer(static_cast<uint8_t*>(p));
}

// Runs the requests on a pool of workers, segment by segment: with a flush
// interval in drain mode, each flush point ends a segment, and the flush is
// issued once every request of the segment has completed (qemu drains its
// queue). Otherwise the whole run is one segment, and a worker that claims
// the request at a flush point flushes first, while the other workers' requests
// are in flight (--no-drain).
class BenchRun {
 public:
  BenchRun(Image& image, const BenchSpec& spec)
      : image_(image), spec_(spec),
        workers_(static_cast<int>(std::min({spec.depth, kMaxWorkers, std::max<uint64_t>(spec.count, 1)}))) {}

  // Sends every request; returns the seconds from the first request sent to
  // the last completed (the final flush, if any, is not timed: qemu stops
  // its clock when the last request completes, before that flush ends).
  Result<double> Run() {
    // One buffer per worker, as qemu gives each request in flight its own.
    std::vector<AlignedBuffer> buffers;
    for (int w = 0; w < workers_; ++w) {
      VHDX_ASSIGN_OR_RETURN(AlignedBuffer b, NewAlignedBuffer(spec_.size, spec_.pattern));
      buffers.push_back(std::move(b));
    }
    std::vector<std::thread> threads;
    try {
      threads.reserve(workers_);
      for (int w = 0; w < workers_; ++w)
        threads.emplace_back([this, buf = buffers[w].get()] { Work(buf); });
    } catch (const std::system_error& e) {
      // No memory for a thread's stack, or the thread limit: the workers
      // started stop and are joined (a joinable std::thread destroyed is
      // std::terminate), and the run fails in one line.
      StopWorkers(threads);
      return Status(Errc::kNoMemory,
                    fmt::format("cannot start {} worker threads (out of memory or threads): {}", workers_, e.what()));
    }
    const auto start = std::chrono::steady_clock::now();
    uint64_t sent = 0;
    while (sent < spec_.count && !failed_) {
      uint64_t end = spec_.count;
      if (spec_.drain && spec_.flush_interval != 0)
        for (uint64_t s = std::max<uint64_t>(sent + 1, std::min(spec_.depth, spec_.count)); s < end; ++s)
          if (spec_.IsFlushPoint(s)) {
            end = s;
            break;
          }
      RunSegment(sent, end);
      sent = end;
      if (sent < spec_.count && spec_.drain && spec_.IsFlushPoint(sent) && !failed_)
        Record(image_.Flush(), "flush");
    }
    const auto stop = std::chrono::steady_clock::now();
    StopWorkers(threads);
    if (failed_) return FirstError();
    if (spec_.IsFlushPoint(spec_.count)) Record(image_.Flush(), "flush");
    if (failed_) return FirstError();
    return std::chrono::duration<double>(stop - start).count();
  }

 private:
  void StopWorkers(std::vector<std::thread>& threads) {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    start_cv_.notify_all();
    for (auto& t : threads) t.join();
  }

  // Hands [begin, end) to the workers and waits until all have stopped.
  void RunSegment(uint64_t begin, uint64_t end) {
    {
      std::lock_guard lock(mu_);
      next_.store(begin, std::memory_order_relaxed);
      segment_end_ = end;
      busy_ = workers_;
      ++generation_;
    }
    start_cv_.notify_all();
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [this] { return busy_ == 0; });
  }

  void Work(uint8_t* buffer) {
    uint64_t seen = 0;
    for (;;) {
      uint64_t end;
      {
        std::unique_lock lock(mu_);
        start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        end = segment_end_;
      }
      while (!failed_.load(std::memory_order_relaxed)) {
        const uint64_t k = next_.fetch_add(1, std::memory_order_relaxed);
        if (k >= end) break;
        if (!spec_.drain && k < spec_.count && spec_.IsFlushPoint(k) && !Record(image_.Flush(), "flush"))
          break;
        const uint64_t at = spec_.OffsetOf(k);
        Status st = spec_.write ? image_.Write(at, buffer, spec_.size)
                                : image_.Read(at, buffer, spec_.size);
        if (!Record(st, spec_.write ? "write" : "read")) break;
      }
      {
        std::lock_guard lock(mu_);
        if (--busy_ == 0) done_cv_.notify_one();
      }
    }
  }

  // Keeps the first failure; returns whether `st` is ok.
  bool Record(const Status& st, const char* what) {
    if (st.ok()) return true;
    std::lock_guard lock(error_mu_);
    if (!failed_) {
      first_error_ = st.WithContext(fmt::format("Failed {} request", what));
      failed_ = true;
    }
    return false;
  }

  Status FirstError() {
    std::lock_guard lock(error_mu_);
    return first_error_;
  }

  Image& image_;
  const BenchSpec& spec_;
  const int workers_;

  std::mutex mu_;  // guards the segment hand-over below
  std::condition_variable start_cv_, done_cv_;
  uint64_t generation_ = 0;
  uint64_t segment_end_ = 0;
  int busy_ = 0;
  bool stop_ = false;
  std::atomic<uint64_t> next_{0};

  std::atomic<bool> failed_{false};
  std::mutex error_mu_;
  Status first_error_;
};

}  // namespace

void RegisterBench(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand(
      "bench", "Sequential read or write benchmark, with qemu-img bench's options and output");
  static std::string path, format, cache = "writeback";
  static std::string count_text = "75000", depth_text = "64", size_text = "4096", step_text,
                     offset_text = "0", flush_text = "0", pattern_text = "0";
  static bool write = false, no_drain = false, stats = false;
  sub->add_option("-c", count_text, "Number of requests (default 75000)");
  sub->add_option("-d", depth_text,
                  fmt::format("Requests in parallel (default 64); served by min(DEPTH, {}) threads",
                              kMaxWorkers));
  sub->add_option("-f", format, "Image format: only vhdx (accepted so qemu-img command lines work)")
      ->check(CLI::IsMember({"vhdx"}));
  sub->add_option("-s", size_text, "Bytes per request, K/M/G suffixes allowed (default 4K)");
  sub->add_option("-S", step_text, "Offset step between requests (default: the request size)");
  sub->add_option("-o", offset_text, "Offset of the first request (default 0)");
  sub->add_option("-t", cache,
                  "Cache mode: 'writeback' (default) goes through the host page cache; 'none' opens "
                  "the image with O_DIRECT")
      ->check(CLI::IsMember({"none", "writeback"}));
  sub->add_flag("-w", write, "Write test (default: read test)");
  sub->add_option("--flush-interval", flush_text,
                  "Write tests: flush whenever the number of requests left is a multiple of N "
                  "(N >= depth)");
  sub->add_flag("--no-drain", no_drain, "Flush without waiting for the requests in flight");
  sub->add_option("--pattern", pattern_text, "Byte written by write tests (default 0)");
  sub->add_flag("--stats", stats,
                "After qemu-img's lines, print the library's write statistics (fsyncs, log "
                "entries, blocks allocated)");
  static std::vector<std::string> parent_dirs;
  AddParentDirOption(sub, parent_dirs);
  AddForceShareOption(sub);
  sub->add_option("IMAGE", path, "VHDX image")->required();

  sub->callback([&result] {
    BenchSpec spec;
    auto fail = [&result](const std::string& message) { result = Fail(path, message); };
    auto count = ParseInteger(count_text);
    if (!count || *count > INT_MAX) return fail("Invalid request count specified");
    auto depth = ParseInteger(depth_text);
    // qemu-img 7.2 accepts depth 0 and then never finishes; refuse it.
    if (!depth || *depth == 0 || *depth > INT_MAX) return fail("Invalid queue depth specified");
    auto size = ParseSize(size_text);
    if (!size || *size > INT_MAX)
      return fail("Invalid buffer size specified. Must be between 0 and 2147483647.");
    std::optional<uint64_t> step = step_text.empty() ? std::optional<uint64_t>(0) : ParseSize(step_text);
    if (!step || *step > INT_MAX)
      return fail("Invalid step_size specified. Must be between 0 and 2147483647.");
    auto offset = ParseSize(offset_text);
    if (!offset || *offset > static_cast<uint64_t>(INT64_MAX)) return fail("Invalid offset specified");
    auto flush_interval = ParseInteger(flush_text);
    if (!flush_interval || *flush_interval > INT_MAX) return fail("Invalid flush interval specified");
    auto pattern = ParseInteger(pattern_text);
    if (!pattern || *pattern > 0xff) return fail("Invalid pattern byte specified");
    if (!write && *flush_interval != 0) return fail("--flush-interval is only available in write tests");
    if (*flush_interval != 0 && *flush_interval < *depth)
      return fail("Flush interval can't be smaller than depth");

    spec.count = *count;
    spec.depth = *depth;
    spec.size = *size;
    spec.step = *step != 0 ? *step : *size;
    spec.offset = *offset;
    spec.flush_interval = *flush_interval;
    spec.write = write;
    spec.drain = !no_drain;
    spec.pattern = static_cast<uint8_t>(*pattern);

    OpenOptions options;
    options.read_only = !write;
    options.direct_io = cache == "none";
    options.parent_dirs = parent_dirs;
    options.force_share = ForceShare();
    auto opened = Image::Open(path, options);
    if (!opened.ok()) return fail(opened.status().message());
    std::unique_ptr<Image> image = std::move(opened).value();
    spec.image_size = image->virtual_size();

    fmt::print("Sending {} {} requests, {} bytes each, {} in parallel (starting at offset {}, step "
               "size {})\n",
               spec.count, spec.write ? "write" : "read", spec.size, spec.depth, spec.offset,
               spec.step);
    if (spec.flush_interval != 0) fmt::print("Sending flush every {} requests\n", spec.flush_interval);
    std::fflush(stdout);

    BenchRun run(*image, spec);
    Result<double> seconds = run.Run();
    if (!seconds.ok()) {
      (void)image->Close();  // the first error is the one worth reporting
      return fail(seconds.status().message());
    }
    fmt::print("Run completed in {:.3f} seconds.\n", *seconds);
    std::fflush(stdout);
    Status closed = image->Close();
    if (!closed.ok()) return fail(closed.message());
    if (stats) {
      // Counted over the image's whole life, the final Close included.
      const WriteStats ws = image->write_stats();
      const std::string per_block =
          ws.blocks_allocated == 0
              ? std::string("n/a")
              : fmt::format("{:.3f}", static_cast<double>(ws.flushes) /
                                          static_cast<double>(ws.blocks_allocated));
      fmt::print("Write stats: {} fsyncs, {} log entries, {} blocks allocated, {} fsyncs per "
                 "allocated block\n",
                 ws.flushes, ws.log_entries, ws.blocks_allocated, per_block);
    }
    result = kExitOk;
  });
}

}  // namespace vhdx::cli
