#include "fs_test_util.h"

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "support/test_util.h"

namespace vhdx::test {

std::string MissingFsTools() { return MissingTools({"mkfs.ext4", "debugfs", "dumpe2fs"}); }

std::string MakeExt(const std::string& path, uint64_t bytes, const std::string& mkfs_type,
                    const std::string& args) {
  std::string cmd = "rm -f " + ShellQuote(path) + " && truncate -s " + std::to_string(bytes) + " " +
                    ShellQuote(path) + " && mkfs." + mkfs_type + " -F -q " + args + " " +
                    ShellQuote(path);
  CommandResult r = Run(cmd);
  return r.exit_code == 0 ? "" : cmd + ": " + r.output;
}

std::string DebugfsWrite(const std::string& image, const std::vector<std::string>& commands) {
  static int serial = 0;
  const std::string script = ScratchPath("debugfs-" + std::to_string(serial++) + ".cmd");
  {
    std::ofstream out(script);
    for (const std::string& c : commands) out << c << "\n";
  }
  const std::string cmd = "debugfs -w -f " + ShellQuote(script) + " " + ShellQuote(image);
  CommandResult r = Run(cmd);
  if (r.exit_code != 0) return cmd + ": " + r.output;
  // debugfs exits 0 even when a command fails: every line other than its
  // banner, the echo of each command and the replies of write and feature
  // is a complaint.
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.rfind("debugfs", 0) == 0 || line.rfind("Allocated inode:", 0) == 0 ||
        line.rfind("Filesystem features:", 0) == 0)
      continue;
    return cmd + ": " + r.output;
  }
  return "";
}

std::vector<std::string> FillAndThin(const std::string& image, int count, std::string& error) {
  std::mt19937_64 rng(static_cast<uint64_t>(count) * 7919);
  std::vector<std::string> commands;
  std::vector<std::string> names;
  for (int i = 0; i < count; i++) {
    // 1 KiB to ~6 MiB: small files that fill part of a block, big ones that
    // cross groups.
    const size_t size = 1024 + static_cast<size_t>(rng() % (6u << 20));
    std::vector<uint8_t> data(size);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    const std::string src = ScratchPath("src-" + std::to_string(count) + "-" + std::to_string(i));
    WriteWholeFile(src, data);
    const std::string name = fmt::format("f{}", i);
    commands.push_back("write " + src + " " + name);
    names.push_back(name);
  }
  std::vector<std::string> survivors;
  for (int i = 0; i < count; i++) {
    if (i % 3 == 1)
      commands.push_back("rm " + names[static_cast<size_t>(i)]);
    else
      survivors.push_back(names[static_cast<size_t>(i)]);
  }
  error = DebugfsWrite(image, commands);
  if (!error.empty()) return {};
  return survivors;
}

DumpedExt Dumpe2fs(const std::string& image) {
  DumpedExt d;
  CommandResult r = Run("dumpe2fs " + ShellQuote(image) + " 2>/dev/null");
  if (r.exit_code != 0) {
    d.error = "dumpe2fs failed: " + r.output;
    return d;
  }
  std::istringstream in(r.output);
  std::string line;
  uint64_t cluster_bytes = 0;  // bigalloc: dumpe2fs names each free cluster by its first block
  while (std::getline(in, line)) {
    if (line.rfind("Block size:", 0) == 0) d.block_size = std::stoull(line.substr(11));
    if (line.rfind("Block count:", 0) == 0) d.block_count = std::stoull(line.substr(12));
    if (line.rfind("Cluster size:", 0) == 0) cluster_bytes = std::stoull(line.substr(13));
    const std::string key = "  Free blocks: ";
    if (line.rfind(key, 0) != 0) continue;
    std::istringstream runs(line.substr(key.size()));
    std::string run;
    while (std::getline(runs, run, ',')) {
      if (run.find_first_not_of(' ') == std::string::npos) continue;
      uint64_t first = 0, last = 0;
      const size_t dash = run.find('-');
      first = std::stoull(run.substr(0, dash));
      last = dash == std::string::npos ? first : std::stoull(run.substr(dash + 1));
      if (cluster_bytes > d.block_size) last += cluster_bytes / d.block_size - 1;
      if (!d.free.empty() && d.free.back().first + d.free.back().count == first)
        d.free.back().count += last - first + 1;
      else
        d.free.push_back({first, last - first + 1});
    }
  }
  if (d.block_size == 0 || d.block_count == 0) d.error = "dumpe2fs output not understood";
  return d;
}

