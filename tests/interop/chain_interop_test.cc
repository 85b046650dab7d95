// Differencing chains written by the library, against the peers:
//  * libvhdi, the one peer that reads differencing VHDX: `vhdiinfo CHILD`
//    names the parent we recorded, and `vhdimount CHILD` exposes every level
//    of the chain with the bytes our model holds for that level;
//  * our own CLI: `vhdx convert -O raw CHILD` reads the model's bytes;
//  * flatten (ConvertToVhdx of the chain, and `vhdx convert -O vhdx`) and
//    commit (CommitImage, level by level down to the base) give standalone
//    images that read like the chain did and that `qemu-img check` passes
//    and `qemu-img compare` finds identical to the raw conversion;
//  * QEMU refuses a differencing image cleanly (ENOTSUP), without crashing.
//
// Chains of depth 1 to 3 are built with CreateImage(parent_path) and written
// through Image (random data at every level, partial blocks, byte-unaligned
// ranges, write-zeroes and discards), with 512- and 4096-byte logical sectors
// and block sizes of 1, 2 and 32 MiB mixed along one chain. A sparse raw
// model file receives every change; its SHA-256 after each level is closed
// is what that level of the chain must read as.
//
// How vhdimount finds a parent (libvhdi 20210425, vhditools/mount_handle.c):
// libvhdi takes the parent file name from the locator's absolute_win32_path
// (else volume_path, else relative_path), keeps what follows the last '\',
// and opens that name in the child's directory; there is no option (-X or
// other) to point it elsewhere, so every level of a chain lives in one
// folder here. It opens the chain recursively and exposes each level as a
// file of the mount point: vhdi1 is the base, vhdiN the image named on the
// command line.
//
// What libvhdi 20210425 reads wrong in valid differencing files
// (libvhdi_block_allocation_table.c, libvhdi_block_descriptor.c): for every
// block that is not FULLY_PRESENT it reads the block's bits of the sector
// bitmap, whatever the block's state, from the chunk's sector-bitmap entry's
// file offset, without looking at that entry's state. So
//  * a NOT_PRESENT block of a chunk whose bitmap block is NOT_PRESENT (a
//    child holding only FULLY_PRESENT blocks, or one a commit emptied) gets
//    its bits from the start of the file (the "vhdxfile" signature and
//    creator), and reads a mix of parent sectors and zeros;
//  * ZERO and UNMAPPED blocks of a child read the parent (the spec, and we,
//    read zeros).
// The libvhdi test therefore writes its children the way libvhdi can read:
// a partial-block write first (the bitmap block exists from then on) and no
// zero range that covers a whole block. The flatten and commit tests, read
// by us and by QEMU, use every kind of change.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <random>
#include <string_view>

#include "disk_checks.h"
#include "support/test_util.h"
#include "vhdx/chain.h"
#include "vhdx/convert.h"
#include "vhdx/create.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1ull << 20;


std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The expected virtual disk: a sparse raw file that receives every change
// made to the chain's top image.
class RawModel {
 public:
  RawModel(std::string path, uint64_t size) : path_(std::move(path)), size_(size) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    EXPECT_GE(fd_, 0) << path_;
    EXPECT_EQ(::ftruncate(fd_, static_cast<off_t>(size)), 0) << path_;
  }
  ~RawModel() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawModel(const RawModel&) = delete;
  RawModel& operator=(const RawModel&) = delete;

  void Write(uint64_t offset, const uint8_t* p, size_t n) {
    ASSERT_EQ(::pwrite(fd_, p, n, static_cast<off_t>(offset)), static_cast<ssize_t>(n)) << "model write";
  }
  void Zero(uint64_t offset, uint64_t n) {
    // Punching keeps the model sparse; partial pages are zeroed by the kernel.
    ASSERT_EQ(::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                          static_cast<off_t>(n)),
              0);
  }
  std::string Sha256() const { return Sha256OfFile(path_); }
  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

 private:
  std::string path_;
  uint64_t size_;
  int fd_ = -1;
};

// One chain to build: a base image, then one differencing child per entry
// of child_block_sizes, each written in turn.
struct ChainScenario {
  const char* name;
  uint32_t sector;
  uint64_t virtual_size;
  DiskType base_type;
  uint32_t base_block_size;
  std::vector<uint32_t> child_block_sizes;  // depth = its size
};

