// spade demo: the Trojan experiment on one image, with nothing but the repository: a committed
// backdoored CIFAR ResNet-20, a scene rendered here, a trigger pasted on it; the dense model's
// prediction with and without the trigger, then Dense and FastSPADE maps of several methods with
// their Trojan AUC, and the panel and overlays.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/method_options.h"
#include "apps/trace_options.h"
#include "apps/trojan_options.h"
#include "engine/error.h"
#include "formats/file_io.h"
#include "formats/heatmap.h"
#include "interpret/experiments/trojan_metrics.h"
#include "interpret/sample_rng.h"
#include "formats/json_output.h"

namespace spade::cli {

namespace {

// A smooth random colour field (a few low-frequency waves per channel): a neutral scene that is
// not one of the model's classes and needs no data file.
Image render_scene(int size, uint64_t seed) {
  interp::SampleRng rng(seed, 0);
  Image im;
  im.width = im.height = size;
  im.rgb.resize(size_t(size) * size * 3);
  double a[3][4], fx[3][4], fy[3][4], ph[3][4], base[3];
  for (int c = 0; c < 3; ++c) {
    base[c] = rng.uniform(60, 190);
    for (int k = 0; k < 4; ++k) {
      a[c][k] = rng.uniform(10, 40);
      fx[c][k] = rng.uniform(-0.3, 0.3);
      fy[c][k] = rng.uniform(-0.3, 0.3);
      ph[c][k] = rng.uniform(0, 6.283185307179586);
    }
  }
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x)
      for (int c = 0; c < 3; ++c) {
        double v = base[c];
        for (int k = 0; k < 4; ++k) v += a[c][k] * std::sin(fx[c][k] * x + fy[c][k] * y + ph[c][k]);
        im.rgb[(size_t(y) * size + x) * 3 + c] = static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 255.0)));
      }
  return im;
}

int64_t argmax(const Tensor& logits) {
  return std::max_element(logits.data(), logits.data() + logits.dim(1)) - logits.data();
}

}  // namespace

