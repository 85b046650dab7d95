// ConvertToRaw / ConvertToRawStream on builder images: exact content, holes
// where the disk is empty, and a bounded failure on a BAT whose blocks
// share file space.
#include <fcntl.h>
#include <unistd.h>

#include "core_test_util.h"
#include "support/test_util.h"
#include "vhdx/convert.h"

namespace vhdx::test {
namespace {

std::vector<uint8_t> ReadAllOf(const File& f, uint64_t size) {
  std::vector<uint8_t> out(size);
  auto got = f.ReadAt(0, out.data(), out.size());
  EXPECT_TRUE(got.ok());
  EXPECT_EQ(*got, size);
  return out;
}

// The disk a model expects: zeros with `parts` written at their offsets.
std::vector<uint8_t> ModelDisk(uint64_t size,
                               const std::vector<std::pair<uint64_t, std::vector<uint8_t>>>& parts) {
  std::vector<uint8_t> disk(size, 0);
  for (const auto& [offset, bytes] : parts)
    for (size_t i = 0; i < bytes.size(); ++i) disk.at(offset + i) = bytes[i];
  return disk;
}

TEST(ConvertToRaw, WritesExactContentIncludingASubGranuleTail) {
  // Three 1 MiB blocks plus one 512-byte sector: the last piece ends
  // mid-4 KiB granule and must still be written.
  ImageSpec spec;
  spec.virtual_size = 3 * MiB + 512;
  ImageBuilder b(spec);
  auto head = PatternBytes(5000, 1);
  auto tail = PatternBytes(512, 2);
  b.WriteVirtual(100, head);
  b.WriteVirtual(3 * MiB, tail);
  auto image = OpenBuilt(b);
  ASSERT_NE(image, nullptr);

  SparseMemoryFile out("out.raw", true);
  ASSERT_TRUE(ConvertToRaw(*image, out).ok());
  EXPECT_EQ(ReadAllOf(out, spec.virtual_size),
            ModelDisk(spec.virtual_size, {{100, head}, {3 * MiB, tail}}));
  // Only the two written granule runs were written: blocks 1 and 2 are holes.
  auto allocated = out.AllocatedSize();
  ASSERT_TRUE(allocated.ok());
  EXPECT_LE(*allocated, 2 * 64 * KiB);
}

TEST(ConvertToRaw, StreamWritesEveryByteInOrder) {
  ImageSpec spec;
  spec.virtual_size = 5 * MiB;
  ImageBuilder b(spec);
  auto data = PatternBytes(3 * MiB, 3);
  b.WriteVirtual(MiB + 7, data);
  auto image = OpenBuilt(b);
  ASSERT_NE(image, nullptr);
  std::string path = ScratchPath("stream.raw");
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(ConvertToRawStream(*image, fd).ok());
  ::close(fd);
  EXPECT_EQ(ReadWholeFile(path), ModelDisk(spec.virtual_size, {{MiB + 7, data}}));
}

// 256 Ki blocks of 1 MiB all pointing at the same MiB of a ~6 MiB file: the
// image claims 256 GiB of data. Converting must fail fast (not read 256 GiB).
TEST(ConvertToRaw, BlocksSharingFileSpaceFailInsteadOfAmplifying) {
  ImageSpec spec;
  spec.virtual_size = 256 * GiB;
  ImageBuilder b(spec);
  uint64_t shared = b.AllocateBlock(0);
  for (uint64_t block = 1; block < b.geometry().payload_blocks; ++block)
    b.SetBlock(block, format::kPayloadFullyPresent, shared);
  auto image = OpenBuilt(b);
  ASSERT_NE(image, nullptr);

  SparseMemoryFile out("out.raw", true);
  Status st = ConvertToRaw(*image, out);
  EXPECT_EQ(st.code(), Errc::kCorrupt) << st.message();
  EXPECT_NE(st.message().find("claim more data than the file"), std::string::npos) << st.message();

  int fd = ::open("/dev/null", O_WRONLY);
  ASSERT_GE(fd, 0);
  st = ConvertToRawStream(*image, fd);
  ::close(fd);
  EXPECT_EQ(st.code(), Errc::kCorrupt) << st.message();
}

}  // namespace
}  // namespace vhdx::test