void PrintTo(const ChainScenario& s, std::ostream* os) { *os << s.name; }

// A seeded random mix of writes (random bytes, sometimes all zeros),
// write-zeroes and discards, applied to one image and to the model.
// Offsets cluster around block boundaries of the level's block size (so
// ranges straddle them and blocks end up partly written), and half the
// ranges are not sector-aligned (the library merges the parent's bytes
// into the sectors they touch).
class Workload {
 public:
  Workload(uint64_t seed, uint64_t virtual_size, uint32_t block_size, uint32_t sector)
      : rng_(seed), size_(virtual_size), block_(block_size), sector_(sector) {}

  int writes = 0, zero_writes = 0, write_zeroes = 0, discards = 0, flushes = 0;

  // `libvhdi_readable`: only changes libvhdi reads as the spec says (see
  // the top of this file): the first change allocates the sector bitmap
  // (a partial-block write), and zeros (write-zeroes, discard, zero-data
  // writes) never cover a whole block, so no block becomes ZERO/UNMAPPED.
  void Run(Image& image, RawModel& model, int ops, bool libvhdi_readable = false) {
    for (int i = 0; i < ops && !::testing::Test::HasFatalFailure(); ++i) {
      unsigned pick = static_cast<unsigned>(Uniform(0, 99));
      if (libvhdi_readable && i == 0) pick = 50;  // a data write, then made partial
      const uint64_t zero_max = libvhdi_readable ? block_ - 1 : 2ull * block_;
      if (pick < 70) {
        const bool zeros = pick < 7;
        auto [off, len] = RandomRange(zeros ? std::min<uint64_t>(zero_max, 3 * kMiB)
                                            : std::min<uint64_t>(3 * kMiB, 2ull * block_));
        if (libvhdi_readable && i == 0) len = std::min<size_t>(len, block_ / 2);
        if (libvhdi_readable && zeros) len = SparingTheLastBlock(off, len);
        if (len == 0) continue;
        std::vector<uint8_t> data(len);
        if (!zeros)
          for (auto& b : data) b = static_cast<uint8_t>(rng_() | 1);  // never all zero
        Status st = image.Write(off, data.data(), data.size());
        ASSERT_TRUE(st.ok()) << "write " << off << "+" << len << ": " << st.message();
        ASSERT_NO_FATAL_FAILURE(model.Write(off, data.data(), data.size()));
        ++(zeros ? zero_writes : writes);
      } else if (pick < 92) {
        auto [off, len] = pick < 80 && !libvhdi_readable ? WholeBlocks() : RandomRange(zero_max);
        if (libvhdi_readable) len = SparingTheLastBlock(off, len);
        if (len == 0) continue;
        Status st;
        if (pick % 2 == 0) {
          st = image.WriteZeroes(off, len, /*may_unmap=*/pick % 4 == 0);
          ++write_zeroes;
        } else {
          st = image.Discard(off, len);
          ++discards;
        }
        ASSERT_TRUE(st.ok()) << (pick % 2 == 0 ? "write zeroes " : "discard ") << off << "+" << len << ": "
                             << st.message();
        ASSERT_NO_FATAL_FAILURE(model.Zero(off, len));
      } else {
        Status st = image.Flush();
        ASSERT_TRUE(st.ok()) << "flush: " << st.message();
        ++flushes;
      }
    }
  }

  std::string Summary() const {
    return fmt::format("{} writes, {} zero-data writes, {} write-zeroes, {} discards, {} flushes", writes,
                       zero_writes, write_zeroes, discards, flushes);
  }

