#include "interpret/spade/trace.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <numeric>

#include "engine/error.h"
#include "engine/executor.h"
#include "kernels/cpu/obc.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/sparsegpt.h"
#include "interpret/spade/gpu_solvers.h"

namespace spade::interp {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Layers solved at once on a GPU (each on its own stream).
constexpr int kGpuSolveThreads = 4;
// Layers with at most this many columns per group are solved on the CPU even in a GPU trace.
constexpr int64_t kGpuMinCols = 32;

bool needs_solve(const PlannedLayer& p, const PruneConfig& cfg) {
  return p.target > 0.0 || (cfg.authors_threshold && cfg.solver == Solver::SparseGPT);
}

// OBC removes blocks of consecutive columns; for a conv the paper's blocks are kh*kw input
// channels at one kernel tap, so columns go from (c, tap) to (tap, c) order first.
struct ColumnOrder {
  int64_t channels = 1, taps = 1;
  int64_t to_new(int64_t j) const { return (j % taps) * channels + j / taps; }
};

// H in host memory; `gpu` runs the greedy passes on the GPU.
void solve_obc(const PrunableLayer& l, float* w, const double* H, int64_t obc_block, bool gpu, LayerReport& rep,
               const std::function<void(int64_t)>& rows_done) {
  const int64_t rows = l.rows, cols = l.cols;
  ColumnOrder order{cols / l.kernel_area, l.kernel_area};
  // A depthwise kernel (one input channel) would be a single block: prune it unstructured.
  const bool blocked = obc_block == 0 && l.conv && l.kernel_area > 1 && order.channels > 1;
  std::vector<float> pw(w, w + rows * cols);
  std::vector<double> ph(H, H + cols * cols);
  if (blocked) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) pw[r * cols + order.to_new(j)] = w[r * cols + j];
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) ph[order.to_new(i) * cols + order.to_new(j)] = H[i * cols + j];
  }
  kernels::ObcOptions opt;
  opt.block = blocked ? l.kernel_area : 1;
  opt.sparsity = rep.target;
  opt.progress = rows_done;
  std::vector<float> start = pw;  // what OBC starts from: dead inputs' weights zeroed
  for (int64_t j = 0; j < cols; ++j)
    if (ph[j * cols + j] == 0.0)
      for (int64_t r = 0; r < rows; ++r) start[r * cols + j] = 0.f;
  kernels::ObcStats st = gpu ? obc_prune_gpu(pw.data(), rows, cols, ph.data(), opt)
                             : kernels::obc_prune(pw.data(), rows, cols, ph.data(), opt);
  if (!st.ok) throw Error("layer \"" + l.name + "\": its Hessian is not positive definite even with damping " +
                          std::to_string(st.damping) + " (degenerate or non-finite calibration inputs?)");
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) w[r * cols + j] = blocked ? pw[r * cols + order.to_new(j)] : pw[r * cols + j];
  rep.damping = std::max(rep.damping, st.damping);
  rep.retries = std::max(rep.retries, st.retries);
  rep.dead_columns += st.dead_columns;
  // The step losses are measured with H + lambda I; the undamped loss is lambda ||dW||^2 less.
  double change = 0.0;
  for (int64_t i = 0; i < rows * cols; ++i) change += static_cast<double>(pw[i] - start[i]) * (pw[i] - start[i]);
  rep.loss += std::max(0.0, st.loss - st.damping * change);
}

