// spade eval saliency: the metrics of saliency maps over one input or an image folder: the SPADE
// paper's insertion/deletion (confidences always from the dense model), and with a mask the
// Trojan AUC and the pointing game.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/method_options.h"
#include "apps/trace_options.h"
#include "formats/file_io.h"
#include "formats/image.h"
#include "formats/image_folder.h"
#include "formats/npy.h"
#include "interpret/metrics/insertion_deletion.h"
#include "interpret/metrics/pointing_game.h"
#include "interpret/metrics/roc_auc.h"
#include "formats/json_output.h"

namespace spade::cli {

namespace {

struct Sample {
  std::string name;
  Image image;  // the pixels the SPADE augmentations start from
  Tensor x;     // (1, 3, H, W), normalised
};

// A mask of the input's size: a (H, W) .npy (non-zero = on) or a PNG of H x W pixels (any
// non-black pixel = on).
std::vector<uint8_t> load_mask(const std::string& path, int64_t H, int64_t W) {
  std::vector<uint8_t> mask;
  const bool npy = path.size() > 4 && path.substr(path.size() - 4) == ".npy";
  if (npy) {
    Tensor t = load_npy(path);
    if (t.numel() != H * W || t.dim(-1) != W)
      throw Error(path + ": mask of shape " + shape_str(t.shape()) + " does not match the input's " +
                  std::to_string(H) + "x" + std::to_string(W));
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (!std::isfinite(t[i])) throw Error(path + ": mask contains NaN or Inf");
      mask.push_back(t[i] != 0.f);
    }
  } else {
    const Image im = load_image(path);
    if (im.height != H || im.width != W)
      throw Error(path + ": mask is " + std::to_string(im.width) + "x" + std::to_string(im.height) +
                  " pixels, the input is " + std::to_string(W) + "x" + std::to_string(H));
    for (int64_t i = 0; i < H * W; ++i)
      mask.push_back(im.rgb[3 * i] != 0 || im.rgb[3 * i + 1] != 0 || im.rgb[3 * i + 2] != 0);
  }
  return mask;
}

std::vector<Sample> load_samples(const Args& a, const Model& m) {
  const int given = a.has("image") + a.has("input") + a.has("data");
  if (given != 1) throw Error("give exactly one of --image IMG, --input X.npy or --data DIR|FILE.tar");
  std::vector<Sample> samples;
  if (!a.has("data")) {
    Sample s;
    s.name = a.has("image") ? a.get("image") : a.get("input");
    s.x = load_input(a, m);
    s.image = a.has("image") ? load_image(a.get("image")) : tensor_to_image(s.x, m.preprocess.mean, m.preprocess.std);
    samples.push_back(std::move(s));
    return samples;
  }
  ImageFolder data(a.get("data"));
  if (data.size() == 0) throw Error(data.path() + ": no images found");
  int64_t n = static_cast<int64_t>(data.size());
  if (a.get_int("limit") > 0) n = std::min(n, a.get_int("limit"));
  for (int64_t i = 0; i < n; ++i) {
    LabeledImage li = data.get(static_cast<size_t>(i));
    Sample s;
    s.name = li.name;
    const std::string name = data.path() + ":" + li.name;
    s.image = decode_image(li.bytes.data(), li.bytes.size(), name);
    s.x = preprocess_image(s.image, m.preprocess, name);
    samples.push_back(std::move(s));
  }
  return samples;
}

int64_t argmax_class(const interp::Network& net, const Tensor& x) {
  const Tensor out = interp::logits(net, x);
  return std::max_element(out.data(), out.data() + out.dim(1)) - out.data();
}

}  // namespace

