#include "io/fault_file.h"

#include <gtest/gtest.h>

#include <vector>

namespace vhdx {
namespace {

using Bytes = std::vector<uint8_t>;
using Op = FaultInjectingFile::Op;

FaultInjectingFile Wrap(size_t size, bool writable = true) {
  Bytes data(size);
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<uint8_t>(i);
  return FaultInjectingFile(NewMemoryFile("base", std::move(data), writable));
}

Status ReadOne(const FaultInjectingFile& f, uint64_t offset) {
  uint8_t b;
  auto got = f.ReadAt(offset, &b, 1);
  if (!got.ok()) return got.status();
  EXPECT_EQ(*got, 1u);
  EXPECT_EQ(b, static_cast<uint8_t>(offset));
  return Status::Ok();
}

void ExpectOps(const std::vector<Op>& got, const std::vector<Op>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].kind, want[i].kind) << "op " << i;
    EXPECT_EQ(got[i].offset, want[i].offset) << "op " << i;
    EXPECT_EQ(got[i].length, want[i].length) << "op " << i;
  }
}

TEST(FaultInjectingFile, PassesEverythingThroughByDefault) {
  auto f = Wrap(256);
  EXPECT_EQ(f.name(), "base");
  EXPECT_TRUE(f.writable());
  EXPECT_EQ(*f.Size(), 256u);
  for (uint64_t i = 0; i < 256; ++i) ASSERT_TRUE(ReadOne(f, i).ok());
  EXPECT_EQ(f.reads(), 256u);
  EXPECT_FALSE(Wrap(1, /*writable=*/false).writable());
}

TEST(FaultInjectingFile, FailsExactlyTheNthRead) {
  auto f = Wrap(256);
  f.FailReadAfter(2);
  EXPECT_TRUE(ReadOne(f, 10).ok());
  EXPECT_TRUE(ReadOne(f, 11).ok());
  Status st = ReadOne(f, 0x42);
  EXPECT_EQ(st.code(), Errc::kIoError);
  EXPECT_EQ(st.message(), "injected read failure at offset 0x42");
  EXPECT_TRUE(ReadOne(f, 13).ok());  // one failure, then reads work again
  EXPECT_TRUE(ReadOne(f, 14).ok());
  EXPECT_EQ(f.reads(), 5u);
}

TEST(FaultInjectingFile, FailReadAfterZeroFailsTheNextRead) {
  auto f = Wrap(16);
  EXPECT_TRUE(ReadOne(f, 1).ok());
  f.FailReadAfter(0);
  EXPECT_EQ(ReadOne(f, 2).code(), Errc::kIoError);
  f.FailReadAfter(0);
  f.FailReadAfter(-1);  // disarmed again
  EXPECT_TRUE(ReadOne(f, 3).ok());
}

TEST(FaultInjectingFile, FailsExactlyTheNthWriteWithTheChosenError) {
  for (Errc code : {Errc::kIoError, Errc::kNoSpace}) {
    auto f = Wrap(16);
    f.FailWriteAfter(1, code);
    const uint8_t a = 0xA1, b = 0xB2, c = 0xC3;
    EXPECT_TRUE(f.WriteAt(0, &a, 1).ok());
    Status st = f.WriteAt(1, &b, 1);
    EXPECT_EQ(st.code(), code);
    EXPECT_EQ(st.message(), "injected write failure at offset 0x1");
    EXPECT_TRUE(f.WriteAt(2, &c, 1).ok());
    uint8_t back[3];
    ASSERT_EQ(*f.ReadAt(0, back, 3), 3u);
    EXPECT_EQ(back[0], 0xA1);
    EXPECT_EQ(back[1], 0x01);  // the failed write never reached the base file
    EXPECT_EQ(back[2], 0xC3);
    ExpectOps(f.ops(), {{Op::kWrite, 0, 1}, {Op::kWrite, 2, 1}});
  }
}

TEST(FaultInjectingFile, RecordsMutationsInOrder) {
  auto f = Wrap(1 << 16);
  Bytes buf(4096, 0x5A);
  ASSERT_TRUE(f.WriteAt(0x3000, buf.data(), 4096).ok());
  ASSERT_TRUE(f.Flush().ok());
  ASSERT_TRUE(f.PunchHole(0x1000, 0x2000).ok());
  ASSERT_TRUE(f.Truncate(0x8000).ok());
  ASSERT_TRUE(f.WriteAt(0x10, buf.data(), 8).ok());
  ASSERT_TRUE(f.Flush().ok());
  uint8_t b;
  ASSERT_TRUE(f.ReadAt(0, &b, 1).ok());  // reads are counted, not recorded
  ExpectOps(f.ops(), {{Op::kWrite, 0x3000, 4096},
                      {Op::kFlush, 0, 0},
                      {Op::kPunch, 0x1000, 0x2000},
                      {Op::kTruncate, 0x8000, 0},
                      {Op::kWrite, 0x10, 8},
                      {Op::kFlush, 0, 0}});
  EXPECT_EQ(*f.Size(), 0x8000u);
  ASSERT_TRUE(f.ReadAt(0x1800, &b, 1).ok());
  EXPECT_EQ(b, 0);  // punched
}

TEST(FaultInjectingFile, OperationsTheBaseRefusesAreNotRecorded) {
  auto f = Wrap(16, /*writable=*/false);
  const uint8_t a = 1;
  EXPECT_EQ(f.WriteAt(0, &a, 1).code(), Errc::kReadOnly);
  EXPECT_EQ(f.Truncate(0).code(), Errc::kReadOnly);
  EXPECT_EQ(f.PunchHole(0, 4).code(), Errc::kReadOnly);
  EXPECT_TRUE(f.ops().empty());
}

}  // namespace
}  // namespace vhdx
