// spade eval featurevis: the automatic stand-in for the paper's human study of neuron
// visualisations (interpret/experiments/featurevis_study.h, docs/featurevis.md). For each test
// image: the predicted class, the two Score-CAM patches, the class's visualisation on the dense
// model and on the image's SPADE trace, and which patch each visualisation resembles in the dense
// model's penultimate feature space. Writes table.md (like the paper's Table 3) and results.json.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/featurevis_options.h"
#include "apps/trace_options.h"
#include "engine/executor.h"
#include "formats/file_io.h"
#include "formats/heatmap.h"
#include "formats/image_folder.h"
#include "interpret/experiments/featurevis_study.h"
#include "interpret/featurevis/render.h"
#include "interpret/saliency/methods.h"
#include "formats/json_output.h"

namespace spade::cli {

namespace {

namespace fv = interp::featurevis;
using Clock = std::chrono::steady_clock;

// Images spread evenly over the folder (which lists them class by class): index floor(k * size / n).
std::vector<size_t> spread_indices(size_t size, int64_t n) {
  std::vector<size_t> idx;
  for (int64_t k = 0; k < n; ++k) idx.push_back(size_t(double(k) * double(size) / double(n)));
  return idx;
}

std::string percent(double v) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << 100.0 * v;
  return os.str();
}

nlohmann::json rates_json(const interp::VoteRates& r) {
  return {{"count", r.count}, {"agree", r.agree}, {"undecided", r.undecided}, {"disagree", r.disagree},
          {"mean_difference", r.mean_difference}};
}

}  // namespace

