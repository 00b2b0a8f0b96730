#pragma once
// One sample's SPADE traces at many sparsity schedules. The Hessians come from the dense model,
// so they do not depend on the targets: they are collected once, and each layer is solved once
// per (solver, target) it is asked for. The greedy schedule search (`spade tune`) and the Trojan
// evaluation, which try many schedules per image, assemble their overlays from these solutions.
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "interpret/spade/trace.h"

namespace spade::interp {

class SampleSolutions {
 public:
  // Hessians of every layer `sel` selects over the calibration set (cfg: batch, device, solver
  // settings; cfg.sparsity and cfg.solver are ignored here).
  SampleSolutions(const Graph& g, const Calibration& calib, const PruneConfig& cfg);

  // The pruned weights of every layer with a non-zero target under `schedule`, solved with
  // `solver` (cached per layer and target). Like compute_trace, a schedule name that matches no
  // layer is an error; unlike it, `authors_threshold` never prunes layers with target 0.
  WeightOverlay overlay(const SparsitySchedule& schedule, Solver solver);
  const std::vector<PlannedLayer>& layers() const { return layers_; }

 private:
  const Graph& g_;
  PruneConfig cfg_;
  std::vector<PlannedLayer> layers_;
  std::vector<HessianAccumulator> hs_;
  std::map<std::tuple<size_t, double, int>, Tensor> solved_;
};

}  // namespace spade::interp
