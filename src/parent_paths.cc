// Parent locator paths (digest §4.7): Windows path forms mapped to POSIX
// candidates, and the locator a new child gets. See parent_paths.h for the
// volume_path scheme.
#include "parent_paths.h"

#include <fmt/format.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <optional>
#include <string_view>

#include "format/constants.h"

namespace vhdx {
namespace {

// Path components split on '/' and, for Windows strings, also on '\'
// (empty ones dropped). A POSIX file name may contain '\'.
std::vector<std::string> SplitPath(std::string_view path, bool windows) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : path) {
    if (c == '/' || (windows && c == '\\')) {
      if (!cur.empty()) parts.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) parts.push_back(std::move(cur));
  return parts;
}

std::string Join(const std::vector<std::string>& parts, size_t begin, size_t end, char sep) {
  std::string out;
  for (size_t i = begin; i < end; ++i) {
    if (i > begin) out += sep;
    out += parts[i];
  }
  return out;
}

bool IsSymlink(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

// Removes empty and "." components and folds "name/.." pairs. A pair is
// folded only when `name` is not a symbolic link: there the kernel's ".."
// leads somewhere else, so the rest is kept for the kernel to resolve.
std::string Normalize(const std::string& path) {
  const bool absolute = !path.empty() && path[0] == '/';
  std::vector<std::string> out;
  bool folding = true;  // false once a symlink stopped the folding
  for (const auto& part : SplitPath(path, false)) {
    if (part == ".") continue;
    if (part == ".." && folding) {
      if (out.empty()) {
        if (absolute) continue;  // "/.." is "/"
      } else if (out.back() != "..") {
        std::string prefix = Join(out, 0, out.size(), '/');
        if (absolute) prefix.insert(prefix.begin(), '/');
        if (!IsSymlink(prefix)) {
          out.pop_back();
          continue;
        }
        folding = false;
      }
    }
    out.push_back(part);
  }
  std::string joined = Join(out, 0, out.size(), '/');
  if (absolute) joined.insert(joined.begin(), '/');
  return joined.empty() ? std::string(".") : joined;
}

// Windows strings become POSIX ones before Normalize (which splits on '/' only).
std::string BackslashesToSlashes(std::string s) {
  std::replace(s.begin(), s.end(), '\\', '/');
  return s;
}

std::string DirName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string JoinPath(const std::string& dir, const std::string& rest) {
  if (dir.empty() || dir == ".") return rest;
  if (dir.back() == '/') return dir + rest;
  return dir + "/" + rest;
}

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) !=
        std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

// The absolute form of directory `dir`: resolved by realpath when it
// exists, otherwise made absolute lexically against the working directory.
std::string AbsoluteDir(const std::string& dir) {
  char resolved[PATH_MAX];
  if (::realpath(dir.c_str(), resolved)) return resolved;
  if (!dir.empty() && dir[0] == '/') return Normalize(dir);
  char cwd[PATH_MAX];
  if (!::getcwd(cwd, sizeof cwd)) return Normalize("/" + dir);
  return Normalize(std::string(cwd) + "/" + dir);
}

// ---- volume_path: mounts and their name-based GUIDs --------------------

struct Mount {
  std::string source;
  std::string mount_point;
};

// Undoes mountinfo's octal escapes ("\040" for a space, "\134" for '\').
std::string DecodeMountinfoField(std::string_view s) {
  std::string out;
  auto octal = [](char c) { return c >= '0' && c <= '7'; };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && octal(s[i + 1]) && octal(s[i + 2]) &&
        octal(s[i + 3])) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
      continue;
    }
    out += s[i];
  }
  return out;
}

// Mounts in /proc/self/mountinfo order (later entries overlay earlier ones).
std::vector<Mount> ReadMounts() {
  std::vector<Mount> mounts;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    std::vector<std::string_view> fields;
    std::string_view rest(line);
    while (!rest.empty()) {
      size_t space = rest.find(' ');
      fields.push_back(rest.substr(0, space));
      if (space == std::string_view::npos) break;
      rest.remove_prefix(space + 1);
    }
    auto dash = std::find(fields.begin(), fields.end(), std::string_view("-"));
    if (fields.size() < 5 || dash == fields.end() || fields.end() - dash < 3) continue;
    mounts.push_back({DecodeMountinfoField(*(dash + 2)), DecodeMountinfoField(fields[4])});
  }
  return mounts;
}

