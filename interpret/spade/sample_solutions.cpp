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
  plan_layers(g_, schedule, cfg_.selection);  // a name that matches no layer is an error, as in compute_trace
  // The layers not solved yet at their target are solved together (solve_layers runs them in
  // parallel); the Hessians are finalised already, so solving leaves them as they are.
  std::vector<size_t> missing;
  std::vector<PlannedLayer> plan;
  std::vector<HessianAccumulator> hs;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const double target = schedule.target(layers_[i].layer.name);
    if (target <= 0.0 || solved_.count(std::make_tuple(i, target, static_cast<int>(solver)))) continue;
    missing.push_back(i);
    plan.push_back(layers_[i]);
    plan.back().target = target;
    hs.push_back(hs_[i]);
  }
  if (!missing.empty()) {
    PruneConfig cfg = cfg_;
    cfg.solver = solver;
    const Trace tr = solve_layers(g_, plan, hs, cfg);
    for (size_t k = 0; k < missing.size(); ++k)
      solved_.emplace(std::make_tuple(missing[k], plan[k].target, static_cast<int>(solver)),
                      tr.weights.at(plan[k].layer.weight_key));
  }
  WeightOverlay out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const double target = schedule.target(layers_[i].layer.name);
    if (target > 0.0) out[layers_[i].layer.weight_key] = solved_.at(std::make_tuple(i, target, static_cast<int>(solver)));
  }
  return out;
}

}  // namespace spade::interp
