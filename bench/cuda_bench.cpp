// spade_cuda_bench: the CUDA backend on ResNet-50 at 224x224 with seeded random weights.
//   forward    eval-mode forward at batch 1 and 64 (median of --repeat synchronised runs)
//   fastspade  FastSPADE end to end (SparseGPT, sparsity 0.9, the 53 default layers, --augs
//              augmentations of one synthetic 320x240 image), run twice: the first pays warm-up
//   obc        the exact OBC solver on --obc-layers with --obc-augs augmentations
// Prints a table and writes every number as JSON to --out, rewritten after each case so that a
// later case killed by a timeout leaves the earlier results. --device cpu runs the same cases on
// the CPU engine (for the GPU's speed-up on the same machine). bench/run_gpu_bench.sh runs it next
// to the PyTorch peers (bench/gpu_pytorch.py, bench/spade_pytorch.py --device cuda).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/executor.h"
#include "formats/file_io.h"
#include "formats/model.h"
#include "formats/zoo.h"
#include "interpret/spade/calibration.h"
#include "interpret/spade/trace.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/gemm.h"

using namespace spade;
using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Options {
  std::set<std::string> cases{"forward", "fastspade", "obc"};
  int64_t augs = 1024, obc_augs = 64, obc_block = 0;
  int repeat = 30;
  bool tf32 = false;
  Device device = Device::CUDA;
  std::string obc_layers = "all", out = "cuda_bench.json";
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

Tensor random_input(int64_t batch, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  Tensor x = Tensor::empty({batch, 3, 224, 224});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = normal(rng);
  return x;
}

// Kaiming-uniform weights (seed 0). With the default BatchNorm statistics (mean 0, var 1) eval
// mode would pass the shrinking activations of random weights on unchanged, so the statistics are
// set from one train-mode pass over 8 random images with momentum 1 (the batch statistics).
Graph make_resnet50() {
  Graph g = build_zoo_graph("resnet50");
  random_init(g, 0);
  for (Node& n : g.nodes())
    if (n.op == OpKind::BatchNorm2d) n.attrs.momentum = 1.f;
  ForwardOptions fo;
  fo.keep_activations = false;
  forward_train(g, random_input(8, 1), fo);
  for (Node& n : g.nodes())
    if (n.op == OpKind::BatchNorm2d) n.attrs.momentum = 0.1f;
  return g;
}

// Multiply-adds of the conv and linear layers, times 2 (the usual 8.2 GFLOP for ResNet-50).
double flops_per_image(const Graph& g) {
  const std::vector<Shape> shapes = g.infer_shapes(1);
  double f = 0;
  for (int i = 0; i < g.size(); ++i) {
    const OpAttrs& a = g.node(i).attrs;
    if (g.node(i).op == OpKind::Conv2d)
      f += 2.0 * shape_numel(shapes[i]) * (a.in_channels / a.groups) * a.kernel[0] * a.kernel[1];
    else if (g.node(i).op == OpKind::Linear)
      f += 2.0 * a.in_channels * a.out_channels;
  }
  return f;
}

// A fixed 320x240 picture: colour gradients, a diagonal wave, discs, rectangles and a fine texture
// (edges and flat regions at several scales, like a photo; no file needed).
Image synthetic_image() {
  const int W = 320, H = 240;
  struct Disc { double cx, cy, r, c[3]; };
  struct Rect { int x0, y0, x1, y1; double c[3]; };
  const Disc discs[] = {{80, 60, 40, {0.9, 0.2, 0.1}}, {230, 150, 55, {0.1, 0.6, 0.9}}, {150, 205, 25, {0.95, 0.9, 0.2}}};
  const Rect rects[] = {{15, 150, 95, 225, {0.2, 0.8, 0.3}}, {195, 15, 305, 70, {0.6, 0.2, 0.7}}};
  Image im;
  im.width = W;
  im.height = H;
  im.rgb.resize(static_cast<size_t>(W) * H * 3);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      double c[3] = {double(x) / W, double(y) / H, 0.5 + 0.5 * std::sin((x + y) / 23.0)};
      for (const Disc& d : discs)
        if ((x - d.cx) * (x - d.cx) + (y - d.cy) * (y - d.cy) < d.r * d.r) std::copy(d.c, d.c + 3, c);
      for (const Rect& r : rects)
        if (x >= r.x0 && x < r.x1 && y >= r.y0 && y < r.y1) std::copy(r.c, r.c + 3, c);
      const double texture = 0.04 * std::sin(1.7 * x) * std::cos(2.3 * y);
      for (int k = 0; k < 3; ++k)
        im.rgb[(static_cast<size_t>(y) * W + x) * 3 + k] =
            static_cast<uint8_t>(std::clamp(c[k] + texture, 0.0, 1.0) * 255 + 0.5);
    }
  return im;
}