// FNV-1a, 128-bit, of "source\0mount point", as a version 8 (custom)
// RFC 9562 GUID: stable for a mount across reboots, distinct across mounts.
Guid MountGuid(const Mount& m) {
  __extension__ typedef unsigned __int128 U128;
  const U128 prime = (static_cast<U128>(0x0000000001000000ull) << 64) | 0x000000000000013Bull;
  U128 h = (static_cast<U128>(0x6c62272e07bb0142ull) << 64) | 0x62b821756295c58dull;
  std::string key = m.source;
  key.push_back('\0');
  key += m.mount_point;
  for (unsigned char c : key) {
    h ^= c;
    h *= prime;
  }
  uint8_t b[16];  // big-endian, the text order
  for (int i = 15; i >= 0; --i) {
    b[i] = static_cast<uint8_t>(h);
    h >>= 8;
  }
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x80);  // version 8
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // variant 10
  std::string text = fmt::format(
      "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-"
      "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
      b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
      b[14], b[15]);
  return *Guid::Parse(text);
}

// True when absolute path `path` lies in the mount at `mount_point`.
bool UnderMountPoint(const std::string& path, const std::string& mount_point) {
  if (mount_point == "/") return true;
  return path.compare(0, mount_point.size(), mount_point) == 0 &&
         (path.size() == mount_point.size() || path[mount_point.size()] == '/');
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// "\\?\Volume{GUID}\dir\file" for absolute POSIX path `path`, or nullopt
// when no mount holds it (no /proc).
std::optional<std::string> VolumePathOf(const std::string& path) {
  const Mount* best = nullptr;
  std::vector<Mount> mounts = ReadMounts();
  for (const auto& m : mounts)
    if (UnderMountPoint(path, m.mount_point) &&
        (!best || m.mount_point.size() >= best->mount_point.size()))
      best = &m;
  if (!best) return std::nullopt;
  std::string inside = best->mount_point == "/" ? path.substr(1)
                                                : path.substr(std::min(path.size(), best->mount_point.size() + 1));
  std::replace(inside.begin(), inside.end(), '/', '\\');
  return fmt::format("\\\\?\\Volume{{{}}}\\{}", Upper(MountGuid(*best).ToString()), inside);
}

// The POSIX path a volume_path names, if its GUID is one of our mounts'.
std::optional<std::string> MapVolumePath(const std::string& value) {
  std::string_view v(value);
  if (!StartsWithNoCase(v, "\\\\?\\Volume{") && !StartsWithNoCase(v, "\\??\\Volume{"))
    return std::nullopt;
  v.remove_prefix(strlen("\\\\?\\Volume"));
  size_t close = v.find('}');
  if (close == std::string_view::npos) return std::nullopt;
  auto guid = Guid::Parse(v.substr(0, close + 1));
  if (!guid) return std::nullopt;
  std::string inside = BackslashesToSlashes(std::string(v.substr(close + 1)));
  if (SplitPath(inside, false).empty()) return std::nullopt;
  std::optional<std::string> found;
  for (const auto& m : ReadMounts())  // the last (topmost) match wins
    if (MountGuid(m) == *guid) found = Normalize(m.mount_point + "/" + inside);
  return found;
}

// absolute_win32_path to POSIX: "X:\..." as WSL mounts drives; drive-less
// "\dir\file" as "/dir/file"; UNC shares are not mapped.
std::optional<std::string> MapWin32Path(const std::string& value) {
  std::string_view v(value);
  if (StartsWithNoCase(v, "\\\\?\\") || StartsWithNoCase(v, "\\??\\")) {
    v.remove_prefix(4);
    if (StartsWithNoCase(v, "UNC\\")) return std::nullopt;
  } else if (StartsWithNoCase(v, "\\\\") || StartsWithNoCase(v, "//")) {
    return std::nullopt;  // \\server\share
  }
  if (v.size() >= 2 && std::isalpha(static_cast<unsigned char>(v[0])) && v[1] == ':') {
    std::string rest = BackslashesToSlashes(std::string(v.substr(2)));
    if (!rest.empty() && rest[0] != '/') return std::nullopt;  // "C:dir" is drive-relative
    char drive = static_cast<char>(std::tolower(static_cast<unsigned char>(v[0])));
    return Normalize(fmt::format("/mnt/{}/{}", drive, rest));
  }
  if (!v.empty() && (v[0] == '\\' || v[0] == '/'))
    return Normalize(BackslashesToSlashes(std::string(v)));
  return std::nullopt;
}

// relative_path resolved against the child's directory; nullopt if it is
// not relative (rooted or drive-qualified).
std::optional<std::string> MapRelativePath(const std::string& value, const std::string& child_dir) {
  std::string rel = BackslashesToSlashes(value);
  if (rel.empty() || rel[0] == '/') return std::nullopt;
  if (rel.size() >= 2 && std::isalpha(static_cast<unsigned char>(rel[0])) && rel[1] == ':')
    return std::nullopt;
  while (rel.compare(0, 2, "./") == 0) rel.erase(0, 2);
  if (SplitPath(rel, false).empty()) return std::nullopt;
  return Normalize(JoinPath(child_dir, rel));
}

// The parent's file name as the locator gives it: the last component of
// relative_path, else absolute_win32_path, else volume_path.
std::optional<std::string> LocatorFileName(const format::ParentLocator& locator) {
  for (const char* key : {"relative_path", "absolute_win32_path", "volume_path"}) {
    const std::string* value = locator.Get(key);
    if (!value) continue;
    auto parts = SplitPath(*value, true);
    if (parts.empty()) continue;
    const std::string& name = parts.back();
    if (name == "." || name == ".." || name.find(':') != std::string::npos) continue;
    return name;
  }
  return std::nullopt;
}

}  // namespace

