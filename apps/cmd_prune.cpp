// spade prune: compute a SPADE trace of a model for one sample (or a calibration set) and write
// the pruned weights, loadable wherever the dense weights are.
#include <cstdio>
#include <iostream>
#include <functional>
#include <memory>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/trace_options.h"
#include "formats/file_io.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "interpret/spade/trace.h"
#include "formats/json_output.h"

namespace spade::cli {

namespace {

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
  opts.push_back({"solver", "NAME", "sparsegpt (FastSPADE) or obc (exact greedy OBS, SPADE)", "sparsegpt"});
  add_trace_options(opts);
  opts.push_back({"batch", "N", "images per forward pass (default: chosen to keep ~1 GiB of activations)", "", integer(1, kMaxBatch)});
  opts.push_back({"out", "TRACE.safetensors", "where to write the pruned weights (same keys as the dense weights)", ""});
  opts.push_back({"report", "R.json", "where to write the per-layer report", ""});
  opts.push_back({"quiet", "", "no progress bars or summary", ""});
  add_device_options(opts);
  Args a("prune",
         "Prune a model for one sample (SPADE): augment it, measure every layer's input Hessian in one dense "
         "pass, solve each layer, and write the sparse trace's weights.",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const Device device = device_from(a);
  const std::string out = a.require("out");
  Model m = load_model_from(a);
  refuse_overwriting_inputs(a, {out}, {"model", "weights", "labels", "image", "input", "calib"}, {m.weights_path});
  interp::PruneConfig cfg = prune_config_from(a, m, "");
  cfg.solver = interp::solver_from_name(a.get("solver"));
  cfg.device = device;
  if (a.has("batch")) {
    cfg.batch = a.get_int("batch");
    check_batch_memory(a, m, cfg.batch, PassKind::Forward, device);
  }
  std::unique_ptr<interp::Calibration> calib = calibration_from(a, m);

  const bool quiet = a.flag("quiet");
  TraceBars progress(quiet);
  interp::Trace t = interp::compute_trace(m.graph, *calib, cfg, std::ref(progress));
  progress.finish();

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [key, value] : m.graph.state_dict()) {
    auto it = t.weights.find(key);
    tensors.emplace_back(key, it != t.weights.end() ? it->second : value);
  }
  const std::map<std::string, std::string> meta{{"spade.solver", t.solver},
                                                {"spade.sparsity", t.sparsity},
                                                {"spade.calibration", t.calibration},
                                                {"spade.model", m.arch}};
  if (a.has("report")) write_json_file(a.get("report"), interp::trace_report_json(t), 2);
  save_safetensors(out, tensors, meta);
  if (!quiet) print_summary(t);
  std::cout << "wrote " << out << "\n";
  return 0;
}

}  // namespace spade::cli
