#include "apps/cli.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "engine/backend.h"
#include "formats/image.h"
#include "formats/labels.h"
#include "formats/npy.h"
#include "formats/output_transaction.h"
#include "kernels/cpu/memory.h"
#include "kernels/cpu/parallel.h"
#ifdef SPADE_WITH_CUDA
#include "kernels/cuda/device.h"
#endif

namespace spade::cli {

Args::Args(const std::string& command, const std::string& summary, std::vector<Option> options, int argc,
           char** argv, int first)
    : command_(command), summary_(summary), options_(std::move(options)) {
  options_.push_back({"help", "", "show this help and exit", ""});
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      help_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) throw Error("unexpected argument \"" + arg + "\" (see --help)");
    std::string name = arg.substr(2), value;
    size_t eq = name.find('=');
    bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = std::find_if(options_.begin(), options_.end(), [&](const Option& o) { return o.name == name; });
    if (it == options_.end()) throw Error("unknown option --" + name + " (see --help)");
    if (!it->value.empty() && !inline_value) {
      if (i + 1 >= argc) throw Error("option --" + name + " needs a value (" + it->value + ")");
      value = argv[++i];
    }
    if (it->value.empty() && inline_value) throw Error("option --" + name + " takes no value");
    values_[name] = value;
  }
  if (help_) return;
  for (const Option& o : options_) {
    const std::string v = get(o.name);
    if (o.bounds.kind != Bounds::Kind::None && !v.empty()) check_bounds(o, v);
  }
}

namespace {

std::string quoted(const std::string& s) { return "\"" + (s.size() > 40 ? s.substr(0, 40) + "..." : s) + "\""; }

// The whole of s as an integer (false also when it overflows 64 bits), or as a finite number.
bool parse_integer(const std::string& s, int64_t& x) {
  try {
    size_t used = 0;
    x = std::stoll(s, &used);
    return used == s.size();
  } catch (...) {
    return false;
  }
}
bool parse_number(const std::string& s, double& x) {
  try {
    size_t used = 0;
    x = std::stod(s, &used);
    return used == s.size() && std::isfinite(x);
  } catch (...) {
    return false;
  }
}

}  // namespace

void Args::check_bounds(const Option& o, const std::string& v) const {
  const Bounds& b = o.bounds;
  if (b.kind == Bounds::Kind::Integer) {
    const std::string range = b.int_hi == INT64_MAX ? "at least " + std::to_string(b.int_lo)
                                                     : "from " + std::to_string(b.int_lo) + " to " + std::to_string(b.int_hi);
    int64_t x = 0;
    if (!parse_integer(v, x) || x < b.int_lo || x > b.int_hi)
      throw Error("--" + o.name + " must be an integer " + range + ", got " + quoted(v));
  } else {
    double x = 0;
    std::ostringstream range;
    range << "from " << b.lo << " to " << b.hi;
    if (!parse_number(v, x) || x < b.lo || x > b.hi)
      throw Error("--" + o.name + " must be a number " + range.str() + ", got " + quoted(v));
  }
}

void Args::print_help() const {
  std::cout << "usage: spade " << command_ << " [options]\n\n" << summary_ << "\n\noptions:\n";
  for (const Option& o : options_) {
    std::string left = "  --" + o.name + (o.value.empty() ? "" : " " + o.value);
    std::cout << left << std::string(left.size() < 28 ? 28 - left.size() : 2, ' ') << o.help;
    if (!o.def.empty()) std::cout << " (default: " << o.def << ")";
    std::cout << "\n";
  }
}

std::string Args::get(const std::string& name) const {
  auto v = values_.find(name);
  if (v != values_.end()) return v->second;
  for (const Option& o : options_)
    if (o.name == name) return o.def;
  return "";
}

std::string Args::require(const std::string& name) const {
  if (!has(name)) throw Error("--" + name + " is required (see --help)");
  return get(name);
}

int64_t Args::get_int(const std::string& name) const {
  const std::string s = get(name);
  int64_t v = 0;
  if (!parse_integer(s, v)) throw Error("--" + name + " must be an integer, got \"" + s + "\"");
  return v;
}

double Args::get_double(const std::string& name) const {
  const std::string s = get(name);
  double v = 0;
  if (!parse_number(s, v)) throw Error("--" + name + " must be a number, got \"" + s + "\"");
  return v;
}

