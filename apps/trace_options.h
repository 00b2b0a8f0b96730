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

// The sparsity schedule of `method` ("" = a trace for no particular method): --sparsity when
// given, else the built-in schedule of the model's architecture and the method
// (interpret/spade/default_schedules.h), else every layer at 0.9 with a note on stderr.
interp::SparsitySchedule sparsity_of(const Args& a, const Model& m, const std::string& method);

// The config those options describe for `method` (solver and batch are left at their defaults).
interp::PruneConfig prune_config_from(const Args& a, const Model& m, const std::string& method);

// The calibration images: augmentations of --image/--input, or --calib as given (when the
// command has that option).
std::unique_ptr<interp::Calibration> calibration_from(const Args& a, const Model& m);
// The augmentations' output size and normalisation for a model.
interp::AugmentConfig augment_config_of(const Model& m);
// Augmentations of one decoded image with the --augs and --seed options.
std::unique_ptr<interp::Calibration> augmented_calibration_of(const Args& a, const Model& m, const Image& image);

// The distinct schedules of `methods` (sparsity_of each) and which one each method uses.
struct MethodSchedules {
  std::vector<interp::SparsitySchedule> schedules;
  std::vector<size_t> of;  // of[k]: the index in `schedules` of methods[k]'s
};
MethodSchedules method_schedules(const Args& a, const Model& m, const std::vector<std::string>& methods);

// The SPADE traces of --image/--input under the trace options for `methods` (each method's
// schedule, sparsity_of): one trace per distinct schedule, from one Hessian pass. mode "fast"
// (SparseGPT, FastSPADE) or "exact" (OBC, SPADE), on `device`, with progress bars unless quiet.
// Refuses a model without weights. `seconds` receives the run time.
struct MethodTraces {
  std::vector<interp::Trace> traces;
  std::vector<size_t> trace_of;  // trace_of[k]: the index in `traces` of methods[k]'s trace
};
MethodTraces spade_traces_of(const Args& a, const Model& m, const std::vector<std::string>& methods,
                             const std::string& mode, Device device, bool quiet, double* seconds);
// The one trace for no particular method (sparsity_of(a, m, "")).
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
