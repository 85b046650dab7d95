// The chain subcommands of the vhdx CLI, driven as a user would: create a
// parent and a child with `vhdx create`, write with `vhdx io`, then check
// `info --backing-chain`, the depths of `map`, `convert` (flatten), `commit`,
// `rebase` and `--parent-dir` against a model of the disk kept here.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/test_util.h"

namespace vhdx::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kDiskSize = 8 << 20;
// Every write of these tests is aligned to this, so the map's ranges are too.
constexpr uint64_t kGranule = 64 << 10;


// The JSON a command printed; a test failure showing the output (and null)
// when it is not JSON.
json ParseJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    ADD_FAILURE() << "not JSON:\n" << text;
    return json();
  }
  return j;
}

CommandResult Vhdx(const std::string& args) { return vhdx::test::Run(CliPath() + " " + args); }
// stdout only, for output that is parsed: stderr is dropped inside the
// group, before Run's own 2>&1 applies.
CommandResult VhdxStdout(const std::string& args) {
  return vhdx::test::Run("{ " + CliPath() + " " + args + " 2>/dev/null; }");
}

// The disk as the chain should read, and which level of the chain defines
// each granule (-1: no level: reads as zeros).
struct Model {
  std::vector<uint8_t> bytes = std::vector<uint8_t>(kDiskSize, 0);
  std::vector<int> owner = std::vector<int>(kDiskSize / kGranule, -1);

  // A write of `pattern` at level `level` (0 = top) of a chain `levels`
  // deep. A lower level's write does not show where an upper one defines.
  void Write(int level, uint64_t offset, uint64_t length, uint8_t pattern) {
    for (uint64_t g = offset / kGranule; g < (offset + length) / kGranule; ++g) {
      if (owner[g] != -1 && owner[g] < level) continue;
      owner[g] = level;
      std::fill_n(bytes.begin() + static_cast<ptrdiff_t>(g * kGranule), kGranule, pattern);
    }
  }
  std::string Sha256() const { return Sha256Hex(bytes.data(), bytes.size()); }
};

class ChainCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ScratchPath(::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }

  std::string PathOf(const std::string& leaf) const { return dir_ + "/" + leaf; }

  // `vhdx io -c 'write -P pattern offset length'` on `image`; records it at
  // `level` of the model.
  void WriteAt(const std::string& image, int level, uint64_t offset, uint64_t length, uint8_t pattern,
               const std::string& extra = "") {
    CommandResult r = Vhdx(fmt::format("io {} -c 'write -P {:#x} {} {}' {}", extra, pattern, offset, length, ShellQuote(image)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    model_.Write(level, offset, length, pattern);
  }

  // parent.vhdx (1 MiB blocks) with data at [0, 3M) and [6M, 7M); its child
  // child.vhdx (2 MiB blocks by default) with data at [1M, 2M) (half of its
  // first block: partially present) and [4M, 6M) (a whole block).
  void MakeChain() {
    parent_ = PathOf("parent.vhdx");
    child_ = PathOf("child.vhdx");
    CommandResult r = Vhdx(fmt::format("create --block-size 1M {} {}", ShellQuote(parent_), kDiskSize));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ASSERT_NO_FATAL_FAILURE(WriteAt(parent_, 1, 0, 3 << 20, 0x11));
    ASSERT_NO_FATAL_FAILURE(WriteAt(parent_, 1, 6 << 20, 1 << 20, 0x33));
    r = Vhdx(fmt::format("create --parent {} {}", ShellQuote(parent_), ShellQuote(child_)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("backing_file="), std::string::npos) << r.output;
    ASSERT_NO_FATAL_FAILURE(WriteAt(child_, 0, 1 << 20, 1 << 20, 0x22));
    ASSERT_NO_FATAL_FAILURE(WriteAt(child_, 0, 4 << 20, 2 << 20, 0x44));
  }

  // SHA-256 of `vhdx convert -O raw IMAGE` (with `extra` options).
  std::string RawSha256(const std::string& image, const std::string& extra = "") {
    std::string raw = PathOf("out.raw");
    fs::remove(raw);
    CommandResult r = Vhdx(fmt::format("convert {} -O raw {} {}", extra, ShellQuote(image), ShellQuote(raw)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    if (r.exit_code != 0) return "convert failed: " + r.output;
    std::string digest = Sha256OfFile(raw);
    fs::remove(raw);
    return digest;
  }

  // `vhdx map --output=json IMAGE` checked against the model: contiguous,
  // covering the disk, each granule at the depth of the level that defines
  // it, holes at the depth of the bottom image (`bottom`), as qemu-img map.
  void ExpectMapDepths(const std::string& image, int bottom, const std::string& extra = "") {
    CommandResult r = VhdxStdout(fmt::format("map --output=json {} {}", extra, ShellQuote(image)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    json map = ParseJson(r.output);
    ASSERT_TRUE(map.is_array());
    uint64_t next = 0;
    for (const json& x : map) {
      uint64_t start = x["start"], length = x["length"];
      ASSERT_EQ(start, next) << x.dump();
      ASSERT_TRUE(x.contains("depth")) << x.dump();
      ASSERT_EQ(start % kGranule, 0u) << x.dump();
      ASSERT_EQ(length % kGranule, 0u) << x.dump();
      int depth = x["depth"];
      for (uint64_t g = start / kGranule; g < (start + length) / kGranule; ++g) {
        int owner = model_.owner[g];
        if (owner == -1) {
          EXPECT_EQ(depth, bottom) << "hole at granule " << g << ": " << x.dump();
          EXPECT_FALSE(x["present"].get<bool>()) << x.dump();
          EXPECT_TRUE(x["zero"].get<bool>()) << x.dump();
        } else {
          EXPECT_EQ(depth, owner) << "granule " << g << ": " << x.dump();
          EXPECT_TRUE(x["present"].get<bool>()) << x.dump();
          EXPECT_TRUE(x["data"].get<bool>()) << x.dump();
        }
      }
      next = start + length;
    }
    EXPECT_EQ(next, kDiskSize);
  }

  std::string dir_, parent_, child_;
  Model model_;
};

bool SameFile(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec);
}

TEST_F(ChainCliTest, InfoBackingChainListsEveryImageWithItsBackingFile) {
  ASSERT_NO_FATAL_FAILURE(MakeChain());
  CommandResult r = VhdxStdout("info --backing-chain --output=json " + ShellQuote(child_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json chain = ParseJson(r.output);
  ASSERT_TRUE(chain.is_array());
  ASSERT_EQ(chain.size(), 2u) << r.output;
  const json& top = chain[0];
  const json& bottom = chain[1];
  EXPECT_EQ(top["filename"], child_);
  EXPECT_EQ(top["type"], "differencing");
  EXPECT_EQ(top["cluster-size"], 2 << 20);  // a child's default block size
  EXPECT_EQ(top["virtual-size"], kDiskSize);
  ASSERT_TRUE(top.contains("backing-filename")) << top.dump();
  // As the locator writes it (relative_path, Windows separators).
  std::string backing = top["backing-filename"];
  EXPECT_TRUE(backing.ends_with("parent.vhdx")) << backing;
  EXPECT_TRUE(SameFile(top["full-backing-filename"].get<std::string>(), parent_)) << top.dump();
  EXPECT_EQ(top["backing-filename-format"], "vhdx");
  EXPECT_TRUE(SameFile(bottom["filename"].get<std::string>(), parent_)) << bottom.dump();
  EXPECT_EQ(bottom["type"], "dynamic");
  EXPECT_FALSE(bottom.contains("backing-filename"));
  EXPECT_EQ(bottom["allocation"]["payload"]["fully-present"], 4);  // parent: 3 + 1 blocks of 1 MiB

  // Without --backing-chain: one object, the child's, still naming its parent.
  r = VhdxStdout("info --output=json " + ShellQuote(child_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json one = ParseJson(r.output);
  ASSERT_TRUE(one.is_object());
  EXPECT_EQ(one["filename"], child_);
  EXPECT_EQ(one["backing-filename"], backing);

  // Human: qemu-img's lines, images separated by a blank line.
  r = VhdxStdout("info --backing-chain " + ShellQuote(child_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("image: " + child_ + "\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("backing file: " + backing), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("backing file format: vhdx\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\n\nimage: "), std::string::npos) << r.output;
}

TEST_F(ChainCliTest, MapReportsTheDepthOfEachRangeAndNamesItsFile) {
  ASSERT_NO_FATAL_FAILURE(MakeChain());
  ASSERT_NO_FATAL_FAILURE(ExpectMapDepths(child_, 1));

  // The human map names the image each data range is in.
  CommandResult r = VhdxStdout("map " + ShellQuote(child_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int child_lines = 0, parent_lines = 0;
  size_t pos = 0;
  for (size_t end; (end = r.output.find('\n', pos)) != std::string::npos; pos = end + 1) {
    std::string line = r.output.substr(pos, end - pos);
    if (line.ends_with(" " + child_)) ++child_lines;
    else if (line.ends_with("parent.vhdx")) ++parent_lines;
  }
  EXPECT_GE(child_lines, 2) << r.output;   // [1M, 2M) and [4M, 6M)
  EXPECT_GE(parent_lines, 2) << r.output;  // [0, 1M), [2M, 3M), [6M, 7M)
}

TEST_F(ChainCliTest, DepthThreeChainReadsAndMapsThroughEveryLevel) {
  ASSERT_NO_FATAL_FAILURE(MakeChain());
  // Levels shift down: parent is now 2, child 1, the new top 0.
  Model shifted;
  for (uint64_t g = 0; g < model_.owner.size(); ++g) shifted.owner[g] = model_.owner[g] == -1 ? -1 : model_.owner[g] + 1;
  shifted.bytes = model_.bytes;
  model_ = shifted;
  std::string top = PathOf("top.avhdx");
  CommandResult r = Vhdx(fmt::format("create -b {} -F vhdx --block-size 1M {}", ShellQuote(child_), ShellQuote(top)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_NO_FATAL_FAILURE(WriteAt(top, 0, 5 << 20, 128 << 10, 0x66));  // inside the child's full block
  ASSERT_NO_FATAL_FAILURE(WriteAt(top, 0, 7 << 20, 64 << 10, 0x77));   // below it: a hole

  r = VhdxStdout("info --backing-chain --output=json " + ShellQuote(top));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json chain = ParseJson(r.output);
  ASSERT_EQ(chain.size(), 3u);
  EXPECT_EQ(chain[0]["cluster-size"], 1 << 20);
  EXPECT_TRUE(SameFile(chain[0]["full-backing-filename"].get<std::string>(), child_));
  EXPECT_TRUE(SameFile(chain[1]["full-backing-filename"].get<std::string>(), parent_));
  ASSERT_NO_FATAL_FAILURE(ExpectMapDepths(top, 2));
  EXPECT_EQ(RawSha256(top), model_.Sha256());
  // Each level still reads as it did: the parents were not written.
  r = Vhdx("io -r -c 'read -P 0x44 5M 128k' -c 'read -P 0 7M 64k' " + ShellQuote(child_));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(ChainCliTest, ConvertFlattensTheChainIntoAStandaloneImage) {
  ASSERT_NO_FATAL_FAILURE(MakeChain());
  EXPECT_EQ(RawSha256(child_), model_.Sha256());
  // To VHDX: standalone (no parent), same disk.
  std::string flat = PathOf("flat.vhdx");
  CommandResult r = Vhdx(fmt::format("convert -O vhdx {} {}", ShellQuote(child_), ShellQuote(flat)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = VhdxStdout("info --output=json " + ShellQuote(flat));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json info = ParseJson(r.output);
  EXPECT_EQ(info["type"], "dynamic");
  EXPECT_FALSE(info.contains("backing-filename"));
  EXPECT_EQ(RawSha256(flat), model_.Sha256());
  r = Vhdx("check " + ShellQuote(flat));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(ChainCliTest, CommitWritesTheChildIntoItsParentAndEmptiesTheChild) {
  ASSERT_NO_FATAL_FAILURE(MakeChain());
  std::string before = model_.Sha256();
  CommandResult r = Vhdx("commit -p " + ShellQuote(child_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Image committed."), std::string::npos) << r.output;
  // The parent now reads as the chain did, and so does the child.
  EXPECT_EQ(RawSha256(parent_), before);
  EXPECT_EQ(RawSha256(child_), before);
  // The child is empty: every range comes from its parent (depth 1).
  r = VhdxStdout("map --output=json " + ShellQuote(child_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const json& x : ParseJson(r.output)) EXPECT_EQ(x["depth"], 1) << x.dump();
  EXPECT_EQ(Vhdx("check " + ShellQuote(parent_)).exit_code, 0);
  EXPECT_EQ(Vhdx("check " + ShellQuote(child_)).exit_code, 0);
  // A standalone image has nothing to commit into.
  r = Vhdx("commit " + ShellQuote(parent_));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("vhdx: " + parent_ + ": "), std::string::npos) << r.output;
}

TEST_F(ChainCliTest, CommitKeepsTheChildWithD) {
  ASSERT_NO_FATAL_FAILURE(MakeChain());
  CommandResult r = Vhdx("commit -d " + ShellQuote(child_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(RawSha256(parent_), model_.Sha256());
  EXPECT_EQ(RawSha256(child_), model_.Sha256());
  // The child's own ranges are still its own.
  r = VhdxStdout("map --output=json " + ShellQuote(child_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  bool child_owned = false;
  for (const json& x : ParseJson(r.output))
    if (x["depth"] == 0 && x["data"] == true) child_owned = true;
  EXPECT_TRUE(child_owned) << r.output;
}

TEST_F(ChainCliTest, MovedParentIsFoundWithParentDirAndRebasedOnto) {
  ASSERT_NO_FATAL_FAILURE(MakeChain());
  std::string expected = model_.Sha256();
  std::string child_bytes = Sha256OfFile(child_);
  std::string moved_dir = PathOf("moved");
  fs::create_directories(moved_dir);
  std::string moved = moved_dir + "/parent.vhdx";
  fs::rename(parent_, moved);

  // The chain no longer opens: one line, naming the path looked for.
  CommandResult r = Vhdx(fmt::format("convert -O raw {} {}", ShellQuote(child_), ShellQuote(PathOf("x.raw"))));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.rfind("vhdx: " + child_ + ": ", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("parent.vhdx"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(dir_), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  // check: the file is sound, its chain is not.
  r = Vhdx("check " + ShellQuote(child_));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("ERROR: parent locator"), std::string::npos) << r.output;
  // info still shows the child, with a warning.
  r = Vhdx("info " + ShellQuote(child_));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("image: " + child_), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("warning"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("(not opened)"), std::string::npos) << r.output;
  r = VhdxStdout("info --backing-chain --output=json " + ShellQuote(child_));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(ParseJson(r.output).size(), 1u) << r.output;

  // --parent-dir finds it by its file name, for every subcommand.
  std::string with_dir = "--parent-dir " + ShellQuote(moved_dir);
  EXPECT_EQ(RawSha256(child_, with_dir), expected);
  EXPECT_EQ(Vhdx("check " + with_dir + " " + ShellQuote(child_)).exit_code, 0);
  ASSERT_NO_FATAL_FAILURE(ExpectMapDepths(child_, 1, with_dir));
  r = VhdxStdout("info --backing-chain --output=json " + with_dir + " " + ShellQuote(child_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json chain = ParseJson(r.output);
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_TRUE(SameFile(chain[0]["full-backing-filename"].get<std::string>(), moved));
  r = Vhdx("io -r " + with_dir + " -c 'read -P 0x11 0 1M' " + ShellQuote(child_));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = Vhdx("bench -c 16 -s 64k " + with_dir + " " + ShellQuote(child_));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // Nothing above wrote the child (io -r, bench reads).
  EXPECT_EQ(Sha256OfFile(child_), child_bytes);

  // Renamed too: only rebase helps.
  std::string renamed = moved_dir + "/renamed.vhdx";
  fs::rename(moved, renamed);
  EXPECT_EQ(Vhdx("check " + with_dir + " " + ShellQuote(child_)).exit_code, 1);
  r = Vhdx(fmt::format("rebase --parent {} {}", ShellQuote(renamed), ShellQuote(child_)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(RawSha256(child_), expected);
  EXPECT_EQ(Vhdx("check " + ShellQuote(child_)).exit_code, 0);
  r = VhdxStdout("info --output=json " + ShellQuote(child_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json info = ParseJson(r.output);
  EXPECT_TRUE(info["backing-filename"].get<std::string>().ends_with("renamed.vhdx")) << info.dump();
  EXPECT_TRUE(SameFile(info["full-backing-filename"].get<std::string>(), renamed)) << info.dump();
}

TEST_F(ChainCliTest, RebaseOntoAnotherImageNeedsForce) {
  ASSERT_NO_FATAL_FAILURE(MakeChain());
  std::string expected = model_.Sha256();
  std::string other = PathOf("other.vhdx");
  CommandResult r = Vhdx(fmt::format("create --block-size 1M {} {}", ShellQuote(other), kDiskSize));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Vhdx(fmt::format("io -c 'write -P 0x55 0 {}' {}", kDiskSize, ShellQuote(other)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string child_bytes = Sha256OfFile(child_);

  r = Vhdx(fmt::format("rebase --parent {} {}", ShellQuote(other), ShellQuote(child_)));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.rfind("vhdx: " + child_ + ": ", 0), 0u) << r.output;
  // Refused: nothing changed.
  EXPECT_EQ(Sha256OfFile(child_), child_bytes);
  EXPECT_EQ(RawSha256(child_), expected);

  // qemu-img's spelling: -u (unsafe) -b NEWPATH; forced, the child now
  // reads its own ranges over the other image's 0x55.
  r = Vhdx(fmt::format("rebase -u -b {} -F vhdx {}", ShellQuote(other), ShellQuote(child_)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Model over;
  over.Write(1, 0, kDiskSize, 0x55);
  for (uint64_t g = 0; g < model_.owner.size(); ++g)
    if (model_.owner[g] == 0)
      std::copy_n(model_.bytes.begin() + static_cast<ptrdiff_t>(g * kGranule), kGranule,
                  over.bytes.begin() + static_cast<ptrdiff_t>(g * kGranule));
  EXPECT_EQ(RawSha256(child_), over.Sha256());
  r = VhdxStdout("info --backing-chain --output=json " + ShellQuote(child_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(SameFile(ParseJson(r.output)[1]["filename"].get<std::string>(), other));
}

TEST_F(ChainCliTest, CreateChildOptions) {
  ASSERT_NO_FATAL_FAILURE(MakeChain());
  auto info_of = [](const std::string& image) {
    CommandResult r = VhdxStdout("info --output=json " + ShellQuote(image));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.exit_code == 0 ? ParseJson(r.output) : json::object();
  };
  // An explicit block size and a larger size; a child of a child.
  std::string big = PathOf("big.avhdx");
  CommandResult r = Vhdx(fmt::format("create --block-size 4M --parent {} {} 16M", ShellQuote(child_), ShellQuote(big)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json info = info_of(big);
  EXPECT_EQ(info["cluster-size"], 4 << 20);
  EXPECT_EQ(info["virtual-size"], 16 << 20);
  EXPECT_EQ(info["type"], "differencing");
  // Past the parent's end a larger child reads zeros.
  r = Vhdx("io -r -c 'read -P 0x44 4M 2M' -c 'read -P 0 8M 8M' " + ShellQuote(big));
  EXPECT_EQ(r.exit_code, 0) << r.output;

  // A missing parent: one error line, no file left behind.
  std::string orphan = PathOf("orphan.vhdx");
  r = Vhdx(fmt::format("create --parent {} {}", ShellQuote(PathOf("missing.vhdx")), ShellQuote(orphan)));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("missing.vhdx"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(orphan));
  // A smaller child than its parent is refused.
  r = Vhdx(fmt::format("create --parent {} {} 4M", ShellQuote(parent_), ShellQuote(orphan)));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_FALSE(fs::exists(orphan));
}

TEST_F(ChainCliTest, UsageErrorsExitTwo) {
  ASSERT_NO_FATAL_FAILURE(MakeChain());
  std::string made = PathOf("made.vhdx");
  const std::vector<std::string> usage_errors = {
      "create " + ShellQuote(made),                                                      // no SIZE, no --parent
      "create --type fixed --parent " + ShellQuote(parent_) + " " + ShellQuote(made),             // a child is differencing
      "create -F qcow2 -b " + ShellQuote(parent_) + " " + ShellQuote(made),                       // only vhdx parents
      "create -F vhdx " + ShellQuote(made) + " 8M",                                      // -F without -b
      "rebase " + ShellQuote(child_),                                                    // no --parent
      "rebase -b '' " + ShellQuote(child_),                                              // detaching: not supported
      "commit",                                                                 // no IMAGE
      "commit --bogus " + ShellQuote(child_),                                            // unknown option
      "info --parent-dir",                                                      // no DIR
      "map --parent-dir " + ShellQuote(dir_),                                            // no IMAGE
  };
  std::string child_bytes = Sha256OfFile(child_);
  for (const std::string& args : usage_errors) {
    CommandResult r = Vhdx(args);
    EXPECT_EQ(r.exit_code, 2) << "vhdx " << args << "\n" << r.output;
  }
  EXPECT_FALSE(fs::exists(made));
  EXPECT_EQ(Sha256OfFile(child_), child_bytes);
}

}  // namespace
}  // namespace vhdx::test
