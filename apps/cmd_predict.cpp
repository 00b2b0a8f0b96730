// spade predict: the model's top classes for one input.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "apps/cli.h"
#include "apps/commands.h"
#include "engine/executor.h"
#include "formats/npy.h"

namespace spade::cli {

int cmd_predict(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"image", "IMG", "image file (PNG/JPEG/BMP), preprocessed as the model specifies", ""});
  opts.push_back({"input", "X.npy", "already-normalised float32 input, (1,3,H,W) or (3,H,W)", ""});
  opts.push_back({"topk", "K", "number of classes to print", "5", integer(1, 1 << 20)});
  opts.push_back({"json", "", "print {\"logits\", \"probs\", \"top\"} as JSON", ""});
  opts.push_back({"save-input", "X.npy", "also write the preprocessed input (1,3,H,W) float32, as --input reads it", ""});
  add_device_options(opts);
  Args a("predict", "Classify one image with a model and print its top classes.", opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const Device device = device_from(a);
  Model m = load_model_from(a);
  Tensor x = load_input(a, m);
  if (a.has("save-input")) {
    refuse_overwriting_inputs(a, {a.get("save-input")}, {"image", "input", "weights", "model", "labels"});
    save_npy(a.get("save-input"), x);
  }
  ForwardOptions fo;
  fo.keep_activations = false;
  const Tensor logits = forward(m.graph.to(device), x.to(device), fo).out().cpu();
  if (logits.ndim() != 2) throw Error(m.source + ": model output is " + shape_str(logits.shape()) + ", not (N, classes)");
  const int64_t n = logits.dim(1);
  std::vector<float> probs = softmax(logits.data(), n);
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return logits[i] > logits[j]; });
  const int64_t k = std::clamp<int64_t>(a.get_int("topk"), 1, n);
  auto label = [&](int64_t c) { return c < static_cast<int64_t>(m.labels.size()) ? m.labels[c] : "class " + std::to_string(c); };
  if (a.flag("json")) {
    nlohmann::json j;
    j["logits"] = logits.to_vector();
    j["probs"] = probs;
    nlohmann::json top = nlohmann::json::array();
    for (int64_t i = 0; i < k; ++i)
      top.push_back({{"class", order[i]}, {"label", label(order[i])}, {"prob", probs[order[i]]}});
    j["top"] = top;
    std::cout << j.dump() << "\n";
  } else {
    for (int64_t i = 0; i < k; ++i)
      std::printf("%2lld. %-24s %7.3f%%  (class %lld, logit %.4f)\n", static_cast<long long>(i + 1),
                  label(order[i]).c_str(), probs[order[i]] * 100.0, static_cast<long long>(order[i]),
                  logits[order[i]]);
  }
  return 0;
}

}  // namespace spade::cli
