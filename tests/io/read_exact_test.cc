#include <gtest/gtest.h>

#include <vector>

#include "io/fault_file.h"
#include "vhdx/file.h"

namespace vhdx {
namespace {

std::unique_ptr<File> Counting(size_t size) {
  std::vector<uint8_t> data(size);
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<uint8_t>(i * 3);
  return NewMemoryFile("image.vhdx", std::move(data), /*writable=*/false);
}

TEST(ReadExact, ReadsTheWholeRange) {
  auto f = Counting(100);
  uint8_t buf[20];
  ASSERT_TRUE(ReadExact(*f, 80, buf, sizeof buf, "BAT").ok());
  for (size_t i = 0; i < sizeof buf; ++i) EXPECT_EQ(buf[i], static_cast<uint8_t>((80 + i) * 3));
  EXPECT_TRUE(ReadExact(*f, 100, buf, 0, "BAT").ok());  // empty range at the end
}

TEST(ReadExact, ShortReadIsCorruptAndNamesTheStructureAndOffset) {
  auto f = Counting(100);
  uint8_t buf[20];
  Status st = ReadExact(*f, 90, buf, sizeof buf, "metadata table");
  EXPECT_EQ(st.code(), Errc::kCorrupt);
  EXPECT_EQ(st.message(), "metadata table at offset 0x5a (+0x14) extends past the end of the file");
  st = ReadExact(*f, 1ull << 40, buf, sizeof buf, "BAT");
  EXPECT_EQ(st.code(), Errc::kCorrupt);
  EXPECT_NE(st.message().find("BAT at offset 0x10000000000"), std::string::npos) << st.message();
}

TEST(ReadExact, PassesReadErrorsThrough) {
  FaultInjectingFile f(Counting(100));
  f.FailReadAfter(0);
  uint8_t buf[4];
  Status st = ReadExact(f, 8, buf, sizeof buf, "log");
  EXPECT_EQ(st.code(), Errc::kIoError);
  EXPECT_EQ(st.message(), "injected read failure at offset 0x8");
}

}  // namespace
}  // namespace vhdx