std::vector<Option> model_options() {
  return {
      {"model", "M", "built-in architecture name (see `spade info --list`) or a model .json file", ""},
      {"weights", "FILE", "safetensors weights (torchvision/timm names); overrides the JSON's own", ""},
      {"num-classes", "N", "classes of a built-in architecture (default: from the weights, else 1000 or 10)", "", integer(1, 1 << 20)},
      {"width", "W", "width multiplier of a built-in architecture", "1.0", number(0.01, 16)},
      {"labels", "FILE", "class names and ids, one line per output (.tsv: [index<TAB>]id<TAB>name or a header row; .txt: "
                         "a name, or `wnid name`, per line); replaces the model's own", ""},
      {"threads", "N", "CPU threads (0 = all cores)", "0", integer(0, kMaxThreads)},
      memory_option(),
  };
}

void apply_resource_options(const Args& a) {
  kernels::set_num_threads(static_cast<int>(a.get_int("threads")));
  if (!a.has("max-memory")) return;
  const int64_t limit = parse_size(a.get("max-memory"), "--max-memory");
  set_host_memory_limit(limit, "--max-memory " + kernels::format_bytes(static_cast<size_t>(limit)));
}

void add_device_options(std::vector<Option>& opts) {
  opts.push_back({"device", "DEV", "where to compute: cpu, cuda, cuda:N, or auto (cuda when a GPU is present)", "auto"});
  opts.push_back({"tf32", "", "let float32 matrix products on the GPU use TF32 tensor cores (faster, ~1e-3 relative error)",
                  ""});
}

Device device_from(const Args& a) {
  const Device d = parse_device(a.get("device"));
  if (a.flag("tf32")) {
    if (d != Device::CUDA) throw Error("--tf32 applies to the GPU only, and the device is " + std::string(device_name(d)));
    backend::set_allow_tf32(true);
  }
  return d;
}

Option memory_option() {
  return {"max-memory", "SIZE",
          "the memory the run may use: a batch whose estimated peak, or an image whose decoding and preprocessing, "
          "would exceed SIZE is refused before it starts (e.g. 8G, 512M; default: 80% of the device's memory)",
          ""};
}

void check_batch_memory(const Args& a, const Model& m, int64_t batch, PassKind kind, Device device, int64_t side,
                        const std::string& batch_option) {
  if (batch < 1) throw Error(batch_option + " must be at least 1");
  int64_t limit = 0;
  std::string limit_text;
  if (a.has("max-memory")) {
    limit = parse_size(a.get("max-memory"), "--max-memory");
    limit_text = "--max-memory " + kernels::format_bytes(limit);
  } else {
    int64_t total = device == Device::CPU ? kernels::physical_memory_bytes() : 0;
#ifdef SPADE_WITH_CUDA
    if (device == Device::CUDA) total = static_cast<int64_t>(cuda_device_info(cuda_current_device()).total_memory);
#endif
    if (total <= 0) return;  // unknown: nothing to check against
    limit = total / 10 * 8;
    limit_text = "80% of the " + kernels::format_bytes(total) + (device == Device::CPU ? " of RAM" : " of the GPU") +
                 " (--max-memory)";
  }
  Graph sized = m.graph;  // shares the weights; only the input size differs
  if (side > 0) sized.input_chw = {m.graph.input_chw[0], side, side};
  else if (m.preprocess.crop > 0) sized.input_chw = {m.graph.input_chw[0], m.preprocess.crop, m.preprocess.crop};
  const MemoryEstimate e = estimate_pass_memory(sized, kind, device == Device::CPU ? kernels::num_threads() : 1);
  const double need = static_cast<double>(e.fixed) + static_cast<double>(batch) * static_cast<double>(e.per_image);
  if (need <= static_cast<double>(limit)) return;
  const int64_t fits = e.per_image > 0 ? std::max<int64_t>(0, (limit - e.fixed) / e.per_image) : 0;
  throw Error(batch_option + " " + std::to_string(batch) + " needs about " +
              kernels::format_bytes(static_cast<size_t>(std::min(need, 9.0e18))) + " (" +
              (kind == PassKind::Forward ? "forward" : "forward and backward") + " at " +
              std::to_string(sized.input_chw[1]) + "x" + std::to_string(sized.input_chw[2]) + ": " +
              kernels::format_bytes(e.per_image) + " per image), more than " + limit_text + "; " +
              (fits > 0 ? "use " + batch_option + " " + std::to_string(fits) + " or less" : "no batch fits") +
              ", or raise --max-memory");
}

