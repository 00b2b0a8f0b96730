#include "apps/trace_options.h"

#include <chrono>
#include <cstdio>
#include <cmath>
#include <functional>

#include "engine/error.h"
#include "engine/interrupt.h"
#include "formats/image.h"
#include "formats/npy.h"
#include "interpret/spade/default_schedules.h"

namespace spade::cli {

void add_trace_options(std::vector<Option>& opts) {
  opts.push_back({"augs", "N", "number of augmentations of the sample", "1024", integer(1, kMaxAugs)});
  opts.push_back({"seed", "S", "augmentation seed", "0", seed_bounds()});
  opts.push_back({"sparsity", "S|FILE", "uniform target, or a JSON file mapping layer-name prefixes to targets",
                  "the built-in schedule of the architecture and method (docs/spade.md), else 0.9"});
  opts.push_back({"include-stem", "", "also prune the first conv (the paper does for MobileNetV2)", ""});
  opts.push_back({"include-depthwise", "", "also prune depthwise convs (per-channel Hessians)", ""});
  opts.push_back({"blocksize", "B", "sparsegpt mask block in columns (default kh*kw for convs, 1 for linear)", "", integer(1, 1 << 16)});
  opts.push_back({"percdamp", "D", "sparsegpt damping as a fraction of mean(diag H)", "0.01", number(0, 1)});
  opts.push_back({"authors-threshold", "", "sparsegpt: the authors' mask threshold (prunes one weight more per block, even at target 0)", ""});
  opts.push_back({"obc-block", "kxk|1", "obc on convs: kxk = kh*kw input channels at one tap removed together (the paper's), 1 = unstructured", "kxk"});
}

interp::SparsitySchedule sparsity_of(const Args& a, const Model& m, const std::string& method) {
  if (a.has("sparsity")) return interp::SparsitySchedule::parse(a.get("sparsity"));
  if (auto d = interp::default_schedule(m.arch, method)) return *d;
  static bool noted = false;  // once per run, however many methods ask
  if (!noted) {
    std::fprintf(stderr, "note: %s: no built-in sparsity schedule for architecture \"%s\"; pruning every layer at 0.9 "
                 "(give --sparsity)\n", m.source.c_str(), m.arch.c_str());
    noted = true;
  }
  return interp::SparsitySchedule::uniform(0.9);
}

interp::PruneConfig prune_config_from(const Args& a, const Model& m, const std::string& method) {
  interp::PruneConfig cfg;
  cfg.sparsity = sparsity_of(a, m, method);
  cfg.selection.include_stem = a.flag("include-stem");
  cfg.selection.include_depthwise = a.flag("include-depthwise");
  if (a.has("blocksize")) cfg.blocksize = a.get_int("blocksize");
  cfg.percdamp = a.get_double("percdamp");
  cfg.authors_threshold = a.flag("authors-threshold");
  const std::string ob = a.get("obc-block");
  if (ob != "kxk" && ob != "1") throw Error("--obc-block: expected kxk or 1, got \"" + ob + "\"");
  cfg.obc_block = ob == "1" ? 1 : 0;
  return cfg;
}

std::unique_ptr<interp::Calibration> calibration_from(const Args& a, const Model& m) {
  const int given = a.has("image") + a.has("input") + a.has("calib");
  if (given != 1) throw Error("give exactly one of --image IMG, --input X.npy or --calib DIR|X.npy");
  if (a.has("calib")) {
    const std::string path = a.get("calib");
    const bool npy = path.size() > 4 && path.substr(path.size() - 4) == ".npy";
    if (!npy) return interp::image_set_calibration(path, m.preprocess);
    Tensor x = load_npy(path);
    for (int64_t i = 0; i < x.numel(); ++i)
      if (!std::isfinite(x[i])) throw Error(path + ": calibration inputs contain NaN or Inf");
    return interp::tensor_calibration(x, path);
  }
  if (a.has("image")) return augmented_calibration_of(a, m, load_image(a.get("image")));
  // An already-normalised input: back to 8-bit pixels, which the augmentations work on.
  Tensor x = load_input(a, m);
  return augmented_calibration_of(a, m, tensor_to_image(x, m.preprocess.mean, m.preprocess.std));
}

interp::AugmentConfig augment_config_of(const Model& m) {
  interp::AugmentConfig c;
  c.mean = m.preprocess.mean;
  c.std = m.preprocess.std;
  c.size = static_cast<int>(m.preprocess.crop > 0 ? m.preprocess.crop : m.graph.input_chw[1]);
  return c;
}

std::unique_ptr<interp::Calibration> augmented_calibration_of(const Args& a, const Model& m, const Image& image) {
  return interp::augmented_calibration(image, augment_config_of(m), a.get_int("augs"),
                                       static_cast<uint64_t>(a.get_int("seed")));
}

void TraceBars::operator()(const std::string& stage, int64_t done, int64_t total) {
  throw_if_interrupted();  // with --quiet too: OBC's solve runs no pass to check it
  if (quiet_) return;
  if (stage != stage_) {
    if (bar_) bar_->finish();
    stage_ = stage;
    // "solve K/N": the K-th of several schedules (compute_traces).
    const std::string label = stage == "hessians" ? "forward + Hessians"
                              : stage == "solve"  ? "solving layers"
                                                  : "solving layers, schedule " + stage.substr(6);
    bar_ = std::make_unique<Progress>(label, total);
  }
  bar_->update(done);
}

void TraceBars::finish() {
  if (bar_) bar_->finish();
  bar_.reset();
}

MethodSchedules method_schedules(const Args& a, const Model& m, const std::vector<std::string>& methods) {
  MethodSchedules out;
  for (const std::string& method : methods) {
    const interp::SparsitySchedule s = sparsity_of(a, m, method);
    size_t i = 0;
    while (i < out.schedules.size() && !out.schedules[i].same_targets(s)) ++i;
    if (i == out.schedules.size()) out.schedules.push_back(s);
    out.of.push_back(i);
  }
  return out;
}

MethodTraces spade_traces_of(const Args& a, const Model& m, const std::vector<std::string>& methods,
                             const std::string& mode, Device device, bool quiet, double* seconds) {
  if (mode != "fast" && mode != "exact") throw Error("--spade: expected fast or exact, got \"" + mode + "\"");
  interp::PruneConfig cfg = prune_config_from(a, m, "");
  cfg.solver = mode == "fast" ? interp::Solver::SparseGPT : interp::Solver::OBC;
  cfg.device = device;
  const MethodSchedules ms = method_schedules(a, m, methods);
  MethodTraces out;
  out.trace_of = ms.of;
  std::unique_ptr<interp::Calibration> calib = calibration_from(a, m);
  TraceBars bars(quiet);
  const auto t0 = std::chrono::steady_clock::now();
  out.traces = interp::compute_traces(m.graph, *calib, cfg, ms.schedules, std::ref(bars));
  bars.finish();
  if (seconds) *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

interp::Trace spade_trace_of(const Args& a, const Model& m, const std::string& mode, Device device, bool quiet,
                             double* seconds) {
  return std::move(spade_traces_of(a, m, {""}, mode, device, quiet, seconds).traces[0]);
}

}  // namespace spade::cli
