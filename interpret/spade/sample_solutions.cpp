#include "interpret/spade/sample_solutions.h"

#include <tuple>

namespace spade::interp {

SampleSolutions::SampleSolutions(const Graph& g, const Calibration& calib, const PruneConfig& cfg)
    : g_(g), cfg_(cfg) {
  // Every selectable layer (the uniform target only makes plan_layers list them all).
  layers_ = plan_layers(g, SparsitySchedule::uniform(0.5), cfg.selection);
  TraceTimings t;
  Tensor probe = calib.batch(0, 1);
  const int64_t batch = cfg.batch > 0 ? cfg.batch : default_batch(g, {probe.dim(1), probe.dim(2), probe.dim(3)});
  hs_ = collect_hessians(g, layers_, calib, batch, t, {}, cfg.device);
  for (HessianAccumulator& h : hs_) h.finalize();
}

WeightOverlay SampleSolutions::overlay(const SparsitySchedule& schedule, Solver solver) {
  WeightOverlay out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const double target = schedule.target(layers_[i].layer.name);
    if (target <= 0.0) continue;
    const auto key = std::make_tuple(i, target, static_cast<int>(solver));
    auto it = solved_.find(key);
    if (it == solved_.end()) {
      PlannedLayer one = layers_[i];
      one.target = target;
      std::vector<HessianAccumulator> h{hs_[i]};  // finalised already, so solving leaves it as is
      PruneConfig cfg = cfg_;
      cfg.solver = solver;
      Trace tr = solve_layers(g_, {one}, h, cfg);
      it = solved_.emplace(key, tr.weights.at(one.layer.weight_key)).first;
    }
    out[layers_[i].layer.weight_key] = it->second;
  }
  return out;
}

}  // namespace spade::interp
