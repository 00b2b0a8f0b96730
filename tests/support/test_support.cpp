#include "support/test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace spade::test {

namespace fs = std::filesystem;

std::string data_path(const std::string& rel) { return std::string(SPADE_TEST_DATA_DIR) + "/" + rel; }
std::string shared_path(const std::string& rel) { return std::string(SPADE_SHARED_DIR) + "/" + rel; }
std::string repo_path(const std::string& rel) { return std::string(SPADE_TEST_DATA_DIR) + "/../../" + rel; }

bool shared_available() {
  // SPADE_TEST_SKIP_SHARED: the sanitizer run (./setup.sh sanitize) leaves the real-data tests, which
  // sweep whole datasets, to the ordinary build.
  if (std::getenv("SPADE_TEST_SKIP_SHARED")) return false;
  return fs::exists(shared_path("models")) && fs::exists(shared_path("data/cifar10"));
}

std::string temp_dir() {
  static std::atomic<int> counter{0};
  fs::path p = fs::temp_directory_path() /
               ("spade_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

Tensor random_tensor(const Shape& shape, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = dist(rng);
  return t;
}

double max_abs_error(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return INFINITY;
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

double max_rel_error(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return INFINITY;
  double scale = 1e-12;
  for (int64_t i = 0; i < b.numel(); ++i) scale = std::max(scale, std::fabs(double(b[i])));
  return max_abs_error(a, b) / scale;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no spade::Error thrown>";
}

int64_t differing_bytes(const Image& a, const Image& b) {
  if (a.width != b.width || a.height != b.height || a.rgb.size() != b.rgb.size()) return -1;
  int64_t n = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) n += a.rgb[i] != b.rgb[i];
  return n;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

#ifdef SPADE_BINARY
CliRun spade_cli(const std::string& args, int timeout_s) {
  static std::atomic<int> counter{0};
  const std::string dir = temp_dir();
  const int k = counter++;
  const std::string out = dir + "/out" + std::to_string(k) + ".txt";
  const std::string err = dir + "/err" + std::to_string(k) + ".txt";
  const std::string limit = timeout_s > 0 ? "timeout -k 5 " + std::to_string(timeout_s) + " " : "";
  const std::string cmd = limit + std::string(SPADE_BINARY) + " " + args + " >" + out + " 2>" + err + " </dev/null";
  const int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(out), slurp(err)};
}
#endif

}  // namespace spade::test