 private:
  uint64_t Uniform(uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_); }

  std::pair<uint64_t, size_t> RandomRange(uint64_t max_len) {
    const uint64_t blocks = (size_ + block_ - 1) / block_;
    uint64_t off;
    if (blocks > 1 && Uniform(0, 1)) {
      uint64_t boundary = Uniform(1, blocks - 1) * block_;
      off = boundary - Uniform(1, std::min<uint64_t>(boundary, 64 * 1024));
    } else {
      off = Uniform(0, size_ - 1);
    }
    uint64_t len = Uniform(0, 1) ? Uniform(1, 64 * 1024) : Uniform(64 * 1024, max_len);
    if (Uniform(0, 1)) {
      off = off / sector_ * sector_;
      len = std::max<uint64_t>(len / sector_ * sector_, sector_);
    }
    len = std::min(len, size_ - off);
    return {off, static_cast<size_t>(len)};
  }

  // `len`, shortened by a sector when [off, off+len) would cover the whole
  // last block of a disk that ends inside it (that block may be shorter
  // than a zero range's usual limit).
  size_t SparingTheLastBlock(uint64_t off, size_t len) const {
    const uint64_t last_block = (size_ - 1) / block_ * block_;
    if (off > last_block || off + len < size_) return len;
    return len > sector_ ? len - static_cast<size_t>(sector_) : 0;
  }

  // One or two whole blocks (the last one possibly partial: it ends the disk).
  std::pair<uint64_t, size_t> WholeBlocks() {
    const uint64_t blocks = (size_ + block_ - 1) / block_;
    uint64_t off = Uniform(0, blocks - 1) * block_;
    uint64_t len = std::min<uint64_t>(Uniform(1, 2) * block_, size_ - off);
    return {off, static_cast<size_t>(len)};
  }

  std::mt19937_64 rng_;
  uint64_t size_;
  uint64_t block_;
  uint64_t sector_;
};

// A chain on disk: paths[0] is the base, paths.back() the top child, all in
// one folder; level_sha[i] is the SHA-256 the chain ending at paths[i] reads
// as (the model after level i was written and closed).
struct Chain {
  std::string dir;
  std::vector<std::string> paths;
  std::vector<std::string> level_sha;
  std::unique_ptr<RawModel> model;
  uint64_t size = 0;
  uint32_t sector = 0;
  const std::string& top() const { return paths.back(); }
  int depth() const { return static_cast<int>(paths.size()) - 1; }
};

std::string CompareWithModel(const Image& image, const RawModel& model) {
  return CompareRawFile(model.path(), model.size(), ImageReader(image));
}

OpenOptions Writable() {
  OpenOptions o;
  o.read_only = false;
  return o;
}

// Only this file, not its parents (info() and the locator).
OpenOptions WithoutParent() {
  OpenOptions o;
  o.skip_parent = true;
  return o;
}

std::string_view Trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) v.remove_suffix(1);
  return v;
}

// The value of "KEY<tabs>: VALUE" in vhdiinfo's output, lowercased; nullopt
// when there is no such line.
std::optional<std::string> VhdiinfoField(std::string_view output, std::string_view key) {
  while (!output.empty()) {
    size_t end = std::min(output.find('\n'), output.size());
    std::string_view line = output.substr(0, end);
    output.remove_prefix(std::min(end + 1, output.size()));
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    if (Lower(std::string(Trim(line.substr(0, colon)))) != Lower(std::string(key))) continue;
    return Lower(std::string(Trim(line.substr(colon + 1))));
  }
  return std::nullopt;
}

Guid DataWriteGuid(const Image& image) {
  const ImageInfo& info = image.info();
  return info.headers[static_cast<size_t>(info.current_header)].data_write_guid;
}

