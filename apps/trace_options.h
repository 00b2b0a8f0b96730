#pragma once
// The SPADE trace options shared by `spade prune` and `spade explain --spade ...`: the sample's
// augmentations and the pruning schedule.
#include <memory>
#include <vector>

#include "apps/cli.h"
#include "interpret/spade/calibration.h"
#include "interpret/spade/trace.h"

namespace spade::cli {

// --augs, --seed, --sparsity, --include-stem, --include-depthwise, --blocksize, --percdamp,
// --authors-threshold, --obc-block.
void add_trace_options(std::vector<Option>& opts);

// The config those options describe (solver and batch are left at their defaults).
interp::PruneConfig prune_config_from(const Args& a);

// The calibration images: augmentations of --image/--input, or --calib as given (when the
// command has that option).
std::unique_ptr<interp::Calibration> calibration_from(const Args& a, const Model& m);
// The augmentations' output size and normalisation for a model.
interp::AugmentConfig augment_config_of(const Model& m);
// Augmentations of one decoded image with the --augs and --seed options.
std::unique_ptr<interp::Calibration> augmented_calibration_of(const Args& a, const Model& m, const Image& image);

// The SPADE trace of --image/--input under the trace options: mode "fast" (SparseGPT, FastSPADE)
// or "exact" (OBC, SPADE), on `device`, with progress bars unless quiet. Refuses a model without
// weights. `seconds` receives the trace's run time.
interp::Trace spade_trace_of(const Args& a, const Model& m, const std::string& mode, Device device, bool quiet,
                             double* seconds);

// Progress bars for compute_trace's two stages; does nothing when quiet.
class TraceBars {
 public:
  explicit TraceBars(bool quiet) : quiet_(quiet) {}
  void operator()(const std::string& stage, int64_t done, int64_t total);
  void finish();

 private:
  bool quiet_;
  std::string stage_;
  std::unique_ptr<Progress> bar_;
};

}  // namespace spade::cli
