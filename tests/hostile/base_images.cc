#include "hostile/base_images.h"

#include <map>
#include <memory>
#include <stdexcept>

#include "support/test_util.h"

namespace vhdx::hostile {

namespace {

bool IsCorpusBase(const std::string& name) {
  return name.starts_with("windows-") || name == "qemu-corpus-dirty-log";
}

BaseImage Build(const std::string& name) {
  // Patterns and offsets are chosen so that data crosses block boundaries
  // and leaves unwritten blocks between written ones.
  if (name == "qemu-dynamic-1M")
    return MakeQemuImage(name, "block_size=1M", "16M", {"-P 0xa5 0 3M", "-P 0x3c 9M 1536k"});
  if (name == "qemu-dynamic-8M")
    return MakeQemuImage(name, "block_size=8M,block_state_zero=off", "40M",
                         {"-P 0x5a 4M 6M", "-P 0xc3 33M 1M"});
  if (name == "qemu-fixed-2M")
    return MakeQemuImage(name, "subformat=fixed,block_size=2M,block_state_zero=off", "12M",
                         {"-P 0x11 1M 2M", "-P 0x77 7M 4k"});
  if (name == "qemu-dirty-log") return MakeDirtyLogImage(name, GetBase("qemu-dynamic-1M"));
  if (name == "windows-fixed") return LoadCorpusImage(name, "fixed.vhdx.gz");
  if (name == "qemu-corpus-dirty-log")
    return LoadCorpusImage(name, "iotest-dirtylog-10G-4M.vhdx.bz2");
  throw std::runtime_error("unknown base image " + name);
}

}  // namespace

std::string BaseUnavailable(const std::string& name) {
  if (IsCorpusBase(name)) return test::MissingCorpus();
  return test::MissingTools({"qemu-img", "qemu-io"});  // they build the other bases
}

const BaseImage& GetBase(const std::string& name) {
  static std::map<std::string, std::unique_ptr<BaseImage>> built;
  auto& slot = built[name];
  if (!slot) slot = std::make_unique<BaseImage>(Build(name));
  return *slot;
}

}  // namespace vhdx::hostile