// H where the accumulator left it: host memory, or device memory when `gpu`.
void solve_sparsegpt(const PrunableLayer& l, float* w, const double* H, bool gpu, const PruneConfig& cfg,
                     LayerReport& rep) {
  kernels::SparseGptOptions opt;
  opt.blocksize = cfg.blocksize > 0 ? cfg.blocksize : (l.conv ? l.kernel_area : 1);
  opt.sparsity = rep.target;
  opt.percdamp = cfg.percdamp;
  opt.authors_threshold = cfg.authors_threshold;
  kernels::SparseGptStats st = gpu ? sparsegpt_prune_gpu(w, l.rows, l.cols, H, opt)
                                   : kernels::sparsegpt_prune(w, l.rows, l.cols, H, opt);
  if (!st.ok) throw Error("layer \"" + l.name + "\": its Hessian is not positive definite even with damping " +
                          std::to_string(st.damping) + " (degenerate or non-finite calibration inputs?)");
  rep.damping = std::max(rep.damping, st.damping);
  rep.retries = std::max(rep.retries, st.retries);
  rep.dead_columns += st.dead_columns;
  rep.loss += st.loss;
}

int64_t zeros(const Tensor& t) {
  int64_t z = 0;
  for (int64_t i = 0; i < t.numel(); ++i) z += t[i] == 0.f;
  return z;
}

LayerReport untouched_report(const Graph& g, const PlannedLayer& p) {
  LayerReport r;
  r.name = p.layer.name;
  r.weight_key = p.layer.weight_key;
  r.target = p.target;
  const Tensor& w = g.node(p.layer.node).params.at("weight");
  r.weights = w.numel();
  r.zeros = zeros(w);
  r.achieved = static_cast<double>(r.zeros) / std::max<int64_t>(1, r.weights);
  return r;
}

}  // namespace

Solver solver_from_name(const std::string& name) {
  if (name == "sparsegpt") return Solver::SparseGPT;
  if (name == "obc") return Solver::OBC;
  throw Error("--solver: unknown solver \"" + name + "\" (expected sparsegpt or obc)");
}

const char* solver_name(Solver s) { return s == Solver::SparseGPT ? "sparsegpt" : "obc"; }

int64_t default_batch(const Graph& g, const Shape& image_chw) {
  Graph sized = g;  // shares the weights; only the input size differs
  sized.input_chw = {image_chw[0], image_chw[1], image_chw[2]};
  const std::vector<Shape> shapes = sized.infer_shapes(1);
  int64_t largest = 1;
  for (const auto& s : shapes) largest = std::max(largest, shape_numel(s));
  // A forward pass holds a few activations of the largest size at once (input, output, a
  // residual branch) plus a staging copy for the Hessians: budget ~1 GiB of floats.
  const int64_t budget = int64_t(1) << 28;
  return std::clamp<int64_t>(budget / (6 * largest), 1, 256);
}

std::vector<HessianAccumulator> collect_hessians(const Graph& g, const std::vector<PlannedLayer>& layers,
                                                 const Calibration& calib, int64_t batch, TraceTimings& t,
                                                 const TraceProgress& progress, Device device) {
  std::vector<HessianAccumulator> hs;
  std::vector<int> slot(g.size(), -1);
  for (const auto& p : layers) {
    slot[p.layer.node] = static_cast<int>(hs.size());
    hs.emplace_back(g, p.layer);
  }
  const int64_t n = calib.size();
  if (batch <= 0) throw Error("--batch must be positive");
  t.batch = batch;
  double hook_s = 0.0;
  ForwardOptions fo;
  fo.keep_activations = false;
  // GPU work is asynchronous: the timers wait for it so that forward and Hessian time separate.
  fo.hook = [&](int node, const std::vector<const Tensor*>& inputs, const Tensor& out) {
    if (slot[node] < 0) return;
    synchronize(device);
    const auto t0 = Clock::now();
    hs[slot[node]].add(*inputs[0], &out);
    synchronize(device);
    hook_s += seconds_since(t0);
  };
  const Graph device_graph = device == Device::CPU ? Graph() : g.to(device);
  const Graph& run_graph = device == Device::CPU ? g : device_graph;
  if (progress) progress("hessians", 0, n);
  for (int64_t first = 0; first < n; first += batch) {
    const int64_t count = std::min(batch, n - first);
    auto t0 = Clock::now();
    Tensor x = calib.batch_on(device, first, count);
    synchronize(device);
    t.augment_s += seconds_since(t0);
    t0 = Clock::now();
    const double hook_before = hook_s;
    forward(run_graph, x, fo);
    synchronize(device);
    t.forward_s += seconds_since(t0) - (hook_s - hook_before);
    if (progress) progress("hessians", first + count, n);
  }
  t.hessian_s += hook_s;
  for (const auto& h : hs) t.hessian_flops += h.flops();
  return hs;
}

