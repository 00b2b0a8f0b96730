#pragma once
// The paper's greedy per-block sparsity search (SPADE.md 2.5): one target per residual block
// (or per layer outside blocks), chosen from a grid block by block from the output back to the
// input, each time keeping the value that maximises the mean Trojan AUC over the tuning samples
// (the blocks not yet visited stay dense).
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "interpret/experiments/trojan_metrics.h"
#include "interpret/experiments/grid_pool.h"
#include "interpret/experiments/trojan_pool.h"
#include "interpret/saliency/network.h"
#include "interpret/spade/sample_solutions.h"

namespace spade::interp {

// The block a layer belongs to: "layer3.1" for "layer3.1.conv2", "features.4" for
// "features.4.conv.0.0"; a name whose second part is not a number is its own block ("fc").
std::string block_of(const std::string& layer);
// The blocks of these layers, output first.
std::vector<std::string> blocks_output_first(const std::vector<PlannedLayer>& layers);

// A schedule with one target per block (the JSON `spade tune` writes, SparsitySchedule reads).
SparsitySchedule block_schedule(const std::map<std::string, double>& targets);
std::string block_schedule_json(const std::map<std::string, double>& targets);

struct TuneTrial {
  std::string block;
  double value = 0.0;
  double score = 0.0;  // mean Trojan AUC (%) with this value and the choices made so far
};

struct TuneResult {
  std::map<std::string, double> targets;  // every block, 0 = dense
  double dense_score = 0.0;
  double score = 0.0;
  std::vector<TuneTrial> trials;
};

// The score of a schedule, higher is better: the caller computes its tuning samples' maps under it.
using ScheduleScore = std::function<double(const SparsitySchedule&)>;

// The greedy search itself: every block starts dense; block by block in the given order, each
// grid value is tried with the choices made so far and the best kept (a tie keeps the earlier
// choice). `progress(done, total)` counts evaluated schedules.
TuneResult greedy_block_search(const std::vector<std::string>& blocks, const std::vector<double>& grid,
                               const ScheduleScore& score, const std::function<void(int64_t, int64_t)>& progress = {});

// The paper's objective: the mean Trojan AUC (TrojanScore::auc) of `method`'s maps of the samples
// on their traces. solutions[i] belongs to samples[i]; both must outlive the returned function.
ScheduleScore trojan_objective(const Graph& g, std::vector<SampleSolutions>& solutions,
                               const std::vector<TrojanSample>& samples, const std::string& method,
                               const MethodParams& params, Solver solver, int64_t batch);

// FastSPADE*'s objective (SPADE.md 2.5), which needs no ground truth: the mean insertion AUC
// (metrics/insertion_deletion.h, confidences from the dense model) of `method`'s maps of images
// xs[i] for classes targets[i] on their traces. A schedule under which any image's map is constant
// scores -infinity (never chosen): ties fall back to raster order, whose insertion curve can beat
// every real map's (on the CIFAR ResNet-20, pruning the classifier at 0.95 zeroes the class's
// row and "wins" with 48.5 against the dense maps' 33-37).
ScheduleScore insertion_objective(const Graph& g, std::vector<SampleSolutions>& solutions, const std::vector<Tensor>& xs,
                                  const std::vector<int64_t>& targets, const std::string& method,
                                  const MethodParams& params, Solver solver, int64_t batch);

// The grid pointing game's objective: the mean localisation (metrics/grid_pointing.h) of
// `method`'s maps of every cell of every grid (cells x cells per grid) on its grid's trace.
ScheduleScore grid_objective(const Graph& g, std::vector<SampleSolutions>& solutions, const std::vector<GridSample>& grids,
                             int64_t cells, const std::string& method, const MethodParams& params, Solver solver,
                             int64_t batch);

// greedy_block_search over the solutions' blocks (output first) with the Trojan objective.
TuneResult tune_blocks(const Graph& g, std::vector<SampleSolutions>& solutions, const std::vector<TrojanSample>& samples,
                       const std::string& method, const MethodParams& params, const std::vector<double>& grid,
                       Solver solver, int64_t batch, const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace spade::interp
