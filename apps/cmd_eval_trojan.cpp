// spade eval trojan: the paper's Table 1 on a backdoored model: for every method, the Trojan AUC
// and the pointing game of Dense, FastSPADE and SPADE (OBC) maps on triggered test images.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/trojan_options.h"
#include "engine/error.h"
#include "formats/file_io.h"
#include "formats/heatmap.h"
#include "interpret/experiments/tune.h"

namespace spade::cli {

namespace {

struct Variant {
  std::string key, title;
  bool dense;
  interp::Solver solver;
};

std::vector<Variant> parse_variants(const std::string& arg) {
  std::vector<Variant> out;
  std::stringstream ss(arg);
  std::string v;
  while (std::getline(ss, v, ',')) {
    if (v == "dense")
      out.push_back({"dense", "Dense", true, interp::Solver::SparseGPT});
    else if (v == "fast")
      out.push_back({"fastspade", "FastSPADE", false, interp::Solver::SparseGPT});
    else if (v == "exact")
      out.push_back({"spade", "SPADE", false, interp::Solver::OBC});
    else
      throw Error("--variants: unknown variant \"" + v + "\" (available: dense, fast, exact)");
  }
  if (out.empty()) throw Error("--variants: none given");
  return out;
}

std::string f2(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

}  // namespace

int cmd_eval_trojan(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  add_trojan_options(opts, 100);
  add_schedule_options(opts);
  opts.push_back({"variants", "LIST", "which maps: dense, fast (FastSPADE), exact (SPADE, OBC)", "dense,fast,exact"});
  opts.push_back({"figures", "K", "write a figure for each of the first K samples", "4"});
  opts.push_back({"out", "DIR", "writes DIR/table.md, DIR/results.json and DIR/figures/*.png", ""});
  Args a("eval trojan",
         "Trojan AUC and pointing game of saliency maps from the dense model and its SPADE traces on triggered test "
         "images (odd-numbered test images; `spade tune` uses the even ones).",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_threads(a);
  const std::string out = a.require("out");
  const std::vector<Variant> variants = parse_variants(a.get("variants"));
  const int64_t figures = a.get_int("figures");
  const auto start = std::chrono::steady_clock::now();
  TrojanSetup s = trojan_setup(a, 1);

  const std::vector<MethodSchedule> schedules = method_schedules(a, s.methods, s.model.graph);
  std::filesystem::create_directories(join_path(out, "figures"));

  const size_t M = s.methods.size(), V = variants.size(), N = s.pool.samples.size();
  std::vector<std::vector<interp::TrojanScore>> scores(M, std::vector<interp::TrojanScore>(V));
  nlohmann::json per_sample = nlohmann::json::array();
  std::unique_ptr<Progress> bar;
  if (!s.quiet) bar = std::make_unique<Progress>("samples", static_cast<int64_t>(N));
  for (size_t i = 0; i < N; ++i) {
    const interp::TrojanSample& sample = s.pool.samples[i];
    // The Hessians only when a sparse variant needs them.
    std::unique_ptr<interp::SampleSolutions> solutions;
    if (std::any_of(variants.begin(), variants.end(), [](const Variant& v) { return !v.dense; }))
      solutions = std::make_unique<interp::SampleSolutions>(sample_solutions(s, sample));
    nlohmann::json row = {{"image", sample.name}, {"trigger", sample.trigger}, {"target", sample.target},
                          {"clean_prediction", sample.clean_prediction}};
    std::vector<std::vector<Image>> cells;
    std::vector<std::string> labels;
    for (size_t k = 0; k < M; ++k) {
      const interp::MethodInfo& info = interp::find_method(s.methods[k]);
      std::vector<Image> cells_row = {sample.image, mask_image(sample.mask, sample.image)};
      for (size_t v = 0; v < V; ++v) {
        const WeightOverlay overlay =
            variants[v].dense ? WeightOverlay{} : solutions->overlay(schedules[k].schedule, variants[v].solver);
        const interp::Network net{s.model.graph, overlay.empty() ? nullptr : &overlay, s.batch};
        const Tensor attr = info.fn(net, sample.x, sample.target, s.params[k]);
        double sa = 0.5, aa = 0.5;
        bool hit = false;
        scores[k][v].add(attr, sample.mask, &sa, &aa, &hit);
        row["metrics"][s.methods[k]][variants[v].key] = {{"trojan_auc_signed", sa}, {"trojan_auc_abs", aa},
                                                         {"pointing_hit", hit}};
        if (static_cast<int64_t>(i) < figures) cells_row.push_back(heatmap(abs_channel_sum(attr), MapScale::Absolute));
      }
      if (static_cast<int64_t>(i) < figures) {
        cells.push_back(cells_row);
        labels.push_back(s.methods[k]);
      }
    }
    if (static_cast<int64_t>(i) < figures) {
      std::vector<std::string> columns = {"image", "trigger"};
      for (const Variant& v : variants) columns.push_back(v.title);
      save_png(join_path(out, "figures/sample_" + std::to_string(i) + ".png"), panel(cells, labels, columns, 4));
    }
    per_sample.push_back(row);
    if (bar) bar->update(static_cast<int64_t>(i + 1));
  }
  if (bar) bar->finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // table.md: Trojan AUC per method and variant, the average, the pointing game.
  std::ostringstream md;
  md << "Trojan AUC (%), " << N << " samples, model " << s.model.source << ", rules " << s.rules.source << "\n\n| method |";
  for (const Variant& v : variants) md << " " << v.title << " |";
  md << "\n| --- |";
  for (size_t v = 0; v < V; ++v) md << " --- |";
  md << "\n";
  std::vector<double> avg(V, 0.0), hit_avg(V, 0.0);
  nlohmann::json means;
  for (size_t k = 0; k < M; ++k) {
    md << "| " << s.methods[k] << " |";
    for (size_t v = 0; v < V; ++v) {
      md << " " << f2(scores[k][v].auc()) << " |";
      avg[v] += scores[k][v].auc() / double(M);
      hit_avg[v] += scores[k][v].pointing() / double(M);
      means[s.methods[k]][variants[v].key] = {{"trojan_auc", scores[k][v].auc()},
                                              {"pointing_game", scores[k][v].pointing()},
                                              {"mean_signed_auc", 100 * scores[k][v].signed_sum / double(N)},
                                              {"mean_abs_auc", 100 * scores[k][v].abs_sum / double(N)}};
    }
    md << "\n";
  }
  md << "| **average** |";
  for (size_t v = 0; v < V; ++v) md << " **" << f2(avg[v]) << "** |";
  md << "\n\nPointing game (% of samples whose most salient pixel is on the trigger)\n\n| method |";
  for (const Variant& v : variants) md << " " << v.title << " |";
  md << "\n| --- |";
  for (size_t v = 0; v < V; ++v) md << " --- |";
  md << "\n";
  for (size_t k = 0; k < M; ++k) {
    md << "| " << s.methods[k] << " |";
    for (size_t v = 0; v < V; ++v) md << " " << f2(scores[k][v].pointing()) << " |";
    md << "\n";
  }
  md << "| **average** |";
  for (size_t v = 0; v < V; ++v) md << " **" << f2(hit_avg[v]) << "** |";
  md << "\n";
  if (V > 1 && variants[0].dense)
    for (size_t v = 1; v < V; ++v) {
      int wins = 0;
      for (size_t k = 0; k < M; ++k) wins += scores[k][v].auc() > scores[k][0].auc();
      md << "\n" << variants[v].title << " beats Dense on " << wins << " of " << M << " methods (Trojan AUC).";
    }
  md << "\n";
  write_file_atomic(join_path(out, "table.md"), md.str());

  nlohmann::json settings;
  for (size_t k = 0; k < M; ++k)
    settings[s.methods[k]] = {{"sparsity", schedules[k].source}};
  const nlohmann::json results = {{"model", s.model.source}, {"rules", s.rules.source}, {"samples", N},
                                  {"pool_tried", s.pool.tried}, {"augs", s.augs}, {"seed", s.seed},
                                  {"seconds", seconds}, {"settings", settings}, {"mean", means},
                                  {"per_sample", per_sample}};
  write_file_atomic(join_path(out, "results.json"), results.dump(1) + "\n");
  std::fputs(md.str().c_str(), stdout);
  std::printf("wrote %s/table.md, results.json and figures/ (%.0f s)\n", out.c_str(), seconds);
  return 0;
}

}  // namespace spade::cli