double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

json bench_forward(const Graph& g, const Options& o) {
  const Graph gd = g.to(o.device);
  const double flop = flops_per_image(g);
  ForwardOptions fo;
  fo.keep_activations = false;
  json cases = json::array();
  for (int64_t batch : {int64_t(1), int64_t(64)}) {
    const Tensor host_x = random_input(batch, 2);
    const Tensor x = host_x.to(o.device);
    std::vector<float> out;
    auto run = [&] {
      ForwardResult r = forward(gd, x, fo);
      synchronize(o.device);
      return r;
    };
    for (int i = 0; i < 3; ++i) out = run().out().to_vector();
    std::vector<double> ms;
    for (int i = 0; i < o.repeat; ++i) {
      const auto t0 = Clock::now();
      run();
      ms.push_back(1e3 * seconds_since(t0));
    }
    const double med = median(ms);
    json c = {{"batch", batch},
              {"median_ms", med},
              {"min_ms", *std::min_element(ms.begin(), ms.end())},
              {"runs", o.repeat},
              {"ms_per_image", med / batch},
              {"images_per_s", 1e3 * batch / med},
              {"tflops", flop * batch / (med * 1e-3) / 1e12},
              {"finite", std::all_of(out.begin(), out.end(), [](float v) { return std::isfinite(v); })}};
    // The GPU result against the CPU engine's, so a fast but wrong kernel cannot go unnoticed.
    if (batch == 1 && o.device == Device::CUDA)
      c["rel_l2_vs_cpu"] = relative_l2(out, forward(g, host_x, fo).out().to_vector());
    std::printf("forward batch %3lld: %8.3f ms (min %.3f), %7.1f images/s, %6.2f TFLOP/s\n",
                static_cast<long long>(batch), med, c["min_ms"].get<double>(), c["images_per_s"].get<double>(),
                c["tflops"].get<double>());
    std::fflush(stdout);
    cases.push_back(c);
  }
  return {{"gflop_per_image", flop / 1e9}, {"cases", cases}};
}

// Progress on stderr: every tenth of a stage, with the time since the trace started.
interp::TraceProgress progress_printer(const std::string& what) {
  auto last = std::make_shared<std::pair<std::string, int64_t>>("", -1);
  const auto t0 = Clock::now();
  return [=](const std::string& stage, int64_t done, int64_t total) {
    const int64_t tenth = total > 0 ? 10 * done / total : 10;
    if (stage == last->first && tenth == last->second) return;
    *last = {stage, tenth};
    std::fprintf(stderr, "  %s: %s %lld/%lld (%.1f s)\n", what.c_str(), stage.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total), seconds_since(t0));
  };
}

