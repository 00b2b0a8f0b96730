#pragma once
// What `spade tune` and `spade eval trojan` share: the model, the Trojan test pool, the methods
// with the experiment's settings, and the per-sample SPADE Hessians.
#include <memory>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "interpret/experiments/trojan_metrics.h"
#include "interpret/experiments/trojan_pool.h"
#include "interpret/spade/sample_solutions.h"

namespace spade::cli {

// --data, --rules, --methods, --samples, --augs, --seed, --lime-samples, --batch, --quiet (plus the
// model options).
void add_trojan_options(std::vector<Option>& opts, int64_t default_samples);

struct TrojanSetup {
  Model model;
  trojan::TrojanRules rules;
  interp::TrojanPool pool;
  std::vector<std::string> methods;
  std::vector<interp::MethodParams> params;  // per method
  interp::PruneConfig prune;                 // --augs, --batch; solver and sparsity set by the caller
  int64_t augs = 256;
  uint64_t seed = 0;
  int64_t batch = 32;
  bool quiet = false;
};

// Loads everything and builds the pool from test images of the given parity (tune: 0, eval: 1).
TrojanSetup trojan_setup(const Args& a, int parity);

// The Hessians of one pool sample's augmentations.
interp::SampleSolutions sample_solutions(const TrojanSetup& s, const interp::TrojanSample& sample);

// --sparsity-dir DIR (default `default_dir`) and --sparsity S.
void add_schedule_options(std::vector<Option>& opts, const std::string& default_dir = "");
struct MethodSchedule {
  interp::SparsitySchedule schedule;
  std::string source;  // the file, or "uniform S"
};
// Per method: DIR/<method>.json when it exists, else the uniform --sparsity. Every schedule is
// checked against the model's layers here, before any work.
std::vector<MethodSchedule> method_schedules(const Args& a, const std::vector<std::string>& methods, const Graph& g);

// Figures: |sum over channels| of an attribution (1, C, H, W) as an (H, W) map (what the absolute
// Trojan AUC scores), and the image with everything off the trigger mask darkened.
Tensor abs_channel_sum(const Tensor& attribution);
Image mask_image(const std::vector<uint8_t>& mask, const Image& shown);

}  // namespace spade::cli