// Builds the chain of `s` in a fresh folder named after `tag`: the base is
// created and written, then each child is created on the previous level,
// opened read-write (which opens its chain) and written. Every level is
// checked against the model while open and after reopening.
void BuildChain(const ChainScenario& s, const std::string& tag, Chain* chain, bool libvhdi_readable = false) {
  chain->dir = ScratchPath(fmt::format("{}-{}", s.name, tag));
  fs::remove_all(chain->dir);
  fs::create_directories(chain->dir);
  chain->size = s.virtual_size;
  chain->sector = s.sector;
  chain->model = std::make_unique<RawModel>(chain->dir + "/model.raw", s.virtual_size);
  RawModel& model = *chain->model;

  const int depth = static_cast<int>(s.child_block_sizes.size());
  for (int level = 0; level <= depth; ++level) {
    SCOPED_TRACE(fmt::format("level {}", level));
    const std::string path =
        level == 0 ? chain->dir + "/base.vhdx" : fmt::format("{}/snap{}.avhdx", chain->dir, level);
    CreateOptions o;
    o.logical_sector_size = s.sector;
    if (level == 0) {
      o.type = s.base_type;
      o.virtual_size = s.virtual_size;
      o.block_size = s.base_block_size;
    } else {
      o.parent_path = chain->paths.back();
      o.block_size = s.child_block_sizes[static_cast<size_t>(level - 1)];
    }
    Status st = CreateImage(path, o);
    ASSERT_TRUE(st.ok()) << path << ": " << st.message();
    chain->paths.push_back(path);
    const uint32_t block = o.block_size;

    auto image = Image::Open(path, Writable());
    ASSERT_TRUE(image.ok()) << image.status().message();
    ASSERT_EQ((*image)->info().type, level == 0 ? s.base_type : DiskType::kDifferencing);
    ASSERT_EQ((*image)->virtual_size(), s.virtual_size);
    // A new child reads exactly as its parent.
    EXPECT_EQ(CompareWithModel(**image, model), "") << "a new child does not read as its parent";
    Workload w(/*seed=*/s.virtual_size * 31 + static_cast<uint64_t>(level) * 7919 + block, s.virtual_size, block,
               s.sector);
    ASSERT_NO_FATAL_FAILURE(w.Run(**image, model, level == 0 ? 40 : 36, libvhdi_readable && level > 0));
    SCOPED_TRACE(w.Summary());
    EXPECT_EQ(CompareWithModel(**image, model), "") << "the open chain reads other bytes than the model";
    st = (*image)->Close();
    ASSERT_TRUE(st.ok()) << st.message();

    auto reopened = Image::Open(path);
    ASSERT_TRUE(reopened.ok()) << reopened.status().message();
    EXPECT_EQ(CompareWithModel(**reopened, model), "") << "the reopened chain reads other bytes than the model";
    chain->level_sha.push_back(model.Sha256());
  }
}

std::vector<std::string> FileShas(const std::vector<std::string>& paths) {
  std::vector<std::string> shas;
  for (const std::string& p : paths) shas.push_back(Sha256OfFile(p));
  return shas;
}

// `vhdx convert -O raw IMAGE OUT` (which opens the chain) gives the model.
void ExpectCliConvertReadsModel(const std::string& image, const std::string& out, const Chain& chain) {
  CommandResult r = vhdx::test::Run(fmt::format("{} convert -O raw {} {}", CliPath(), ShellQuote(image), ShellQuote(out)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fs::file_size(out), chain.size);
  EXPECT_EQ(Sha256OfFile(out), chain.level_sha.back()) << "vhdx convert -O raw reads other bytes than the model";
}

// Reasons to skip the libvhdi parts, or "".
std::string LibvhdiUnavailable() {
  if (!HaveTool("vhdiinfo") || !HaveTool("vhdimount")) return "libvhdi-utils (vhdiinfo, vhdimount) is not installed";
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return "/dev/fuse is not available here: vhdimount cannot mount";
  return "";
}

// A standalone (dynamic or fixed) image that must read as the model:
// through the library, `vhdx check`, and for 512-byte sectors `qemu-img
// check` and `qemu-img compare` with the raw conversion `raw`; QEMU refuses
// 4096-byte sectors, so those are read through libvhdi instead.
void ExpectStandaloneReadsModel(const std::string& path, const std::string& raw, const Chain& chain) {
  SCOPED_TRACE(path);
  auto image = Image::Open(path);
  ASSERT_TRUE(image.ok()) << image.status().message();
  EXPECT_NE((*image)->info().type, DiskType::kDifferencing);
  EXPECT_EQ((*image)->parent(), nullptr);
  EXPECT_EQ((*image)->virtual_size(), chain.size);
  EXPECT_EQ(CompareWithModel(**image, *chain.model), "") << "the library reads other bytes than the chain did";
  auto report = Check(path);
  ASSERT_TRUE(report.ok()) << report.status().message();
  for (const CheckFinding& f : report->findings) ADD_FAILURE() << "vhdx check: " << f.structure << ": " << f.message;

  if (chain.sector == 512) {
    if (!RunPart("qemu-img check and compare", MissingTools({"qemu-img"}))) return;
    CommandResult r = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(path));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("No errors were found on the image."), std::string::npos) << r.output;
    r = vhdx::test::Run(fmt::format("qemu-img compare -f vhdx -F raw {} {}", ShellQuote(path), ShellQuote(raw)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("Images are identical."), std::string::npos) << r.output;
  } else if (RunPart("libvhdi part", LibvhdiUnavailable())) {
    std::string unmountable = ExpectLibvhdiReads(path, chain.size, 4096, chain.level_sha.back());
    RunPart("vhdimount part", unmountable);
  }
}

