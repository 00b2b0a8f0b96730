#pragma once
// The check every command's bad-input test makes: the command fails cleanly, with exit status 1,
// one line on stderr naming the problem, nothing on stdout and no output directory left behind.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace spade::test {

struct CliFailure {
  std::string args;    // the command line; every occurrence of `out` is its output directory
  std::string needle;  // a piece of the expected error message
};

// timeout_s > 0 kills a case that runs longer (it fails with status 124): for inputs that could hang.
inline void check_cli_failures(const std::vector<CliFailure>& cases, const std::string& out, int timeout_s = 0) {
  for (size_t k = 0; k < cases.size(); ++k) {
    // Each case writes to its own directory, so that one failure does not hide behind another.
    const std::string own = out + "_" + std::to_string(k);
    std::string args = cases[k].args;
    for (size_t at = args.find(out); at != std::string::npos; at = args.find(out, at + own.size()))
      args.replace(at, out.size(), own);
    INFO(args);
    const CliRun r = spade_cli(args, timeout_s);
    INFO(r.err);
    CHECK(r.status == 1);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(cases[k].needle) != std::string::npos);
    CHECK(r.out.empty());
    CHECK(!std::filesystem::exists(own));
  }
}

}  // namespace spade::test
