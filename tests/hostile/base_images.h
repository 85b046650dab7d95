// The undamaged images the hostile tests start from, built once per test
// process: fresh QEMU images (several block sizes, dynamic and fixed), one
// with a log that must be replayed, and real images from the corpus.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "hostile/hostile_image.h"

namespace vhdx::hostile {

// Names accepted by GetBase: "qemu-dynamic-1M", "qemu-dynamic-8M",
// "qemu-fixed-2M", "qemu-dirty-log" (built with qemu-img/qemu-io),
// "windows-fixed", "qemu-corpus-dirty-log" (corpus).
// Throws when a peer tool fails.
const BaseImage& GetBase(const std::string& name);
// Why `name` cannot be built here ("" when it can): qemu-img missing, or no corpus.
std::string BaseUnavailable(const std::string& name);

// gtest name of a test parameterised by base image name ("qemu-dynamic-1m" -> "qemudynamic1m").
inline std::string BaseImageTestName(const testing::TestParamInfo<std::string>& base) {
  std::string name = base.param;
  std::erase(name, '-');
  return name;
}

}  // namespace vhdx::hostile
