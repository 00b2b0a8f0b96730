// spade tune: the paper's greedy per-block sparsity search on a tuning Trojan model (SPADE.md 2.5);
// writes one schedule per method, which `spade eval trojan --sparsity-dir` reads.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/trojan_options.h"
#include "engine/error.h"
#include "formats/file_io.h"
#include "interpret/experiments/tune.h"

namespace spade::cli {

namespace {

std::vector<double> parse_grid(const std::string& arg) {
  std::vector<double> grid;
  size_t start = 0;
  while (start <= arg.size()) {
    const size_t end = std::min(arg.find(',', start), arg.size());
    const std::string item = arg.substr(start, end - start);
    char* stop = nullptr;
    const double v = std::strtod(item.c_str(), &stop);
    if (item.empty() || *stop != '\0' || !(v >= 0.0 && v < 1.0))
      throw Error("--grid: \"" + item + "\" is not a sparsity in [0, 1)");
    grid.push_back(v);
    start = end + 1;
  }
  return grid;
}

}  // namespace

int cmd_tune(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  add_trojan_options(opts, 32);
  opts.push_back({"grid", "S,S,..", "sparsities tried per block", "0,0.2,0.4,0.6,0.8,0.9,0.95,0.99"});
  opts.push_back({"solver", "sparsegpt|obc", "layer solver the search runs (FastSPADE or SPADE)", "sparsegpt"});
  opts.push_back({"out", "DIR", "writes DIR/<method>.json (the schedules) and DIR/tune.json (every trial)", ""});
  Args a("tune",
         "Greedy per-block sparsity search maximising the mean Trojan AUC, per method, on a tuning model and its "
         "triggered test images (even-numbered test images; `spade eval trojan` uses the odd ones).",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_threads(a);
  const std::string out = a.require("out");
  const std::vector<double> grid = parse_grid(a.get("grid"));
  const interp::Solver solver = interp::solver_from_name(a.get("solver"));
  const auto start = std::chrono::steady_clock::now();
  TrojanSetup s = trojan_setup(a, 0);

  std::vector<interp::SampleSolutions> solutions;
  {
    std::unique_ptr<Progress> bar;
    if (!s.quiet) bar = std::make_unique<Progress>("Hessians", static_cast<int64_t>(s.pool.samples.size()));
    for (const interp::TrojanSample& sample : s.pool.samples) {
      solutions.push_back(sample_solutions(s, sample));
      if (bar) bar->update(static_cast<int64_t>(solutions.size()));
    }
    if (bar) bar->finish();
  }
  std::filesystem::create_directories(out);
  nlohmann::json report = {{"model", s.model.source}, {"rules", s.rules.source}, {"samples", s.pool.samples.size()},
                           {"augs", s.augs}, {"seed", s.seed}, {"solver", interp::solver_name(solver)},
                           {"grid", grid}};
  for (size_t k = 0; k < s.methods.size(); ++k) {
    std::unique_ptr<Progress> bar;
    const interp::TuneResult r = interp::tune_blocks(
        s.model.graph, solutions, s.pool.samples, s.methods[k], s.params[k], grid, solver, s.batch,
        [&](int64_t done, int64_t total) {
          if (s.quiet) return;
          if (!bar) bar = std::make_unique<Progress>(s.methods[k], total);
          bar->update(done);
        });
    if (bar) bar->finish();
    write_file_atomic(join_path(out, s.methods[k] + ".json"), interp::block_schedule_json(r.targets));
    nlohmann::json trials = nlohmann::json::array();
    for (const auto& t : r.trials) trials.push_back({{"block", t.block}, {"value", t.value}, {"score", t.score}});
    report["methods"][s.methods[k]] = {{"dense_auc", r.dense_score}, {"tuned_auc", r.score}, {"targets", r.targets},
                                       {"trials", trials}};
    std::printf("%-22s dense %.2f -> tuned %.2f\n", s.methods[k].c_str(), r.dense_score, r.score);
    std::fflush(stdout);
  }
  report["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  write_file_atomic(join_path(out, "tune.json"), report.dump(1) + "\n");
  std::printf("wrote %s/<method>.json and %s/tune.json\n", out.c_str(), out.c_str());
  return 0;
}

}  // namespace spade::cli
