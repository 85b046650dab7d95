// libFuzzer target: the input is a whole VHDX file, opened from memory
// read-only. Everything a reader does with an untrusted image runs on it:
// Check, Open, info, CountAllocation, Map and Read. Work per input is
// bounded so that a hostile 64 TiB geometry keeps iterations fast; the
// sanitizers and these oracles turn misbehaviour into a crash:
//   - a failure's message is a non-empty single line;
//   - Check never fails on a memory file (damage is reported as findings);
//   - the map and the reads agree (a "zero" extent reads as zeros);
//   - nothing is written (the memory file refuses writes).
// Then the write path runs on a writable copy (small block sizes only, to
// bound memory): writes, a discard, a flush and a close; if all succeed, a
// read-only reopen must open and read back exactly what was written.
// A differencing input gets a small in-memory parent with data (linkage
// not checked), so reads and writes through the chain and the sector
// bitmaps are fuzzed too; its locator paths are never looked up.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "vhdx/create.h"
#include "vhdx/file.h"
#include "vhdx/image.h"

namespace {

constexpr uint64_t kMaxMappedBlocks = 1 << 16;  // per map window
constexpr size_t kMaxExtents = 4096;
constexpr uint64_t kMaxDataBytes = 16 << 20;  // read from data extents
constexpr uint64_t kEdgeBytes = 1 << 20;      // read at each end of the disk

[[noreturn]] void Fail(const char* what, const std::string& message) {
  std::fprintf(stderr, "fuzz_image: %s: \"%s\"\n", what, message.c_str());
  std::abort();
}

void ExpectOneLine(const char* what, const vhdx::Status& status) {
  if (status.ok()) return;
  if (status.message().empty() || status.message().find('\n') != std::string::npos)
    Fail(what, status.message());
}

void ReadRange(const vhdx::Image& image, uint64_t offset, uint64_t length, bool must_be_zero,
               std::vector<uint8_t>& buf) {
  while (length > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(length, buf.size()));
    vhdx::Status st = image.Read(offset, buf.data(), n);
    ExpectOneLine("Read", st);
    if (!st.ok()) return;
    if (must_be_zero && std::any_of(buf.begin(), buf.begin() + n, [](uint8_t b) { return b; }))
      Fail("Read", "an extent mapped as zeros reads non-zero");
    offset += n;
    length -= n;
  }
}

// A parent for differencing inputs: 8 MiB, 1 MiB blocks, every byte set.
std::shared_ptr<const vhdx::Image> Parent(uint32_t logical_sector_size) {
  auto file = vhdx::NewMemoryFile("parent.vhdx", {}, true);
  vhdx::CreateOptions o;
  o.virtual_size = 8 << 20;
  o.block_size = 1 << 20;
  o.logical_sector_size = logical_sector_size;
  vhdx::Status st = vhdx::CreateImage(*file, o);
  if (!st.ok()) Fail("CreateImage (parent)", st.message());
  auto image = vhdx::Image::Open(std::move(file), {.read_only = false});
  if (!image.ok()) Fail("Open (parent)", image.status().message());
  std::vector<uint8_t> bytes(o.virtual_size);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i / 512 + 1);
  if (!(st = (*image)->Write(0, bytes.data(), bytes.size())).ok()) Fail("Write (parent)", st.message());
  if (!(st = (*image)->Close()).ok()) Fail("Close (parent)", st.message());
  return std::shared_ptr<const vhdx::Image>(std::move(image).value());
}

