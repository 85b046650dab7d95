// Helpers of the free-space tests: ext file systems made and changed with
// e2fsprogs, what dumpe2fs and debugfs say about them, disks converted to
// VHDX with the CLI.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fs/free_space.h"

namespace vhdx::test {

// Tools every test here needs ("" when all are there).
std::string MissingFsTools();

// A sparse file of `bytes`, then `mkfs.<type> -F -q <args>` on it. Returns
// "" or the failing command and its output.
std::string MakeExt(const std::string& path, uint64_t bytes, const std::string& mkfs_type,
                    const std::string& args = "");

// Runs debugfs -w on `image` with the commands given (one per line);
// returns "" or its output when it failed or complained.
std::string DebugfsWrite(const std::string& image, const std::vector<std::string>& commands);

// Writes `count` files of assorted sizes (random bytes) into the file
// system, named f0, f1, ..., then removes every third one. Returns the
// names that survive, or an empty vector on failure (with `error` set).
std::vector<std::string> FillAndThin(const std::string& image, int count, std::string& error);

struct BlockRun {
  uint64_t first = 0;
  uint64_t count = 0;
};

// What dumpe2fs says: the block size and every run of free blocks (its
// "Free blocks:" lines, merged).
struct DumpedExt {
  uint64_t block_size = 0;
  uint64_t block_count = 0;
  std::vector<BlockRun> free;
  std::string error;  // "" when dumpe2fs ran and was understood
};
DumpedExt Dumpe2fs(const std::string& image);

// The blocks `debugfs -R "blocks NAME"` lists for a file.
std::vector<uint64_t> FileBlocks(const std::string& image, const std::string& name);

// dumpe2fs's free runs as disk byte ranges of a file system at `offset`.
std::vector<fs::FreeRange> ToDiskRanges(const DumpedExt& dumped, uint64_t offset);

// vhdx convert -O vhdx --block-size 1M; "" or the error.
std::string ConvertToVhdx(const std::string& raw, const std::string& vhdx);

// True when the byte range [offset, offset + length) meets any free range.
bool Overlaps(const std::vector<fs::FreeRange>& free, uint64_t offset, uint64_t length);

// The notices, one per line, for failure messages.
std::string NoticesText(const fs::FreeSpaceReport& report);

// A partition as sfdisk wrote it, in bytes of the disk.
struct PartitionSpec {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// sfdisk's view of the table it wrote, by partition number (empty when it
// cannot be read).
std::map<int, PartitionSpec> ReadBack(const std::string& disk);

// Runs sfdisk with `script` on `disk`; "" or its complaint.
std::string Partition(const std::string& disk, const std::string& script);

// Copies a file system image into the disk at `offset`, holes kept; "" or
// dd's complaint.
std::string Place(const std::string& fs_image, const std::string& disk, uint64_t offset);

}  // namespace vhdx::test