// One trace on `device`, timed from the image in host memory to the pruned weights in host memory.
json run_trace(const Graph& g, Device device, interp::Solver solver, int64_t augs,
               const interp::SparsitySchedule& sparsity, int64_t obc_block, const std::string& what) {
  const Image image = synthetic_image();
  interp::PruneConfig cfg;
  cfg.solver = solver;
  cfg.sparsity = sparsity;
  cfg.obc_block = obc_block;
  cfg.device = device;
  const auto t0 = Clock::now();
  std::unique_ptr<interp::Calibration> calib = interp::augmented_calibration(image, interp::AugmentConfig{}, augs, 0);
  const interp::Trace tr = interp::compute_trace(g, *calib, cfg, progress_printer(what));
  const double wall = seconds_since(t0);

  std::map<std::string, interp::PrunableLayer> shapes;
  for (const auto& l : interp::conv_and_linear_layers(g)) shapes[l.name] = l;
  int64_t weights = 0, zeros = 0, nonfinite = 0;
  json layers = json::array();
  for (const auto& l : tr.layers) {
    if (!l.pruned) continue;
    weights += l.weights;
    zeros += l.zeros;
    const interp::PrunableLayer& p = shapes.at(l.name);
    layers.push_back({{"name", l.name}, {"rows", p.rows * p.groups}, {"cols", p.cols}, {"kernel_area", p.kernel_area},
                      {"seconds", l.seconds}, {"achieved", l.achieved}, {"relative_loss", l.relative_loss}});
  }
  for (const auto& [key, w] : tr.weights)
    for (int64_t i = 0; i < w.numel(); ++i) nonfinite += !std::isfinite(w[i]);
  const interp::TraceTimings& t = tr.timings;
  return {{"wall_s", wall},
          {"augment_s", t.augment_s},
          {"forward_s", t.forward_s},
          {"hessian_s", t.hessian_s},
          {"solve_s", t.solve_s},
          {"hessian_tflop", t.hessian_flops / 1e12},
          {"hessian_tflops", t.hessian_s > 0 ? t.hessian_flops / t.hessian_s / 1e12 : 0.0},
          {"batch", t.batch},
          {"augs", augs},
          {"layers_pruned", layers.size()},
          {"achieved_sparsity", weights > 0 ? static_cast<double>(zeros) / weights : 0.0},
          {"nonfinite_weights", nonfinite},
          {"layers", layers}};
}

void print_trace(const char* label, const json& r) {
  std::printf("%-16s wall %7.2f s: augment %.2f, forward %.2f, Hessians %.2f (%.1f TFLOP/s), solve %.2f; "
              "%lld layers at %.4f sparsity%s\n",
              label, r["wall_s"].get<double>(), r["augment_s"].get<double>(), r["forward_s"].get<double>(),
              r["hessian_s"].get<double>(), r["hessian_tflops"].get<double>(), r["solve_s"].get<double>(),
              static_cast<long long>(r["layers_pruned"].get<int64_t>()), r["achieved_sparsity"].get<double>(),
              r["nonfinite_weights"].get<int64_t>() ? "  NON-FINITE WEIGHTS" : "");
  std::fflush(stdout);
}

interp::SparsitySchedule obc_schedule(const std::string& layers) {
  if (layers == "all") return interp::SparsitySchedule::uniform(0.9);
  json j = json::object();
  std::stringstream list(layers);
  std::string name;
  while (std::getline(list, name, ','))
    if (!name.empty()) j[name] = 0.9;
  return interp::SparsitySchedule::from_json(j.dump(), "--obc-layers");
}

void print_table(const json& r) {
  std::printf("\n%s, TF32 %s\n", r["device"]["describe"].get<std::string>().c_str(), r["tf32"].get<bool>() ? "on" : "off");
  std::printf("%-26s %12s  %s\n", "case", "time", "rate");
  if (r.contains("forward"))
    for (const auto& c : r["forward"]["cases"])
      std::printf("%-26s %9.3f ms  %.1f images/s, %.2f TFLOP/s\n",
                  ("forward batch " + std::to_string(c["batch"].get<int64_t>())).c_str(), c["median_ms"].get<double>(),
                  c["images_per_s"].get<double>(), c["tflops"].get<double>());
  if (r.contains("fastspade"))
    for (size_t i = 0; i < r["fastspade"]["runs"].size(); ++i) {
      const json& t = r["fastspade"]["runs"][i];
      std::printf("%-26s %10.2f s  Hessians %.1f TFLOP/s, solve %.2f s\n",
                  ("fastspade " + std::to_string(t["augs"].get<int64_t>()) + " run " + std::to_string(i + 1)).c_str(),
                  t["wall_s"].get<double>(), t["hessian_tflops"].get<double>(), t["solve_s"].get<double>());
    }
  if (r.contains("obc"))
    std::printf("%-26s %10.2f s  solve %.2f s over %lld layers\n",
                ("obc " + std::to_string(r["obc"]["augs"].get<int64_t>()) + " augs").c_str(),
                r["obc"]["wall_s"].get<double>(), r["obc"]["solve_s"].get<double>(),
                static_cast<long long>(r["obc"]["layers_pruned"].get<int64_t>()));
}

