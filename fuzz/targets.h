#pragma once
// Fuzz targets: each feeds one input to one reader of untrusted data (model files, JSON, images,
// NPY arrays, sparsity and rules files, objectives, the command line). Refusing an input with
// spade::Error is the expected outcome; any other exception, a crash, a hang or a sanitizer report
// is a bug. The libFuzzer drivers (fuzz/libfuzzer_main.cpp, built with -DSPADE_FUZZ=ON and clang)
// run them; tests/test_fuzz_corpus.cpp replays the committed corpora (fuzz/corpus/<target>/) and
// every input that ever crashed (fuzz/crashes/<target>/) as ordinary tests.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace spade::fuzz {

struct Target {
  const char* name;
  const char* what;  // the reader it exercises
  void (*fn)(const uint8_t* data, size_t size);
};

const std::vector<Target>& all_targets();
const Target* find_target(const std::string& name);  // nullptr when unknown

// Runs a target on one input; a spade::Error (a clean refusal) is swallowed, anything else escapes.
void run_one(const Target& t, const uint8_t* data, size_t size);

}  // namespace spade::fuzz
