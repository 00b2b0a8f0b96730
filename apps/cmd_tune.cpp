// spade tune: the paper's greedy per-block sparsity search (SPADE.md 2.5), on a tuning Trojan model
// (the Trojan AUC) or on clean images (the insertion metric: FastSPADE*); writes one schedule per
// method, which the evaluations' --sparsity-dir reads.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/trojan_options.h"
#include "engine/error.h"
#include "formats/file_io.h"
#include "formats/output_transaction.h"
#include "interpret/experiments/tune.h"
#include "train/dataset.h"
#include "train/trainer.h"
#include "formats/json_output.h"

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
  opts.push_back({"objective", "trojan|insertion|gridpg",
                  "what the search maximises: the Trojan AUC on triggered images (needs --rules), the insertion AUC on "
                  "clean images (no ground truth; the paper's FastSPADE*), or the grid pointing game's localisation on "
                  "--samples grids of photos (`spade eval gridpg`)", "trojan"});
  opts.push_back({"cells", "N", "--objective gridpg: cells per side of a grid", "2", integer(1, 8)});
  opts.push_back({"min-confidence", "P", "--objective gridpg: softmax probability a photo needs to be used", "0.5"});
  opts.push_back({"grid", "S,S,..", "sparsities tried per block", "0,0.2,0.4,0.6,0.8,0.9,0.95,0.99"});
  opts.push_back({"solver", "sparsegpt|obc", "layer solver the search runs (FastSPADE or SPADE)", "sparsegpt"});
  opts.push_back({"out", "DIR", "writes DIR/<method>.json (the schedules) and DIR/tune.json (every trial)", ""});
  Args a("tune",
         "Greedy per-block sparsity search, per method, maximising the mean Trojan AUC on a tuning model's triggered "
         "test images (even-numbered ones; `spade eval trojan` uses the odd ones), or the mean insertion AUC on clean "
         "images (--objective insertion), or the grid pointing game's localisation (--objective gridpg); clean photos "
         "are the even-numbered ones unless --split says otherwise.",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const std::string out = a.require("out");
  const std::vector<double> grid = parse_grid(a.get("grid"));
  const interp::Solver solver = interp::solver_from_name(a.get("solver"));
  const std::string objective = a.get("objective");
  if (objective != "trojan" && objective != "insertion" && objective != "gridpg")
    throw Error("--objective: \"" + objective + "\" is not trojan, insertion or gridpg");
  if (objective != "gridpg" && (a.has("cells") || a.has("min-confidence")))
    throw Error("--cells and --min-confidence: only for --objective gridpg");
  const auto start = std::chrono::steady_clock::now();

  // The tuning samples: triggered images of the Trojan pool, or clean images explained for the
  // dense model's prediction; each with its Hessians.
  Model model;
  ExperimentSetup s;
  std::vector<interp::TrojanSample> pool;
  std::vector<Tensor> xs;
  interp::GridPool grids;
  interp::GridPoolOptions gpo;
  std::vector<int64_t> targets;
  std::vector<Image> images;
  std::vector<uint64_t> indices;
  nlohmann::json report;
  if (objective == "trojan") {
    TrojanSetup t = trojan_setup(a, 0);
    model = std::move(t.model);
    s = t;
    pool = std::move(t.pool.samples);
    for (const interp::TrojanSample& p : pool) images.push_back(p.image), indices.push_back(static_cast<uint64_t>(p.index));
    report["rules"] = t.rules.source;
  } else {
    if (a.has("rules")) throw Error("--rules: not used by --objective " + objective + " (clean images, no triggers)");
    model = load_model_from(a);
    s = experiment_setup(a, model);
    train::PixelLoadOptions load = train::eval_load_options(model.preprocess);
    train::parse_split(a.has("split") ? a.get("split") : "2:0", "--split", load);
    const train::PixelDataset photos = train::load_pixel_dataset(a.require("data"), model.labels, model.label_ids, load);
    const std::vector<int64_t> order = train::epoch_order(photos.size(), s.seed, 0);
    const interp::Network dense{model.graph, nullptr, s.batch};
    gpo.count = a.get_int("samples");
    gpo.grid = a.get_int("cells");
    gpo.min_confidence = a.get_double("min-confidence");
    gpo.seed = s.seed;
    if (objective == "gridpg") {
      grids = interp::grid_pool(model, photos, gpo);
      for (size_t i = 0; i < grids.grids.size(); ++i) images.push_back(grids.grids[i].image), indices.push_back(i);
    }
    for (size_t i = 0; objective == "insertion" && i < order.size() && static_cast<int64_t>(i) < a.get_int("samples"); ++i) {
      images.push_back(photos.image(order[i]));
      indices.push_back(static_cast<uint64_t>(order[i]));
      xs.push_back(preprocess_image(images.back(), normalisation_of(model.preprocess)));
      const Tensor logits = interp::logits(dense, xs.back());
      targets.push_back(std::max_element(logits.data(), logits.data() + logits.dim(1)) - logits.data());
    }
    if (images.empty()) throw Error(a.get("data") + ": no images in the tuning split");
  }
  std::vector<interp::SampleSolutions> solutions;
  {
    std::unique_ptr<Progress> bar;
    if (!s.quiet) bar = std::make_unique<Progress>("Hessians", static_cast<int64_t>(images.size()));
    for (size_t i = 0; i < images.size(); ++i) {
      solutions.push_back(sample_solutions(model, s, images[i], indices[i]));
      if (bar) bar->update(static_cast<int64_t>(solutions.size()));
    }
    if (bar) bar->finish();
  }
  report.update({{"model", model.source}, {"objective", objective}, {"samples", images.size()}, {"augs", s.augs},
                 {"seed", s.seed}, {"solver", interp::solver_name(solver)}, {"grid", grid}});
  const std::vector<std::string> blocks = interp::blocks_output_first(solutions[0].layers());
  for (size_t k = 0; k < s.methods.size(); ++k) {
    const interp::ScheduleScore score =
        objective == "trojan"
            ? interp::trojan_objective(model.graph, solutions, pool, s.methods[k], s.params[k], solver, s.batch)
        : objective == "insertion"
            ? interp::insertion_objective(model.graph, solutions, xs, targets, s.methods[k], s.params[k], solver, s.batch)
            : interp::grid_objective(model.graph, solutions, grids.grids, gpo.grid, s.methods[k], s.params[k], solver,
                                     s.batch);
    std::unique_ptr<Progress> bar;
    const interp::TuneResult r = interp::greedy_block_search(blocks, grid, score, [&](int64_t done, int64_t total) {
      if (s.quiet) return;
      if (!bar) bar = std::make_unique<Progress>(s.methods[k], total);
      bar->update(done);
    });
    if (bar) bar->finish();
    // Each method's schedule and the report are published as soon as they are known, so that a run
    // stopped part-way keeps what it finished ("complete" says whether every method was searched).
    const PublishNow now;
    write_file_atomic(join_path(out, s.methods[k] + ".json"), interp::block_schedule_json(r.targets));
    nlohmann::json trials = nlohmann::json::array();
    for (const auto& t : r.trials) trials.push_back({{"block", t.block}, {"value", t.value}, {"score", t.score}});
    report["methods"][s.methods[k]] = {{"dense_auc", r.dense_score}, {"tuned_auc", r.score}, {"targets", r.targets},
                                       {"trials", trials}};
    std::printf("%-22s dense %.2f -> tuned %.2f\n", s.methods[k].c_str(), r.dense_score, r.score);
    std::fflush(stdout);
    report["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    report["complete"] = k + 1 == s.methods.size();
    write_json_file(join_path(out, "tune.json"), report, 1);
  }
  std::printf("wrote %s/<method>.json and %s/tune.json\n", out.c_str(), out.c_str());
  return 0;
}

}  // namespace spade::cli