std::vector<uint64_t> FileBlocks(const std::string& image, const std::string& name) {
  CommandResult r = Run("debugfs -R " + ShellQuote("blocks " + name) + " " + ShellQuote(image) +
                        " 2>/dev/null");
  std::vector<uint64_t> blocks;
  std::istringstream in(r.output);
  // Run() folds stderr in: skip debugfs's banner, keep the numbers.
  std::string word;
  while (in >> word)
    if (word.find_first_not_of("0123456789") == std::string::npos) blocks.push_back(std::stoull(word));
  return blocks;
}

std::vector<fs::FreeRange> ToDiskRanges(const DumpedExt& dumped, uint64_t offset) {
  std::vector<fs::FreeRange> out;
  for (const BlockRun& r : dumped.free)
    out.push_back({offset + r.first * dumped.block_size, r.count * dumped.block_size});
  return out;
}

std::string ConvertToVhdx(const std::string& raw, const std::string& vhdx) {
  const std::string cmd = ShellQuote(CliPath()) + " convert -O vhdx --block-size 1M " +
                          ShellQuote(raw) + " " + ShellQuote(vhdx);
  CommandResult r = Run("rm -f " + ShellQuote(vhdx) + " && " + cmd);
  return r.exit_code == 0 ? "" : cmd + ": " + r.output;
}

bool Overlaps(const std::vector<fs::FreeRange>& free, uint64_t offset, uint64_t length) {
  for (const fs::FreeRange& r : free)
    if (r.offset < offset + length && offset < r.offset + r.length) return true;
  return false;
}

std::string NoticesText(const fs::FreeSpaceReport& report) {
  std::string s;
  for (const fs::FsNotice& n : report.notices) s += n.message + "\n";
  return s;
}

// sfdisk's view of the table it wrote, in bytes, by partition number.
std::map<int, PartitionSpec> ReadBack(const std::string& disk) {
  CommandResult r = vhdx::test::Run("sfdisk --json " + ShellQuote(disk) + " 2>/dev/null");
  std::map<int, PartitionSpec> out;
  if (r.exit_code != 0) return out;
  const nlohmann::json j = nlohmann::json::parse(r.output, nullptr, false);
  if (j.is_discarded()) return out;
  const uint64_t sector = j["partitiontable"].value("sectorsize", 512);
  for (const auto& p : j["partitiontable"]["partitions"]) {
    const std::string node = p["node"];
    const int number = std::stoi(node.substr(disk.size()));
    out[number] = {p["start"].get<uint64_t>() * sector, p["size"].get<uint64_t>() * sector};
  }
  return out;
}

std::string Partition(const std::string& disk, const std::string& script) {
  CommandResult r = vhdx::test::Run("printf %s " + ShellQuote(script) + " | sfdisk -q " +
                                    ShellQuote(disk));
  return r.exit_code == 0 ? "" : "sfdisk: " + r.output;
}

// Copies a file system image into the disk at `offset`, holes kept.
std::string Place(const std::string& fs_image, const std::string& disk, uint64_t offset) {
  CommandResult r = vhdx::test::Run("dd status=none bs=1M conv=notrunc,sparse oflag=seek_bytes if=" +
                                    ShellQuote(fs_image) + " of=" + ShellQuote(disk) +
                                    " seek=" + std::to_string(offset));
  return r.exit_code == 0 ? "" : "dd: " + r.output;
}

}  // namespace vhdx::test