int usage(int rc) {
  std::printf("usage: spade_cuda_bench [--cases forward,fastspade,obc] [--augs 1024] [--repeat 30] [--tf32]\n"
              "                        [--device cuda|cpu]\n"
              "                        [--obc-augs 64] [--obc-layers all|NAME,...] [--obc-block 0]\n"
              "                        [--out cuda_bench.json]\n");
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string device_name_arg = "cuda";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--cases" && has_value) {
      o.cases.clear();
      std::stringstream list(argv[++i]);
      std::string c;
      while (std::getline(list, c, ',')) o.cases.insert(c);
    } else if (a == "--augs" && has_value) o.augs = std::atoll(argv[++i]);
    else if (a == "--obc-augs" && has_value) o.obc_augs = std::atoll(argv[++i]);
    else if (a == "--obc-layers" && has_value) o.obc_layers = argv[++i];
    else if (a == "--obc-block" && has_value) o.obc_block = std::atoll(argv[++i]);
    else if (a == "--repeat" && has_value) o.repeat = std::atoi(argv[++i]);
    else if (a == "--out" && has_value) o.out = argv[++i];
    else if (a == "--tf32") o.tf32 = true;
    else if (a == "--device" && has_value) device_name_arg = argv[++i];
    else return usage(a == "--help" ? 0 : 2);
  }
  for (const auto& c : o.cases)
    if (c != "forward" && c != "fastspade" && c != "obc") return usage(2);
  if (o.augs < 1 || o.obc_augs < 1 || o.repeat < 1 || o.obc_block < 0) return usage(2);
  try {
    o.device = parse_device(device_name_arg);
    json r = {{"impl", "spade"}, {"model", "resnet50"}, {"tf32", o.tf32 && o.device == Device::CUDA}};
    if (o.device == Device::CUDA) {
      cuda::set_allow_tf32(o.tf32);
      const CudaDeviceInfo info = cuda_device_info(0);
      r["device"] = {{"name", info.name}, {"describe", describe(info)}, {"total_memory", info.total_memory},
                     {"cc", std::to_string(info.cc_major) + "." + std::to_string(info.cc_minor)},
                     {"sm_count", info.sm_count}};
    } else {
      r["device"] = {{"name", "cpu"}, {"describe", "CPU, " + std::to_string(kernels::num_threads()) + " threads"}};
    }
    auto save = [&] { write_file_atomic(o.out, r.dump(1) + "\n"); };
    std::printf("%s\n", r["device"]["describe"].get<std::string>().c_str());
    const auto t_setup = Clock::now();
    const Graph g = make_resnet50();
    r["setup_s"] = seconds_since(t_setup);
    save();

    if (o.cases.count("forward")) {
      r["forward"] = bench_forward(g, o);
      save();
    }
    if (o.cases.count("fastspade")) {
      json runs = json::array();
      for (int k = 0; k < 2; ++k) {
        runs.push_back(run_trace(g, o.device, interp::Solver::SparseGPT, o.augs, interp::SparsitySchedule::uniform(0.9), 0,
                                 "fastspade run " + std::to_string(k + 1)));
        print_trace(("fastspade run " + std::to_string(k + 1)).c_str(), runs.back());
        r["fastspade"] = {{"solver", "sparsegpt"}, {"sparsity", 0.9}, {"augs", o.augs}, {"runs", runs}};
        save();
      }
    }
    if (o.cases.count("obc")) {
      json t = run_trace(g, o.device, interp::Solver::OBC, o.obc_augs, obc_schedule(o.obc_layers), o.obc_block, "obc");
      print_trace("obc", t);
      t["selection"] = o.obc_layers;
      t["obc_block"] = o.obc_block;
      r["obc"] = t;
      save();
    }
    print_table(r);
    std::printf("wrote %s\n", o.out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spade_cuda_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
