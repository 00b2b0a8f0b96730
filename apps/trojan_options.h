#pragma once
// What `spade tune` and `spade eval trojan` share: the model, the Trojan test pool, the methods
// with the experiment's settings, and the per-sample SPADE Hessians.
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "interpret/experiments/trojan_metrics.h"
#include "interpret/experiments/trojan_pool.h"
#include "interpret/spade/sample_solutions.h"

namespace spade::cli {

// --methods, --augs, --seed, --lime-samples, --batch, --authors-threshold, --max-memory, --quiet:
// what every experiment over many samples takes.
void add_experiment_options(std::vector<Option>& opts);
// --data, --split, --rules, --samples and the experiment options (plus the model options).
void add_trojan_options(std::vector<Option>& opts, int64_t default_samples);

struct ExperimentSetup {
  std::vector<std::string> methods;
  std::vector<interp::MethodParams> params;  // per method
  interp::PruneConfig prune;                 // --augs, --batch; solver and sparsity set by the caller
  int64_t augs = 256;
  uint64_t seed = 0;
  int64_t batch = 32;
  bool quiet = false;
};
// Reads the experiment options for model `m`, checking their ranges and the batch's memory.
ExperimentSetup experiment_setup(const Args& a, const Model& m);

struct TrojanSetup : ExperimentSetup {
  Model model;
  trojan::TrojanRules rules;
  interp::TrojanPool pool;
};

// Loads everything and builds the pool from test images of the given parity (tune: 0, eval: 1).
TrojanSetup trojan_setup(const Args& a, int parity);

// The Hessians of one sample's augmentations (seed + `index`: each sample its own).
interp::SampleSolutions sample_solutions(const Model& m, const ExperimentSetup& s, const Image& image, uint64_t index);
inline interp::SampleSolutions sample_solutions(const TrojanSetup& s, const interp::TrojanSample& sample) {
  return sample_solutions(s.model, s, sample.image, static_cast<uint64_t>(sample.index));
}

// --sparsity-dir DIR (default `default_dir`) and --sparsity S.
void add_schedule_options(std::vector<Option>& opts, const std::string& default_dir = "");
struct MethodSchedule {
  interp::SparsitySchedule schedule;
  std::string source;  // the file, or "uniform S"
};
// Per method: DIR/<method>.json when it exists, else the uniform --sparsity. Every schedule is
// checked against the model's layers here, before any work.
std::vector<MethodSchedule> method_schedules(const Args& a, const std::vector<std::string>& methods, const Graph& g);

// --variants: which maps an evaluation compares.
struct Variant {
  std::string key, title;  // "fastspade" (results.json), "FastSPADE" (tables)
  bool dense;
  interp::Solver solver;
};
void add_variants_option(std::vector<Option>& opts, const std::string& default_variants = "dense,fast,exact");
// "dense,fast,exact" -> Dense, FastSPADE (SparseGPT), SPADE (OBC); throws Error naming --variants.
std::vector<Variant> parse_variants(const std::string& arg);
// Whether any variant needs a sample's Hessians (SampleSolutions): every one but Dense does.
bool any_sparse(const std::vector<Variant>& variants);
// The weights variant `v` explains with: none (Dense) or the sample's trace under `schedule`.
WeightOverlay variant_weights(const Variant& v, interp::SampleSolutions* solutions,
                              const interp::SparsitySchedule& schedule);

// Every setting of the model and experiment options a sample's results depend on, for
// SampleCheckpoint (the schedule files' text, not only their names: a retuned schedule is another
// run); commands add their own (the rules, the grid).
nlohmann::json experiment_run(const Args& a, const Model& m, const ExperimentSetup& s,
                              const std::vector<MethodSchedule>& schedules);

// Figures: the sum over channels of an attribution (1, C, H, W) as an (H, W) map, either its
// absolute value (what the absolute Trojan AUC scores) or its positive part (what the grid
// pointing game scores); and the image with everything off the trigger mask darkened.
enum class SumPart { Absolute, Positive };
Tensor channel_sum(const Tensor& attribution, SumPart part);
Image mask_image(const std::vector<uint8_t>& mask, const Image& shown);

}  // namespace spade::cli
