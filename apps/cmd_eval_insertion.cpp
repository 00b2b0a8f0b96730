// spade eval insertion: the paper's Table 2 on clean images: insertion and deletion (SPADE.md 4;
// confidences always from the dense model) of Dense, FastSPADE and SPADE maps, per method.
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
#include "interpret/metrics/insertion_deletion.h"
#include "train/dataset.h"
#include "train/trainer.h"
#include "formats/json_output.h"

namespace spade::cli {

int cmd_eval_insertion(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"data", "DIR|FILE.tar", "clean test images (ImageFolder tree or tar)", ""});
  opts.push_back({"split", "M:R[,R]", "use the images whose index mod M is one of the R (default: all)", ""});
  opts.push_back({"samples", "N", "images, drawn in a seeded random order from the set", "100", integer(1, kMaxCount)});
  add_experiment_options(opts);
  add_schedule_options(opts);
  add_variants_option(opts, "dense,fast");
  opts.push_back({"out", "DIR", "writes DIR/table.md and DIR/results.json", ""});
  add_resume_options(opts, "samples");
  Args a("eval insertion",
         "Insertion and deletion AUC (SPADE paper's variant) of Dense, FastSPADE and SPADE maps on clean images; the "
         "class explained is the dense model's prediction.",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const std::string out = a.require("out");
  const std::vector<Variant> variants = parse_variants(a.get("variants"));
  const int64_t count = a.get_int("samples"), stop_after = a.get_int("stop-after");
  if (stop_after < 0) throw Error("--stop-after: must be 0 or more");
  const auto start = std::chrono::steady_clock::now();
  Model m = load_model_from(a);
  const ExperimentSetup s = experiment_setup(a, m);
  const std::vector<MethodSchedule> schedules = method_schedules(a, s.methods, m.graph);
  train::PixelLoadOptions load = train::eval_load_options(m.preprocess);
  if (a.has("split")) train::parse_split(a.get("split"), "--split", load);
  const train::PixelDataset test = train::load_pixel_dataset(a.require("data"), m.labels, m.label_ids, load);
  const std::vector<int64_t> order = train::epoch_order(test.size(), s.seed, 0);
  const size_t N = static_cast<size_t>(std::min<int64_t>(count, test.size()));

  const size_t M = s.methods.size(), V = variants.size();
  SampleCheckpoint checkpoint(join_path(out, "partial.json"), experiment_run(a, m, s, schedules), start);
  if (a.flag("resume")) checkpoint.load();
  const size_t resumed = std::min(N, checkpoint.rows.size());
  for (size_t i = 0; i < resumed; ++i)
    if (checkpoint.rows[i].at("image") != test.names[order[i]])
      throw Error(checkpoint.path + ": sample " + std::to_string(i) + " is " + checkpoint.rows[i].at("image").dump() +
                  " there but " + test.names[order[i]] + " here; remove it or run without --resume");
  if (resumed && !s.quiet) std::fprintf(stderr, "resumed: %zu of %zu samples done\n", resumed, N);

  const interp::Network dense{m.graph, nullptr, s.batch};
  interp::InsertionDeletionParams idp;
  idp.batch = s.batch;
  std::unique_ptr<Progress> bar;
  if (!s.quiet) bar = std::make_unique<Progress>("images", static_cast<int64_t>(N));
  for (size_t i = resumed; i < N; ++i) {
    const Image image = test.image(order[i]);
    const Tensor x = preprocess_image(image, normalisation_of(m.preprocess));  // loaded at the input size
    const Tensor logits = interp::logits(dense, x);
    const int64_t target = std::max_element(logits.data(), logits.data() + logits.dim(1)) - logits.data();
    std::unique_ptr<interp::SampleSolutions> solutions;
    if (any_sparse(variants))
      solutions = std::make_unique<interp::SampleSolutions>(sample_solutions(m, s, image, static_cast<uint64_t>(order[i])));
    const interp::ProbabilityFn prob = interp::class_probability(dense, target);
    nlohmann::json row = {{"image", test.names[order[i]]}, {"target", target}};
    for (size_t k = 0; k < M; ++k) {
      const interp::MethodInfo& info = interp::find_method(s.methods[k]);
      for (size_t v = 0; v < V; ++v) {
        const WeightOverlay overlay = variant_weights(variants[v], solutions.get(), schedules[k].schedule);
        const interp::Network net{m.graph, overlay.empty() ? nullptr : &overlay, s.batch};
        const interp::InsertionDeletion d = interp::insertion_deletion(x, info.fn(net, x, target, s.params[k]), prob, idp);
        row["metrics"][s.methods[k]][variants[v].key] = {{"insertion", d.insertion}, {"deletion", d.deletion}};
      }
    }
    checkpoint.add(std::move(row));
    if (bar) bar->update(static_cast<int64_t>(i + 1));
    if (checkpoint.stop_here(stop_after, resumed, i + 1, N, "samples")) {
      if (bar) bar->finish();
      return 0;
    }
  }
  if (bar) bar->finish();
  const double seconds = checkpoint.total_seconds();

  auto values = [&](size_t k, size_t v, const char* what) {
    std::vector<double> x;
    for (size_t i = 0; i < N; ++i)
      x.push_back(checkpoint.rows[i].at("metrics").at(s.methods[k]).at(variants[v].key).at(what).get<double>());
    return x;
  };
  auto mean_of = [&](const char* what) {
    return [&, what](size_t k, size_t v) {
      double t = 0.0;
      for (double x : values(k, v, what)) t += x / double(N);
      return t;
    };
  };
  const auto insertion = mean_of("insertion"), deletion = mean_of("deletion");
  const VariantTable ins = variant_table(s.methods, variants, insertion,
                                         [&](size_t k, size_t v) { return values(k, v, "insertion"); });
  const VariantTable del = variant_table(s.methods, variants, deletion,
                                         [&](size_t k, size_t v) { return values(k, v, "deletion"); });
  std::ostringstream md;
  md << "Insertion (higher is better), " << N << " clean images, model " << m.source << "\n\n"
     << ins.markdown << "\nDeletion (lower is better)\n\n"
     << del.markdown << wins_summary(ins, s.methods, variants, insertion, "insertion");
  write_file_atomic(join_path(out, "table.md"), md.str());

  nlohmann::json means, settings;
  for (size_t k = 0; k < M; ++k) {
    settings[s.methods[k]] = {{"sparsity", schedules[k].source}};
    for (size_t v = 0; v < V; ++v) {
      nlohmann::json& e = means[s.methods[k]][variants[v].key];
      e = {{"insertion", insertion(k, v)}, {"deletion", deletion(k, v)}};
      if (ins.differences.contains(s.methods[k]) && ins.differences[s.methods[k]].contains(variants[v].key))
        e["difference_to_dense"] = {{"insertion", ins.differences[s.methods[k]][variants[v].key]},
                                    {"deletion", del.differences[s.methods[k]][variants[v].key]}};
    }
  }
  const nlohmann::json results = {
      {"model", m.source}, {"images", N}, {"augs", s.augs}, {"seed", s.seed}, {"seconds", seconds},
      {"settings", settings}, {"mean", means},
      {"per_image", nlohmann::json(checkpoint.rows.begin(), checkpoint.rows.begin() + static_cast<std::ptrdiff_t>(N))}};
  write_json_file(join_path(out, "results.json"), results, 1);
  if (checkpoint.rows.size() == N) std::filesystem::remove(checkpoint.path);
  std::fputs(md.str().c_str(), stdout);
  std::printf("wrote %s/table.md and results.json (%.0f s)\n", out.c_str(), seconds);
  return 0;
}

}  // namespace spade::cli
