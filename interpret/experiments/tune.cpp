#include "interpret/experiments/tune.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace spade::interp {

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

TuneResult tune_blocks(const Graph& g, std::vector<SampleSolutions>& solutions, const std::vector<TrojanSample>& samples,
                       const std::string& method, const MethodParams& params, const std::vector<double>& grid,
                       Solver solver, int64_t batch, const std::function<void(int64_t, int64_t)>& progress) {
  if (solutions.empty() || solutions.size() != samples.size()) throw Error("tune: one trace per tuning sample expected");
  const MethodInfo& info = find_method(method);
  TuneResult r;
  for (const std::string& b : blocks_output_first(solutions[0].layers())) r.targets[b] = 0.0;
  const std::vector<std::string> order = blocks_output_first(solutions[0].layers());

  auto score = [&](const std::map<std::string, double>& targets) {
    const SparsitySchedule schedule = block_schedule(targets);
    TrojanScore s;
    for (size_t i = 0; i < samples.size(); ++i) {
      const WeightOverlay overlay = solutions[i].overlay(schedule, solver);
      const Network net{g, overlay.empty() ? nullptr : &overlay, batch};
      s.add(info.fn(net, samples[i].x, samples[i].target, params), samples[i].mask);
    }
    return s.auc();
  };
  const int64_t total = 1 + static_cast<int64_t>(order.size() * grid.size());
  int64_t done = 0;
  r.dense_score = r.score = score(r.targets);
  if (progress) progress(++done, total);
  for (const std::string& block : order) {
    double best_value = r.targets[block], best = r.score;
    for (double v : grid) {
      std::map<std::string, double> t = r.targets;
      t[block] = v;
      // The current choice's score is known (every block not yet visited is at 0).
      const double s = v == r.targets[block] ? r.score : score(t);
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

}  // namespace spade::interp
