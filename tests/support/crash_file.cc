#include "support/crash_file.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace vhdx::test {

const char* FileOpKindName(FileOp::Kind kind) {
  switch (kind) {
    case FileOp::Kind::kWrite: return "write";
    case FileOp::Kind::kFlush: return "flush";
    case FileOp::Kind::kTruncate: return "truncate";
    case FileOp::Kind::kPunchHole: return "punch";
    case FileOp::Kind::kAllocate: return "allocate";
  }
  return "?";
}

Status ApplyFileOp(File& file, const FileOp& op) {
  switch (op.kind) {
    case FileOp::Kind::kWrite: return file.WriteAt(op.offset, op.data.data(), op.data.size());
    case FileOp::Kind::kFlush: return file.Flush();
    case FileOp::Kind::kTruncate: return file.Truncate(op.offset);
    case FileOp::Kind::kPunchHole: return file.PunchHole(op.offset, op.length);
    case FileOp::Kind::kAllocate: return file.Allocate(op.offset, op.length);
  }
  return Status(Errc::kInvalidArgument, "unknown file op");
}

// --- CrashRecorder -----------------------------------------------------------

// The File an Image owns: reads from the live state, mutations through the
// recorder.
class CrashRecorder::Recording final : public File {
 public:
  explicit Recording(CrashRecorder& rec) : rec_(rec) {}

  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override {
    return rec_.live_.ReadAt(offset, buf, n);
  }
  Status WriteAt(uint64_t offset, const void* buf, size_t n) override {
    const auto* p = static_cast<const uint8_t*>(buf);
    return rec_.Apply({FileOp::Kind::kWrite, offset, n, std::vector<uint8_t>(p, p + n)});
  }
  Status Flush() override { return rec_.Apply({FileOp::Kind::kFlush, 0, 0, {}}); }
  Result<uint64_t> Size() const override { return rec_.live_.Size(); }
  Status Truncate(uint64_t size) override {
    return rec_.Apply({FileOp::Kind::kTruncate, size, 0, {}});
  }
  Status PunchHole(uint64_t offset, uint64_t length) override {
    return rec_.Apply({FileOp::Kind::kPunchHole, offset, length, {}});
  }
  Status Allocate(uint64_t offset, uint64_t length) override {
    return rec_.Apply({FileOp::Kind::kAllocate, offset, length, {}});
  }
  Result<uint64_t> AllocatedSize() const override { return rec_.live_.AllocatedSize(); }
  bool writable() const override { return true; }
  const std::string& name() const override { return rec_.live_.name(); }

 private:
  CrashRecorder& rec_;
};

CrashRecorder::CrashRecorder(const SparseMemoryFile& start)
    : start_(start, "start.vhdx", false), live_(start, "recorded.vhdx", true) {}

std::unique_ptr<File> CrashRecorder::OpenFile() { return std::make_unique<Recording>(*this); }

size_t CrashRecorder::op_count() const {
  std::lock_guard lock(mu_);
  return ops_.size();
}

Status CrashRecorder::Apply(FileOp op) {
  std::lock_guard lock(mu_);
  Status s = ApplyFileOp(live_, op);
  // A failed call changed nothing a crash could keep.
  if (s.ok()) ops_.push_back(std::move(op));
  return s;
}

// --- OverlayFile -------------------------------------------------------------

OverlayFile::OverlayFile(const File& base, std::string name) : base_(base), name_(std::move(name)) {
  auto size = base.Size();
  size_ = base_end_ = size.ok() ? *size : 0;
}

void OverlayFile::ReadBaseLocked(uint64_t offset, uint8_t* out, size_t n) const {
  size_t got = 0;
  if (offset < base_end_) {
    auto r =
        base_.ReadAt(offset, out, static_cast<size_t>(std::min<uint64_t>(n, base_end_ - offset)));
    if (r.ok()) got = *r;
  }
  std::fill(out + got, out + n, 0);
}

std::vector<uint8_t>& OverlayFile::PageLocked(uint64_t page_no) {
  auto it = pages_.find(page_no);
  if (it != pages_.end()) return it->second;
  std::vector<uint8_t> page(kPageSize);
  ReadBaseLocked(page_no * kPageSize, page.data(), kPageSize);
  return pages_.emplace(page_no, std::move(page)).first->second;
}

Result<size_t> OverlayFile::ReadAt(uint64_t offset, void* buf, size_t n) const {
  std::shared_lock lock(mu_);
  if (offset >= size_) return size_t{0};
  n = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
  auto* out = static_cast<uint8_t*>(buf);
  const uint64_t end = offset + n;
  for (uint64_t pos = offset; pos < end;) {
    auto it = pages_.lower_bound(pos / kPageSize);
    if (it != pages_.end() && it->first == pos / kPageSize) {
      const uint64_t k = std::min(end, (it->first + 1) * kPageSize) - pos;
      std::memcpy(out + (pos - offset), it->second.data() + pos % kPageSize, k);
      pos += k;
    } else {
      // A run of pages not written here: one read of the base.
      const uint64_t k = (it == pages_.end() ? end : std::min(end, it->first * kPageSize)) - pos;
      ReadBaseLocked(pos, out + (pos - offset), static_cast<size_t>(k));
      pos += k;
    }
  }
  return n;
}

Result<uint64_t> OverlayFile::NextData(uint64_t offset) const {
  std::shared_lock lock(mu_);
  uint64_t next = std::max(offset, size_);
  auto it = pages_.lower_bound(offset / kPageSize);
  if (it != pages_.end()) next = std::min(next, std::max(offset, it->first * kPageSize));
  if (offset < base_end_) {
    VHDX_ASSIGN_OR_RETURN(const uint64_t base, base_.NextData(offset));
    if (base < base_end_) next = std::min(next, base);
  }
  return next;
}