// A vhdimount mount of a chain's top image on `image + ".mnt"`, unmounted
// (and the folder removed) when it goes out of scope.
class ChainMount {
 public:
  explicit ChainMount(const std::string& image) : dir_(image + ".mnt") {
    fs::create_directories(dir_);
    CommandResult r = vhdx::test::Run(fmt::format("vhdimount {} {}", ShellQuote(image), ShellQuote(dir_)));
    output_ = r.output;
    mounted_ = r.exit_code == 0 && fs::exists(dir_ + "/vhdi1");
    if (r.exit_code == 0 && !mounted_) Unmount();  // mounted, but empty: unusable
  }
  ~ChainMount() {
    Unmount();
    std::error_code ec;
    fs::remove(dir_, ec);
  }
  ChainMount(const ChainMount&) = delete;
  ChainMount& operator=(const ChainMount&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& output() const { return output_; }
  // The files the mount exposes, by name.
  std::vector<std::string> Entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  std::string disk(int index) const { return fmt::format("{}/vhdi{}", dir_, index); }

 private:
  void Unmount() {
    const char* unmount = HaveTool("fusermount") ? "fusermount -u" : "umount";
    if (!unmounted_) vhdx::test::Run(fmt::format("{} {}", unmount, ShellQuote(dir_)));
    unmounted_ = true;
  }
  std::string dir_;
  std::string output_;
  bool mounted_ = false;
  bool unmounted_ = false;
};

// vhdimount of the chain's top shows one file per level, vhdi1 the base,
// each reading as the model did when that level was closed. Returns "" or
// why the chain could not be mounted here.
std::string ExpectVhdimountReadsEveryLevel(const Chain& chain) {
  ChainMount mount(chain.top());
  if (!mount.mounted()) return "vhdimount cannot mount here (FUSE unavailable?): " + mount.output();
  std::vector<std::string> want;
  for (int i = 1; i <= chain.depth() + 1; ++i) want.push_back(fmt::format("vhdi{}", i));
  std::sort(want.begin(), want.end());
  EXPECT_EQ(mount.Entries(), want) << "vhdimount should expose one file per level of the chain";
  for (int level = 0; level <= chain.depth(); ++level) {
    SCOPED_TRACE(fmt::format("vhdi{} (level {})", level + 1, level));
    const std::string disk = mount.disk(level + 1);
    if (!fs::exists(disk)) continue;  // reported above
    EXPECT_EQ(fs::file_size(disk), chain.size);
    EXPECT_EQ(Sha256OfFile(disk), chain.level_sha[static_cast<size_t>(level)])
        << "libvhdi reads other bytes than the model at this level";
  }
  return "";
}

class ChainInteropTest : public ::testing::TestWithParam<ChainScenario> {};

// vhdiinfo reports the parent we recorded; vhdimount reads every level of
// the chain as the model, and as `vhdx convert -O raw` does.
TEST_P(ChainInteropTest, LibvhdiReadsTheChainWeWrote) {
  VHDX_REQUIRE(LibvhdiUnavailable());
  Chain chain;
  ASSERT_NO_FATAL_FAILURE(BuildChain(GetParam(), "libvhdi", &chain, /*libvhdi_readable=*/true));
  const std::vector<std::string> before = FileShas(chain.paths);

  for (int level = 1; level <= chain.depth(); ++level) {
    const std::string& child = chain.paths[static_cast<size_t>(level)];
    const std::string& parent = chain.paths[static_cast<size_t>(level - 1)];
    SCOPED_TRACE(child);
    auto parent_image = Image::Open(parent, WithoutParent());
    ASSERT_TRUE(parent_image.ok()) << parent_image.status().message();
    const std::string linkage = DataWriteGuid(**parent_image).ToString();
    auto child_image = Image::Open(child, WithoutParent());
    ASSERT_TRUE(child_image.ok()) << child_image.status().message();
    ASSERT_TRUE((*child_image)->info().parent.has_value());
    EXPECT_EQ(Lower((*child_image)->info().parent->Get("parent_linkage").value_or("")), "{" + linkage + "}");

    CommandResult r = vhdx::test::Run("vhdiinfo " + ShellQuote(child));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(VhdiinfoField(r.output, "Disk type"), "differential") << r.output;
    EXPECT_EQ(VhdiinfoField(r.output, "Bytes per sector"), fmt::format("{} bytes", chain.sector)) << r.output;
    EXPECT_NE(VhdiinfoField(r.output, "Media size").value_or("").find(fmt::format("({} bytes)", chain.size)),
              std::string::npos)
        << r.output;
    // The linkage GUID we recorded, and the parent's path as libvhdi takes
    // it from absolute_win32_path: vhdimount opens what follows its last
    // '\' in the child's folder, so it must end in "\" + the file name.
    EXPECT_EQ(VhdiinfoField(r.output, "Parent identifier"), linkage) << r.output;
    EXPECT_TRUE(VhdiinfoField(r.output, "Parent filename")
                    .value_or("")
                    .ends_with(fmt::format("\\{}", Lower(fs::path(parent).filename().string()))))
        << r.output;
  }

  VHDX_REQUIRE(ExpectVhdimountReadsEveryLevel(chain));
  // What libvhdi read is also what `vhdx convert -O raw` writes.
  ExpectCliConvertReadsModel(chain.top(), chain.dir + "/chain.raw", chain);
  // Reading the chain (ours and libvhdi's) changed no file of it.
  EXPECT_EQ(FileShas(chain.paths), before);
}

// Flattening the chain into one image, through the library and the CLI,
// gives an image that reads as the chain did and that the peers accept.
TEST_P(ChainInteropTest, FlattenedChainReadsLikeTheChain) {
  const ChainScenario& s = GetParam();
  Chain chain;
  ASSERT_NO_FATAL_FAILURE(BuildChain(s, "flatten", &chain));
  const std::vector<std::string> before = FileShas(chain.paths);
  std::string raw = chain.dir + "/chain.raw";
  ASSERT_NO_FATAL_FAILURE(ExpectCliConvertReadsModel(chain.top(), raw, chain));

  std::string flat = chain.dir + "/flat.vhdx";
  {
    auto src = ConvertSource::Open(chain.top());
    ASSERT_TRUE(src.ok()) << src.status().message();
    CreateOptions o;
    o.type = DiskType::kDynamic;
    o.block_size = s.child_block_sizes.back();
    o.logical_sector_size = s.sector;
    Status st = ConvertToVhdx(*src, flat, o);
    ASSERT_TRUE(st.ok()) << st.message();
  }
  ExpectStandaloneReadsModel(flat, raw, chain);

  std::string flat_cli = chain.dir + "/flat-cli.vhdx";
  CommandResult r = vhdx::test::Run(
      fmt::format("{} convert -O vhdx --type fixed --block-size 2M --logical-sector-size {} {} {}", CliPath(),
                  s.sector, ShellQuote(chain.top()), ShellQuote(flat_cli)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ExpectStandaloneReadsModel(flat_cli, raw, chain);
  EXPECT_EQ(FileShas(chain.paths), before) << "flattening wrote into the chain";
}

// Committing the chain level by level into its base: after each commit the
// parent reads as the child did, the emptied child still reads the same
// through it, the levels below are untouched, and the base finally holds
// the whole chain and passes the peers' checks.
TEST_P(ChainInteropTest, CommittedChainReadsLikeTheChain) {
  Chain chain;
  ASSERT_NO_FATAL_FAILURE(BuildChain(GetParam(), "commit", &chain));
  std::string raw = chain.dir + "/chain.raw";
  ASSERT_NO_FATAL_FAILURE(ExpectCliConvertReadsModel(chain.top(), raw, chain));
  for (int level = chain.depth(); level >= 1; --level) {
    const std::string& child = chain.paths[static_cast<size_t>(level)];
    const std::string& parent = chain.paths[static_cast<size_t>(level - 1)];
    SCOPED_TRACE("commit " + child);
    const std::vector<std::string> lower(chain.paths.begin(), chain.paths.begin() + (level - 1));
    const std::vector<std::string> lower_before = FileShas(lower);

    auto result = CommitImage(child);
    ASSERT_TRUE(result.ok()) << result.status().message();
    EXPECT_TRUE(fs::equivalent(result->parent_path, parent)) << result->parent_path;
    EXPECT_GT(result->bytes_copied, 0u);

    auto parent_image = Image::Open(parent);
    ASSERT_TRUE(parent_image.ok()) << parent_image.status().message();
    EXPECT_EQ(CompareWithModel(**parent_image, *chain.model), "") << "the parent does not read as the child did";
    auto child_image = Image::Open(child);
    ASSERT_TRUE(child_image.ok()) << child_image.status().message();
    EXPECT_EQ(CompareWithModel(**child_image, *chain.model), "") << "the emptied child reads other bytes";
    auto alloc = (*child_image)->CountAllocation();
    ASSERT_TRUE(alloc.ok()) << alloc.status().message();
    EXPECT_EQ(alloc->payload[static_cast<int>(BlockState::kFullyPresent)] +
                  alloc->payload[static_cast<int>(BlockState::kPartiallyPresent)],
              0u)
        << "the committed child still holds data blocks";
    EXPECT_EQ(FileShas(lower), lower_before) << "a commit wrote below its parent";

    // (libvhdi is not asked to read the emptied child: with its sector
    // bitmap block released, libvhdi would take the file's first bytes
    // for the bitmap; see the top of this file.)
  }
  ExpectStandaloneReadsModel(chain.paths[0], raw, chain);
}

INSTANTIATE_TEST_SUITE_P(
    Chains, ChainInteropTest,
    ::testing::Values(
        ChainScenario{"Depth1_512_1M", 512, 40 * kMiB, DiskType::kDynamic, 1u << 20, {1u << 20}},
        ChainScenario{"Depth1_4k_32M", 4096, 96 * kMiB, DiskType::kDynamic, 32u << 20, {32u << 20}},
        ChainScenario{"Depth2_512_32M_2M_1M", 512, 72 * kMiB, DiskType::kDynamic, 32u << 20, {2u << 20, 1u << 20}},
        ChainScenario{"Depth3_512_FixedBase", 512, 48 * kMiB + 512, DiskType::kFixed, 2u << 20,
                      {1u << 20, 32u << 20, 2u << 20}},
        ChainScenario{"Depth3_4k_Mixed", 4096, 64 * kMiB + 4096, DiskType::kDynamic, 1u << 20,
                      {2u << 20, 32u << 20, 1u << 20}}),
    [](const ::testing::TestParamInfo<ChainScenario>& i) { return std::string(i.param.name); });

// QEMU does not open differencing VHDX images: it must say so (ENOTSUP,
// "Operation not supported") and exit 1, not crash, on our child.
TEST(ChainInterop, QemuRefusesOurChildCleanly) {
  VHDX_REQUIRE(MissingTools({"qemu-img"}));
  Chain chain;
  ASSERT_NO_FATAL_FAILURE(BuildChain(
      ChainScenario{"QemuRefuses", 512, 16 * kMiB, DiskType::kDynamic, 1u << 20, {1u << 20}}, "qemu", &chain));
  const std::vector<std::string> before = FileShas(chain.paths);
  for (const char* command : {"info", "check", "map"}) {
    SCOPED_TRACE(command);
    CommandResult r = vhdx::test::Run(fmt::format("qemu-img {} -f vhdx {}", command, ShellQuote(chain.top())));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("Operation not supported"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(fs::path(chain.top()).filename().string()), std::string::npos) << r.output;
  }
  // Its parent, a plain dynamic image, is fine for QEMU.
  CommandResult r = vhdx::test::Run("qemu-img check -f vhdx " + ShellQuote(chain.paths[0]));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(FileShas(chain.paths), before);
}

}  // namespace
}  // namespace vhdx::test