Trace solve_layers(const Graph& g, const std::vector<PlannedLayer>& layers, std::vector<HessianAccumulator>& hs,
                   const PruneConfig& cfg, const TraceProgress& progress) {
  if (hs.size() != layers.size()) throw Error("solve_layers: one Hessian per layer expected");
  const auto start = Clock::now();
  Trace tr;
  tr.solver = solver_name(cfg.solver);
  tr.sparsity = cfg.sparsity.describe();
  const int64_t L = static_cast<int64_t>(layers.size());
  std::vector<LayerReport> reports(L);
  std::vector<Tensor> pruned(L);
  for (int64_t i = 0; i < L; ++i) {
    reports[i] = untouched_report(g, layers[i]);
    reports[i].pruned = true;
    reports[i].loss = 0.0;
    pruned[i] = g.node(layers[i].layer.node).params.at("weight").clone();
  }

  // One layer (all its groups) is one task; the solvers report the loss they caused.
  auto finish_layer = [&](int64_t i, Clock::time_point t0) {
    LayerReport& rep = reports[i];
    // A NaN here would reach every map computed on the trace; stop at the stage that made it.
    const float* w = pruned[i].data();
    for (int64_t j = 0; j < pruned[i].numel(); ++j)
      if (!std::isfinite(w[j]))
        throw Error("layer \"" + rep.name + "\": the " + tr.solver + " update (SPADE trace, solve stage) gave NaN or Inf weights");
    if (!std::isfinite(rep.loss))
      throw Error("layer \"" + rep.name + "\": the " + tr.solver + " update (SPADE trace, solve stage) gave a NaN or Inf loss");
    const double energy = hs[i].output_energy();
    rep.relative_loss = energy > 0 ? rep.loss / energy : 0.0;
    rep.zeros = zeros(pruned[i]);
    rep.achieved = static_cast<double>(rep.zeros) / std::max<int64_t>(1, rep.weights);
    rep.seconds = seconds_since(t0);
  };

  std::mutex progress_mutex;
  if (cfg.solver == Solver::SparseGPT) {
    // Layers are independent: solve several at once, biggest first, each single-threaded.
    std::vector<int64_t> order(L);
    std::iota(order.begin(), order.end(), 0);
    auto cost = [&](int64_t i) {
      const auto& l = layers[i].layer;
      return static_cast<double>(l.groups) * l.cols * l.cols * (l.cols + l.rows);
    };
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return cost(a) > cost(b); });
    int64_t done = 0;
    if (progress) progress("solve", 0, L);
    std::exception_ptr failure;
    // On the GPU a layer's kernels fill only part of the device: a few layers are solved at once,
    // each thread on its own stream. Their Hessians are finalised first, on the engine's stream.
    const bool gpu = L > 0 && hs[0].hessian().device != Device::CPU;
    // Layers with tiny Hessians (depthwise convs: one 9 x 9 per channel) are solved on the CPU
    // from a host copy: hundreds of groups of launches would cost more than the arithmetic.
    std::vector<std::vector<double>> host_h(L);
    auto on_cpu = [&](int64_t i) { return !gpu || layers[i].layer.cols <= kGpuMinCols; };
    if (gpu) {
      for (int64_t i = 0; i < L; ++i) {
        hs[i].finalize();
        if (on_cpu(i)) host_h[i] = hs[i].hessian().to_host();
      }
      synchronize(Device::CUDA);
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(gpu ? kGpuSolveThreads : kernels::num_threads())
    for (int64_t k = 0; k < L; ++k) {
      const int64_t i = order[k];
      try {
        const auto t0 = Clock::now();
        const PrunableLayer& l = layers[i].layer;
        if (!gpu) hs[i].finalize();
        for (int64_t gi = 0; gi < l.groups; ++gi) {
          const double* H = host_h[i].empty() ? hs[i].hessian().group(gi) : host_h[i].data() + gi * l.cols * l.cols;
          solve_sparsegpt(l, pruned[i].data() + gi * l.rows * l.cols, H, !on_cpu(i), cfg, reports[i]);
        }
        finish_layer(i, t0);
      } catch (...) {
        std::lock_guard<std::mutex> lock(progress_mutex);
        if (!failure) failure = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(progress_mutex);
      ++done;
      if (progress && omp_get_thread_num() == 0) progress("solve", done, L);
    }
    if (failure) std::rethrow_exception(failure);
    if (progress) progress("solve", L, L);
  } else {
    // OBC spreads each layer's rows over the threads; progress counts rows over all layers.
    int64_t total_rows = 0, rows_before = 0;
    for (const auto& p : layers) total_rows += p.layer.rows * p.layer.groups;
    if (progress) progress("solve", 0, total_rows);
    for (int64_t i = 0; i < L; ++i) {
      const auto t0 = Clock::now();
      const PrunableLayer& l = layers[i].layer;
      hs[i].finalize();
      const bool gpu = hs[i].hessian().device != Device::CPU;
      // OBC reorders the columns on the host first; a GPU Hessian comes back for that.
      const std::vector<double> host_h = gpu ? hs[i].hessian().to_host() : std::vector<double>();
      for (int64_t gi = 0; gi < l.groups; ++gi) {
        auto rows_done = [&](int64_t r) {
          if (progress) progress("solve", rows_before + r, total_rows);
        };
        const double* H = gpu ? host_h.data() + gi * l.cols * l.cols : hs[i].hessian().group(gi);
        solve_obc(l, pruned[i].data() + gi * l.rows * l.cols, H, cfg.obc_block, gpu && l.cols > kGpuMinCols,
                  reports[i], rows_done);
        rows_before += l.rows;
      }
      finish_layer(i, t0);
    }
  }
  for (int64_t i = 0; i < L; ++i) tr.weights[layers[i].layer.weight_key] = pruned[i];
  tr.layers = std::move(reports);
  tr.timings.solve_s = seconds_since(start);
  return tr;
}

