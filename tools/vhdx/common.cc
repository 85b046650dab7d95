#include "common.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>

namespace vhdx::cli {

int Fail(const std::string& file, const std::string& message) {
  std::string line = file.empty() ? message : file + ": " + message;
  for (char& c : line)
    if (c == '\n') c = ' ';
  fmt::print(stderr, "vhdx: {}\n", line);
  return kExitError;
}

int Fail(const std::string& file, const Status& status) { return Fail(file, status.message()); }

std::unique_ptr<Image> OpenImageOrFail(const std::string& path, int& result, const OpenOptions& options) {
  auto image = Image::Open(path, options);
  if (!image.ok()) {
    result = Fail(path, image.status());
    return nullptr;
  }
  return std::move(image).value();
}

void AddParentDirOption(CLI::App* sub, std::vector<std::string>& dirs) {
  sub->add_option("--parent-dir", dirs,
                  "Also look for the parents of a differencing image in DIR (by file name, at every "
                  "level of the chain, before the locator's paths); repeatable")
      ->type_name("DIR")
      ->expected(1)
      ->allow_extra_args(false)  // one DIR per --parent-dir: IMAGE may follow
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

namespace {
bool force_share = false;  // one subcommand runs per process
}  // namespace

void AddForceShareOption(CLI::App* sub) {
  sub->add_flag("-U,--force-share", force_share,
                "Open read-only images without locking them, even while another process writes them "
                "(as qemu-img -U): what is read may be half-written");
}

bool ForceShare() { return force_share; }

OpenOptions ChainOpenOptions(const std::vector<std::string>& parent_dirs, bool read_only) {
  OpenOptions options;
  options.read_only = read_only;
  options.parent_dirs = parent_dirs;
  options.force_share = force_share;
  return options;
}

OpenOptions FileOnlyOpenOptions(bool read_only) {
  OpenOptions options;
  options.read_only = read_only;
  options.skip_parent = true;
  options.force_share = force_share;
  return options;
}

const Image* ImageAtDepth(const Image& top, int depth) {
  const Image* image = &top;
  for (int d = 0; d < depth && image; ++d) image = image->parent();
  return image;
}

std::optional<uint64_t> ParseSize(const std::string& text) {
  if (text.empty()) return std::nullopt;
  size_t used = 0;
  double value;
  try {
    value = std::stod(text, &used);
  } catch (...) {
    return std::nullopt;
  }
  if (value < 0 || std::isnan(value)) return std::nullopt;
  std::string suffix = text.substr(used);
  double mult = 1;
  if (!suffix.empty()) {
    char s = static_cast<char>(std::toupper(static_cast<unsigned char>(suffix[0])));
    size_t shift = std::string("BKMGTPE").find(s);
    if (shift == std::string::npos) return std::nullopt;
    mult = std::ldexp(1.0, 10 * static_cast<int>(shift));
    std::string rest = suffix.substr(1);
    if (!(rest.empty() || rest == "B" || rest == "iB" || rest == "b" || rest == "ib")) return std::nullopt;
  }
  double bytes = value * mult;
  if (bytes >= 18446744073709551616.0 || bytes != std::floor(bytes)) return std::nullopt;
  return static_cast<uint64_t>(bytes);
}

std::string HumanSize(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", bytes);
  std::string s = fmt::format("{:.3g}", v);
  return fmt::format("{} {}", s, units[u]);
}

Progress::~Progress() {
  if (enabled_ && last_ >= 0) std::fputc('\n', stderr);
}

void Progress::Update(uint64_t done, uint64_t total) {
  if (!enabled_) return;
  int pct = total ? static_cast<int>(10000.0 * static_cast<double>(done) / static_cast<double>(total)) : 10000;
  if (pct == last_) return;
  last_ = pct;
  fmt::print(stderr, "\r    ({:.2f}/100%)", pct / 100.0);
  std::fflush(stderr);
}

void AddOutputOption(CLI::App* sub, std::string& output) {
  sub->add_option("--output", output, "Output format")
      ->check(CLI::IsMember({"human", "json"}))
      ->default_val("human");
}

}  // namespace vhdx::cli
