// vhdx create: a new dynamic or fixed image, or a differencing child of an
// existing image, laid out as Hyper-V does.
#include <fmt/format.h>

#include "common.h"
#include "vhdx/create.h"

namespace vhdx::cli {

void RegisterCreate(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand(
      "create", "Create a new dynamic, fixed or differencing image (never overwrites a file)");
  static std::string path, size_text, type = "dynamic", block_size_text, parent, parent_format, format;
  static std::vector<std::string> parent_dirs;
  static uint32_t logical = 512, physical = 4096;
  auto* type_option = sub->add_option("--type", type, "dynamic (grows as written) or fixed (fully allocated)")
                          ->check(CLI::IsMember({"dynamic", "fixed"}))
                          ->default_val("dynamic");
  auto* block_option = sub->add_option(
      "--block-size", block_size_text,
      "Block size, a power of two from 1M to 256M (default 32M; 2M for a child, as Hyper-V's checkpoints)");
  auto* logical_option = sub->add_option("--logical-sector-size", logical,
                                         "Logical sector size (default 512; a child's is its parent's)")
                             ->check(CLI::IsMember({512, 4096}))
                             ->default_val(512);
  auto* physical_option = sub->add_option("--physical-sector-size", physical,
                                          "Physical sector size (default 4096; a child's is its parent's)")
                              ->check(CLI::IsMember({512, 4096}))
                              ->default_val(4096);
  auto* parent_option = sub->add_option(
      "-b,--parent", parent,
      "Create a differencing image (a child) of PARENT, a path as given (relative to the current "
      "directory); SIZE then defaults to the parent's");
  parent_option->type_name("PARENT");
  sub->add_option("-F", parent_format, "Format of PARENT: only vhdx (accepted for qemu-img command lines)")
      ->check(CLI::IsMember({"vhdx"}))
      ->needs(parent_option);
  sub->add_option("-f", format, "Format of IMAGE: only vhdx (accepted for qemu-img command lines)")
      ->check(CLI::IsMember({"vhdx"}));
  type_option->excludes(parent_option);
  AddParentDirOption(sub, parent_dirs);
  sub->add_option("IMAGE", path, "Image to create")->required();
  sub->add_option("SIZE", size_text,
                  "Virtual size, with K/M/G/T suffixes (up to 64T); optional with --parent");
  sub->callback([&result, block_option, logical_option, physical_option] {
    const bool child = !parent.empty();
    if (!child && size_text.empty()) {
      Fail("", "create: SIZE is required (unless --parent is given)");
      result = kExitUsage;
      return;
    }
    CreateOptions o;
    o.type = type == "fixed" ? DiskType::kFixed : DiskType::kDynamic;
    if (!size_text.empty()) {
      auto size = ParseSize(size_text);
      if (!size) {
        result = Fail(path, fmt::format("invalid size '{}'", size_text));
        return;
      }
      o.virtual_size = *size;
    }
    if (block_option->count() == 0) block_size_text = child ? "2M" : "32M";
    auto block = ParseSize(block_size_text);
    if (!block || *block > UINT32_MAX) {
      result = Fail(path, fmt::format("invalid block size '{}'", block_size_text));
      return;
    }
    o.block_size = static_cast<uint32_t>(*block);
    o.logical_sector_size = logical;
    o.physical_sector_size = physical;
    if (child) {
      // The child takes the parent's size and sector sizes unless given
      // (given ones must match; the library checks). Only the parent file
      // itself is read here; the library opens its whole chain.
      auto opened = Image::Open(parent, FileOnlyOpenOptions());
      if (!opened.ok()) {
        result = Fail(parent, opened.status());
        return;
      }
      const ImageInfo& p = (*opened)->info();
      if (logical_option->count() == 0) o.logical_sector_size = p.logical_sector_size;
      if (physical_option->count() == 0) o.physical_sector_size = p.physical_sector_size;
      o.parent_path = parent;
      o.parent_dirs = parent_dirs;
    }
    Status st = CreateImage(path, o);
    if (!st.ok()) {
      result = Fail(path, st);
      return;
    }
    if (child) {
      // Report what was made: the size is the parent's unless SIZE was given.
      uint64_t size = o.virtual_size;
      auto made = Image::Open(path, FileOnlyOpenOptions());
      if (made.ok()) size = (*made)->virtual_size();
      fmt::print("Formatting '{}', fmt=vhdx size={} backing_file={} backing_fmt=vhdx type=differencing "
                 "block_size={} logical_sector_size={} physical_sector_size={}\n",
                 path, size, parent, o.block_size, o.logical_sector_size, o.physical_sector_size);
    } else {
      fmt::print("Formatting '{}', fmt=vhdx size={} type={} block_size={} logical_sector_size={} "
                 "physical_sector_size={}\n",
                 path, o.virtual_size, type, o.block_size, logical, physical);
    }
    result = kExitOk;
  });
}

}  // namespace vhdx::cli
