#include "io/fault_file.h"

#include <fmt/format.h>

namespace vhdx {

Result<size_t> FaultInjectingFile::ReadAt(uint64_t offset, void* buf, size_t n) const {
  ++reads_;
  if (reads_until_failure_.load() >= 0 && reads_until_failure_.fetch_sub(1) == 0)
    return Status(Errc::kIoError, fmt::format("injected read failure at offset {:#x}", offset));
  return base_->ReadAt(offset, buf, n);
}

Status FaultInjectingFile::WriteAt(uint64_t offset, const void* buf, size_t n) {
  if (writes_until_failure_.load() >= 0 && writes_until_failure_.fetch_sub(1) == 0)
    return Status(write_error_, fmt::format("injected write failure at offset {:#x}", offset));
  VHDX_RETURN_IF_ERROR(base_->WriteAt(offset, buf, n));
  Record({Op::kWrite, offset, n});
  return Status::Ok();
}

Status FaultInjectingFile::Flush() {
  VHDX_RETURN_IF_ERROR(base_->Flush());
  Record({Op::kFlush, 0, 0});
  return Status::Ok();
}

Status FaultInjectingFile::Truncate(uint64_t size) {
  VHDX_RETURN_IF_ERROR(base_->Truncate(size));
  Record({Op::kTruncate, size, 0});
  return Status::Ok();
}

Status FaultInjectingFile::PunchHole(uint64_t offset, uint64_t length) {
  VHDX_RETURN_IF_ERROR(base_->PunchHole(offset, length));
  Record({Op::kPunch, offset, length});
  return Status::Ok();
}

}  // namespace vhdx
