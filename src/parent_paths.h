// Finding a differencing image's parent from its locator (digest §4.7), and
// writing the locator of a new child. Pure path logic: nothing here opens
// an image (stat() only, to tell candidates that exist).
#pragma once

#include <string>
#include <vector>

#include "format/metadata.h"
#include "vhdx/guid.h"

namespace vhdx {

struct ParentCandidate {
  std::string path;    // POSIX path to try
  std::string source;  // where it came from, for messages: "--parent", "parent dir", "relative_path", ...
};

// The paths to try for the parent of the child at `child_path`, in order:
// `explicit_parent` (if not empty), the locator's file name in each of
// `parent_dirs`, relative_path resolved against the child's directory
// (Windows separators, a leading ".\" and ".." understood), volume_path
// where it maps to a mounted file system, absolute_win32_path mapped to a
// POSIX path ("\\?\" stripped; "X:\..." -> "/mnt/x/..." as WSL mounts
// drives; a drive-less "\dir\file" -> "/dir/file"; UNC paths "\\?\UNC\..."
// and "\\server\share\..." give no candidate), then the locator's file name
// in the child's directory. Duplicates (the same string, or the same
// existing file by another name) are dropped; candidates that do not exist
// are kept (the caller reports what it tried).
//
// Paths are handled lexically: the child's path is not resolved, "." and
// empty components are removed, and "dir/.." is folded unless `dir` is a
// symbolic link (the kernel then resolves the rest).
//
// volume_path scheme. Windows names a volume by a GUID; a POSIX host has
// none, so this library gives each mount a name-based GUID: FNV-1a 128 of
// "<mount source>\0<mount point>" (from /proc/self/mountinfo, octal
// escapes decoded) with the RFC 9562 version 8 / variant bits set. A
// volume_path "\\?\Volume{GUID}\rest" maps to "<mount point>/rest" of the
// mount with that GUID (compared case-insensitively; the topmost of
// stacked mounts). Windows' own volume GUIDs match no mount and are skipped.
std::vector<ParentCandidate> ParentCandidates(const std::string& child_path,
                                              const format::ParentLocator& locator,
                                              const std::string& explicit_parent,
                                              const std::vector<std::string>& parent_dirs);

// The locator a child at `child_path` gets for the parent at `parent_path`,
// keys in Hyper-V's order: parent_linkage (the parent's DataWriteGuid,
// lowercase with braces), absolute_win32_path, relative_path (".\" or
// "..\" form, backslashes), volume_path, parent_linkage2 (zero GUID).
// The directories of both are made absolute with realpath (lexically when
// they do not exist); the files' own names are kept. absolute_win32_path is
// "\\?\X:\rest" for a parent under /mnt/<x>/ (WSL's drive mounts, letter
// uppercased), otherwise the POSIX absolute path with backslashes and no
// drive ("\home\u\p.vhdx"). volume_path uses the scheme above and is left
// out when no mount holds the parent (no /proc).
format::ParentLocator MakeParentLocator(const std::string& parent_path, const std::string& child_path,
                                        const Guid& parent_data_write_guid);

}  // namespace vhdx
