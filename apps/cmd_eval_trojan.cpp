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
#include "apps/variant_table.h"
#include "engine/error.h"
#include "formats/file_io.h"
#include "formats/heatmap.h"
#include "formats/output_transaction.h"
#include "interpret/experiments/tune.h"
#include "formats/json_output.h"

namespace spade::cli {

int cmd_eval_trojan(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  add_trojan_options(opts, 100);
  add_schedule_options(opts);
  add_variants_option(opts);
  opts.push_back({"figures", "K", "write a figure for each of the first K samples", "4", integer(0, kMaxCount)});
  opts.push_back({"out", "DIR", "writes DIR/table.md, DIR/results.json and DIR/figures/*.png", ""});
  add_resume_options(opts, "samples");
  Args a("eval trojan",
         "Trojan AUC and pointing game of saliency maps from the dense model and its SPADE traces on triggered test "
         "images (odd-numbered test images; `spade tune` uses the even ones).",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const std::string out = a.require("out");
  const std::vector<Variant> variants = parse_variants(a.get("variants"));
  const int64_t figures = a.get_int("figures");
  const int64_t stop_after = a.get_int("stop-after");
  if (stop_after < 0) throw Error("--stop-after: must be 0 or more");
  const auto start = std::chrono::steady_clock::now();
  TrojanSetup s = trojan_setup(a, 1);

  const std::vector<MethodSchedule> schedules = method_schedules(a, s.methods, s.model.graph);

  const size_t M = s.methods.size(), V = variants.size(), N = s.pool.samples.size();
  std::vector<std::vector<interp::TrojanScore>> scores(M, std::vector<interp::TrojanScore>(V));
  nlohmann::json run = experiment_run(a, s.model, s, schedules);
  run["rules"] = s.rules.source;
  SampleCheckpoint checkpoint(join_path(out, "partial.json"), run, start);
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
  std::unique_ptr<Progress> bar;
  if (!s.quiet) bar = std::make_unique<Progress>("samples", static_cast<int64_t>(N));
  for (size_t i = resumed; i < N; ++i) {
    const interp::TrojanSample& sample = s.pool.samples[i];
    // The Hessians only when a sparse variant needs them.
    std::unique_ptr<interp::SampleSolutions> solutions;
    if (any_sparse(variants))
      solutions = std::make_unique<interp::SampleSolutions>(sample_solutions(s, sample));
    nlohmann::json row = {{"image", sample.name}, {"trigger", sample.trigger}, {"target", sample.target},
                          {"clean_prediction", sample.clean_prediction}};
    std::vector<std::vector<Image>> cells;
    std::vector<std::string> labels;
    for (size_t k = 0; k < M; ++k) {
      const interp::MethodInfo& info = interp::find_method(s.methods[k]);
      std::vector<Image> cells_row = {sample.image, mask_image(sample.mask, sample.image)};
      for (size_t v = 0; v < V; ++v) {
        const WeightOverlay overlay = variant_weights(variants[v], solutions.get(), schedules[k].schedule);
        const interp::Network net{s.model.graph, overlay.empty() ? nullptr : &overlay, s.batch};
        const Tensor attr = info.fn(net, sample.x, sample.target, s.params[k]);
        double sa = 0.5, aa = 0.5;
        bool hit = false;
        scores[k][v].add(attr, sample.mask, &sa, &aa, &hit);
        row["metrics"][s.methods[k]][variants[v].key] = {{"trojan_auc_signed", sa}, {"trojan_auc_abs", aa},
                                                         {"pointing_hit", hit}};
        if (static_cast<int64_t>(i) < figures) cells_row.push_back(heatmap(channel_sum(attr, SumPart::Absolute), MapScale::Absolute));
      }
      if (static_cast<int64_t>(i) < figures) {
        cells.push_back(cells_row);
        labels.push_back(s.methods[k]);
      }
    }
    if (static_cast<int64_t>(i) < figures) {
      std::vector<std::string> columns = {"image", "trigger"};
      for (const Variant& v : variants) columns.push_back(v.title);
      const PublishNow now;  // a figure goes with its sample's checkpoint row: --resume does not redraw it
      save_png(join_path(out, "figures/sample_" + std::to_string(i) + ".png"), panel(cells, labels, columns, 4));
    }
    checkpoint.add(std::move(row));
    if (bar) bar->update(static_cast<int64_t>(i + 1));
    if (checkpoint.stop_here(stop_after, resumed, i + 1, N, "samples")) {
      if (bar) bar->finish();
      return 0;
    }
  }
  if (bar) bar->finish();
  const double seconds = checkpoint.total_seconds();  // every run's time, the resumed ones' included

  // table.md: Trojan AUC per method and variant with the differences to Dense, the pointing game.
  // Per sample, the side (signed or absolute) each variant's aggregate takes, so that the mean
  // difference is exactly the difference of the table's Trojan AUCs.
  auto per_sample_auc = [&](size_t k, size_t v) {
    const char* side = scores[k][v].signed_sum >= scores[k][v].abs_sum ? "trojan_auc_signed" : "trojan_auc_abs";
    std::vector<double> values;
    for (size_t i = 0; i < N; ++i)
      values.push_back(100.0 * checkpoint.rows[i].at("metrics").at(s.methods[k]).at(variants[v].key).at(side).get<double>());
    return values;
  };
  auto auc = [&](size_t k, size_t v) { return scores[k][v].auc(); };
  auto pointing = [&](size_t k, size_t v) { return scores[k][v].pointing(); };
  const VariantTable aucs = variant_table(s.methods, variants, auc, per_sample_auc);
  std::ostringstream md;
  md << "Trojan AUC (%), " << N << " samples, model " << s.model.source << ", rules " << s.rules.source << "\n\n"
     << aucs.markdown << "\nPointing game (% of samples whose most salient pixel is on the trigger)\n\n"
     << variant_table(s.methods, variants, pointing).markdown
     << wins_summary(aucs, s.methods, variants, auc, "Trojan AUC");
  nlohmann::json means;
  for (size_t k = 0; k < M; ++k)
    for (size_t v = 0; v < V; ++v) {
      nlohmann::json& e = means[s.methods[k]][variants[v].key];
      e = {{"trojan_auc", auc(k, v)},
           {"pointing_game", pointing(k, v)},
           {"mean_signed_auc", 100 * scores[k][v].signed_sum / double(N)},
           {"mean_abs_auc", 100 * scores[k][v].abs_sum / double(N)}};
      if (aucs.differences.contains(s.methods[k]) && aucs.differences[s.methods[k]].contains(variants[v].key))
        e["difference_to_dense"] = aucs.differences[s.methods[k]][variants[v].key];
    }
  write_file_atomic(join_path(out, "table.md"), md.str());

  nlohmann::json settings;
  for (size_t k = 0; k < M; ++k)
    settings[s.methods[k]] = {{"sparsity", schedules[k].source}};
  const nlohmann::json results = {{"model", s.model.source}, {"rules", s.rules.source}, {"samples", N},
                                  {"pool_tried", s.pool.tried}, {"augs", s.augs}, {"seed", s.seed},
                                  {"seconds", seconds}, {"settings", settings}, {"mean", means},
                                  {"per_sample", nlohmann::json(checkpoint.rows.begin(), checkpoint.rows.begin() + static_cast<std::ptrdiff_t>(N))}};
  write_json_file(join_path(out, "results.json"), results, 1);
  if (checkpoint.rows.size() == N) std::filesystem::remove(checkpoint.path);  // results.json holds it all now
  std::fputs(md.str().c_str(), stdout);
  std::printf("wrote %s/table.md, results.json and figures/ (%.0f s)\n", out.c_str(), seconds);
  return 0;
}

}  // namespace spade::cli