// Opens `bytes` as an image; a differencing one gets the parent of its
// sector size. `file` is set to the File the image owns.
vhdx::Result<std::unique_ptr<vhdx::Image>> OpenFuzzed(std::vector<uint8_t> bytes, bool writable,
                                                      const vhdx::File** file = nullptr) {
  static const std::shared_ptr<const vhdx::Image> parents[2] = {Parent(512), Parent(4096)};
  vhdx::OpenOptions options;
  options.read_only = !writable;
  options.ignore_parent_linkage = true;
  options.parent = parents[0];
  auto f = vhdx::NewMemoryFile("fuzz.vhdx", bytes, writable);
  if (file) *file = f.get();
  auto opened = vhdx::Image::Open(std::move(f), options);
  if (!opened.ok() && opened.status().message().find("4096-byte logical sectors") != std::string::npos) {
    options.parent = parents[1];
    f = vhdx::NewMemoryFile("fuzz.vhdx", std::move(bytes), writable);
    if (file) *file = f.get();
    opened = vhdx::Image::Open(std::move(f), options);
  }
  return opened;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = vhdx::NewMemoryFile("fuzz.vhdx", std::vector<uint8_t>(data, data + size),
                                  /*writable=*/false);
  auto report = vhdx::Check(*file);
  if (!report.ok()) Fail("Check", report.status().message());
  for (const auto& finding : report->findings)
    if (finding.message.find('\n') != std::string::npos) Fail("Check finding", finding.message);

  auto opened = OpenFuzzed(std::vector<uint8_t>(data, data + size), false);
  ExpectOneLine("Open", opened.status());
  if (!opened.ok()) return 0;
  const vhdx::Image& image = **opened;
  const vhdx::ImageInfo& info = image.info();
  const uint64_t vsize = info.virtual_size;

  auto counts = image.CountAllocation();
  ExpectOneLine("CountAllocation", counts.status());

  // Map the start and the end of the disk, at most kMaxMappedBlocks each.
  std::vector<vhdx::MapExtent> extents;
  const uint64_t window = std::min<uint64_t>(vsize, kMaxMappedBlocks * info.block_size);
  for (uint64_t start : {uint64_t{0}, vsize - window}) {
    vhdx::Status st = image.Map(start, window, [&](const vhdx::MapExtent& x) {
      extents.push_back(x);
      return extents.size() < kMaxExtents;
    });
    ExpectOneLine("Map", st);
    if (window == vsize) break;
  }

  std::vector<uint8_t> buf(1 << 20);
  uint64_t data_read = 0;
  for (const auto& x : extents) {
    if (x.data) {
      uint64_t n = std::min(x.length, kMaxDataBytes - data_read);
      ReadRange(image, x.start, n, false, buf);
      data_read += n;
    } else if (x.zero) {
      ReadRange(image, x.start, std::min<uint64_t>(x.length, 64 << 10), true, buf);
    }
  }
  ReadRange(image, 0, std::min(vsize, kEdgeBytes), false, buf);
  ReadRange(image, vsize - std::min(vsize, kEdgeBytes), std::min(vsize, kEdgeBytes), false, buf);

  // Reads past the end must fail cleanly, never succeed.
  uint8_t byte;
  vhdx::Status past = image.Read(vsize, &byte, 1);
  if (past.ok()) Fail("Read", "a read past the virtual size succeeded");
  ExpectOneLine("Read past the end", past);

  if (info.block_size > (8u << 20)) return 0;
  const vhdx::File* raw = nullptr;
  auto rw = OpenFuzzed(std::vector<uint8_t>(data, data + size), true, &raw);
  ExpectOneLine("Open read-write", rw.status());
  if (!rw.ok()) return 0;
  std::vector<uint8_t> pattern(4096);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(i * 7 + 1);
  const uint64_t at = vsize / 2 / 512 * 512;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(pattern.size(), vsize - at));
  vhdx::Status st = (*rw)->Write(at, pattern.data(), n);
  ExpectOneLine("Write", st);
  if (st.ok() && vsize > info.block_size * 2) {
    st = (*rw)->Discard(0, info.block_size);
    ExpectOneLine("Discard", st);
  }
  if (st.ok()) ExpectOneLine("Flush", st = (*rw)->Flush());
  if (st.ok()) ExpectOneLine("Close", st = (*rw)->Close());
  if (!st.ok()) return 0;
  // The rw image still owns its file; reopen a copy of its bytes.
  auto size_now = raw->Size();
  if (!size_now.ok()) Fail("Size", size_now.status().message());
  std::vector<uint8_t> bytes(*size_now);
  auto got = raw->ReadAt(0, bytes.data(), bytes.size());
  if (!got.ok() || *got != bytes.size()) Fail("ReadAt", "cannot read back the written file");
  auto reopened = OpenFuzzed(std::move(bytes), false);
  if (!reopened.ok()) Fail("Reopen after a successful close", reopened.status().message());
  std::vector<uint8_t> back(n);
  st = (*reopened)->Read(at, back.data(), n);
  if (!st.ok()) Fail("Read back", st.message());
  if (!std::equal(back.begin(), back.end(), pattern.begin()))
    Fail("Read back", "the reopened image does not hold the bytes written");
  return 0;
}
