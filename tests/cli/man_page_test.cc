// docs/vhdx.1 against the CLI: the same subcommands, and in each
// subcommand's section exactly the options its --help lists (an option
// added to one and not the other fails here). The page also renders
// without groff warnings. And a mistyped subcommand is a usage error that
// names it, with or without --help.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>
#include <cctype>
#include <set>
#include <sstream>

#include "support/test_util.h"

namespace vhdx::test {
namespace {

using Options = std::set<std::string>;

// (No std::regex here: GCC 12 warns inside <regex> at -O1 with the
// sanitizers, and warnings are errors.)

bool FlagChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; }

// Every option token of `text`: "-x" or "--word", at the start or after a
// space or a quote.
std::vector<std::string> FlagTokens(const std::string& text) {
  std::vector<std::string> out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '-' || (i > 0 && text[i - 1] != ' ' && text[i - 1] != '"' && text[i - 1] != '\t')) continue;
    size_t j = i + 1;
    if (j < text.size() && text[j] == '-') ++j;
    if (j >= text.size() || !std::isalnum(static_cast<unsigned char>(text[j]))) continue;
    while (j < text.size() && FlagChar(text[j])) ++j;
    out.push_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The options of `vhdx SUBCOMMAND --help`: each line of its Options part
// that starts with a flag ("  -U,--force-share", "  --output TEXT..."),
// -h/--help left out.
Options HelpOptions(const std::string& subcommand) {
  const CommandResult r = test::Run(CliPath() + " " + subcommand + " --help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  Options out;
  bool in_options = false;
  for (const std::string& line : Lines(r.output)) {
    if (line == "Options:") in_options = true;
    if (!in_options) continue;
    if (line.empty() || (line[0] != ' ' && line != "Options:")) in_options = line == "Options:";
    // "  -U,--force-share ...", "  --output TEXT ...": the names before the
    // first space.
    if (!line.starts_with("  -")) continue;
    const std::string names = line.substr(2, line.find(' ', 2) - 2);
    std::stringstream list(names);
    for (std::string name; std::getline(list, name, ',');)
      if (name != "-h" && name != "--help") out.insert(name);
  }
  return out;
}

// The subcommands `vhdx --help` lists.
std::vector<std::string> HelpSubcommands() {
  const CommandResult r = test::Run(CliPath() + " --help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::string> out;
  bool in_list = false;
  for (const std::string& line : Lines(r.output)) {
    if (line == "Subcommands:") {
      in_list = true;
      continue;
    }
    // "  info                        Show what ...".
    if (!in_list || !line.starts_with("  ") || line.size() < 3 || !std::islower(static_cast<unsigned char>(line[2])))
      continue;
    out.push_back(line.substr(2, line.find(' ', 2) - 2));
  }
  return out;
}

// Each `.SS "NAME ..."` section of the man page under SUBCOMMANDS, with
// the options of its .TP entries (roff's \- read as -).
std::map<std::string, Options> ManSections() {
  const std::vector<uint8_t> raw = ReadWholeFile(VHDX_MAN_PAGE);
  std::string text;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\\' && i + 1 < raw.size() && raw[i + 1] == '-') continue;  // roff's \- is -
    text += static_cast<char>(raw[i]);
  }
  std::map<std::string, Options> out;
  bool in_subcommands = false, after_tp = false;
  std::string current;
  for (const std::string& line : Lines(text)) {
    if (line.starts_with(".SH ")) {
      in_subcommands = line == ".SH SUBCOMMANDS";
      current.clear();
      continue;
    }
    if (!in_subcommands) continue;
    if (line.starts_with(".SS \"")) {
      // .SS "NAME ...": its first word.
      size_t end = 5;
      while (end < line.size() && std::islower(static_cast<unsigned char>(line[end]))) ++end;
      current = line.substr(5, end - 5);
      out[current];
      continue;
    }
    if (line == ".TP") {
      after_tp = true;
      continue;
    }
    if (after_tp && !current.empty()) {
      // The .TP entry's tag line (after its macro): every flag on it.
      const size_t space = line.find(' ');
      if (space != std::string::npos)
        for (const std::string& flag : FlagTokens(line.substr(space))) out[current].insert(flag);
    }
    after_tp = false;
  }
  return out;
}

TEST(ManPage, ListsEverySubcommandAndOptionOfTheHelp) {
  const std::vector<std::string> subcommands = HelpSubcommands();
  ASSERT_GE(subcommands.size(), 13u) << "the main --help lists too few subcommands";
  const std::map<std::string, Options> man = ManSections();
  std::set<std::string> listed(subcommands.begin(), subcommands.end());
  for (const auto& [name, options] : man) EXPECT_TRUE(listed.count(name)) << "vhdx.1 has a section for '" << name << "', which vhdx --help does not list";
  size_t checked = 0;
  for (const std::string& sub : subcommands) {
    SCOPED_TRACE("vhdx " + sub);
    auto it = man.find(sub);
    if (it == man.end()) {
      ADD_FAILURE() << "vhdx.1 has no section for '" << sub << "'";
      continue;
    }
    const Options help = HelpOptions(sub);
    for (const std::string& o : help) EXPECT_TRUE(it->second.count(o)) << o << " is in --help, not in vhdx.1";
    for (const std::string& o : it->second) EXPECT_TRUE(help.count(o)) << o << " is in vhdx.1, not in --help";
    checked += help.size();
  }
  // The parsers found something to compare (each subcommand has options).
  EXPECT_GT(checked, 60u);
}

TEST(ManPage, RendersWithoutWarnings) {
  VHDX_REQUIRE(MissingTools({"groff"}));
  const CommandResult r = test::Run("groff -man -Tutf8 -ww -z " + ShellQuote(VHDX_MAN_PAGE));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "") << "groff warns";
}

TEST(CliUsage, UnknownSubcommandIsAUsageErrorNamingIt) {
  for (const char* args : {"frobnicate", "frobnicate --help", "frobnicate x.vhdx"}) {
    SCOPED_TRACE(args);
    const CommandResult r = test::Run(CliPath() + " " + args);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.output, "vhdx: unknown subcommand 'frobnicate' (`vhdx --help` lists them)\n");
  }
  // Known ones still work, and a missing one is still a usage error.
  EXPECT_EQ(test::Run(CliPath() + " info --help").exit_code, 0);
  EXPECT_EQ(test::Run(CliPath()).exit_code, 2);
  EXPECT_EQ(test::Run(CliPath() + " --version").exit_code, 0);
}

}  // namespace
}  // namespace vhdx::test
