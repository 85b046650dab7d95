// Every image of the real-world corpus (MANIFEST.md) must read as the
// manifest's content hash through the library and through every CLI path,
// be described consistently, check clean, and never be modified.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "interop/disk_checks.h"
#include "manifest.h"
#include "support/test_util.h"
#include "vhdx/image.h"

namespace vhdx::test {
namespace {

using nlohmann::json;

constexpr char kDirtyLogImage[] = "iotest-dirtylog-10G-4M.vhdx.bz2";

uint64_t PayloadBlocks(const CorpusImage& m) { return (m.virtual_size + m.block_size - 1) / m.block_size; }

std::string Quoted(const std::string& path) { return "'" + path + "'"; }

json ParseJson(const std::string& text) { return json::parse(text, nullptr, /*allow_exceptions=*/false); }

// "fixed.vhdx.gz" -> "fixed_vhdx_gz" (test and scratch file names).
std::string SafeName(std::string name) {
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

std::string TestName(const ::testing::TestParamInfo<CorpusImage>& info) { return SafeName(info.param.file); }

TEST(CorpusManifestTest, ParsesTheImageTable) {
  CorpusManifest m = ParseCorpusManifest(
      "# title\n\ntext\n\n"
      "| file | written by | type | block size | logical / physical sector | virtual size | "
      "what it exercises | content sha256 |\n"
      "|---|---|---|---|---|---|---|---|\n"
      "| a.vhdx.gz | Hyper-V, Windows Server 2012 (6.2.9200) | fixed | 2 MiB | 512 / 4096 | 10485760 | fixed "
      "layout | " +
      std::string(64, 'a') + " |\n" +
      "| b.vhdx.bz2 | QEMU 1.6.50, old | dynamic | 1 MiB (despite the name) | 512 / 512 | 1073741824 | "
      "**dirty log**: x | " +
      std::string(64, '0') + " |\n" + "| c.vhdx | x | dynamic | big | 512 / 512 | 1 | y | " +
      std::string(63, '0') + " |\n\nNotes | not a row |\n");
  ASSERT_EQ(m.images.size(), 2u);
  EXPECT_EQ(m.images[0].file, "a.vhdx.gz");
  EXPECT_EQ(m.images[0].type, "fixed");
  EXPECT_EQ(m.images[0].block_size, 2u << 20);
  EXPECT_EQ(m.images[0].logical_sector_size, 512u);
  EXPECT_EQ(m.images[0].physical_sector_size, 4096u);
  EXPECT_EQ(m.images[0].virtual_size, 10485760u);
  EXPECT_EQ(m.images[0].writer_version, "6.2.9200");
  EXPECT_FALSE(m.images[0].dirty_log);
  EXPECT_EQ(m.images[1].block_size, 1u << 20);
  EXPECT_EQ(m.images[1].writer_version, "1.6.50");
  EXPECT_TRUE(m.images[1].dirty_log);
  ASSERT_EQ(m.problems.size(), 1u);  // row c: unreadable block size and short hash
  EXPECT_NE(m.problems[0].find("c.vhdx"), std::string::npos);

  EXPECT_FALSE(ParseCorpusManifest("| file | type |\n|---|---|\n| a | b |\n").problems.empty());
  EXPECT_FALSE(ParseCorpusManifest("no table here\n").problems.empty());
}

TEST(CorpusManifestTest, ListsImagesThatExist) {
  VHDX_REQUIRE(MissingCorpus());
  auto dir = CorpusDir();
  const CorpusManifest& m = LoadCorpusManifest();
  for (const auto& p : m.problems) ADD_FAILURE() << "MANIFEST.md: " << p;
  EXPECT_FALSE(m.images.empty());
  for (const auto& img : m.images)
    EXPECT_TRUE(std::filesystem::exists(*dir + "/" + img.file)) << img.file << " is listed but missing";
}

class CorpusImageTest : public ::testing::TestWithParam<CorpusImage> {
 protected:
  void SetUp() override {
    // The tests were listed when the corpus existed; it may be gone since.
    VHDX_REQUIRE(MissingCorpus());
    path_ = DecompressCorpusImage(GetParam().file);
    file_sha256_ = Sha256OfFile(path_);
  }

  // The image file must never change: every open here is read-only.
  void ExpectFileUnchanged(const std::string& after) {
    EXPECT_EQ(Sha256OfFile(path_), file_sha256_) << GetParam().file << " was modified by " << after;
  }

  std::unique_ptr<Image> OpenImage() {
    auto image = Image::Open(path_);
    EXPECT_TRUE(image.ok()) << image.status().message();
    return image.ok() ? std::move(image).value() : nullptr;
  }

  std::string path_;
  std::string file_sha256_;
};

TEST_P(CorpusImageTest, LibraryReadsManifestContent) {
  const CorpusImage& m = GetParam();
  auto image = OpenImage();
  ASSERT_TRUE(image);
  const ImageInfo& info = image->info();
  EXPECT_EQ(DiskTypeName(info.type), m.type);
  EXPECT_EQ(info.block_size, m.block_size);
  EXPECT_EQ(info.logical_sector_size, m.logical_sector_size);
  EXPECT_EQ(info.physical_sector_size, m.physical_sector_size);
  EXPECT_EQ(info.virtual_size, m.virtual_size);
  EXPECT_EQ(info.payload_blocks, PayloadBlocks(m));
  EXPECT_EQ(info.log.dirty, m.dirty_log);
  if (m.dirty_log)
    EXPECT_GE(info.log.active_entries, 1u);
  else
    EXPECT_EQ(info.log.active_entries, 0u);

  EXPECT_EQ(Sha256OfImage(*image), m.content_sha256);

  auto alloc = image->CountAllocation();
  ASSERT_TRUE(alloc.ok()) << alloc.status().message();
  uint64_t counted = 0;
  for (uint64_t n : alloc->payload) counted += n;
  EXPECT_EQ(counted, PayloadBlocks(m));
  image.reset();
  ExpectFileUnchanged("the library's read-only open and read");
}

TEST_P(CorpusImageTest, CliInfoAndCheckDescribeImage) {
  const CorpusImage& m = GetParam();
  CommandResult r = vhdx::test::Run(fmt::format("{} info --output=json {}", CliPath(), Quoted(path_)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json j = ParseJson(r.output);
  ASSERT_TRUE(j.is_object()) << "not JSON: " << r.output;
  for (const char* key : {"filename", "format", "virtual-size", "actual-size", "cluster-size", "block-size",
                          "logical-sector-size", "physical-sector-size", "type", "creator", "dirty", "log",
                          "headers", "allocation"})
    ASSERT_TRUE(j.contains(key)) << "vhdx info lacks \"" << key << "\": " << r.output;
  EXPECT_EQ(j["filename"], path_);
  EXPECT_EQ(j["format"], "vhdx");
  EXPECT_EQ(j["virtual-size"], m.virtual_size);
  EXPECT_EQ(j["actual-size"], AllocatedBytes(path_));
  EXPECT_EQ(j["cluster-size"], m.block_size);
  EXPECT_EQ(j["block-size"], m.block_size);
  EXPECT_EQ(j["logical-sector-size"], m.logical_sector_size);
  EXPECT_EQ(j["physical-sector-size"], m.physical_sector_size);
  EXPECT_EQ(j["type"], m.type);
  ASSERT_TRUE(j["creator"].is_string());
  EXPECT_NE(j["creator"].get<std::string>().find(m.writer_version), std::string::npos)
      << "creator " << j["creator"] << " does not carry the manifest's writer version " << m.writer_version;
  EXPECT_EQ(j["dirty"], m.dirty_log);

  const json& log = j["log"];
  ASSERT_TRUE(log.contains("offset") && log.contains("length") && log.contains("active-entries")) << log;
  if (m.dirty_log)
    EXPECT_GE(log["active-entries"].get<uint64_t>(), 1u);
  else
    EXPECT_EQ(log["active-entries"], 0);

  // Two header slots, exactly one current, and the log is where it says.
  ASSERT_TRUE(j["headers"].is_array());
  ASSERT_EQ(j["headers"].size(), 2u);
  int current = 0;
  for (const json& h : j["headers"]) {
    if (!h.value("valid", false) || !h.value("current", false)) continue;
    ++current;
    EXPECT_EQ(h["log-offset"], log["offset"]);
    EXPECT_EQ(h["log-length"], log["length"]);
    EXPECT_EQ(h["log-guid"] != "00000000-0000-0000-0000-000000000000", m.dirty_log) << h;
  }
  EXPECT_EQ(current, 1) << j["headers"];

  // The per-state block counts add up to the payload block count.
  ASSERT_TRUE(j["allocation"].contains("payload")) << j["allocation"];
  uint64_t counted = 0;
  for (const auto& [state, n] : j["allocation"]["payload"].items()) counted += n.get<uint64_t>();
  EXPECT_EQ(counted, PayloadBlocks(m)) << j["allocation"];
  ExpectFileUnchanged("vhdx info");
  json bat_entries = j.contains("bat") ? j["bat"]["entries"] : json();

  r = vhdx::test::Run(fmt::format("{{ {} check --output=json {} 2>/dev/null; }}", CliPath(), Quoted(path_)));
  j = ParseJson(r.output);
  ASSERT_TRUE(j.is_object()) << "not JSON: " << r.output;
  EXPECT_EQ(j["check-errors"], 0) << r.output;
  EXPECT_EQ(j["corruptions"], 0) << r.output;
  // Leaks are not damage (exit status 3, as qemu-img check): the QEMU 1.6
  // dirty-log sample holds 4 MiB of block data no BAT entry references.
  EXPECT_EQ(r.exit_code, j["leaks"].get<uint64_t>() > 0 ? 3 : 0) << r.output;
  EXPECT_EQ(j["bat-entries-checked"], bat_entries) << r.output;
  ExpectFileUnchanged("vhdx check");
}

TEST_P(CorpusImageTest, CliMapCoversDiskAndHoldsAllData) {
  const CorpusImage& m = GetParam();
  auto image = OpenImage();
  ASSERT_TRUE(image);
  CommandResult r = vhdx::test::Run(fmt::format("{} map --output=json {}", CliPath(), Quoted(path_)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string problem;
  auto ranges = ParseMapJson(r.output, m.virtual_size, &problem);
  ASSERT_TRUE(ranges) << problem;
  ExpectFileUnchanged("vhdx map");

  // Non-data ranges read as zeros, so the data ranges hold all the content
  // that hashes to the manifest's value. Where the log is clean, the data
  // sits in the file at the offset the map gives.
  auto file = OpenPosixFile(path_, /*writable=*/false);
  ASSERT_TRUE(file.ok()) << file.status().message();
  std::vector<uint8_t> got(4 << 20), want(4 << 20);
  for (const MapRange& x : *ranges) {
    for (uint64_t done = 0; done < x.length;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(want.size(), x.length - done));
      Status st = image->Read(x.start + done, want.data(), n);
      ASSERT_TRUE(st.ok()) << st.message();
      if (!x.data) {
        ASSERT_TRUE(AllZero(want.data(), n)) << "non-data range at " << x.start << " holds data";
      } else if (!m.dirty_log) {
        st = ReadExact(**file, *x.offset + done, got.data(), n, "mapped data");
        ASSERT_TRUE(st.ok()) << st.message();
        ASSERT_TRUE(std::equal(got.begin(), got.begin() + n, want.begin()))
            << "file bytes at mapped offset " << *x.offset + done << " differ from virtual offset "
            << x.start + done;
      }
      done += n;
    }
  }
}

TEST_P(CorpusImageTest, CliConvertWritesManifestContent) {
  const CorpusImage& m = GetParam();
  auto image = OpenImage();
  ASSERT_TRUE(image);
  std::string raw = ScratchPath(SafeName(m.file) + ".raw");
  CommandResult r =
      vhdx::test::Run(fmt::format("{} convert -O raw {} {}", CliPath(), Quoted(path_), Quoted(raw)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(CompareRawFile(raw, m.virtual_size, ImageReader(*image)), "");
  std::filesystem::remove(raw);
  ExpectFileUnchanged("vhdx convert to a file");

  // Compared with the library's read (LibraryReadsManifestContent checks its
  // hash against the manifest) rather than hashed again: hashing 10 GiB of
  // zeros costs seconds, comparing them a fraction of that.
  EXPECT_EQ(CompareCommandOutput(fmt::format("{} convert -O raw {} -", CliPath(), Quoted(path_)),
                                 m.virtual_size, ImageReader(*image)),
            "");
  ExpectFileUnchanged("vhdx convert to stdout");
}

// Without a corpus, one placeholder image whose tests SetUp skips (or fails,
// in strict mode), so that the absent corpus shows in every test's report
// instead of the tests vanishing.
std::vector<CorpusImage> ImagesOrPlaceholder() {
  std::vector<CorpusImage> images = LoadCorpusManifest().images;
  if (images.empty() && !CorpusDir()) {
    CorpusImage placeholder;
    placeholder.file = "no corpus";
    images.push_back(placeholder);
  }
  return images;
}
INSTANTIATE_TEST_SUITE_P(Manifest, CorpusImageTest, ::testing::ValuesIn(ImagesOrPlaceholder()), TestName);

// The corpus image QEMU left with a dirty log: why the tests of it cannot
// run here ("" when they can), and its manifest entry.
const CorpusImage* FindDirtyLogImage() {
  const auto& images = LoadCorpusManifest().images;
  auto it = std::find_if(images.begin(), images.end(), [](const CorpusImage& i) { return i.file == kDirtyLogImage; });
  return it == images.end() ? nullptr : &*it;
}
std::string MissingDirtyLogImage() {
  if (std::string missing = MissingCorpus(); !missing.empty()) return missing;
  return FindDirtyLogImage() ? "" : std::string(kDirtyLogImage) + " is not in the corpus manifest";
}
const CorpusImage& DirtyLogImage() { return *FindDirtyLogImage(); }  // after MissingDirtyLogImage()

// The dirty-log image: we read the replayed content without touching the
// file, where QEMU refuses a read-only open and must repair a copy first.
TEST(CorpusDirtyLogTest, ReadOnlyReadMatchesQemuRepairedCopy) {
  VHDX_REQUIRE(MissingDirtyLogImage());
  VHDX_REQUIRE(MissingTools({"qemu-img"}));
  const CorpusImage& m = DirtyLogImage();
  ASSERT_TRUE(m.dirty_log);
  std::string path = DecompressCorpusImage(m.file);
  std::string before = Sha256OfFile(path);

  auto image = Image::Open(path);
  ASSERT_TRUE(image.ok()) << image.status().message();
  EXPECT_TRUE((*image)->info().log.dirty);
  EXPECT_EQ((*image)->info().log.active_entries, 1u);

  // QEMU will not open it read-only (info and convert both open read-only).
  std::string qemu_raw = ScratchPath("dirty-qemu.raw");
  for (const std::string& cmd :
       {fmt::format("qemu-img info -f vhdx {}", Quoted(path)),
        fmt::format("qemu-img convert -f vhdx -O raw {} {}", Quoted(path), Quoted(qemu_raw))}) {
    CommandResult r = vhdx::test::Run(cmd);
    EXPECT_NE(r.exit_code, 0) << cmd << " unexpectedly succeeded";
    EXPECT_NE(r.output.find("replay"), std::string::npos) << cmd << ": " << r.output;
  }
  EXPECT_EQ(Sha256OfFile(path), before);

  // Its repair of a copy, converted, reads as our read-only view of the original.
  std::string copy = ScratchPath("dirty-copy.vhdx");
  std::filesystem::copy_file(path, copy, std::filesystem::copy_options::overwrite_existing);
  CommandResult r = vhdx::test::Run(fmt::format("qemu-img check -r all -f vhdx {}", Quoted(copy)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(Sha256OfFile(copy), before) << "qemu-img check -r all did not write its replay";
  r = vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw {} {}", Quoted(copy), Quoted(qemu_raw)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(CompareRawFile(qemu_raw, m.virtual_size, ImageReader(**image)), "");
  EXPECT_EQ(Sha256OfFile(path), before);
}

// `vhdx check -r all` replays the log into the file (as `qemu-img check -r
// all` does): afterwards the image is clean, reads the same content, keeps
// its DataWriteGuid (children stay linked), and QEMU opens it read-only.
TEST(CorpusDirtyLogTest, CheckRepairReplaysTheLogIntoTheFile) {
  VHDX_REQUIRE(MissingDirtyLogImage());
  const CorpusImage& m = DirtyLogImage();
  std::string copy = ScratchPath("dirty-repaired.vhdx");
  std::filesystem::copy_file(DecompressCorpusImage(m.file), copy,
                             std::filesystem::copy_options::overwrite_existing);
  auto before = Image::Open(copy);
  ASSERT_TRUE(before.ok()) << before.status().message();
  const ImageInfo old_info = (*before)->info();
  before->reset();

  CommandResult r = vhdx::test::Run(fmt::format("{} check -r all {}", CliPath(), Quoted(copy)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Replayed 1 log entry"), std::string::npos) << r.output;

  {  // read-locked until the end of the block: the repair below writes
    auto after = Image::Open(copy);
    ASSERT_TRUE(after.ok()) << after.status().message();
    const ImageInfo& info = (*after)->info();
    EXPECT_FALSE(info.log.dirty);
    const HeaderInfo& h = info.headers[info.current_header];
    const HeaderInfo& old_h = old_info.headers[old_info.current_header];
    EXPECT_TRUE(h.log_guid.IsZero());
    EXPECT_EQ(h.data_write_guid, old_h.data_write_guid);
    EXPECT_NE(h.file_write_guid, old_h.file_write_guid);
    EXPECT_EQ(h.sequence_number, old_h.sequence_number + 4);  // two double updates
    // Both slots agree after the double update.
    EXPECT_EQ(info.headers[0].file_write_guid, info.headers[1].file_write_guid);
    EXPECT_EQ(Sha256OfImage(**after), m.content_sha256);
  }

  // A second repair has nothing to do, and QEMU now reads it without repair.
  r = vhdx::test::Run(fmt::format("{} check -r all {}", CliPath(), Quoted(copy)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("Replayed"), std::string::npos) << r.output;
  if (RunPart("qemu-img reading the repaired copy", MissingTools({"qemu-img"}))) {
    std::string qemu_raw = ScratchPath("dirty-repaired-qemu.raw");
    r = vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw {} {}", Quoted(copy), Quoted(qemu_raw)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto ours = Image::Open(copy);  // readers share: qemu-img has read it meanwhile
    ASSERT_TRUE(ours.ok()) << ours.status().message();
    EXPECT_EQ(CompareRawFile(qemu_raw, m.virtual_size, ImageReader(**ours)), "");
  }
}


// `vhdx resize` on a copy of the image QEMU left with a dirty log: the
// read-write open replays the log first, then the disk grows by 1 GiB. It
// reads as the manifest's content followed by zeros, with a clean log, and
// qemu-img checks it clean.
TEST(CorpusDirtyLogTest, ResizeReplaysTheLogFirst) {
  VHDX_REQUIRE(MissingDirtyLogImage());
  const CorpusImage& m = DirtyLogImage();
  std::string copy = ScratchPath("dirty-resized.vhdx");
  std::filesystem::copy_file(DecompressCorpusImage(m.file), copy,
                             std::filesystem::copy_options::overwrite_existing);
  CommandResult r = vhdx::test::Run(fmt::format("{} resize {} +1G", CliPath(), Quoted(copy)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  {
    auto image = Image::Open(copy);
    ASSERT_TRUE(image.ok()) << image.status().message();
    const ImageInfo& info = (*image)->info();
    EXPECT_FALSE(info.log.dirty);
    ASSERT_EQ(info.virtual_size, m.virtual_size + (1ull << 30));
    Sha256Stream sha;
    std::vector<uint8_t> buf(4 << 20);
    for (uint64_t at = 0; at < m.virtual_size; at += buf.size()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), m.virtual_size - at));
      ASSERT_TRUE((*image)->Read(at, buf.data(), n).ok());
      sha.Update(buf.data(), n);
    }
    EXPECT_EQ(sha.Final(), m.content_sha256) << "the replayed content below the old end";
    bool data_past_end = false;
    ASSERT_TRUE((*image)->Map(m.virtual_size, 1ull << 30, [&](const MapExtent& x) {
      data_past_end = data_past_end || x.data || !x.zero;
      return true;
    }).ok());
    EXPECT_FALSE(data_past_end) << "the growth must read as zeros";
  }
  if (RunPart("qemu-img check of the resized copy", MissingTools({"qemu-img"}))) {
    r = vhdx::test::Run(fmt::format("qemu-img check -f vhdx {}", Quoted(copy)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
}

// A read-write open through the library (Image::Open with read_only false)
// replays the log into the file before anything is read: it reads the
// manifest's content, the same bytes as the read-only overlay of the
// untouched original; after Close the file is clean (LogGuid zero), checks
// clean, and QEMU, which refuses the dirty original, reads the same bytes.
TEST(CorpusDirtyLogTest, ReadWriteOpenReplaysTheLogAndClosesClean) {
  VHDX_REQUIRE(MissingDirtyLogImage());
  const CorpusImage& m = DirtyLogImage();
  const std::string original = DecompressCorpusImage(m.file);
  const std::string original_sha256 = Sha256OfFile(original);
  std::string copy = ScratchPath("dirty-rw-open.vhdx");
  std::filesystem::copy_file(original, copy, std::filesystem::copy_options::overwrite_existing);

  auto overlay = Image::Open(original);
  ASSERT_TRUE(overlay.ok()) << overlay.status().message();
  ASSERT_TRUE((*overlay)->info().log.dirty);
  {
    auto rw = Image::Open(copy, {.read_only = false});
    ASSERT_TRUE(rw.ok()) << rw.status().message();
    const ImageInfo& info = (*rw)->info();
    EXPECT_EQ(info.log.replayed_entries, 1u);
    EXPECT_FALSE(info.log.dirty);
    EXPECT_TRUE(info.headers[info.current_header].log_guid.IsZero());
    EXPECT_NE(Sha256OfFile(copy), original_sha256) << "the read-write open did not write its replay";

    // One pass: the replayed file and the overlay agree, and hash to the manifest.
    Sha256Stream replayed;
    std::vector<uint8_t> got(4 << 20), want(4 << 20);
    for (uint64_t off = 0; off < m.virtual_size;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(got.size(), m.virtual_size - off));
      Status st = (*rw)->Read(off, got.data(), n);
      ASSERT_TRUE(st.ok()) << st.message();
      st = (*overlay)->Read(off, want.data(), n);
      ASSERT_TRUE(st.ok()) << st.message();
      ASSERT_TRUE(std::equal(got.begin(), got.begin() + n, want.begin()))
          << "the replayed file and the read-only overlay differ in [" << off << ", " << off + n << ")";
      replayed.Update(got.data(), n);
      off += n;
    }
    EXPECT_EQ(replayed.Final(), m.content_sha256);
    Status st = (*rw)->Close();
    ASSERT_TRUE(st.ok()) << st.message();
  }
  EXPECT_EQ(Sha256OfFile(original), original_sha256) << "the read-only overlay modified the original";

  auto closed = Image::Open(copy);
  ASSERT_TRUE(closed.ok()) << closed.status().message();
  const ImageInfo& info = (*closed)->info();
  EXPECT_FALSE(info.log.dirty);
  EXPECT_EQ(info.log.active_entries, 0u);
  EXPECT_TRUE(info.headers[info.current_header].log_guid.IsZero());
  auto report = Check(copy);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->errors(), 0u);
  for (const CheckFinding& f : report->findings) ADD_FAILURE() << f.structure << ": " << f.message;

  VHDX_REQUIRE(MissingTools({"qemu-img"}));
  std::string qemu_raw = ScratchPath("dirty-rw-open-qemu.raw");
  CommandResult r =
      vhdx::test::Run(fmt::format("qemu-img convert -f vhdx -O raw {} {}", Quoted(copy), Quoted(qemu_raw)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(CompareRawFile(qemu_raw, m.virtual_size, ImageReader(**overlay)), "");
  std::filesystem::remove(qemu_raw);
  std::filesystem::remove(copy);
}

}  // namespace
}  // namespace vhdx::test