Status OverlayFile::WriteAt(uint64_t offset, const void* buf, size_t n) {
  std::unique_lock lock(mu_);
  const auto* in = static_cast<const uint8_t*>(buf);
  for (size_t done = 0; done < n;) {
    const uint64_t pos = offset + done;
    const uint64_t in_page = pos % kPageSize;
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n - done, kPageSize - in_page));
    std::memcpy(PageLocked(pos / kPageSize).data() + in_page, in + done, k);
    done += k;
  }
  size_ = std::max(size_, offset + n);
  return Status::Ok();
}

Result<uint64_t> OverlayFile::Size() const {
  std::shared_lock lock(mu_);
  return size_;
}

Status OverlayFile::Truncate(uint64_t size) {
  std::unique_lock lock(mu_);
  if (size < size_) {
    // Bytes past the new end read as zeros if the file grows again.
    if (size % kPageSize) {
      auto& page = PageLocked(size / kPageSize);
      std::fill(page.begin() + static_cast<ptrdiff_t>(size % kPageSize), page.end(), 0);
    }
    pages_.erase(pages_.lower_bound((size + kPageSize - 1) / kPageSize), pages_.end());
    base_end_ = std::min(base_end_, size);
  }
  size_ = size;
  return Status::Ok();
}

Status OverlayFile::PunchHole(uint64_t offset, uint64_t length) {
  std::unique_lock lock(mu_);
  const uint64_t end = std::min(offset + length, size_);
  for (uint64_t pos = offset; pos < end;) {
    const uint64_t in_page = pos % kPageSize;
    const uint64_t k = std::min(end - pos, kPageSize - in_page);
    auto& page = PageLocked(pos / kPageSize);
    std::fill(page.begin() + static_cast<ptrdiff_t>(in_page),
              page.begin() + static_cast<ptrdiff_t>(in_page + k), 0);
    pos += k;
  }
  return Status::Ok();
}

Status OverlayFile::Allocate(uint64_t offset, uint64_t length) {
  std::unique_lock lock(mu_);
  size_ = std::max(size_, offset + length);
  return Status::Ok();
}

// --- CrashStateBuilder -------------------------------------------------------

CrashStateBuilder::CrashStateBuilder(const CrashRecorder& recorder)
    : ops_(recorder.ops()), durable_(recorder.start(), "crashed.vhdx", true) {}

namespace {

// Applies the pieces of `op` (512-byte file sectors for a write, 64 KiB
// pieces for a punch) whose entry in `keep` is set.
Status ApplyPieces(File& file, const FileOp& op, uint64_t piece, const std::vector<bool>& keep) {
  const uint64_t end = op.offset + op.length;
  uint64_t pos = op.offset;
  for (size_t i = 0; pos < end; ++i) {
    const uint64_t next = std::min(end, (pos / piece + 1) * piece);
    if (keep[i]) {
      Status s = op.kind == FileOp::Kind::kWrite
                     ? file.WriteAt(pos, op.data.data() + (pos - op.offset), next - pos)
                     : file.PunchHole(pos, next - pos);
      if (!s.ok()) return s;
    }
    pos = next;
  }
  return Status::Ok();
}

size_t PieceCount(const FileOp& op, uint64_t piece) {
  if (op.length == 0) return 0;
  return (op.offset + op.length - 1) / piece - op.offset / piece + 1;
}

void Require(const Status& s, const char* what) {
  if (!s.ok()) throw std::runtime_error(std::string(what) + ": " + s.message());
}

}  // namespace

CrashState CrashStateBuilder::Build(size_t point, std::mt19937_64& rng, const TearPolicy& policy) {
  if (point < last_point_ || point > ops_.size())
    throw std::invalid_argument("CrashStateBuilder::Build: crash points must not decrease");
  last_point_ = point;
  // Everything up to the last flush issued before the crash is durable.
  size_t flush_end = durable_end_;
  for (size_t i = durable_end_; i < point; ++i)
    if (ops_[i].kind == FileOp::Kind::kFlush) flush_end = i + 1;
  for (; durable_end_ < flush_end; ++durable_end_)
    Require(ApplyFileOp(durable_, ops_[durable_end_]), "replaying a durable op");

  CrashState state;
  state.file = std::make_unique<OverlayFile>(durable_, "crashed.vhdx");
  state.durable_ops = durable_end_;
  state.pending_ops = point - durable_end_;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (size_t i = durable_end_; i < point; ++i) {
    const FileOp& op = ops_[i];
    if (unit(rng) >= policy.keep) continue;
    ++state.kept;
    const bool tearable = op.kind == FileOp::Kind::kWrite || op.kind == FileOp::Kind::kPunchHole;
    const uint64_t piece = op.kind == FileOp::Kind::kWrite ? 512 : 64 * 1024;
    const size_t pieces = tearable ? PieceCount(op, piece) : 0;
    if (pieces >= 2 && unit(rng) < policy.tear) {
      ++state.torn;
      std::vector<bool> keep(pieces, false);
      if (rng() % 2 == 0) {
        // Only a prefix reached the disk (the write stopped part way).
        const size_t n = 1 + rng() % (pieces - 1);
        std::fill(keep.begin(), keep.begin() + static_cast<ptrdiff_t>(n), true);
      } else {
        // Any subset of sectors (the cache wrote them back in any order).
        for (size_t k = 0; k < pieces; ++k) keep[k] = rng() % 2 == 0;
      }
      Require(ApplyPieces(*state.file, op, piece, keep), "applying a torn op");
    } else {
      Require(ApplyFileOp(*state.file, op), "applying a pending op");
    }
  }
  return state;
}

}  // namespace vhdx::test
