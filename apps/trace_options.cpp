#include "apps/trace_options.h"

#include <chrono>
#include <cmath>
#include <functional>

#include "engine/error.h"
#include "formats/image.h"
#include "formats/npy.h"

namespace spade::cli {

void add_trace_options(std::vector<Option>& opts) {
  opts.push_back({"augs", "N", "number of augmentations of the sample", "1024"});
  opts.push_back({"seed", "S", "augmentation seed", "0"});
  opts.push_back({"sparsity", "S|FILE", "uniform target, or a JSON file mapping layer-name prefixes to targets", "0.9"});
  opts.push_back({"include-stem", "", "also prune the first conv (the paper does for MobileNetV2)", ""});
  opts.push_back({"include-depthwise", "", "also prune depthwise convs (per-channel Hessians)", ""});
  opts.push_back({"blocksize", "B", "sparsegpt mask block in columns (default kh*kw for convs, 1 for linear)", ""});
  opts.push_back({"percdamp", "D", "sparsegpt damping as a fraction of mean(diag H)", "0.01"});
  opts.push_back({"authors-threshold", "", "sparsegpt: the authors' mask threshold (prunes one weight more per block, even at target 0)", ""});
  opts.push_back({"obc-block", "kxk|1", "obc on convs: kxk = kh*kw input channels at one tap removed together (the paper's), 1 = unstructured", "kxk"});
}

interp::PruneConfig prune_config_from(const Args& a) {
  interp::PruneConfig cfg;
  cfg.sparsity = interp::SparsitySchedule::parse(a.get("sparsity"));
  cfg.selection.include_stem = a.flag("include-stem");
  cfg.selection.include_depthwise = a.flag("include-depthwise");
  if (a.has("blocksize")) {
    cfg.blocksize = a.get_int("blocksize");
    if (cfg.blocksize <= 0) throw Error("--blocksize must be positive");
  }
  cfg.percdamp = a.get_double("percdamp");
  if (!(cfg.percdamp >= 0)) throw Error("--percdamp must be >= 0");
  cfg.authors_threshold = a.flag("authors-threshold");
  const std::string ob = a.get("obc-block");
  if (ob != "kxk" && ob != "1") throw Error("--obc-block: expected kxk or 1, got \"" + ob + "\"");
  cfg.obc_block = ob == "1" ? 1 : 0;
  if (a.get_int("augs") < 1) throw Error("--augs must be at least 1");
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
  if (quiet_) return;
  if (stage != stage_) {
    if (bar_) bar_->finish();
    stage_ = stage;
    bar_ = std::make_unique<Progress>(stage == "hessians" ? "forward + Hessians" : "solving layers", total);
  }
  bar_->update(done);
}

void TraceBars::finish() {
  if (bar_) bar_->finish();
  bar_.reset();
}

interp::Trace spade_trace_of(const Args& a, const Model& m, const std::string& mode, Device device, bool quiet,
                             double* seconds) {
  if (mode != "fast" && mode != "exact") throw Error("--spade: expected fast or exact, got \"" + mode + "\"");
  if (m.weights_path.empty())
    throw Error(m.source + ": no weights to prune: give --weights FILE (or a model .json that names its weights)");
  interp::PruneConfig cfg = prune_config_from(a);
  cfg.solver = mode == "fast" ? interp::Solver::SparseGPT : interp::Solver::OBC;
  cfg.device = device;
  std::unique_ptr<interp::Calibration> calib = calibration_from(a, m);
  TraceBars bars(quiet);
  const auto t0 = std::chrono::steady_clock::now();
  interp::Trace trace = interp::compute_trace(m.graph, *calib, cfg, std::ref(bars));
  bars.finish();
  if (seconds) *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return trace;
}

}  // namespace spade::cli
