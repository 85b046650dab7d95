// vhdx create: a new dynamic or fixed image, laid out as Hyper-V does.
#include <fmt/format.h>

#include "common.h"
#include "vhdx/create.h"

namespace vhdx::cli {

void RegisterCreate(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand("create", "Create a new dynamic or fixed image (never overwrites a file)");
  static std::string path, size_text, type = "dynamic", block_size_text = "32M";
  static uint32_t logical = 512, physical = 4096;
  sub->add_option("--type", type, "dynamic (grows as written) or fixed (fully allocated)")
      ->check(CLI::IsMember({"dynamic", "fixed"}))
      ->default_val("dynamic");
  sub->add_option("--block-size", block_size_text, "Block size, a power of two from 1M to 256M")
      ->default_val("32M");
  sub->add_option("--logical-sector-size", logical, "Logical sector size")
      ->check(CLI::IsMember({512, 4096}))
      ->default_val(512);
  sub->add_option("--physical-sector-size", physical, "Physical sector size")
      ->check(CLI::IsMember({512, 4096}))
      ->default_val(4096);
  sub->add_option("IMAGE", path, "Image to create")->required();
  sub->add_option("SIZE", size_text, "Virtual size, with K/M/G/T suffixes (up to 64T)")->required();
  sub->callback([&result] {
    CreateOptions o;
    o.type = type == "fixed" ? DiskType::kFixed : DiskType::kDynamic;
    auto size = ParseSize(size_text);
    if (!size) {
      result = Fail(path, fmt::format("invalid size '{}'", size_text));
      return;
    }
    auto block = ParseSize(block_size_text);
    if (!block || *block > UINT32_MAX) {
      result = Fail(path, fmt::format("invalid block size '{}'", block_size_text));
      return;
    }
    o.virtual_size = *size;
    o.block_size = static_cast<uint32_t>(*block);
    o.logical_sector_size = logical;
    o.physical_sector_size = physical;
    Status st = CreateImage(path, o);
    if (!st.ok()) {
      result = Fail(path, st);
      return;
    }
    fmt::print("Formatting '{}', fmt=vhdx size={} type={} block_size={} logical_sector_size={} "
               "physical_sector_size={}\n",
               path, o.virtual_size, type, o.block_size, logical, physical);
    result = kExitOk;
  });
}

}  // namespace vhdx::cli
