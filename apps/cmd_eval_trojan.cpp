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
#include "apps/sample_checkpoint.h"
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

// Every setting a sample's results depend on: a resumed run must match them all.
nlohmann::json run_settings(const Args& a, const TrojanSetup& s, const std::vector<MethodSchedule>& schedules) {
  nlohmann::json run = {{"model", s.model.source},     {"weights", a.get("weights")}, {"labels", a.get("labels")},
                        {"num-classes", a.get("num-classes")}, {"width", a.get("width")},  {"data", a.get("data")},
                        {"split", a.get("split")},     {"rules", s.rules.source},     {"methods", s.methods},
                        {"variants", a.get("variants")}, {"augs", s.augs},            {"seed", s.seed},
                        {"lime-samples", a.get("lime-samples")}, {"batch", s.batch},
                        {"authors-threshold", a.flag("authors-threshold")}};
  for (size_t k = 0; k < s.methods.size(); ++k) {
    const std::string& src = schedules[k].source;
    // A schedule file's text, not only its name: a retuned schedule is another run.
    run["schedules"][s.methods[k]] = src.rfind("uniform ", 0) == 0 ? src : read_text_file(src);
  }
  return run;
}

}  // namespace

int cmd_eval_trojan(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  add_trojan_options(opts, 100);
  add_schedule_options(opts);
  opts.push_back({"variants", "LIST", "which maps: dense, fast (FastSPADE), exact (SPADE, OBC)", "dense,fast,exact"});
  opts.push_back({"figures", "K", "write a figure for each of the first K samples", "4"});
  opts.push_back({"out", "DIR", "writes DIR/table.md, DIR/results.json and DIR/figures/*.png", ""});
  opts.push_back({"resume", "", "continue a stopped run: keep the samples DIR/partial.json holds (same settings; "
                                "--samples and --threads may differ) and compute the rest", ""});
  opts.push_back({"stop-after", "K", "stop after K new samples, leaving DIR/partial.json for --resume (0 = run to the end)", "0"});
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
  const int64_t stop_after = a.get_int("stop-after");
  if (stop_after < 0) throw Error("--stop-after: must be 0 or more");
  const auto start = std::chrono::steady_clock::now();
  TrojanSetup s = trojan_setup(a, 1);

  const std::vector<MethodSchedule> schedules = method_schedules(a, s.methods, s.model.graph);
  std::filesystem::create_directories(join_path(out, "figures"));

  const size_t M = s.methods.size(), V = variants.size(), N = s.pool.samples.size();
  std::vector<std::vector<interp::TrojanScore>> scores(M, std::vector<interp::TrojanScore>(V));
  SampleCheckpoint checkpoint(join_path(out, "partial.json"), run_settings(a, s, schedules));
  if (a.flag("resume")) checkpoint.load();
  // A checkpoint with more samples than asked for serves the first N and stays for a longer run.
  const size_t resumed = std::min(N, checkpoint.rows.size());
  for (size_t i = 0; i < resumed; ++i) {
    const nlohmann::json& row = checkpoint.rows[i];
    if (row.at("image") != s.pool.samples[i].name || row.at("trigger") != s.pool.samples[i].trigger)
      throw Error(checkpoint.path + ": sample " + std::to_string(i) + " is " + row.at("image").dump() +
                  " there but " + s.pool.samples[i].name + " here; remove it or run without --resume");
    for (size_t k = 0; k < M; ++k)
      for (size_t v = 0; v < V; ++v) {
        const nlohmann::json& m = row.at("metrics").at(s.methods[k]).at(variants[v].key);
        scores[k][v].add_scores(m.at("trojan_auc_signed").get<double>(), m.at("trojan_auc_abs").get<double>(),
                                m.at("pointing_hit").get<bool>());
      }
  }
  if (resumed && !s.quiet) std::fprintf(stderr, "resumed: %zu of %zu samples done\n", resumed, N);
  const double seconds_before = checkpoint.seconds;
  std::unique_ptr<Progress> bar;
  if (!s.quiet) bar = std::make_unique<Progress>("samples", static_cast<int64_t>(N));
  for (size_t i = resumed; i < N; ++i) {
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
    checkpoint.rows.push_back(row);
    checkpoint.seconds = seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    checkpoint.save();
    if (bar) bar->update(static_cast<int64_t>(i + 1));
    if (stop_after > 0 && static_cast<int64_t>(i + 1 - resumed) == stop_after && i + 1 < N) {
      if (bar) bar->finish();
      std::printf("stopped after %zu of %zu samples; continue with --resume (%s)\n", i + 1, N, checkpoint.path.c_str());
      return 0;
    }
  }
  if (bar) bar->finish();
  // Every run's time, the resumed ones' included.
  const double seconds =
      seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

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
                                  {"per_sample", nlohmann::json(checkpoint.rows.begin(), checkpoint.rows.begin() + static_cast<std::ptrdiff_t>(N))}};
  write_file_atomic(join_path(out, "results.json"), results.dump(1) + "\n");
  if (checkpoint.rows.size() == N) std::filesystem::remove(checkpoint.path);  // results.json holds it all now
  std::fputs(md.str().c_str(), stdout);
  std::printf("wrote %s/table.md, results.json and figures/ (%.0f s)\n", out.c_str(), seconds);
  return 0;
}

}  // namespace spade::cli