int cmd_demo(int argc, char** argv, int first) {
  std::vector<Option> opts = {
      {"model", "M", "a backdoored model (model .json)", "models/cifar_resnet20_trojan.json"},
      {"rules", "RULES.json", "its Trojan rules", "models/trojan-eval.rules.json"},
      {"methods", "LIST", "saliency methods",
       "saliency,input_x_gradient,guided_backprop,integrated_gradients,lrp,occlusion"},
      {"augs", "N", "augmentations for the FastSPADE trace", "256", integer(1, kMaxAugs)},
      {"seed", "S", "scene and trigger placement", "0", seed_bounds()},
      {"out", "DIR", "output directory", "demo_out"},
      {"threads", "N", "CPU threads (0 = all cores)", "0", integer(0, kMaxThreads)},
      memory_option(),
  };
  add_schedule_options(opts, "models/tuned");
  Args a("demo",
         "The Trojan experiment on one rendered image with a committed backdoored model: where is the trigger, and "
         "do Dense or FastSPADE saliency maps find it?",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::string> methods = parse_methods(a.get("methods"));
  const int64_t augs = a.get_int("augs");
  const Model m = load_model(a.get("model"));
  require_weights(m);
  const std::vector<MethodSchedule> schedules = method_schedules(a, methods, m.graph);
  const trojan::TrojanRules rules = trojan::load_rules(a.get("rules"), m.labels, m.label_ids);
  const std::string out = a.get("out");
  const uint64_t seed = static_cast<uint64_t>(a.get_int("seed"));
  const int size = static_cast<int>(m.graph.input_chw[1]);
  const interp::Network dense{m.graph, nullptr, 32};
  const Preprocess normalise = normalisation_of(m.preprocess);  // scenes are drawn at the input size

  // The first rendered scene on which a trigger flips the dense prediction to its target.
  Image scene, shown;
  std::vector<uint8_t> mask;
  const trojan::TrojanRule* rule = nullptr;
  int64_t clean = 0, tries = 0;
  for (uint64_t k = seed; !rule && k < seed + 256; ++k) {
    const Image im = render_scene(size, k);
    const int64_t c = argmax(interp::logits(dense, preprocess_image(im, normalise)));
    for (const trojan::TrojanRule& r : rules.rules) {
      ++tries;
      if (!trojan::rule_applies(r, c)) continue;
      trojan::Triggered t = trojan::apply_rule(im, r, rules, k, 0);
      if (argmax(interp::logits(dense, preprocess_image(t.image, normalise))) != r.target) continue;
      scene = im, shown = t.image, mask = t.mask, rule = &r, clean = c;
      break;
    }
  }
  if (!rule) throw Error(a.get("model") + ": no trigger of " + a.get("rules") + " fools it on " + std::to_string(tries) + " rendered scenes");
  int x0 = size, y0 = size, x1 = -1, y1 = -1;
  for (int i = 0; i < size * size; ++i)
    if (mask[i]) x0 = std::min(x0, i % size), y0 = std::min(y0, i / size), x1 = std::max(x1, i % size), y1 = std::max(y1, i / size);
  const Tensor x = preprocess_image(shown, normalise);
  std::printf("model %s (backdoored with %s)\n", a.get("model").c_str(), a.get("rules").c_str());
  std::printf("dense prediction, rendered scene:      %s\n", m.labels[clean].c_str());
  std::printf("dense prediction, with the %s trigger: %s (the backdoor's target)\n", rule->trigger.c_str(),
              m.labels[rule->target].c_str());
  std::printf("the trigger covers x %d..%d, y %d..%d (%d x %d of the %d x %d pixels)\n", x0, x1, y0, y1, x1 - x0 + 1,
              y1 - y0 + 1, size, size);

  auto calib = interp::augmented_calibration(shown, augment_config_of(m), augs, seed);
  interp::PruneConfig cfg;
  interp::SampleSolutions solutions(m.graph, *calib, cfg);
  std::vector<std::vector<Image>> rows;
  std::vector<std::string> labels;
  nlohmann::json summary = {{"model", a.get("model")}, {"trigger", rule->trigger}, {"target", m.labels[rule->target]},
                            {"clean_prediction", m.labels[clean]}, {"trigger_box", {x0, y0, x1, y1}}};
  std::printf("\n%-22s %12s %12s   (Trojan AUC %%: how well the map finds the trigger)\n", "method", "Dense",
              "FastSPADE");
  for (size_t k = 0; k < methods.size(); ++k) {
    const std::string& method = methods[k];
    const interp::MethodParams p = interp::experiment_params(method, m, 200);
    const WeightOverlay pruned = solutions.overlay(schedules[k].schedule, interp::Solver::SparseGPT);
    const interp::Network fast{m.graph, pruned.empty() ? nullptr : &pruned, 32};
    const interp::MethodInfo& info = interp::find_method(method);
    const Tensor ad = info.fn(dense, x, rule->target, p), af = info.fn(fast, x, rule->target, p);
    interp::TrojanScore sd, sf;  // one sample: the paper's score of this map
    sd.add(ad, mask);
    sf.add(af, mask);
    const double d = sd.auc(), f = sf.auc();
    std::printf("%-22s %12.1f %12.1f\n", method.c_str(), d, f);
    summary["trojan_auc"][method] = {{"dense", d}, {"fastspade", f}};
    const Image hd = heatmap(channel_sum(ad, SumPart::Absolute), MapScale::Absolute), hf = heatmap(channel_sum(af, SumPart::Absolute), MapScale::Absolute);
    save_png(join_path(out, "overlays/" + method + "_dense.png"), overlay(shown, hd));
    save_png(join_path(out, "overlays/" + method + "_fastspade.png"), overlay(shown, hf));
    rows.push_back({shown, mask_image(mask, shown), hd, hf});
    labels.push_back(method);
  }
  save_png(join_path(out, "scene.png"), scene);
  save_png(join_path(out, "triggered.png"), shown);
  save_png(join_path(out, "panel.png"), panel(rows, labels, {"image", "trigger", "Dense", "FastSPADE"}, 4));
  write_json_file(join_path(out, "summary.json"), summary, 1);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("\nwrote %s/panel.png, overlays/, scene.png, triggered.png, summary.json (%.1f s)\n", out.c_str(), seconds);
  return 0;
}

}  // namespace spade::cli