LoadOptions load_options_from(const Args& a) {
  LoadOptions opt;
  opt.weights = a.get("weights");
  if (a.has("num-classes")) opt.zoo.num_classes = a.get_int("num-classes");
  opt.zoo.width = a.get_double("width");
  opt.labels_file = a.get("labels");
  return opt;
}

void require_weights(const Model& m) {
  if (m.weights_path.empty())
    throw Error(m.source + ": no weights: give --weights FILE or a model .json that names its weights (a built-in "
                           "architecture alone has none; `spade convert --random-init SEED` makes random ones)");
}

Model load_model_from(const Args& a, Weights weights) {
  Model m = load_model(a.require("model"), load_options_from(a));
  if (weights == Weights::Required) require_weights(m);
  return m;
}

int64_t target_class(const Args& a, const Model& m, int64_t fallback) {
  if (!a.has("target")) return fallback;
  const Shape out = m.graph.infer_shapes(1).at(m.graph.output());
  const int64_t classes = out.size() == 2 ? out[1] : 0;
  if (static_cast<int64_t>(m.labels.size()) == classes)
    return find_class(m.labels, m.label_ids, a.get("target"), "--target");
  std::vector<std::string> numbered;  // an output without labels: indices only
  for (int64_t k = 0; k < classes; ++k) numbered.push_back("class " + std::to_string(k));
  return find_class(numbered, {}, a.get("target"), "--target");
}

Tensor load_input(const Args& a, const Model& m) {
  if (a.has("image") == a.has("input")) throw Error("give exactly one of --image IMG or --input X.npy");
  Tensor x;
  std::string src;
  if (a.has("image")) {
    src = a.get("image");
    x = preprocess_image(load_image(src), m.preprocess, src);
  } else {
    src = a.get("input");
    x = load_npy(src);
    if (x.ndim() == 3) x = x.reshape({1, x.dim(0), x.dim(1), x.dim(2)});
    if (x.ndim() != 4 || x.dim(0) != 1)
      throw Error(src + ": expected an array of shape (1,3,H,W) or (3,H,W), got " + shape_str(x.shape()));
  }
  if (x.dim(1) != m.graph.input_chw[0])
    throw Error(src + ": has " + std::to_string(x.dim(1)) + " channels, the model takes " +
                std::to_string(m.graph.input_chw[0]));
  for (int64_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(x[i])) throw Error(src + ": input contains NaN or Inf");
  return x;
}

void refuse_overwriting_inputs(const Args& a, const std::vector<std::string>& outputs,
                               const std::vector<std::string>& input_options,
                               const std::vector<std::string>& extra_inputs) {
  std::vector<std::pair<std::string, std::string>> inputs;  // (what, path)
  for (const std::string& o : input_options)
    if (a.has(o)) inputs.push_back({"--" + o, a.get(o)});
  for (const std::string& e : extra_inputs)
    if (!e.empty()) inputs.push_back({"the input", e});
  for (const std::string& out : outputs)
    for (const auto& [what, in] : inputs) {
      std::error_code ec;
      if (std::filesystem::exists(out, ec) && std::filesystem::equivalent(out, in, ec) && !ec)
        throw Error(out + ": the output would overwrite " + what + " (" + in + "); choose another --out");
    }
}

std::vector<float> softmax(const float* logits, int64_t n) {
  std::vector<float> p(n);
  float mx = *std::max_element(logits, logits + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(std::exp(static_cast<double>(logits[i] - mx)) / sum);
  return p;
}

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(std::max<int64_t>(total, 1)), tty_(isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t done, const std::string& extra) {
  throw_if_interrupted();  // a caught SIGINT/SIGTERM stops the run here (formats/output_transaction.h)
  const double frac = std::min(1.0, static_cast<double>(done) / total_);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = frac > 0 ? secs * (1 - frac) / frac : 0;
  char tail[128];
  std::snprintf(tail, sizeof tail, " %lld/%lld %.0fs elapsed, %.0fs left", static_cast<long long>(done),
                static_cast<long long>(total_), secs, eta);
  if (tty_) {
    const int width = 30, filled = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r%s [%s%s] %3.0f%%%s %s", label_.c_str(), std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), frac * 100, tail, extra.c_str());
    std::fflush(stderr);
  } else {
    int decile = static_cast<int>(frac * 10);
    if (decile != last_decile_) {
      last_decile_ = decile;
      std::fprintf(stderr, "%s %3.0f%%%s %s\n", label_.c_str(), frac * 100, tail, extra.c_str());
    }
  }
}

void Progress::finish(const std::string& extra) {
  update(total_, extra);
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace spade::cli
