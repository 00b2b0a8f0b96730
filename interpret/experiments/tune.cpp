#include "interpret/experiments/tune.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "interpret/metrics/grid_pointing.h"
#include "interpret/metrics/insertion_deletion.h"
#include "interpret/metrics/roc_auc.h"

namespace spade::interp {

namespace {

bool is_constant(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [&](float x) { return x == v.front(); });
}

}  // namespace

std::string block_of(const std::string& layer) {
  const size_t a = layer.find('.');
  if (a == std::string::npos) return layer;
  const size_t b = layer.find('.', a + 1);
  const std::string second = layer.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
  const bool number = !second.empty() && std::all_of(second.begin(), second.end(), [](unsigned char c) {
    return std::isdigit(c) != 0;
  });
  if (!number) return layer;
  return b == std::string::npos ? layer : layer.substr(0, b);
}

std::vector<std::string> blocks_output_first(const std::vector<PlannedLayer>& layers) {
  std::vector<std::string> out;
  for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
    const std::string b = block_of(it->layer.name);
    if (std::find(out.begin(), out.end(), b) == out.end()) out.push_back(b);
  }
  return out;
}

std::string block_schedule_json(const std::map<std::string, double>& targets) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [block, v] : targets) j[block] = v;
  return j.dump(1) + "\n";
}

SparsitySchedule block_schedule(const std::map<std::string, double>& targets) {
  return SparsitySchedule::from_json(block_schedule_json(targets), "tuned schedule");
}

TuneResult greedy_block_search(const std::vector<std::string>& blocks, const std::vector<double>& grid,
                               const ScheduleScore& score, const std::function<void(int64_t, int64_t)>& progress) {
  TuneResult r;
  for (const std::string& b : blocks) r.targets[b] = 0.0;
  const int64_t total = 1 + static_cast<int64_t>(blocks.size() * grid.size());
  int64_t done = 0;
  r.dense_score = r.score = score(block_schedule(r.targets));
  if (progress) progress(++done, total);
  for (const std::string& block : blocks) {
    double best_value = r.targets[block], best = r.score;
    for (double v : grid) {
      std::map<std::string, double> t = r.targets;
      t[block] = v;
      // The current choice's score is known (every block not yet visited is at 0).
      const double s = v == r.targets[block] ? r.score : score(block_schedule(t));
      r.trials.push_back({block, v, s});
      if (s > best) {
        best = s;
        best_value = v;
      }
      if (progress) progress(++done, total);
    }
    r.targets[block] = best_value;
    r.score = best;
  }
  return r;
}

ScheduleScore trojan_objective(const Graph& g, std::vector<SampleSolutions>& solutions,
                               const std::vector<TrojanSample>& samples, const std::string& method,
                               const MethodParams& params, Solver solver, int64_t batch) {
  if (solutions.empty() || solutions.size() != samples.size()) throw Error("tune: one trace per tuning sample expected");
  const MethodInfo& info = find_method(method);
  return [&g, &solutions, &samples, &info, params, solver, batch](const SparsitySchedule& schedule) {
    TrojanScore s;
    for (size_t i = 0; i < samples.size(); ++i) {
      const WeightOverlay overlay = solutions[i].overlay(schedule, solver);
      const Network net{g, overlay.empty() ? nullptr : &overlay, batch};
      s.add(info.fn(net, samples[i].x, samples[i].target, params), samples[i].mask);
    }
    return s.auc();
  };
}

ScheduleScore insertion_objective(const Graph& g, std::vector<SampleSolutions>& solutions, const std::vector<Tensor>& xs,
                                  const std::vector<int64_t>& targets, const std::string& method,
                                  const MethodParams& params, Solver solver, int64_t batch) {
  if (solutions.empty() || solutions.size() != xs.size() || xs.size() != targets.size())
    throw Error("tune: one trace and one class per tuning image expected");
  const MethodInfo& info = find_method(method);
  return [&g, &solutions, &xs, &targets, &info, params, solver, batch](const SparsitySchedule& schedule) {
    const Network dense{g, nullptr, batch};
    InsertionDeletionParams idp;
    idp.batch = batch;
    idp.deletion = false;
    double sum = 0.0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const WeightOverlay overlay = solutions[i].overlay(schedule, solver);
      const Network net{g, overlay.empty() ? nullptr : &overlay, batch};
      const Tensor map = info.fn(net, xs[i], targets[i], params);
      // A constant map ranks the pixels by the tie rule alone (raster order), which can score
      // above every real map: a schedule that prunes the class's classifier row away would win.
      if (is_constant(channel_summed_map(map).values)) return -std::numeric_limits<double>::infinity();
      sum += insertion_deletion(xs[i], map, class_probability(dense, targets[i]), idp).insertion;
    }
    return sum / double(xs.size());
  };
}

ScheduleScore grid_objective(const Graph& g, std::vector<SampleSolutions>& solutions, const std::vector<GridSample>& grids,
                             int64_t cells, const std::string& method, const MethodParams& params, Solver solver,
                             int64_t batch) {
  if (solutions.empty() || solutions.size() != grids.size()) throw Error("tune: one trace per tuning grid expected");
  const MethodInfo& info = find_method(method);
  return [&g, &solutions, &grids, cells, &info, params, solver, batch](const SparsitySchedule& schedule) {
    double sum = 0.0;
    int64_t n = 0;
    for (size_t i = 0; i < grids.size(); ++i) {
      const WeightOverlay overlay = solutions[i].overlay(schedule, solver);
      const Network net{g, overlay.empty() ? nullptr : &overlay, batch};
      for (int64_t c = 0; c < cells * cells; ++c, ++n)
        sum += grid_pointing(info.fn(net, grids[i].x, grids[i].classes[c], params), cells, c).localisation;
    }
    return 100.0 * sum / double(n);
  };
}

TuneResult tune_blocks(const Graph& g, std::vector<SampleSolutions>& solutions, const std::vector<TrojanSample>& samples,
                       const std::string& method, const MethodParams& params, const std::vector<double>& grid,
                       Solver solver, int64_t batch, const std::function<void(int64_t, int64_t)>& progress) {
  const ScheduleScore score = trojan_objective(g, solutions, samples, method, params, solver, batch);
  return greedy_block_search(blocks_output_first(solutions[0].layers()), grid, score, progress);
}

}  // namespace spade::interp
