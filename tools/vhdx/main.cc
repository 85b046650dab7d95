// vhdx: the command-line front end of libvhdx (qemu-img style subcommands).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <new>

#include "common.h"
#include "vhdx/image.h"

int main(int argc, char** argv) {
  using namespace vhdx::cli;
  CLI::App app{"vhdx: create, inspect, check, convert, write, benchmark, commit, rebase, resize, compact and mount Microsoft VHDX virtual disks", "vhdx"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("vhdx ") + vhdx::Version());
  int result = kExitOk;
  RegisterInfo(app, result);
  RegisterMap(app, result);
  RegisterCheck(app, result);
  RegisterConvert(app, result);
  RegisterCreate(app, result);
  RegisterIo(app, result);
  RegisterBench(app, result);
  RegisterCommit(app, result);
  RegisterRebase(app, result);
  RegisterResize(app, result);
  RegisterCompact(app, result);
  RegisterMount(app, result);
  // CLI11 takes an unknown first word for a stray argument ("A subcommand
  // is required"), and with --help after it prints the main help and exits
  // 0. Name it, and fail as any other usage error.
  if (argc > 1 && argv[1][0] != '-') {
    try {
      app.get_subcommand(argv[1]);
    } catch (const CLI::OptionNotFound&) {
      fmt::print(stderr, "vhdx: unknown subcommand '{}' (`vhdx --help` lists them)\n", argv[1]);
      return kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  } catch (const std::bad_alloc&) {
    // The library returns errors, never throws; what reaches here is the
    // CLI's own allocations failing (or a bug): one line, not an abort.
    std::fputs("vhdx: out of memory\n", stderr);
    return kExitError;
  } catch (const std::exception& e) {
    fmt::print(stderr, "vhdx: internal error: {}\n", e.what());
    return kExitError;
  }
  return result;
}
