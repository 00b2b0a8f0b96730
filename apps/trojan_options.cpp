#include "apps/trojan_options.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "apps/method_options.h"
#include "apps/trace_options.h"
#include "engine/error.h"
#include "formats/file_io.h"
#include "interpret/spade/calibration.h"
#include "train/dataset.h"

namespace spade::cli {

void add_experiment_options(std::vector<Option>& opts) {
  opts.push_back({"methods", "NAME[,NAME..]|all", "saliency methods (all = the paper's ten)", "all"});
  opts.push_back({"augs", "N", "augmentations per sample for the SPADE Hessians", "256", integer(1, kMaxAugs)});
  opts.push_back({"seed", "S", "sample order, trigger placement, augmentations and method randomness", "0", seed_bounds()});
  opts.push_back({"lime-samples", "N", "LIME perturbations per map (the paper: 1000)", "1000", integer(1, kMaxCount)});
  opts.push_back({"batch", "B", "images per forward/backward pass", "32", integer(1, kMaxBatch)});
  opts.push_back({"authors-threshold", "", "FastSPADE: the authors' mask threshold (prunes one weight more per block, "
                                           "even at target 0)", ""});
  opts.push_back({"quiet", "", "no progress bars", ""});
}

void add_trojan_options(std::vector<Option>& opts, int64_t default_samples) {
  opts.push_back({"data", "DIR|FILE.tar", "test images the triggers are pasted on (ImageFolder tree or tar)", ""});
  opts.push_back({"split", "M:R[,R]", "use the test images whose index mod M is one of the R (default: tune takes the "
                                      "even-numbered ones, eval trojan the odd ones)", ""});
  opts.push_back({"rules", "RULES.json", "the model's Trojan rules (models/*.rules.json)", ""});
  opts.push_back({"samples", "N", "pool samples: triggered images the dense model is fooled by", std::to_string(default_samples), integer(1, kMaxCount)});
  add_experiment_options(opts);
}

ExperimentSetup experiment_setup(const Args& a, const Model& m) {
  ExperimentSetup s;
  s.quiet = a.flag("quiet");
  s.methods = a.get("methods") == "all" ? interp::paper_methods() : parse_methods(a.get("methods"));
  s.seed = static_cast<uint64_t>(a.get_int("seed"));
  for (const std::string& name : s.methods) {
    s.params.push_back(interp::experiment_params(name, m, a.get_int("lime-samples")));
    s.params.back().seed = s.seed;
  }
  s.augs = a.get_int("augs");
  s.batch = a.get_int("batch");
  check_batch_memory(a, m, s.batch, PassKind::ForwardBackward);
  s.prune.batch = s.batch;
  s.prune.authors_threshold = a.flag("authors-threshold");
  return s;
}

TrojanSetup trojan_setup(const Args& a, int parity) {
  TrojanSetup s;
  s.model = load_model_from(a);
  s.rules = trojan::load_rules(a.require("rules"), s.model.labels, s.model.label_ids);
  const int64_t count = a.get_int("samples");
  static_cast<ExperimentSetup&>(s) = experiment_setup(a, s.model);

  std::unique_ptr<Progress> bar;
  train::PixelLoadOptions load = train::eval_load_options(s.model.preprocess);
  if (a.has("split")) {
    train::parse_split(a.get("split"), "--split", load);
    parity = -1;  // the split already chose the images
  }
  const train::PixelDataset test = train::load_pixel_dataset(a.require("data"), s.model.labels, s.model.label_ids, load, [&](int64_t d, int64_t t) {
    if (s.quiet) return;
    if (!bar) bar = std::make_unique<Progress>("decode test", t);
    bar->update(d);
  });
  bar.reset();
  interp::PoolOptions po;
  po.count = count;
  po.seed = s.seed;
  po.parity = parity;
  s.pool = interp::trojan_test_pool(s.model, test, s.rules, po, [&](int64_t d, int64_t t) {
    if (s.quiet) return;
    if (!bar) bar = std::make_unique<Progress>("trojan pool", t);
    bar->update(d);
  });
  if (bar) bar->finish();
  if (static_cast<int64_t>(s.pool.samples.size()) < count)
    std::fprintf(stderr, "warning: only %zu of %lld samples found: the model is fooled by few triggered images\n",
                 s.pool.samples.size(), static_cast<long long>(count));
  if (s.pool.samples.empty()) throw Error(a.get("data") + ": no triggered image fools the model (is it backdoored with " + a.get("rules") + "?)");
  if (!s.quiet)
    std::fprintf(stderr, "pool: %zu samples kept of %lld triggered images\n", s.pool.samples.size(),
                 static_cast<long long>(s.pool.tried));
  return s;
}

interp::SampleSolutions sample_solutions(const Model& m, const ExperimentSetup& s, const Image& image, uint64_t index) {
  auto calib = interp::augmented_calibration(image, augment_config_of(m), s.augs, s.seed + index);
  return interp::SampleSolutions(m.graph, *calib, s.prune);
}

void add_schedule_options(std::vector<Option>& opts, const std::string& default_dir) {
  opts.push_back({"sparsity-dir", "DIR", "tuned schedules: DIR/<method>.json from `spade tune` (else --sparsity)", default_dir});
  opts.push_back({"sparsity", "S", "uniform target for methods without a tuned schedule", "0.9"});
}

std::vector<MethodSchedule> method_schedules(const Args& a, const std::vector<std::string>& methods, const Graph& g) {
  std::vector<MethodSchedule> out;
  for (const std::string& m : methods) {
    const std::string dir = a.get("sparsity-dir");
    const std::string file = dir.empty() ? "" : join_path(dir, m + ".json");
    if (!file.empty() && std::filesystem::exists(file))
      out.push_back({interp::SparsitySchedule::parse(file), file});
    else
      out.push_back({interp::SparsitySchedule::parse(a.get("sparsity")), "uniform " + a.get("sparsity")});
    interp::plan_layers(g, out.back().schedule, {});
  }
  return out;
}

void add_variants_option(std::vector<Option>& opts, const std::string& default_variants) {
  opts.push_back({"variants", "LIST", "which maps: dense, fast (FastSPADE), exact (SPADE, OBC)", default_variants});
}

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

bool any_sparse(const std::vector<Variant>& variants) {
  return std::any_of(variants.begin(), variants.end(), [](const Variant& v) { return !v.dense; });
}

WeightOverlay variant_weights(const Variant& v, interp::SampleSolutions* solutions,
                              const interp::SparsitySchedule& schedule) {
  if (v.dense) return {};
  if (!solutions) throw Error("variant " + v.title + ": no sample solutions to take the trace from");
  return solutions->overlay(schedule, v.solver);
}

nlohmann::json experiment_run(const Args& a, const Model& m, const ExperimentSetup& s,
                              const std::vector<MethodSchedule>& schedules) {
  nlohmann::json run = {{"model", m.source},
                        {"weights", a.get("weights")},
                        {"labels", a.get("labels")},
                        {"num-classes", a.get("num-classes")},
                        {"width", a.get("width")},
                        {"data", a.get("data")},
                        {"split", a.get("split")},
                        {"methods", s.methods},
                        {"variants", a.get("variants")},
                        {"augs", s.augs},
                        {"seed", s.seed},
                        {"lime-samples", a.get("lime-samples")},
                        {"batch", s.batch},
                        {"authors-threshold", a.flag("authors-threshold")}};
  for (size_t k = 0; k < s.methods.size(); ++k) {
    const std::string& src = schedules[k].source;
    run["schedules"][s.methods[k]] = src.rfind("uniform ", 0) == 0 ? src : read_text_file(src);
  }
  return run;
}

Tensor channel_sum(const Tensor& a, SumPart part) {
  const int64_t C = a.dim(1), HW = a.dim(2) * a.dim(3);
  Tensor m({a.dim(2), a.dim(3)});
  for (int64_t i = 0; i < HW; ++i) {
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += a[c * HW + i];
    m[i] = static_cast<float>(part == SumPart::Absolute ? std::fabs(s) : std::max(0.0, s));
  }
  return m;
}

Image mask_image(const std::vector<uint8_t>& mask, const Image& shown) {
  Image im = shown;
  for (size_t i = 0; i < mask.size(); ++i)
    if (!mask[i])
      for (int c = 0; c < 3; ++c) im.rgb[3 * i + c] = static_cast<uint8_t>(im.rgb[3 * i + c] / 4);
  return im;
}

}  // namespace spade::cli
