#pragma once
// Shared command-line plumbing: option parsing with generated --help, model and input loading
// from the common flags, and a progress bar.
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/memory_estimate.h"
#include "engine/tensor.h"
#include "formats/model.h"

namespace spade::cli {

// The range a numeric option accepts, checked (given value and default alike) when the command line
// is parsed, so no command sees a count, size or rate it cannot handle (docs/cli.md, "Numeric
// options").
struct Bounds {
  enum class Kind { None, Integer, Number };
  Kind kind = Kind::None;
  int64_t int_lo = 0, int_hi = 0;  // Integer: inclusive
  double lo = 0, hi = 0;           // Number: inclusive, finite
};
inline Bounds integer(int64_t lo, int64_t hi) { return {Bounds::Kind::Integer, lo, hi, 0, 0}; }
inline Bounds number(double lo, double hi) { return {Bounds::Kind::Number, 0, 0, lo, hi}; }

// Shared limits: generous for real use, far below what would exhaust memory or overflow.
constexpr int64_t kMaxThreads = 1024;
constexpr int64_t kMaxCount = 1'000'000'000;  // images, samples, steps, epochs, K of --stop-after
constexpr int64_t kMaxAugs = 1 << 20;         // augmentations of one sample (the paper: 10240)
constexpr int64_t kMaxBatch = 1 << 16;
constexpr int64_t kMaxSide = 16384;            // pixels of an image side
constexpr int64_t kMaxSeed = INT64_MAX;
inline Bounds seed_bounds() { return integer(0, kMaxSeed); }

struct Option {
  std::string name;  // without the leading "--"
  std::string value; // placeholder shown in help ("FILE"); empty for a flag
  std::string help;
  std::string def;   // default shown in help
  Bounds bounds = {};  // numeric options: the accepted range
};

class Args {
 public:
  // Parses argv (after the subcommand words). Throws Error for unknown options or missing values.
  Args(const std::string& command, const std::string& summary, std::vector<Option> options, int argc, char** argv,
       int first);
  bool help() const { return help_; }
  void print_help() const;
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::string get(const std::string& name) const;  // default when absent
  std::string require(const std::string& name) const;
  int64_t get_int(const std::string& name) const;
  double get_double(const std::string& name) const;
  bool flag(const std::string& name) const { return has(name); }

 private:
  // Throws Error unless v parses as o's kind of number and lies in o.bounds.
  void check_bounds(const Option& o, const std::string& v) const;

  std::string command_, summary_;
  std::vector<Option> options_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

// Options every model-taking command shares.
std::vector<Option> model_options();
LoadOptions load_options_from(const Args& a);  // --weights, --num-classes, --width
// Every command that computes with a model needs its weights: a built-in architecture without them
// would run on zeros and exit 0 (Weights::Optional: info and the like, which only describe it).
enum class Weights { Required, Optional };
Model load_model_from(const Args& a, Weights weights = Weights::Required);
// Throws Error naming the model when it has no weights file.
void require_weights(const Model& m);
// The class --target names (an index, a class id or a class name; formats/labels.h), or
// `fallback` without --target.
int64_t target_class(const Args& a, const Model& m, int64_t fallback);
// --threads and --max-memory (engine/memory_estimate.h's host limit): the first thing a command does.
void apply_resource_options(const Args& a);

// --device and --tf32, for the commands that compute.
void add_device_options(std::vector<Option>& opts);
// The device those options choose (made ready, TF32 set); throws Error when CUDA is asked for and
// unavailable.
Device device_from(const Args& a);

// --max-memory, part of model_options(): the run's memory limit.
Option memory_option();
// Refuses, before any work, a batch whose estimated peak (engine/memory_estimate.h) exceeds
// --max-memory (default: 80% of the memory of `device`), naming the option that set the batch.
// `side` is the image side the passes run at (0: the model's input size).
void check_batch_memory(const Args& a, const Model& m, int64_t batch, PassKind kind, Device device = Device::CPU,
                        int64_t side = 0, const std::string& batch_option = "--batch");

// The input tensor (1,3,H,W) from --image (preprocessed for the model) or --input (.npy,
// already normalised). Refuses NaN/Inf and shapes the model cannot take.
Tensor load_input(const Args& a, const Model& m);

// Refuses outputs that would overwrite an input: each of `outputs` is compared (as the same file on
// disk) with the values of the options `input_options` and with `extra_inputs` (e.g. the weights a
// model JSON names). Throws Error naming both.
void refuse_overwriting_inputs(const Args& a, const std::vector<std::string>& outputs,
                               const std::vector<std::string>& input_options,
                               const std::vector<std::string>& extra_inputs = {});

// Softmax of one row of logits.
std::vector<float> softmax(const float* logits, int64_t n);

// A progress bar on stderr: redrawn in place on a terminal, a line every 10% otherwise.
class Progress {
 public:
  Progress(std::string label, int64_t total);
  void update(int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");

 private:
  std::string label_;
  int64_t total_;
  int last_decile_ = -1;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace spade::cli
