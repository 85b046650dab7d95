// vhdx convert: VHDX to raw (sparse, or a stream on stdout); raw or VHDX to
// a new VHDX image.
#include <fmt/format.h>
#include <unistd.h>

#include "common.h"
#include "vhdx/convert.h"

namespace vhdx::cli {

void RegisterConvert(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand(
      "convert", "Convert an image: VHDX to raw (DST '-' writes to stdout), or raw or VHDX to VHDX");
  static std::string out_format = "raw", in_format, src, dst;
  static bool progress = false;
  static std::string cache = "unsafe";
  static std::string type = "dynamic", block_size_text = "32M";
  static uint32_t logical = 512, physical = 4096;
  static std::vector<std::string> parent_dirs;
  sub->add_flag("-p,--progress", progress, "Show a progress bar");
  AddParentDirOption(sub, parent_dirs);
  AddForceShareOption(sub);
  sub->add_option("-t", cache,
                  "Cache mode of the output, as qemu-img: 'unsafe' (default) leaves writeback to the "
                  "kernel; 'writeback' flushes the output to disk before exiting")
      ->check(CLI::IsMember({"unsafe", "writeback"}))
      ->default_val("unsafe");
  sub->add_option("-f", in_format,
                  "Source format: raw or vhdx. Default: vhdx for -O raw; for -O vhdx, detected (VHDX when "
                  "the file starts with 'vhdxfile', raw otherwise)")
      ->check(CLI::IsMember({"raw", "vhdx"}));
  sub->add_option("-O", out_format, "Output format: raw or vhdx")
      ->check(CLI::IsMember({"raw", "vhdx"}))
      ->default_val("raw");
  // The geometry of a VHDX output, as `vhdx create` takes it.
  CLI::Option* vhdx_only[] = {
      sub->add_option("--type", type, "-O vhdx: dynamic (only blocks holding data are allocated) or fixed")
          ->check(CLI::IsMember({"dynamic", "fixed"}))
          ->default_val("dynamic"),
      sub->add_option("--block-size", block_size_text, "-O vhdx: block size, a power of two from 1M to 256M")
          ->default_val("32M"),
      sub->add_option("--logical-sector-size", logical, "-O vhdx: logical sector size")
          ->check(CLI::IsMember({512, 4096}))
          ->default_val(512),
      sub->add_option("--physical-sector-size", physical, "-O vhdx: physical sector size")
          ->check(CLI::IsMember({512, 4096}))
          ->default_val(4096),
  };
  sub->add_option("SRC", src, "Source image")->required();
  sub->add_option("DST", dst, "Destination file; for -O raw, - writes to stdout")->required();
  sub->callback([&result, vhdx_only] {
    const bool to_vhdx = out_format == "vhdx";
    if (!to_vhdx) {
      for (CLI::Option* o : vhdx_only)
        if (o->count() > 0) {
          Fail("", fmt::format("{} applies only to -O vhdx", o->get_name()));
          result = kExitUsage;
          return;
        }
    }
    if (to_vhdx && dst == "-") {
      Fail("-", "a VHDX image cannot be written to a stream; give a file name");
      result = kExitUsage;
      return;
    }

    CreateOptions create;
    if (to_vhdx) {
      auto block = ParseSize(block_size_text);
      if (!block || *block > UINT32_MAX) {
        result = Fail(dst, fmt::format("invalid block size '{}'", block_size_text));
        return;
      }
      create.type = type == "fixed" ? DiskType::kFixed : DiskType::kDynamic;
      create.block_size = static_cast<uint32_t>(*block);
      create.logical_sector_size = logical;
      create.physical_sector_size = physical;
    }

    // Without -f, -O raw reads VHDX only (a file that is not VHDX is an
    // error, not a copy), while -O vhdx also takes raw disks, as qemu-img
    // probes them.
    SourceFormat format = in_format == "raw"    ? SourceFormat::kRaw
                          : in_format == "vhdx" ? SourceFormat::kVhdx
                          : to_vhdx             ? SourceFormat::kDetect
                                                : SourceFormat::kVhdx;
    // A differencing source is read through its chain: the output is the
    // flattened disk, standalone.
    auto source = ConvertSource::Open(src, format, ChainOpenOptions(parent_dirs));
    if (!source.ok()) {
      result = Fail(src, source.status());
      return;
    }
    if (dst != "-" && source->IsSameFileAs(dst)) {
      result = Fail(dst, "is the source file itself; not overwriting it");
      return;
    }

    Progress bar(progress);
    ConvertOptions options;
    options.progress = [&bar](uint64_t done, uint64_t total) { bar.Update(done, total); };
    options.sync = cache == "writeback";
    if (to_vhdx) {
      Status st = ConvertToVhdx(*source, dst, create, options);
      result = st.ok() ? kExitOk : Fail(src, st);
      return;
    }
    if (dst == "-") {
      if (isatty(STDOUT_FILENO)) {
        result = Fail("-", "refusing to write a disk image to a terminal");
        return;
      }
      Status st = ConvertToRawStream(*source, STDOUT_FILENO, options);
      result = st.ok() ? kExitOk : Fail(src, st);
      return;
    }
    auto out = CreatePosixFile(dst);
    if (!out.ok()) {
      result = Fail(dst, out.status());
      return;
    }
    Status st = ConvertToRaw(*source, **out, options);
    if (st.ok() && cache == "writeback") st = (*out)->Flush();
    if (!st.ok()) {
      result = Fail(src, st);
      return;
    }
    result = kExitOk;
  });
}

}  // namespace vhdx::cli
