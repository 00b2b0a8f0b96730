#pragma once
// Helpers shared by the Catch2 tests: fixture paths, the optional ../shared checkout, random
// tensors and closeness checks that report the worst element.
#include <cstdint>
#include <functional>
#include <random>
#include <string>

#include "engine/tensor.h"
#include "formats/image.h"
#include "kernels/cpu/parallel.h"

namespace spade::test {

std::string data_path(const std::string& rel);  // tests/data/<rel>
std::string shared_path(const std::string& rel);  // ../shared/<rel>
std::string repo_path(const std::string& rel);    // <rel> in the repository (e.g. models/...)
bool shared_available();  // ../shared/models and ../shared/data present
std::string temp_dir();   // a fresh directory under /tmp for this test run

Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.f, float hi = 1.f);

// max |a - b| / (max |b| + tiny): the relative error measure used against golden files.
double max_rel_error(const Tensor& a, const Tensor& b);
double max_abs_error(const Tensor& a, const Tensor& b);

// Number of differing bytes of two 8-bit images; -1 when their sizes differ.
int64_t differing_bytes(const Image& a, const Image& b);

// The spade::Error message f throws, or "<no spade::Error thrown>"; any other exception escapes
// and fails the test.
std::string error_of(const std::function<void()>& f);

// The whole text of a file ("" when it cannot be read).
std::string slurp(const std::string& path);

// The spade binary run as a user would (stdin from /dev/null), with its exit status and output.
struct CliRun {
  int status;
  std::string out, err;
};
// Runs `spade ARGS`; with timeout_s > 0 the run is killed after that many seconds (status 124),
// for tests of inputs that could make a command hang.
CliRun spade_cli(const std::string& args, int timeout_s = 0);

// Sets the engine's thread count for a scope and restores it. Results are bit-identical only for
// a given thread count (docs/architecture.md), so a test that recomputes what a `--threads N`
// command wrote sets N here first.
struct ThreadGuard {
  int saved = kernels::num_threads();
  ThreadGuard() = default;
  explicit ThreadGuard(int threads) { kernels::set_num_threads(threads); }
  ~ThreadGuard() { kernels::set_num_threads(saved); }
};

}  // namespace spade::test