std::vector<Trace> compute_traces(const Graph& g, const Calibration& calib, const PruneConfig& cfg,
                                  const std::vector<SparsitySchedule>& schedules, const TraceProgress& progress) {
  if (schedules.empty()) throw Error("compute_traces: no sparsity schedule given");
  std::vector<PruneConfig> cfgs;
  std::vector<std::vector<PlannedLayer>> plans;
  // The layers any schedule solves, in graph order: their Hessians are collected in one pass.
  std::map<int64_t, PlannedLayer> union_by_node;
  for (const SparsitySchedule& s : schedules) {
    cfgs.push_back(cfg);
    cfgs.back().sparsity = s;
    plans.push_back(plan_layers(g, s, cfg.selection));
    for (const auto& p : plans.back())
      if (needs_solve(p, cfgs.back())) union_by_node.emplace(p.layer.node, p);
  }
  std::vector<PlannedLayer> active;
  for (const auto& [node, p] : union_by_node) active.push_back(p);
  TraceTimings t;
  Tensor probe = calib.batch(0, 1);
  int64_t batch = cfg.batch > 0 ? cfg.batch : default_batch(g, {probe.dim(1), probe.dim(2), probe.dim(3)});
  // A GPU holds far more than the CPU budget of ~1 GiB of activations.
  if (cfg.batch <= 0 && cfg.device != Device::CPU) batch = std::min<int64_t>(batch * 8, 256);
  std::vector<HessianAccumulator> hs;
  if (!active.empty()) hs = collect_hessians(g, active, calib, batch, t, progress, cfg.device);

  std::vector<Trace> traces;
  for (size_t k = 0; k < schedules.size(); ++k) {
    // This schedule's layers and their Hessians (moved when there is one schedule, else copied:
    // solving finalises a Hessian, which later schedules then find finalised).
    std::vector<PlannedLayer> mine;
    std::vector<HessianAccumulator> mine_hs;
    for (const auto& p : plans[k]) {
      if (!needs_solve(p, cfgs[k])) continue;
      const size_t i = std::distance(union_by_node.begin(), union_by_node.find(p.layer.node));
      mine.push_back(p);
      mine_hs.push_back(schedules.size() == 1 ? std::move(hs[i]) : hs[i]);
    }
    const std::string stage = schedules.size() == 1 ? "solve" : "solve " + std::to_string(k + 1) + "/" +
                                                                    std::to_string(schedules.size());
    const TraceProgress solve_progress = [&](const std::string& s, int64_t done, int64_t total) {
      if (progress) progress(s == "solve" ? stage : s, done, total);
    };
    Trace tr = solve_layers(g, mine, mine_hs, cfgs[k], solve_progress);
    const double solve_s = tr.timings.solve_s;
    tr.timings = t;
    tr.timings.batch = batch;
    tr.timings.solve_s = solve_s;
    tr.samples = calib.size();
    tr.calibration = calib.describe();
    // Report every planned layer in graph order, the untouched ones too.
    std::vector<LayerReport> all;
    size_t j = 0;
    for (const auto& p : plans[k]) {
      if (j < mine.size() && mine[j].layer.node == p.layer.node)
        all.push_back(tr.layers[j++]);
      else
        all.push_back(untouched_report(g, p));
    }
    tr.layers = std::move(all);
    traces.push_back(std::move(tr));
  }
  return traces;
}

