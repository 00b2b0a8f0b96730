// spade prune: compute a SPADE trace of a model for one sample (or a calibration set) and write
// the pruned weights, loadable wherever the dense weights are.
#include <cstdio>
#include <iostream>
#include <memory>

#include "apps/cli.h"
#include "apps/commands.h"
#include "formats/file_io.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "interpret/spade/trace.h"

namespace spade::cli {

namespace {

// The calibration images: augmentations of --image/--input, or --calib as given.
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
  interp::AugmentConfig c;
  c.mean = m.preprocess.mean;
  c.std = m.preprocess.std;
  c.size = static_cast<int>(m.preprocess.crop > 0 ? m.preprocess.crop : m.graph.input_chw[1]);
  const int64_t augs = a.get_int("augs");
  const uint64_t seed = static_cast<uint64_t>(a.get_int("seed"));
  if (a.has("image")) return interp::augmented_calibration(load_image(a.get("image")), c, augs, seed);
  // An already-normalised input: back to 8-bit pixels, which the augmentations work on.
  Tensor x = load_input(a, m);
  return interp::augmented_calibration(tensor_to_image(x, m.preprocess.mean, m.preprocess.std), c, augs, seed);
}

void print_summary(const interp::Trace& t) {
  std::printf("%-28s %7s %9s %11s %8s\n", "layer", "target", "achieved", "rel. loss", "seconds");
  for (const auto& l : t.layers) {
    std::printf("%-28s %7.3f %9.4f %11.3e %8.3f%s\n", l.name.c_str(), l.target, l.achieved, l.relative_loss,
                l.seconds, l.pruned ? "" : "  (untouched)");
    if (l.retries > 0)
      std::printf("  note: %s: Cholesky failed %d time(s); damping raised to %g\n", l.name.c_str(), l.retries,
                  l.damping);
  }
  const auto& tm = t.timings;
  std::printf("%lld calibration images, batch %lld: augment %.2fs, forward %.2fs, Hessians %.2fs (%.0f GFLOP/s), "
              "solve %.2fs\n",
              static_cast<long long>(t.samples), static_cast<long long>(tm.batch), tm.augment_s, tm.forward_s,
              tm.hessian_s, tm.hessian_s > 0 ? tm.hessian_flops / tm.hessian_s / 1e9 : 0.0, tm.solve_s);
}

}  // namespace

int cmd_prune(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"image", "IMG", "the sample: an image file, augmented at full resolution", ""});
  opts.push_back({"input", "X.npy", "the sample as a normalised (1,3,H,W) array (turned back into 8-bit pixels to augment)", ""});
  opts.push_back({"calib", "DIR|X.npy", "prune on this set as it is (images under DIR or in a tar, or an (N,3,H,W) array); no augmentation", ""});
  opts.push_back({"augs", "N", "number of augmentations of the sample", "1024"});
  opts.push_back({"seed", "S", "augmentation seed", "0"});
  opts.push_back({"solver", "NAME", "sparsegpt (FastSPADE) or obc (exact greedy OBS, SPADE)", "sparsegpt"});
  opts.push_back({"sparsity", "S|FILE", "uniform target, or a JSON file mapping layer-name prefixes to targets", "0.9"});
  opts.push_back({"include-stem", "", "also prune the first conv (the paper does for MobileNetV2)", ""});
  opts.push_back({"include-depthwise", "", "also prune depthwise convs (per-channel Hessians)", ""});
  opts.push_back({"blocksize", "B", "sparsegpt mask block in columns (default kh*kw for convs, 1 for linear)", ""});
  opts.push_back({"percdamp", "D", "sparsegpt damping as a fraction of mean(diag H)", "0.01"});
  opts.push_back({"authors-threshold", "", "sparsegpt: the authors' mask threshold (prunes one weight more per block, even at target 0)", ""});
  opts.push_back({"obc-block", "kxk|1", "obc on convs: kxk = kh*kw input channels at one tap removed together (the paper's), 1 = unstructured", "kxk"});
  opts.push_back({"batch", "N", "images per forward pass (default: chosen to keep ~1 GiB of activations)", ""});
  opts.push_back({"out", "TRACE.safetensors", "where to write the pruned weights (same keys as the dense weights)", ""});
  opts.push_back({"report", "R.json", "where to write the per-layer report", ""});
  opts.push_back({"quiet", "", "no progress bars or summary", ""});
  Args a("prune",
         "Prune a model for one sample (SPADE): augment it, measure every layer's input Hessian in one dense "
         "pass, solve each layer, and write the sparse trace's weights.",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_threads(a);
  const std::string out = a.require("out");
  Model m = load_model_from(a);
  if (m.weights_path.empty())
    throw Error(m.source + ": no weights to prune: give --weights FILE (or a model .json that names its weights)");
  interp::PruneConfig cfg;
  cfg.solver = interp::solver_from_name(a.get("solver"));
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
  if (a.has("batch")) {
    cfg.batch = a.get_int("batch");
    if (cfg.batch <= 0) throw Error("--batch must be positive");
  }
  std::unique_ptr<interp::Calibration> calib = calibration_from(a, m);

  const bool quiet = a.flag("quiet");
  std::unique_ptr<Progress> bar;
  std::string stage;
  auto progress = [&](const std::string& s, int64_t done, int64_t total) {
    if (quiet) return;
    if (s != stage) {
      if (bar) bar->finish();
      stage = s;
      bar = std::make_unique<Progress>(s == "hessians" ? "forward + Hessians" : "solving layers", total);
    }
    bar->update(done);
  };
  interp::Trace t = interp::compute_trace(m.graph, *calib, cfg, progress);
  if (bar) bar->finish();

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [key, value] : m.graph.state_dict()) {
    auto it = t.weights.find(key);
    tensors.emplace_back(key, it != t.weights.end() ? it->second : value);
  }
  const std::map<std::string, std::string> meta{{"spade.solver", t.solver},
                                                {"spade.sparsity", t.sparsity},
                                                {"spade.calibration", t.calibration},
                                                {"spade.model", m.arch}};
  if (a.has("report")) write_file_atomic(a.get("report"), interp::trace_report_json(t).dump(2) + "\n");
  save_safetensors(out, tensors, meta);
  if (!quiet) print_summary(t);
  std::cout << "wrote " << out << "\n";
  return 0;
}

}  // namespace spade::cli