int cmd_eval_saliency(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"image", "IMG", "one input image", ""});
  opts.push_back({"input", "X.npy", "one normalised (1,3,H,W) or (3,H,W) input", ""});
  opts.push_back({"data", "DIR|FILE.tar", "every image of a folder tree or tar (in class, then file order)", ""});
  opts.push_back({"limit", "N", "with --data: only the first N images", "0", integer(0, kMaxCount)});
  opts.push_back({"method", "NAME[,NAME..]|all", "saliency method(s)", ""});
  opts.push_back({"target", "C", "class to explain: an index, a class id or a name (default: each image's dense prediction)", ""});
  opts.push_back({"spade", "off|fast|exact", "maps from the SPADE trace of each image (fast = SparseGPT, exact = OBC)", "off"});
  add_trace_options(opts);
  add_method_options(opts);
  opts.push_back({"mask", "MASK.png|MASK.npy", "with one input: the region (input-sized) for the Trojan AUC and the pointing game", ""});
  opts.push_back({"variant", "spade|rise", "insertion/deletion: the SPADE paper's (top-i% pixels, normalised, area in [0,99]) or RISE's", "spade"});
  opts.push_back({"no-insertion", "", "skip insertion/deletion", ""});
  opts.push_back({"batch", "B", "images per forward/backward pass (bounds memory; 8 keeps ResNet-50 under 2 GB)", "8", integer(1, kMaxBatch)});
  opts.push_back({"out", "RESULTS.json", "write per-image and mean metrics here", ""});
  opts.push_back({"quiet", "", "no progress bars", ""});
  add_device_options(opts);
  Args a("eval saliency",
         "Metrics of saliency maps: insertion/deletion AUC (dense-model confidences, maps from the dense model or the "
         "SPADE trace), and with --mask the Trojan AUC (signed and absolute) and the pointing game.",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const Device device = device_from(a);
  const std::vector<std::string> methods = parse_methods(a.require("method"));
  const std::string mode = a.get("spade");
  if (mode != "off" && mode != "fast" && mode != "exact")
    throw Error("--spade: expected off, fast or exact, got \"" + mode + "\"");
  const std::string variant = a.get("variant");
  if (variant != "spade" && variant != "rise") throw Error("--variant: expected spade or rise, got \"" + variant + "\"");
  const int64_t batch = a.get_int("batch");
  const bool quiet = a.flag("quiet"), insertion = !a.flag("no-insertion");
  if (a.has("mask") && a.has("data")) throw Error("--mask goes with one input (--image or --input), not --data");
  if (!insertion && !a.has("mask")) throw Error("--no-insertion leaves nothing to measure without --mask");

  Model m = load_model_from(a);
  std::vector<interp::MethodParams> params;
  for (const std::string& name : methods) params.push_back(method_params(a, name, m));
  interp::PruneConfig cfg;
  MethodSchedules schedules;  // each method's (one trace per distinct schedule and image)
  if (mode != "off") {
    cfg = prune_config_from(a, m, "");
    cfg.solver = mode == "fast" ? interp::Solver::SparseGPT : interp::Solver::OBC;
    cfg.device = device;
    schedules = method_schedules(a, m, methods);
  }
  const std::vector<Sample> samples = load_samples(a, m);
  check_batch_memory(a, m, batch, PassKind::ForwardBackward, device, samples[0].x.dim(2));
  std::vector<uint8_t> mask;
  if (a.has("mask")) mask = load_mask(a.get("mask"), samples[0].x.dim(2), samples[0].x.dim(3));

  // On a GPU the plain-gradient passes run there (interp::Network); rule-based ones stay here.
  std::unique_ptr<interp::DeviceModel> dense_gpu;
  if (device != Device::CPU) dense_gpu = std::make_unique<interp::DeviceModel>(m.graph, nullptr, device);
  const interp::Network dense{m.graph, nullptr, batch, dense_gpu.get()};
  interp::InsertionDeletionParams idp;
  idp.variant = variant == "rise" ? interp::InsertionDeletionVariant::Rise : interp::InsertionDeletionVariant::Spade;
  idp.batch = batch;

  nlohmann::json per_image = nlohmann::json::array();
  std::map<std::string, std::map<std::string, double>> sums;
  Progress bar("images", static_cast<int64_t>(samples.size()));
  for (size_t s = 0; s < samples.size(); ++s) {
    const Sample& sample = samples[s];
    const int64_t target = target_class(a, m, argmax_class(dense, sample.x));
    std::vector<interp::Trace> traces;
    if (mode != "off")
      traces = interp::compute_traces(m.graph, *augmented_calibration_of(a, m, sample.image), cfg, schedules.schedules);
    std::vector<std::unique_ptr<interp::DeviceModel>> traces_gpu;
    std::vector<interp::Network> nets;  // per trace; the dense model without --spade
    for (const interp::Trace& t : traces) {
      if (device != Device::CPU) traces_gpu.push_back(std::make_unique<interp::DeviceModel>(m.graph, &t.weights, device));
      nets.push_back({m.graph, &t.weights, batch, traces_gpu.empty() ? nullptr : traces_gpu.back().get()});
    }
    if (nets.empty()) nets.push_back(dense);
    nlohmann::json row = {{"image", sample.name}, {"target", target}, {"dense_prediction", argmax_class(dense, sample.x)}};
    // The trace of the first method (every method's when they share one schedule, as with --sparsity).
    if (!traces.empty()) row["trace_prediction"] = argmax_class(nets[schedules.of[0]], sample.x);
    for (size_t k = 0; k < methods.size(); ++k) {
      const interp::Network& explained = nets[traces.empty() ? 0 : schedules.of[k]];
      const Tensor attr = interp::find_method(methods[k]).fn(explained, sample.x, target, params[k]);
      nlohmann::json mj;
      if (insertion) {
        const interp::InsertionDeletion r =
            interp::insertion_deletion(sample.x, attr, interp::class_probability(dense, target), idp);
        mj["insertion"] = r.insertion;
        mj["deletion"] = r.deletion;
      }
      if (!mask.empty()) {
        const interp::TrojanAuc t = interp::trojan_auc(attr, mask);
        mj["trojan_auc_signed"] = t.signed_auc;
        mj["trojan_auc_abs"] = t.abs_auc;
        mj["pointing_hit"] = interp::pointing_game(attr, mask).hit ? 1.0 : 0.0;
      }
      for (auto& [key, value] : mj.items()) sums[methods[k]][key] += value.get<double>();
      row["metrics"][methods[k]] = mj;
    }
    per_image.push_back(row);
    if (!quiet) bar.update(static_cast<int64_t>(s + 1));
  }
  if (!quiet) bar.finish();

  nlohmann::json means;
  const double n = static_cast<double>(samples.size());
  const std::vector<std::string> columns = {"insertion", "deletion", "trojan_auc_signed", "trojan_auc_abs", "pointing_hit"};
  for (const std::string& method : methods)
    for (const std::string& c : columns)
      if (sums[method].count(c)) means[method][c] = sums[method][c] / n;
  // The file first: a run whose output is refused prints no table.
  if (a.has("out")) {
    nlohmann::json settings;
    for (size_t k = 0; k < methods.size(); ++k) {
      settings[methods[k]] = settings_json(methods[k], params[k]);
      if (mode != "off") settings[methods[k]]["sparsity"] = schedules.schedules[schedules.of[k]].describe();
    }
    const nlohmann::json out = {{"model", {{"arch", m.arch}, {"source", m.source}, {"weights", m.weights_path}}},
                                {"spade", mode},
                                {"variant", variant},
                                {"images", samples.size()},
                                {"settings", settings},
                                {"mean", means},
                                {"per_image", per_image}};
    write_json_file(a.get("out"), out, 2);
  }
  std::printf("%-22s", "method");
  for (const std::string& c : columns)
    if (sums.begin()->second.count(c)) std::printf(" %18s", c.c_str());
  std::printf("\n");
  for (const std::string& method : methods) {
    std::printf("%-22s", method.c_str());
    for (const std::string& c : columns)
      if (sums[method].count(c)) std::printf(" %18.4f", means[method][c].get<double>());
    std::printf("\n");
  }
  if (a.has("out")) std::cout << "wrote " << a.get("out") << "\n";
  return 0;
}

}  // namespace spade::cli