int cmd_eval_featurevis(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"data", "DIR|FILE.tar", "ImageFolder tree or tar of test images", ""});
  opts.push_back({"limit", "N", "images, spread evenly over the folder's classes", "50", integer(1, kMaxCount)});
  opts.push_back({"spade", "fast|exact", "the trace's solver: fast = SparseGPT (FastSPADE), exact = OBC (SPADE)", "fast"});
  add_trace_options(opts);
  add_render_options(opts);
  opts.push_back({"patch", "P", "side of the Score-CAM patches in pixels (default: half the input size)", "", integer(1, kMaxSide)});
  opts.push_back({"margin", "M", "a visualisation is undecided when its two cosine similarities differ by at most M", "0.02", number(0, 2)});
  opts.push_back({"figures", "", "also write figures/<k>.png: image | top patch | bottom patch | dense | SPADE", ""});
  opts.push_back({"out", "DIR", "output directory (table.md, results.json)", ""});
  Args a("eval featurevis",
         "Which of two image patches (Score-CAM's most and least relevant regions for the predicted class) the "
         "class's feature visualisation resembles, for the dense model and for the image's SPADE trace, judged in the "
         "dense model's penultimate feature space by cosine similarity: an automatic stand-in for the paper's human "
         "study (Table 3). Writes table.md and results.json (per image: patches, similarities, votes). See "
         "docs/featurevis.md.",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const auto t_start = Clock::now();
  const std::string out_dir = a.require("out");
  const std::string mode = a.get("spade");
  if (mode != "fast" && mode != "exact") throw Error("--spade: expected fast or exact, got \"" + mode + "\"");
  const int64_t limit = a.get_int("limit");
  const double margin = a.get_double("margin");
  if (!(margin >= 0) || !std::isfinite(margin)) throw Error("--margin must be a non-negative number");
  const bool figures = a.flag("figures");

  Model m = load_model_from(a);
  const int64_t size = m.preprocess.crop > 0 ? m.preprocess.crop : m.graph.input_chw[1];
  const int64_t patch = a.has("patch") ? a.get_int("patch") : size / 2;
  if (patch < 1 || patch > size) throw Error("--patch must be between 1 and the input size " + std::to_string(size));
  interp::penultimate_node(m.graph);  // refuses models without a Linear classifier up front
  interp::PruneConfig prune = prune_config_from(a, m, "");
  prune.solver = mode == "fast" ? interp::Solver::SparseGPT : interp::Solver::OBC;
  const fv::RenderConfig cfg = render_config_from(a, m, size);
  ImageFolder data(a.require("data"));
  if (data.size() == 0) throw Error(data.path() + ": no images found");
  const std::vector<size_t> indices = spread_indices(data.size(), std::min<int64_t>(limit, int64_t(data.size())));

  const interp::Network dense{m.graph, nullptr, 16, nullptr};
  interp::MethodParams scorecam;
  scorecam.mean = m.preprocess.mean;
  scorecam.std = m.preprocess.std;
  // Per class: the dense visualisation does not depend on the image.
  std::map<int64_t, fv::RenderResult> dense_vis;
  std::vector<interp::PatchVote> dense_votes, spade_votes;
  nlohmann::json rows = nlohmann::json::array();
  double trace_s = 0, vis_s = 0;
  int64_t spade_stuck_count = 0;
  Progress bar("featurevis", int64_t(indices.size()));
  for (size_t k = 0; k < indices.size(); ++k) {
    const LabeledImage li = data.get(indices[k]);
    const std::string name = data.path() + ":" + li.name;
    const Image image = decode_image(li.bytes.data(), li.bytes.size(), name);
    const Tensor x = preprocess_image(image, m.preprocess, name);
    const Tensor logits = interp::logits(dense, x);
    const int64_t cls = std::max_element(logits.data(), logits.data() + logits.numel()) - logits.data();
    // Score-CAM of the predicted class: its attribution repeats one map over the channels.
    const Tensor cam = interp::find_method("scorecam").fn(dense, x, cls, scorecam).slice0(0, 1);
    const Tensor map = Tensor::from_vector({x.dim(2), x.dim(3)},
                                           std::vector<float>(cam.data(), cam.data() + x.dim(2) * x.dim(3)));
    const interp::PatchPair pp = interp::extreme_patches(map, patch);
    const Tensor top = interp::crop_resized(x, pp.top_y, pp.top_x, patch, size);
    const Tensor bottom = interp::crop_resized(x, pp.bottom_y, pp.bottom_x, patch, size);

    const std::vector<fv::Objective> objective{fv::class_objective(m.graph, cls)};
    auto t0 = Clock::now();
    if (!dense_vis.count(cls)) dense_vis[cls] = fv::render(m.graph, nullptr, objective, cfg);
    const interp::Trace trace = interp::compute_trace(m.graph, *augmented_calibration_of(a, m, image), prune);
    trace_s += std::chrono::duration<double>(Clock::now() - t0).count();
    t0 = Clock::now();
    const fv::RenderResult spade_run = fv::render(m.graph, &trace.weights, objective, cfg);
    const Tensor& spade_vis = spade_run.images;
    const fv::RenderResult& dense_run = dense_vis[cls];
    // A trace whose class logit has no gradient at the (nearly grey) starting image never moves:
    // the objective stays where it started. Counted, since such a visualisation shows nothing.
    const bool spade_stuck = spade_run.curve.empty() || spade_run.curve.back()[0] == spade_run.curve.front()[0];
    spade_stuck_count += spade_stuck;
    vis_s += std::chrono::duration<double>(Clock::now() - t0).count();

    // Everything in the dense model's feature space: top, bottom, dense vis, SPADE vis.
    const Tensor batch = cat0({top, bottom, fv::normalise(dense_run.images, cfg.mean.data(), cfg.std.data()),
                               fv::normalise(spade_vis, cfg.mean.data(), cfg.std.data())});
    const Tensor f = interp::penultimate_features(m.graph, batch);
    const int64_t D = f.dim(1);
    auto vote_of = [&](int64_t row) {
      return interp::PatchVote{interp::cosine(f.data() + row * D, f.data(), D),
                               interp::cosine(f.data() + row * D, f.data() + D, D)};
    };
    const interp::PatchVote dv = vote_of(2), sv = vote_of(3);
    dense_votes.push_back(dv);
    spade_votes.push_back(sv);
    rows.push_back({{"image", li.name},
                    {"label", data.classes().at(li.label)},
                    {"predicted", cls},
                    {"predicted_label", m.labels.at(cls)},
                    {"top_patch", {pp.top_y, pp.top_x}},
                    {"bottom_patch", {pp.bottom_y, pp.bottom_x}},
                    {"dense",
                     {{"cos_top", dv.cos_top}, {"cos_bottom", dv.cos_bottom}, {"vote", interp::vote_name(dv.vote(margin))},
                      {"objective_first_step", dense_run.curve.front()[0]}, {"objective_final", dense_run.final_values[0]}}},
                    {"spade",
                     {{"cos_top", sv.cos_top}, {"cos_bottom", sv.cos_bottom}, {"vote", interp::vote_name(sv.vote(margin))},
                      {"objective_first_step", spade_run.curve.front()[0]}, {"objective_final", spade_run.final_values[0]},
                      {"stuck", spade_stuck}}}});
    if (figures) {
      const Tensor shown = cat0({x, top, bottom});
      std::vector<Image> row;
      for (int64_t i = 0; i < 3; ++i) row.push_back(tensor_to_image(shown.slice0(i, i + 1), m.preprocess.mean, m.preprocess.std));
      row.push_back(unit_image(dense_run.images, 0));
      row.push_back(unit_image(spade_vis, 0));
      char name[48];
      std::snprintf(name, sizeof name, "figures/%03zu.png", k);
      save_png(join_path(out_dir, name),
               panel({row}, {m.labels.at(cls)}, {"image", "top", "bottom", "dense", "spade"}, 4));
    }
    bar.update(int64_t(k + 1));
  }
  bar.finish();

  const interp::VoteRates dr = interp::vote_rates(dense_votes, margin), sr = interp::vote_rates(spade_votes, margin);
  int64_t spade_closer = 0;
  for (size_t i = 0; i < dense_votes.size(); ++i) spade_closer += spade_votes[i].difference() > dense_votes[i].difference();
  std::ostringstream table;
  table << "| visualisation | agree with Score-CAM % | undecided % | disagree % | mean cos(top) - cos(bottom) |\n"
        << "| --- | ---: | ---: | ---: | ---: |\n"
        << "| Dense | " << percent(dr.agree) << " | " << percent(dr.undecided) << " | " << percent(dr.disagree) << " | "
        << dr.mean_difference << " |\n"
        << "| SPADE (" << mode << ") | " << percent(sr.agree) << " | " << percent(sr.undecided) << " | "
        << percent(sr.disagree) << " | " << sr.mean_difference << " |\n\n"
        << dr.count << " images, margin " << margin << "; the SPADE visualisation leans more towards the top patch than "
        << "the dense one on " << spade_closer << " of " << dr.count << " images. " << spade_stuck_count
        << " SPADE visualisations never moved (the trace's class logit has no gradient at the starting image).\n";
  const double total_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  const nlohmann::json results = {
      {"model", {{"arch", m.arch}, {"source", m.source}, {"weights", m.weights_path}}},
      {"data", data.path()},
      {"settings",
       {{"spade", mode}, {"sparsity", prune.sparsity.describe()}, {"augs", a.get_int("augs")}, {"steps", cfg.steps},
        {"transforms", a.get("transforms")}, {"vis_seed", cfg.seed}, {"patch", patch}, {"margin", margin}}},
      {"dense", rates_json(dr)},
      {"spade", rates_json(sr)},
      {"spade_leans_more_to_top", spade_closer},
      {"spade_stuck", spade_stuck_count},
      {"per_image", rows},
      {"timings", {{"trace_and_dense_vis_s", trace_s}, {"spade_vis_s", vis_s}, {"total_s", total_s}}},
  };
  write_file_atomic(join_path(out_dir, "table.md"), table.str());
  write_json_file(join_path(out_dir, "results.json"), results, 2);
  std::cout << table.str() << "wrote " << out_dir << " in " << total_s << " s\n";
  return 0;
}

}  // namespace spade::cli
