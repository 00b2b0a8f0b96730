// The fuzz corpora replayed as ordinary tests: every committed seed (fuzz/corpus/<target>/) and
// every input that ever crashed a fuzzer (fuzz/crashes/<target>/) goes through its target again;
// each must be accepted or refused with a spade::Error, never anything else (fuzz/targets.h). In
// the sanitizer build this also checks them for memory errors and undefined behaviour.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "formats/file_io.h"
#include "fuzz/targets.h"
#include "support/test_support.h"

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> inputs_of(const std::string& target) {
  std::vector<fs::path> files;
  for (const char* kind : {"corpus", "crashes"}) {
    const fs::path dir = fs::path(SPADE_FUZZ_DIR) / kind / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("every fuzz corpus input is accepted or cleanly refused", "[fuzz]") {
  for (const spade::fuzz::Target& t : spade::fuzz::all_targets()) {
    const std::vector<fs::path> files = inputs_of(t.name);
    INFO("target " << t.name);
    CHECK(!files.empty());  // every target has seeds
    for (const fs::path& p : files) {
      INFO(p.string());
      std::ifstream f(p, std::ios::binary);
      const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      CHECK_NOTHROW(spade::fuzz::run_one(t, bytes.data(), bytes.size()));
    }
  }
}

TEST_CASE("fuzz targets refuse garbage with spade::Error only", "[fuzz]") {
  // A handful of fixed hostile inputs for every target, beyond what the corpora hold.
  const std::vector<std::string> hostile = {"", std::string(1, '\0'), "{", "[]", "null", std::string(64, '\xff'),
                                            "{\"a\": 1e999}", "\x93NUMPY\x01\x00\xff\xff{'descr': '<f4'}"};
  for (const spade::fuzz::Target& t : spade::fuzz::all_targets())
    for (const std::string& h : hostile) {
      INFO("target " << t.name << ", input of " << h.size() << " bytes");
      CHECK_NOTHROW(spade::fuzz::run_one(t, reinterpret_cast<const uint8_t*>(h.data()), h.size()));
    }
  CHECK(spade::fuzz::find_target("nosuch") == nullptr);
}

TEST_CASE("files that never end are refused, not read", "[fuzz]") {
  // A path from the command line or a model JSON may name a device: reading /dev/zero whole would
  // never finish.
  CHECK(spade::test::error_of([] { spade::read_file("/dev/zero"); }).find("not a regular file") != std::string::npos);
}
