// Read throughput and open cost of vhdx::Image, on images made by qemu-img
// (so the library is measured on files it did not write itself).
//
//   vhdx_read_bench [--benchmark_filter=REGEX] [other Google Benchmark flags]
//
// Needs qemu-img and qemu-io on PATH. The images go to a fresh folder under
// $VHDX_BENCH_DIR (default /var/tmp) and are removed at exit. Reads are
// served from the page cache: the images are written just before.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "vhdx/image.h"

namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB, TiB = 1024 * GiB;

// 1 GiB, 32 MiB blocks, every byte written: reads go to the file.
constexpr uint64_t kDataSize = 1 * GiB;
constexpr uint8_t kDataPattern = 0x5a;
// 64 TiB with 1 MiB blocks, nothing written: a 512 MiB BAT, the largest any
// VHDX can have, so opening it shows whether the BAT is read up front.
constexpr uint64_t kHugeSize = 64 * TiB;

struct Images {
  std::string dir;
  std::string data_path, huge_path;
  std::unique_ptr<vhdx::Image> data, huge;
};
Images* images = nullptr;

[[noreturn]] void Die(const std::string& message) {
  fmt::print(stderr, "vhdx_read_bench: {}\n", message);
  if (images && !images->dir.empty()) std::filesystem::remove_all(images->dir);
  std::exit(1);
}

void RunOrDie(const std::string& command) {
  if (std::system(command.c_str()) != 0) Die("command failed: " + command);
}

std::unique_ptr<vhdx::Image> OpenOrDie(const std::string& path) {
  auto image = vhdx::Image::Open(path);
  if (!image.ok()) Die(path + ": " + image.status().message());
  return std::move(image).value();
}

void MakeImages(Images* out) {
  const char* base = std::getenv("VHDX_BENCH_DIR");
  std::string templ = std::string(base && *base ? base : "/var/tmp") + "/vhdx_read_bench.XXXXXX";
  if (!mkdtemp(templ.data())) Die("cannot create a folder from " + templ);
  out->dir = templ;
  out->data_path = out->dir + "/data.vhdx";
  out->huge_path = out->dir + "/huge.vhdx";

  RunOrDie(fmt::format("qemu-img create -q -f vhdx -o block_size=32M '{}' {}", out->data_path,
                       kDataSize));
  RunOrDie(fmt::format("qemu-io -f vhdx -c 'write -P {} 0 {}' '{}' >/dev/null", kDataPattern,
                       kDataSize, out->data_path));
  RunOrDie(fmt::format("qemu-img create -q -f vhdx -o block_size=1M '{}' {}", out->huge_path,
                       kHugeSize));
  out->data = OpenOrDie(out->data_path);
  out->huge = OpenOrDie(out->huge_path);

  // Guard against timing a broken read path: the content must be right.
  std::vector<uint8_t> probe(4096);
  for (uint64_t offset : {uint64_t{0}, kDataSize - probe.size()}) {
    vhdx::Status st = out->data->Read(offset, probe.data(), probe.size());
    if (!st.ok()) Die(out->data_path + ": " + st.message());
    for (uint8_t byte : probe)
      if (byte != kDataPattern) Die(out->data_path + ": read back unexpected data");
  }
  if (out->huge->virtual_size() != kHugeSize || out->huge->info().block_size != MiB)
    Die(out->huge_path + ": qemu-img made an unexpected geometry");
}

// Whole image front to back in requests of range(0) KiB.
void BM_SequentialRead(benchmark::State& state) {
  const vhdx::Image& image = *images->data;
  const size_t request = static_cast<size_t>(state.range(0)) * KiB;
  std::vector<uint8_t> buf(request);
  uint64_t offset = 0;
  for (auto _ : state) {
    if (offset + request > image.virtual_size()) offset = 0;
    vhdx::Status st = image.Read(offset, buf.data(), request);
    if (!st.ok()) state.SkipWithError(st.message().c_str());
    benchmark::DoNotOptimize(buf.data());
    offset += request;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * request));
}
BENCHMARK(BM_SequentialRead)->Arg(64)->Arg(1024)->Arg(8192)->UseRealTime()->Unit(
    benchmark::kMicrosecond);

// 4 KiB-aligned 4 KiB reads at random offsets; each thread shares the Image.
void RandomRead4K(benchmark::State& state, const vhdx::Image& image) {
  constexpr size_t kRequest = 4096;
  std::vector<uint8_t> buf(kRequest);
  std::mt19937_64 rng(12345 + static_cast<uint64_t>(state.thread_index()));
  std::uniform_int_distribution<uint64_t> page(0, image.virtual_size() / kRequest - 1);
  for (auto _ : state) {
    vhdx::Status st = image.Read(page(rng) * kRequest, buf.data(), kRequest);
    if (!st.ok()) state.SkipWithError(st.message().c_str());
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRequest));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// Allocated blocks: BAT cache hit, then a pread of the payload.
void BM_RandomRead4K(benchmark::State& state) { RandomRead4K(state, *images->data); }
BENCHMARK(BM_RandomRead4K)->Threads(1)->Threads(2)->UseRealTime();

// Blocks in state ZERO (as qemu-img creates them) spread over 64 TiB: the
// 512 MiB BAT is 8 times the BAT cache, so nearly every read pages in a BAT
// page first.
void BM_RandomRead4KSparse64TiB(benchmark::State& state) { RandomRead4K(state, *images->huge); }
BENCHMARK(BM_RandomRead4KSparse64TiB)->Threads(1)->Threads(2)->UseRealTime();

// Open of the 64 TiB image: headers, log, regions, metadata; the BAT is
// paged in on demand, so this must not grow with the BAT.
void BM_Open64TiB(benchmark::State& state) {
  for (auto _ : state) {
    auto image = vhdx::Image::Open(images->huge_path);
    if (!image.ok()) state.SkipWithError(image.status().message().c_str());
    benchmark::DoNotOptimize(image);
  }
}
BENCHMARK(BM_Open64TiB)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Full BAT scan of the 64 TiB image (what `vhdx info` does for its block
// counts): 67,125,247 entries.
void BM_CountAllocation64TiB(benchmark::State& state) {
  for (auto _ : state) {
    auto counts = images->huge->CountAllocation();
    if (!counts.ok()) state.SkipWithError(counts.status().message().c_str());
    benchmark::DoNotOptimize(counts);
  }
  state.SetBytesProcessed(
      static_cast<int64_t>(state.iterations() * images->huge->info().bat_entries * 8));
}
BENCHMARK(BM_CountAllocation64TiB)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  Images fixture;
  images = &fixture;
  MakeImages(&fixture);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  fixture.data.reset();
  fixture.huge.reset();
  std::filesystem::remove_all(fixture.dir);
  return 0;
}
