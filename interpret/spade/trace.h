#pragma once
// SPADE's sample-specific trace (SPADE.md 2): one dense forward pass over the calibration images
// folds every selected layer's input into its Hessian, then each layer is pruned on its own
// (SparseGPT = FastSPADE, or exact OBC = SPADE). The result is a weight overlay on the dense graph
// (pass it as ForwardOptions::overlay): biases and BatchNorm stay as they are.
//
// This is the library entry point: compute one trace, then run any number of explanation
// methods on it.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/rules.h"
#include "interpret/spade/calibration.h"
#include "interpret/spade/hessians.h"
#include "interpret/spade/layers.h"

namespace spade::interp {

enum class Solver { SparseGPT, OBC };
Solver solver_from_name(const std::string& name);  // "sparsegpt" | "obc"
const char* solver_name(Solver s);

struct PruneConfig {
  Solver solver = Solver::SparseGPT;
  SparsitySchedule sparsity = SparsitySchedule::uniform(0.9);
  LayerSelection selection;
  int64_t blocksize = 0;  // SparseGPT mask block; 0 = kh*kw for convs, 1 for linear layers
  double percdamp = 0.01; // SparseGPT damping, times mean(diag H)
  // SparseGPT's own threshold rule (one weight per block more, and layers with target 0 pruned
  // too), to reproduce the authors' code exactly.
  bool authors_threshold = false;
  // OBC block for convs: 0 = kh*kw input channels at one kernel tap, removed together (the
  // paper's variant; structured, so its loss is higher than unstructured pruning's); 1 =
  // unstructured exact OBS (more steps per row, slower).
  int64_t obc_block = 0;
  int64_t batch = 0;      // images per forward pass; 0 = default_batch()
  // Where the forward passes, the Hessians and the solvers run. On CUDA the calibration images
  // are made on the GPU too and the layers are solved one after another (each fills the GPU).
  Device device = Device::CPU;
};

struct LayerReport {
  std::string name, weight_key;
  double target = 0.0;
  bool pruned = false;        // false: target 0, weights untouched
  int64_t weights = 0, zeros = 0;
  double achieved = 0.0;      // zeros / weights after pruning
  double loss = 0.0;          // tr(dW H dW^T), H = (2/n) X X^T undamped, summed over groups
  double relative_loss = 0.0; // loss / tr(W H W^T): the fraction of the layer's output energy lost
  double damping = 0.0;       // largest damping added to diag(H) over the layer's groups
  int retries = 0;            // Cholesky failures that raised the damping
  int64_t dead_columns = 0;   // inputs that were zero on every calibration image
  double seconds = 0.0;
};

struct TraceTimings {
  double augment_s = 0.0;   // making the calibration batches
  double forward_s = 0.0;   // the dense forward passes, without the Hessian hooks
  double hessian_s = 0.0;   // folding inputs into the Hessians
  double solve_s = 0.0;
  double hessian_flops = 0.0;  // useful floating-point operations of the Hessian pass
  int64_t batch = 0;
};

struct Trace {
  WeightOverlay weights;  // pruned weights by state_dict key (only layers that were pruned)
  std::vector<LayerReport> layers;
  std::string solver, calibration, sparsity;
  int64_t samples = 0;
  TraceTimings timings;
};

// stage: "hessians" (done/total = calibration images) or "solve" (done/total = work units).
using TraceProgress = std::function<void(const std::string& stage, int64_t done, int64_t total)>;

// Images per forward pass so that activations of one batch stay around 1 GiB.
int64_t default_batch(const Graph& g, const Shape& image_chw);

// Stage 1: Hessians of `layers` (in the same order) over the calibration set.
std::vector<HessianAccumulator> collect_hessians(const Graph& g, const std::vector<PlannedLayer>& layers,
                                                 const Calibration& calib, int64_t batch, TraceTimings& t,
                                                 const TraceProgress& progress = {}, Device device = Device::CPU);
// Stage 2: the solver on every layer, hs[i] being layers[i]'s Hessian (finalised here). The
// solvers run where the Hessians are (LayerHessian::device).
Trace solve_layers(const Graph& g, const std::vector<PlannedLayer>& layers, std::vector<HessianAccumulator>& hs,
                   const PruneConfig& cfg, const TraceProgress& progress = {});

// Both stages; layers with target 0 are reported but neither measured nor solved (unless
// authors_threshold asks SparseGPT to prune them).
Trace compute_trace(const Graph& g, const Calibration& calib, const PruneConfig& cfg,
                    const TraceProgress& progress = {});

// One trace per schedule (cfg.sparsity is ignored) from one Hessian pass over the union of the
// layers they prune: what several methods with schedules of their own cost together. The solve
// stage reports as "solve K/N" when there are several.
std::vector<Trace> compute_traces(const Graph& g, const Calibration& calib, const PruneConfig& cfg,
                                  const std::vector<SparsitySchedule>& schedules, const TraceProgress& progress = {});

// The report written by `spade prune --report`.
nlohmann::json trace_report_json(const Trace& t);

}  // namespace spade::interp
