// vhdx map: the allocation map, in qemu-img map's formats.
#include <fmt/format.h>

#include "common.h"

namespace vhdx::cli {

void RegisterMap(CLI::App& app, int& result) {
  auto* sub = app.add_subcommand("map", "Show which ranges of the disk hold data, zeros or nothing");
  static std::string output, path;
  static std::vector<std::string> parent_dirs;
  AddOutputOption(sub, output);
  AddParentDirOption(sub, parent_dirs);
  AddForceShareOption(sub);
  sub->add_option("IMAGE", path, "VHDX image")->required();
  sub->callback([&result] {
    // A differencing image's map is the chain's: each range tells the
    // depth of the image that defines it.
    auto image = OpenImageOrFail(path, result, ChainOpenOptions(parent_dirs));
    if (!image) return;
    const Image& img = *image;
    bool json = output == "json";
    bool first = true;
    if (!json) fmt::print("{:<16}{:<16}{:<16}{}\n", "Offset", "Length", "Mapped to", "File");
    std::string out;
    Status st = img.Map(0, img.virtual_size(), [&](const MapExtent& x) {
      if (json) {
        out += fmt::format("{}{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, "
                           "\"zero\": {}, \"data\": {}",
                           first ? "[" : ",\n", x.start, x.length, x.depth, x.present, x.zero, x.data);
        if (x.offset) out += fmt::format(", \"offset\": {}", *x.offset);
        out += "}";
      } else if (x.data) {
        // qemu-img map: the File column names the image the data is in.
        const Image* owner = ImageAtDepth(img, x.depth);
        out += fmt::format("{:<#16x}{:<#16x}{:<#16x}{}\n", x.start, x.length, *x.offset,
                           owner ? owner->info().filename : img.info().filename);
      }
      first = false;
      if (out.size() > (1 << 20)) {
        fmt::print("{}", out);
        out.clear();
      }
      return true;
    });
    if (!st.ok()) {
      std::fflush(stdout);
      result = Fail(path, st);
      return;
    }
    if (json) out += first ? "[]\n" : "]\n";
    fmt::print("{}", out);
    result = kExitOk;
  });
}

}  // namespace vhdx::cli
