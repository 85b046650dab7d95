// vhdx convert: VHDX to raw (sparse), or to stdout.
#include <fmt/format.h>
#include <unistd.h>

#include "common.h"
#include "vhdx/convert.h"

namespace vhdx::cli {

void RegisterConvert(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand("convert", "Convert an image to raw (DST '-' writes to stdout)");
  static std::string format = "raw", src, dst;
  static bool progress = false;
  static std::string cache = "unsafe";
  sub->add_flag("-p,--progress", progress, "Show a progress bar");
  sub->add_option("-t", cache,
                  "Cache mode of the output, as qemu-img: 'unsafe' (default) leaves writeback to the "
                  "kernel; 'writeback' flushes the output to disk before exiting")
      ->check(CLI::IsMember({"unsafe", "writeback"}))
      ->default_val("unsafe");
  sub->add_option("-O", format, "Output format (raw)")->default_val("raw");
  sub->add_option("SRC", src, "Source VHDX image")->required();
  sub->add_option("DST", dst, "Destination file, or - for stdout")->required();
  sub->callback([&result] {
    if (format != "raw") {
      result = Fail(dst, fmt::format("output format '{}' is not supported (supported: raw)", format));
      return;
    }
    auto image = OpenImageOrFail(src, result);
    if (!image) return;
    Progress bar(progress);
    ConvertOptions options;
    options.progress = [&bar](uint64_t done, uint64_t total) { bar.Update(done, total); };
    if (dst == "-") {
      if (isatty(STDOUT_FILENO)) {
        result = Fail("-", "refusing to write a disk image to a terminal");
        return;
      }
      Status st = ConvertToRawStream(*image, STDOUT_FILENO, options);
      result = st.ok() ? kExitOk : Fail(src, st);
      return;
    }
    auto out = CreatePosixFile(dst);
    if (!out.ok()) {
      result = Fail(dst, out.status());
      return;
    }
    Status st = ConvertToRaw(*image, **out, options);
    if (st.ok() && cache == "writeback") st = (*out)->Flush();
    if (!st.ok()) {
      result = Fail(src, st);
      return;
    }
    result = kExitOk;
  });
}

}  // namespace vhdx::cli
