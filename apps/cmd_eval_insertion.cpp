// spade eval insertion: the paper's Table 2 on clean test images: insertion and deletion (SPADE.md
// 4; confidences always from the dense model) of Dense and FastSPADE maps, per method.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/method_options.h"
#include "apps/trace_options.h"
#include "apps/trojan_options.h"
#include "engine/error.h"
#include "formats/file_io.h"
#include "interpret/experiments/trojan_metrics.h"
#include "interpret/metrics/insertion_deletion.h"
#include "train/dataset.h"
#include "train/trainer.h"

namespace spade::cli {

int cmd_eval_insertion(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"data", "DIR|FILE.tar", "clean test images (ImageFolder tree or tar)", ""});
  opts.push_back({"methods", "NAME[,NAME..]|all", "saliency methods (all = the paper's ten)", "all"});
  opts.push_back({"samples", "N", "images, drawn in a seeded random order from the set", "100"});
  opts.push_back({"augs", "N", "augmentations per image for the FastSPADE Hessians", "256"});
  opts.push_back({"seed", "S", "image order, augmentations and method randomness", "0"});
  opts.push_back({"lime-samples", "N", "LIME perturbations per map (the paper: 1000)", "1000"});
  add_schedule_options(opts);
  opts.push_back({"batch", "B", "images per forward/backward pass", "32"});
  add_memory_option(opts);
  opts.push_back({"out", "DIR", "writes DIR/table.md and DIR/results.json", ""});
  opts.push_back({"quiet", "", "no progress bars", ""});
  Args a("eval insertion",
         "Insertion and deletion AUC (SPADE paper's variant) of Dense and FastSPADE maps on clean images; the class "
         "explained is the dense model's prediction.",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_threads(a);
  const std::string out = a.require("out");
  const bool quiet = a.flag("quiet");
  const auto start = std::chrono::steady_clock::now();
  Model m = load_model_from(a);
  if (m.weights_path.empty()) throw Error(m.source + ": no weights: give --weights FILE or a model .json with weights");
  const std::vector<std::string> methods =
      a.get("methods") == "all" ? interp::paper_methods() : parse_methods(a.get("methods"));
  const uint64_t seed = static_cast<uint64_t>(a.get_int("seed"));
  const int64_t count = a.get_int("samples"), augs = a.get_int("augs"), batch = a.get_int("batch");
  if (count < 1 || augs < 1 || batch < 1) throw Error("--samples, --augs and --batch must be at least 1");
  check_batch_memory(a, m, batch, PassKind::ForwardBackward);
  std::vector<interp::MethodParams> params;
  for (const std::string& name : methods) {
    params.push_back(interp::experiment_params(name, m, a.get_int("lime-samples")));
    params.back().seed = seed;
  }
  const std::vector<MethodSchedule> schedules = method_schedules(a, methods, m.graph);
  const train::PixelDataset test = train::load_pixel_dataset(a.require("data"), m.labels, m.label_ids,
                                                              train::eval_load_options(m.preprocess));
  const std::vector<int64_t> order = train::epoch_order(test.size(), seed, 0);
  const int64_t n = std::min<int64_t>(count, test.size());

  interp::PruneConfig cfg;
  cfg.batch = batch;
  const interp::Network dense{m.graph, nullptr, batch};
  interp::InsertionDeletionParams idp;
  idp.batch = batch;
  const size_t M = methods.size();
  std::vector<double> ins_d(M), del_d(M), ins_f(M), del_f(M);
  nlohmann::json per_image = nlohmann::json::array();
  std::unique_ptr<Progress> bar;
  if (!quiet) bar = std::make_unique<Progress>("images", n);
  for (int64_t i = 0; i < n; ++i) {
    const Image image = test.image(order[i]);
    const Tensor x = preprocess_image(image, normalisation_of(m.preprocess));  // loaded at the input size
    const Tensor logits = interp::logits(dense, x);
    const int64_t target = std::max_element(logits.data(), logits.data() + logits.dim(1)) - logits.data();
    auto calib = interp::augmented_calibration(image, augment_config_of(m), augs, seed + static_cast<uint64_t>(order[i]));
    interp::SampleSolutions solutions(m.graph, *calib, cfg);
    const interp::ProbabilityFn prob = interp::class_probability(dense, target);
    nlohmann::json row = {{"image", test.names[order[i]]}, {"target", target}};
    for (size_t k = 0; k < M; ++k) {
      const interp::MethodInfo& info = interp::find_method(methods[k]);
      const WeightOverlay overlay = solutions.overlay(schedules[k].schedule, interp::Solver::SparseGPT);
      const interp::Network fast{m.graph, overlay.empty() ? nullptr : &overlay, batch};
      const interp::InsertionDeletion d = interp::insertion_deletion(x, info.fn(dense, x, target, params[k]), prob, idp);
      const interp::InsertionDeletion f = interp::insertion_deletion(x, info.fn(fast, x, target, params[k]), prob, idp);
      ins_d[k] += d.insertion / double(n);
      del_d[k] += d.deletion / double(n);
      ins_f[k] += f.insertion / double(n);
      del_f[k] += f.deletion / double(n);
      row["metrics"][methods[k]] = {{"dense", {{"insertion", d.insertion}, {"deletion", d.deletion}}},
                                    {"fastspade", {{"insertion", f.insertion}, {"deletion", f.deletion}}}};
    }
    per_image.push_back(row);
    if (bar) bar->update(i + 1);
  }
  if (bar) bar->finish();

  std::ostringstream md;
  char line[256];
  md << "Insertion (higher is better) and deletion (lower is better), " << n << " clean images, model " << m.source
     << "\n\n| method | insertion Dense | insertion FastSPADE | deletion Dense | deletion FastSPADE |\n"
        "| --- | --- | --- | --- | --- |\n";
  double a1 = 0, a2 = 0, a3 = 0, a4 = 0;
  nlohmann::json means;
  for (size_t k = 0; k < M; ++k) {
    std::snprintf(line, sizeof line, "| %s | %.2f | %.2f | %.2f | %.2f |\n", methods[k].c_str(), ins_d[k], ins_f[k],
                  del_d[k], del_f[k]);
    md << line;
    a1 += ins_d[k] / M, a2 += ins_f[k] / M, a3 += del_d[k] / M, a4 += del_f[k] / M;
    means[methods[k]] = {{"dense", {{"insertion", ins_d[k]}, {"deletion", del_d[k]}}},
                         {"fastspade", {{"insertion", ins_f[k]}, {"deletion", del_f[k]}}}};
  }
  std::snprintf(line, sizeof line, "| **average** | **%.2f** | **%.2f** | **%.2f** | **%.2f** |\n", a1, a2, a3, a4);
  md << line;
  std::filesystem::create_directories(out);
  write_file_atomic(join_path(out, "table.md"), md.str());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const nlohmann::json results = {{"model", m.source}, {"images", n}, {"augs", augs}, {"seed", seed},
                                  {"seconds", seconds}, {"mean", means}, {"per_image", per_image}};
  write_file_atomic(join_path(out, "results.json"), results.dump(1) + "\n");
  std::fputs(md.str().c_str(), stdout);
  std::printf("wrote %s/table.md and results.json (%.0f s)\n", out.c_str(), seconds);
  return 0;
}

}  // namespace spade::cli
