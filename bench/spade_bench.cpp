// Forward and forward + input-gradient timings of ResNet-50 and MobileNetV2 at 224x224, printed
// as JSON lines in the same format as bench/bench_pytorch.py so bench/compare.py can put the two
// side by side. Random weights: the arithmetic does not depend on the values.
// With --saliency, the warm (in-process, after warm-up) time of saliency methods on ResNet-50
// with given weights and input: the library's steady state, next to `spade explain`'s cold
// per-process time that bench/compare_saliency.py measures.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "formats/model.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "interpret/saliency/methods.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

using namespace spade;

namespace {

struct Case {
  std::string name, arch;
  int batch;
  bool grad;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median wall time of fn in ms: two warm-up runs, then at least 3 runs and `budget_s` seconds.
std::pair<double, int> time_ms(const std::function<void()>& fn, double budget_s) {
  fn();
  fn();
  std::vector<double> ms;
  double total = 0;
  while (ms.size() < 3 || total < budget_s * 1000) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ms.push_back(t);
    total += t;
  }
  return {median(ms), static_cast<int>(ms.size())};
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  bool quick = false;
  std::string only, saliency, weights, input;
  int64_t target = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--saliency" && i + 1 < argc) saliency = argv[++i];
    else if (a == "--weights" && i + 1 < argc) weights = argv[++i];
    else if (a == "--input" && i + 1 < argc) input = argv[++i];
    else if (a == "--target" && i + 1 < argc) target = std::atoll(argv[++i]);
    else if (a == "--quick") quick = true;
    else if (a == "--cases" && i + 1 < argc) only = argv[++i];
    else {
      std::printf("usage: spade_bench [--threads N] [--quick] [--cases a,b,...]\n"
                  "       spade_bench --saliency m1,m2,... --weights R50.safetensors --input X.npy --target T\n"
                  "cases: resnet50_fwd_b1 resnet50_fwd_b16 resnet50_fwdgrad_b1 mobilenet_v2_fwd_b1 "
                  "mobilenet_v2_fwd_b16 mobilenet_v2_fwdgrad_b1 mobilenet_v2_tf_fwd_b1 mobilenet_v2_tf_fwd_b16 "
                  "mobilenet_v2_tf_fwdgrad_b1 gemm_peak\n"
                  "gemm_peak (only when named): float32 GEMM GFLOP/s at n = 2048, the machine's reference peak\n");
      return a == "--help" ? 0 : 2;
    }
  }
  kernels::set_num_threads(threads);
  if (!saliency.empty()) {
    Graph g = build_zoo_graph("resnet50");
    g.load_state_dict(load_safetensors(weights), weights);
    const Tensor x = load_npy(input);
    const interp::Network net{g, nullptr};
    std::stringstream list(saliency);
    std::string m;
    while (std::getline(list, m, ',')) {
      const interp::MethodInfo& info = interp::find_method(m);
      auto [ms, reps] = time_ms([&] { info.fn(net, x, target, interp::captum_preset()); }, quick ? 0.5 : 3.0);
      std::printf("{\"impl\": \"spade\", \"case\": \"saliency_%s_warm\", \"s\": %.4f, \"reps\": %d, \"threads\": %d}\n",
                  m.c_str(), ms / 1000, reps, threads);
      std::fflush(stdout);
    }
    return 0;
  }
  const std::vector<Case> cases = {
      {"resnet50_fwd_b1", "resnet50", 1, false},        {"resnet50_fwd_b16", "resnet50", 16, false},
      {"resnet50_fwdgrad_b1", "resnet50", 1, true},     {"mobilenet_v2_fwd_b1", "mobilenet_v2", 1, false},
      {"mobilenet_v2_fwd_b16", "mobilenet_v2", 16, false}, {"mobilenet_v2_fwdgrad_b1", "mobilenet_v2", 1, true},
      {"mobilenet_v2_tf_fwd_b1", "mobilenet_v2_tf", 1, false},  {"mobilenet_v2_tf_fwd_b16", "mobilenet_v2_tf", 16, false},
      {"mobilenet_v2_tf_fwdgrad_b1", "mobilenet_v2_tf", 1, true},
  };
  if (("," + only + ",").find(",gemm_peak,") != std::string::npos) {
    const int64_t n = 2048;
    std::vector<float> a(n * n), b(n * n), c(n * n);
    for (int64_t i = 0; i < n * n; ++i) a[i] = b[i] = static_cast<float>(i % 7) * 0.1f;
    auto [ms, reps] = time_ms([&] { kernels::gemm(false, false, n, n, n, a.data(), b.data(), c.data(), false); },
                              quick ? 0.5 : 2.0);
    std::printf("{\"impl\": \"spade\", \"case\": \"gemm_peak\", \"gflops\": %.1f, \"reps\": %d, \"threads\": %d}\n",
                2.0 * n * n * n / (ms * 1e6), reps, threads);
    std::fflush(stdout);
  }
  for (const Case& c : cases) {
    if (!only.empty() && ("," + only + ",").find("," + c.name + ",") == std::string::npos) continue;
    Graph g = build_zoo_graph(c.arch);
    random_init(g, 0);
    Tensor x = Tensor::full({c.batch, 3, 224, 224}, 0.5f);
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>((i * 2654435761u) % 1000) / 500.f - 1.f;
    std::function<void()> fn;
    if (c.grad) {
      fn = [&] {
        ForwardResult f = forward(g, x);
        std::vector<int64_t> target(c.batch, 0);
        backward(g, f, g.output(), one_hot_grad(f.out().shape(), target));
      };
    } else {
      ForwardOptions fo;
      fo.keep_activations = false;
      fn = [&, fo] { forward(g, x, fo); };
    }
    auto [ms, reps] = time_ms(fn, quick ? 0.5 : 3.0);
    std::printf("{\"impl\": \"spade\", \"case\": \"%s\", \"ms_per_image\": %.3f, \"reps\": %d, \"threads\": %d}\n",
                c.name.c_str(), ms / c.batch, reps, threads);
    std::fflush(stdout);
  }
  return 0;
}
