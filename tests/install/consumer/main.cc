// A program outside this tree, built against an installed libvhdx only (its
// headers from <prefix>/include, the library from <prefix>/lib), the way a
// user builds one: tests/install builds it with CMake (find_package) and
// with pkg-config, shared and static, and checks what it writes.
//
//   vhdx_consumer IMAGE RAW   writes the virtual disk of IMAGE (opened
//                             read-only) to the file RAW and prints
//                             "virtual_size N" and "version V"
//
// The image is opened through a File this program defines, so the library
// calls back into a user's subclass of an exported interface (vtables and
// typeinfo across the library boundary), not only the other way round.
#include <vhdx/file.h>
#include <vhdx/image.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

// Forwards every call to a file the library opened.
class ForwardingFile final : public vhdx::File {
 public:
  explicit ForwardingFile(std::unique_ptr<vhdx::File> inner) : inner_(std::move(inner)) {}
  vhdx::Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const override {
    ++reads;
    return inner_->ReadAt(offset, buf, n);
  }
  vhdx::Status WriteAt(uint64_t offset, const void* buf, size_t n) override { return inner_->WriteAt(offset, buf, n); }
  vhdx::Status Flush() override { return inner_->Flush(); }
  vhdx::Result<uint64_t> Size() const override { return inner_->Size(); }
  vhdx::Status Truncate(uint64_t size) override { return inner_->Truncate(size); }
  vhdx::Status PunchHole(uint64_t offset, uint64_t length) override { return inner_->PunchHole(offset, length); }
  vhdx::Status Allocate(uint64_t offset, uint64_t length) override { return inner_->Allocate(offset, length); }
  bool writable() const override { return inner_->writable(); }
  const std::string& name() const override { return inner_->name(); }

  mutable uint64_t reads = 0;

 private:
  std::unique_ptr<vhdx::File> inner_;
};

int Fail(const std::string& what, const vhdx::Status& status) {
  std::fprintf(stderr, "vhdx_consumer: %s: %s (%s)\n", what.c_str(), status.message().c_str(),
               vhdx::ErrcName(status.code()));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: vhdx_consumer IMAGE RAW\n");
    return 2;
  }
  auto file = vhdx::OpenPosixFile(argv[1], /*writable=*/false);
  if (!file.ok()) return Fail(argv[1], file.status());
  auto forwarding = std::make_unique<ForwardingFile>(std::move(file).value());
  const ForwardingFile* counted = forwarding.get();
  vhdx::OpenOptions options;
  options.read_only = true;
  auto image = vhdx::Image::Open(std::move(forwarding), options);
  if (!image.ok()) return Fail(argv[1], image.status());

  std::FILE* out = std::fopen(argv[2], "wb");
  if (out == nullptr) {
    std::perror(argv[2]);
    return 1;
  }
  const uint64_t size = (*image)->virtual_size();
  std::vector<char> buf(1 << 20);
  for (uint64_t offset = 0; offset < size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - offset));
    vhdx::Status status = (*image)->Read(offset, buf.data(), n);
    if (!status.ok()) return Fail("read", status);
    if (std::fwrite(buf.data(), 1, n, out) != n) {
      std::perror(argv[2]);
      return 1;
    }
    offset += n;
  }
  if (std::fclose(out) != 0) {
    std::perror(argv[2]);
    return 1;
  }
  if (counted->reads == 0) {
    std::fprintf(stderr, "vhdx_consumer: the library never read through our File\n");
    return 1;
  }
  std::printf("virtual_size %llu\nversion %s\n", static_cast<unsigned long long>(size), vhdx::Version());
  return 0;
}