std::vector<ParentCandidate> ParentCandidates(const std::string& child_path,
                                              const format::ParentLocator& locator,
                                              const std::string& explicit_parent,
                                              const std::vector<std::string>& parent_dirs) {
  std::vector<ParentCandidate> out;
  std::vector<std::pair<dev_t, ino_t>> seen_files;
  auto add = [&](const std::string& path, std::string source) {
    if (path.empty()) return;
    for (const auto& c : out)
      if (c.path == path) return;
    // The same file by another name (a relative and an absolute spelling).
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      std::pair<dev_t, ino_t> id{st.st_dev, st.st_ino};
      if (std::find(seen_files.begin(), seen_files.end(), id) != seen_files.end()) return;
      seen_files.push_back(id);
    }
    out.push_back({path, std::move(source)});
  };

  const std::string child_dir = DirName(Normalize(child_path));
  const std::optional<std::string> name = LocatorFileName(locator);
  if (!explicit_parent.empty()) add(Normalize(explicit_parent), "--parent");
  if (name)
    for (const auto& dir : parent_dirs) add(Normalize(JoinPath(dir, *name)), "parent dir " + dir);
  if (const std::string* rel = locator.Get("relative_path"))
    if (auto p = MapRelativePath(*rel, child_dir)) add(*p, "relative_path");
  if (const std::string* vol = locator.Get("volume_path"))
    if (auto p = MapVolumePath(*vol)) add(*p, "volume_path");
  if (const std::string* abs = locator.Get("absolute_win32_path"))
    if (auto p = MapWin32Path(*abs)) add(*p, "absolute_win32_path");
  if (name) add(Normalize(JoinPath(child_dir, *name)), "child's directory");
  return out;
}

format::ParentLocator MakeParentLocator(const std::string& parent_path, const std::string& child_path,
                                        const Guid& parent_data_write_guid) {
  const std::string parent_name = BaseName(Normalize(parent_path));
  const std::string parent_dir = AbsoluteDir(DirName(Normalize(parent_path)));
  const std::string child_dir = AbsoluteDir(DirName(Normalize(child_path)));
  const std::string parent_abs = JoinPath(parent_dir, parent_name);

  // relative_path: up from the child's directory to the common ancestor,
  // then down to the parent.
  std::vector<std::string> from = SplitPath(child_dir, false);
  std::vector<std::string> to = SplitPath(parent_dir, false);
  size_t common = 0;
  while (common < from.size() && common < to.size() && from[common] == to[common]) ++common;
  std::string relative;
  if (common == from.size()) relative = ".\\";
  for (size_t i = common; i < from.size(); ++i) relative += "..\\";
  for (size_t i = common; i < to.size(); ++i) relative += to[i] + "\\";
  relative += parent_name;

  // absolute_win32_path: a WSL drive mount becomes its drive letter.
  std::string win32;
  std::vector<std::string> abs_parts = SplitPath(parent_abs, false);
  if (abs_parts.size() >= 3 && abs_parts[0] == "mnt" && abs_parts[1].size() == 1 &&
      std::isalpha(static_cast<unsigned char>(abs_parts[1][0]))) {
    win32 = fmt::format("\\\\?\\{}:\\{}", Upper(abs_parts[1]), Join(abs_parts, 2, abs_parts.size(), '\\'));
  } else {
    win32 = "\\" + Join(abs_parts, 0, abs_parts.size(), '\\');
  }

  format::ParentLocator locator;
  locator.locator_type = format::kVhdxParentLocatorType;
  locator.entries.emplace_back("parent_linkage", "{" + parent_data_write_guid.ToString() + "}");
  locator.entries.emplace_back("absolute_win32_path", win32);
  locator.entries.emplace_back("relative_path", relative);
  if (auto volume = VolumePathOf(parent_abs)) locator.entries.emplace_back("volume_path", *volume);
  locator.entries.emplace_back("parent_linkage2", "{" + Guid().ToString() + "}");
  return locator;
}

}  // namespace vhdx
