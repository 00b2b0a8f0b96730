// spade eval gridpg: the grid pointing game (Böhle et al. 2021) for Dense, FastSPADE and SPADE
// maps: grids of photos of different classes, each cell's class explained, scored by the share of
// the positive attribution inside that cell. A localisation test with known ground truth that
// needs no backdoor.
#include <algorithm>
#include <chrono>
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
#include "interpret/experiments/grid_pool.h"
#include "interpret/metrics/grid_pointing.h"
#include "train/dataset.h"
#include "formats/json_output.h"

namespace spade::cli {

namespace {

std::string fixed(double v, int digits = 2) {
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

}  // namespace

int cmd_eval_gridpg(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"data", "DIR|FILE.tar", "labelled photos the grids are made of (ImageFolder tree or tar)", ""});
  opts.push_back({"split", "M:R[,R]", "use the photos whose index mod M is one of the R (default: all)", ""});
  opts.push_back({"grids", "N", "grids to score", "100", integer(1, kMaxCount)});
  opts.push_back({"cells", "N", "cells per side of a grid (N x N photos, each side/N pixels)", "2", integer(1, 8)});
  opts.push_back({"min-confidence", "P", "a photo is used only if the dense model predicts its label with softmax "
                                         "probability >= P", "0.5", number(0, 1)});
  add_experiment_options(opts);
  add_schedule_options(opts);
  add_variants_option(opts);
  opts.push_back({"figures", "K", "write a figure for each of the first K grids", "4", integer(0, kMaxCount)});
  opts.push_back({"out", "DIR", "writes DIR/table.md, DIR/results.json and DIR/figures/*.png", ""});
  add_resume_options(opts, "grids");
  Args a("eval gridpg",
         "Grid pointing game: grids of photos of different classes, each cell's class explained by Dense, FastSPADE "
         "and SPADE maps; score = share of the positive attribution inside the cell, and whether the most salient "
         "pixel is in it.",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const std::string out = a.require("out");
  const std::vector<Variant> variants = parse_variants(a.get("variants"));
  const int64_t figures = a.get_int("figures"), stop_after = a.get_int("stop-after");
  if (stop_after < 0) throw Error("--stop-after: must be 0 or more");
  interp::GridPoolOptions po;
  po.count = a.get_int("grids");
  po.grid = a.get_int("cells");
  po.min_confidence = a.get_double("min-confidence");
  const auto start = std::chrono::steady_clock::now();

  const Model m = load_model_from(a);
  const ExperimentSetup s = experiment_setup(a, m);
  po.seed = s.seed;
  const std::vector<MethodSchedule> schedules = method_schedules(a, s.methods, m.graph);
  train::PixelLoadOptions load = train::eval_load_options(m.preprocess);
  if (a.has("split")) train::parse_split(a.get("split"), "--split", load);
  std::unique_ptr<Progress> bar;
  auto progress = [&](const char* label) {
    return [&, label](int64_t d, int64_t t) {
      if (s.quiet) return;
      if (!bar) bar = std::make_unique<Progress>(label, t);
      bar->update(d);
    };
  };
  const train::PixelDataset photos =
      train::load_pixel_dataset(a.require("data"), m.labels, m.label_ids, load, progress("decode photos"));
  bar.reset();
  const interp::GridPool pool = interp::grid_pool(m, photos, po, progress("classify photos"));
  if (bar) bar->finish();
  bar.reset();
  if (!s.quiet)
    std::fprintf(stderr, "grids: %zu from %lld of %lld photos (correct, confidence >= %g)\n", pool.grids.size(),
                 static_cast<long long>(pool.eligible), static_cast<long long>(pool.classified), po.min_confidence);

  const size_t M = s.methods.size(), V = variants.size(), N = pool.grids.size();
  const int64_t cells = po.grid * po.grid;
  nlohmann::json run = experiment_run(a, m, s, schedules);
  run["cells"] = po.grid;
  run["min-confidence"] = po.min_confidence;
  SampleCheckpoint checkpoint(join_path(out, "partial.json"), run, start);
  if (a.flag("resume")) checkpoint.load();
  const size_t resumed = std::min(N, checkpoint.rows.size());
  for (size_t i = 0; i < resumed; ++i)
    if (checkpoint.rows[i].at("images") != pool.grids[i].names)
      throw Error(checkpoint.path + ": grid " + std::to_string(i) + " holds other photos there; remove it or run without --resume");
  if (resumed && !s.quiet) std::fprintf(stderr, "resumed: %zu of %zu grids done\n", resumed, N);

  if (!s.quiet) bar = std::make_unique<Progress>("grids", static_cast<int64_t>(N));
  for (size_t i = resumed; i < N; ++i) {
    const interp::GridSample& g = pool.grids[i];
    std::unique_ptr<interp::SampleSolutions> solutions;
    if (any_sparse(variants))
      solutions = std::make_unique<interp::SampleSolutions>(sample_solutions(m, s, g.image, i));
    nlohmann::json row = {{"grid", i}, {"images", g.names}, {"classes", g.classes}, {"confidence", g.confidence}};
    std::vector<std::vector<Image>> cells_rows;
    std::vector<std::string> labels;
    for (size_t k = 0; k < M; ++k) {
      const interp::MethodInfo& info = interp::find_method(s.methods[k]);
      for (size_t v = 0; v < V; ++v) {
        const WeightOverlay overlay = variant_weights(variants[v], solutions.get(), schedules[k].schedule);
        const interp::Network net{m.graph, overlay.empty() ? nullptr : &overlay, s.batch};
        nlohmann::json loc = nlohmann::json::array(), hits = nlohmann::json::array();
        std::vector<Image> maps;
        for (int64_t c = 0; c < cells; ++c) {
          const Tensor attr = info.fn(net, g.x, g.classes[c], s.params[k]);
          const interp::GridScore score = interp::grid_pointing(attr, po.grid, c);
          loc.push_back(score.localisation);
          hits.push_back(score.hit);
          if (static_cast<int64_t>(i) < figures) maps.push_back(heatmap(channel_sum(attr, SumPart::Positive), MapScale::Absolute));
        }
        row["metrics"][s.methods[k]][variants[v].key] = {{"localisation", loc}, {"pointing_hit", hits}};
        if (static_cast<int64_t>(i) < figures)
          for (int64_t c = 0; c < cells; ++c) {
            if (static_cast<int64_t>(cells_rows.size()) <= static_cast<int64_t>(k) * cells + c) {
              cells_rows.push_back({g.image});
              labels.push_back(s.methods[k] + " " + std::to_string(c));
            }
            cells_rows[static_cast<size_t>(static_cast<int64_t>(k) * cells + c)].push_back(maps[c]);
          }
      }
    }
    if (static_cast<int64_t>(i) < figures) {
      std::vector<std::string> columns = {"grid"};
      for (const Variant& v : variants) columns.push_back(v.title);
      const PublishNow now;  // a figure goes with its sample's checkpoint row: --resume does not redraw it
      save_png(join_path(out, "figures/grid_" + std::to_string(i) + ".png"), panel(cells_rows, labels, columns, 4));
    }
    checkpoint.add(std::move(row));
    if (bar) bar->update(static_cast<int64_t>(i + 1));
    if (checkpoint.stop_here(stop_after, resumed, i + 1, N, "grids")) {
      if (bar) bar->finish();
      return 0;
    }
  }
  if (bar) bar->finish();
  const double seconds = checkpoint.total_seconds();  // every run's time, the resumed ones' included

  // Per method and variant: every cell's score (the grids' cells are the samples).
  auto values = [&](size_t k, size_t v, const char* what) {
    std::vector<double> out_values;
    for (size_t i = 0; i < N; ++i)
      for (const auto& x : checkpoint.rows[i].at("metrics").at(s.methods[k]).at(variants[v].key).at(what))
        out_values.push_back(x.is_boolean() ? (x.get<bool>() ? 100.0 : 0.0) : 100.0 * x.get<double>());
    return out_values;
  };
  auto mean = [](const std::vector<double>& x) {
    double t = 0.0;
    for (double v : x) t += v / double(x.size());
    return t;
  };
  auto localisation = [&](size_t k, size_t v) { return mean(values(k, v, "localisation")); };
  auto pointing = [&](size_t k, size_t v) { return mean(values(k, v, "pointing_hit")); };
  const VariantTable loc = variant_table(s.methods, variants, localisation,
                                         [&](size_t k, size_t v) { return values(k, v, "localisation"); });
  std::ostringstream md;
  md << "Grid pointing game, " << N << " grids of " << po.grid << "x" << po.grid << " photos (" << N * cells
     << " cells), model " << m.source << "\n\nLocalisation (% of the positive attribution inside the explained cell; "
     << fixed(100.0 / double(cells), 1) << " = spread evenly)\n\n"
     << loc.markdown << "\nPointing game (% of cells whose most salient pixel is inside the cell)\n\n"
     << variant_table(s.methods, variants, pointing).markdown
     << wins_summary(loc, s.methods, variants, localisation, "localisation");
  nlohmann::json means;
  for (size_t k = 0; k < M; ++k)
    for (size_t v = 0; v < V; ++v) {
      nlohmann::json& e = means[s.methods[k]][variants[v].key];
      e = {{"localisation", localisation(k, v)}, {"pointing_game", pointing(k, v)}};
      if (loc.differences.contains(s.methods[k]) && loc.differences[s.methods[k]].contains(variants[v].key))
        e["difference_to_dense"] = loc.differences[s.methods[k]][variants[v].key];
    }
  write_file_atomic(join_path(out, "table.md"), md.str());

  nlohmann::json settings;
  for (size_t k = 0; k < M; ++k) settings[s.methods[k]] = {{"sparsity", schedules[k].source}};
  const nlohmann::json results = {
      {"model", m.source}, {"grids", N}, {"cells", po.grid}, {"min_confidence", po.min_confidence},
      {"photos_classified", pool.classified}, {"photos_eligible", pool.eligible}, {"augs", s.augs},
      {"seed", s.seed}, {"seconds", seconds}, {"settings", settings}, {"mean", means},
      {"per_grid", nlohmann::json(checkpoint.rows.begin(), checkpoint.rows.begin() + static_cast<std::ptrdiff_t>(N))}};
  write_json_file(join_path(out, "results.json"), results, 1);
  if (checkpoint.rows.size() == N) std::filesystem::remove(checkpoint.path);
  std::fputs(md.str().c_str(), stdout);
  std::printf("wrote %s/table.md, results.json and figures/ (%.0f s)\n", out.c_str(), seconds);
  return 0;
}

}  // namespace spade::cli