Trace compute_trace(const Graph& g, const Calibration& calib, const PruneConfig& cfg, const TraceProgress& progress) {
  return std::move(compute_traces(g, calib, cfg, {cfg.sparsity}, progress)[0]);
}

nlohmann::json trace_report_json(const Trace& t) {
  nlohmann::json j;
  j["solver"] = t.solver;
  j["sparsity"] = t.sparsity;
  j["calibration"] = t.calibration;
  j["samples"] = t.samples;
  j["timings"] = {{"augment_s", t.timings.augment_s},
                  {"forward_s", t.timings.forward_s},
                  {"hessian_s", t.timings.hessian_s},
                  {"solve_s", t.timings.solve_s},
                  {"hessian_gflops", t.timings.hessian_s > 0 ? t.timings.hessian_flops / t.timings.hessian_s / 1e9 : 0.0},
                  {"batch", t.timings.batch}};
  int64_t weights = 0, zeros = 0;
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : t.layers) {
    weights += l.weights;
    zeros += l.zeros;
    layers.push_back({{"name", l.name},
                      {"weight", l.weight_key},
                      {"target", l.target},
                      {"pruned", l.pruned},
                      {"weights", l.weights},
                      {"zeros", l.zeros},
                      {"achieved", l.achieved},
                      {"loss", l.loss},
                      {"relative_loss", l.relative_loss},
                      {"damping", l.damping},
                      {"cholesky_retries", l.retries},
                      {"dead_columns", l.dead_columns},
                      {"seconds", l.seconds}});
  }
  j["layers"] = layers;
  j["total"] = {{"weights", weights}, {"zeros", zeros},
                {"achieved", weights > 0 ? static_cast<double>(zeros) / weights : 0.0}};
  return j;
}

}  // namespace spade::interp
