// spade visualize: Lucent-style feature visualisation of a class logit, a channel or a neuron, for
// the dense model and (with --image and --spade) for that image's SPADE trace, written as PNGs,
// NPY arrays, the objective curves and meta.json.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/featurevis_options.h"
#include "apps/trace_options.h"
#include "engine/executor.h"
#include "formats/file_io.h"
#include "formats/heatmap.h"
#include "formats/npy.h"
#include "formats/plot.h"
#include "interpret/featurevis/render.h"
#include "formats/json_output.h"

namespace spade::cli {

namespace {

namespace fv = interp::featurevis;
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Moving average over `w` steps: the per-step values jump with each step's random transforms.
std::vector<double> smoothed(const std::vector<double>& v, size_t w) {
  std::vector<double> out(v.size());
  double sum = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    sum += v[i];
    if (i >= w) sum -= v[i - w];
    out[i] = sum / double(std::min(i + 1, w));
  }
  return out;
}

std::vector<double> column(const std::vector<std::vector<double>>& curve, size_t k) {
  std::vector<double> out;
  for (const auto& row : curve) out.push_back(row.at(k));
  return out;
}

nlohmann::json transforms_json(const fv::TransformConfig& t) {
  return {{"pad", t.pad}, {"pad_value", t.pad_value}, {"jitter", t.jitter}, {"scales", t.scales},
          {"angles", t.angles}, {"jitter2", t.jitter2}};
}

// One variant's result (dense or SPADE) and its summary for meta.json.
struct Variant {
  std::string name;
  fv::RenderResult result;
  double seconds = 0;
};

nlohmann::json variant_json(const Variant& v, const std::vector<fv::Objective>& objectives) {
  nlohmann::json images = nlohmann::json::array();
  for (size_t k = 0; k < objectives.size(); ++k) {
    const std::vector<double> c = column(v.result.curve, k);
    images.push_back({{"objective", objectives[k].text},
                      {"final", v.result.final_values[k]},
                      {"first_step", c.empty() ? 0.0 : c.front()},
                      {"last_step", c.empty() ? 0.0 : c.back()},
                      {"curve", c}});
  }
  return {{"optimise_s", v.seconds}, {"images", images}};
}

}  // namespace

int cmd_visualize(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"objective", "OBJ[,OBJ..]",
                  "what to maximise: LAYER:CHANNEL (a class logit of the classifier, e.g. fc:99, or a channel's mean "
                  "over space), LAYER:CHANNEL@Y,X or @center (one neuron), weighted sums \"0.5*layer3:4 + fc:1\"; "
                  "LAYER may be a module prefix (layer4) or \"logit\"; a comma-separated list or a channel range "
                  "layer4:0-7 gives one image each (default with --image: the predicted class's logit)",
                  ""});
  opts.push_back({"image", "IMG", "an image: its predicted class is the default objective; needed for --spade", ""});
  opts.push_back({"input", "X.npy", "the input as a normalised (1,3,H,W) or (3,H,W) float32 array, instead of --image", ""});
  opts.push_back({"spade", "off|fast|exact",
                  "also visualise on the image's SPADE trace (fast = SparseGPT, exact = OBC) and write dense | SPADE "
                  "side by side",
                  "off"});
  add_trace_options(opts);
  add_render_options(opts);
  opts.push_back({"size", "S", "side of the square visualisation in pixels (default: the model's input size)", "", integer(1, kMaxSide)});
  opts.push_back({"starts", "N", "random starts per objective (one image each)", "1", integer(1, kMaxBatch)});
  opts.push_back({"batch", "B", "images optimised together (bounds memory; the results depend on it only through rounding)", "8", integer(1, kMaxBatch)});
  opts.push_back({"out", "DIR", "output directory", ""});
  opts.push_back({"quiet", "", "no progress bars", ""});
  Args a("visualize",
         "Feature visualisation (activation maximisation in a decorrelated Fourier basis with random transforms, "
         "as Lucent does) of class logits, channels or neurons, for the dense model and, with --image and --spade, "
         "for the image's SPADE trace. Writes dense.png (dense_K.png for several images), spade.png, dense.npy / "
         "spade.npy (N,3,S,S in [0,1]), compare.png (image | dense | SPADE per objective), curve.png (the "
         "objective over the steps, smoothed over 16 steps; dense and SPADE of image K in colours 2K and 2K+1 of "
         "matplotlib's tab10) and meta.json into --out. Runs on the CPU.",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const auto t_start = Clock::now();
  const std::string out_dir = a.require("out");
  const std::string mode = a.get("spade");
  if (mode != "off" && mode != "fast" && mode != "exact")
    throw Error("--spade: expected off, fast or exact, got \"" + mode + "\"");
  const bool has_input = a.has("image") || a.has("input");
  if (mode != "off" && !has_input) throw Error("--spade needs the image whose trace to visualise: give --image IMG");
  const bool quiet = a.flag("quiet");
  const int64_t starts = a.get_int("starts"), batch = a.get_int("batch");

  Model m = load_model_from(a);
  fv::RenderConfig cfg = render_config_from(a, m, a.has("size") ? a.get_int("size") : m.graph.input_chw[1]);
  cfg.batch = batch;
  // The passes run on the transformed images: padded, then scaled up to the largest scale.
  double grow = 1.0;
  for (double s : cfg.transforms.scales) grow = std::max(grow, s);
  check_batch_memory(a, m, batch, PassKind::ForwardBackward, Device::CPU,
                     static_cast<int64_t>(std::ceil(static_cast<double>(cfg.size + 2 * cfg.transforms.pad) * grow)));
  Tensor x;
  int64_t predicted = -1;
  nlohmann::json prediction = nullptr;
  if (has_input) {
    x = load_input(a, m);
    const Tensor logits = forward(m.graph, x).out();
    const std::vector<float> p = softmax(logits.data(), logits.dim(1));
    predicted = std::max_element(p.begin(), p.end()) - p.begin();
    prediction = {{"class", predicted}, {"label", m.labels.at(predicted)}, {"probability", p[predicted]}};
  }
  std::vector<fv::Objective> objectives;
  if (a.has("objective")) objectives = fv::parse_objectives(a.get("objective"), m.graph);
  else if (has_input) objectives = {fv::class_objective(m.graph, predicted)};
  else throw Error("give --objective (e.g. fc:99 or layer4:7), or --image to visualise its predicted class");
  std::vector<fv::Objective> per_image;  // every objective `starts` times in a row
  for (const fv::Objective& o : objectives)
    for (int64_t s = 0; s < starts; ++s) per_image.push_back(o);

  auto run = [&](const std::string& name, const WeightOverlay* weights) {
    std::unique_ptr<Progress> bar;
    Variant v;
    v.name = name;
    const auto t0 = Clock::now();
    v.result = fv::render(m.graph, weights, per_image, cfg, [&](int64_t done, int64_t total) {
      if (quiet) return;
      if (!bar) bar = std::make_unique<Progress>("visualize (" + name + ")", total);
      bar->update(done);
    });
    v.seconds = seconds_since(t0);
    if (bar) bar->finish();
    // An objective that overflows (a huge weight, a diverging step) makes NaN pixels; that is an
    // error, never an image.
    const Tensor& images = v.result.images;
    if (!std::all_of(images.data(), images.data() + images.numel(), [](float x) { return std::isfinite(x); }))
      throw Error("visualize (" + name + "): the optimisation produced NaN or infinite pixels (does the objective overflow?)");
    return v;
  };
  std::vector<Variant> variants{run("dense", nullptr)};
  double trace_s = 0;
  nlohmann::json spade_json = nullptr;
  std::unique_ptr<interp::Trace> trace;
  if (mode != "off") {
    trace = std::make_unique<interp::Trace>(spade_trace_of(a, m, mode, Device::CPU, quiet, &trace_s));
    spade_json = {{"mode", mode}, {"sparsity", trace->sparsity}, {"report", interp::trace_report_json(*trace)}};
    variants.push_back(run("spade", &trace->weights));
  }

  // Everything is computed; now the files (each written atomically).
  const int64_t n = static_cast<int64_t>(per_image.size());
  const int zoom = std::max<int>(1, int(128 / cfg.size));  // cells of compare.png at least 128 pixels
  for (const Variant& v : variants) {
    for (int64_t k = 0; k < n; ++k) {
      char name[64];
      std::snprintf(name, sizeof name, n == 1 ? "%s.png" : "%s_%02lld.png", v.name.c_str(), (long long)k);
      save_png(join_path(out_dir, name), unit_image(v.result.images, k));
    }
    save_npy(join_path(out_dir, v.name + ".npy"), v.result.images);
  }
  if (variants.size() == 2) {
    const int cell = int(cfg.size * zoom);
    const Image shown = resize_image(tensor_to_image(x, m.preprocess.mean, m.preprocess.std), cell, cell);
    std::vector<std::vector<Image>> rows;
    std::vector<std::string> labels;
    for (int64_t k = 0; k < n; ++k) {
      rows.push_back({shown, unit_image(variants[0].result.images, k, zoom), unit_image(variants[1].result.images, k, zoom)});
      labels.push_back(per_image[k].text);
    }
    save_png(join_path(out_dir, "compare.png"), panel(rows, labels, {"image", "dense", "spade"}, 4));
  }
  std::vector<PlotSeries> series;
  for (int64_t k = 0; k < n; ++k)
    for (size_t v = 0; v < variants.size(); ++v)
      series.push_back({smoothed(column(variants[v].result.curve, k), 16), series_colour(2 * k + v)});
  save_png(join_path(out_dir, "curve.png"), line_plot(series));

  nlohmann::json meta = {
      {"model", {{"arch", m.arch}, {"source", m.source}, {"weights", m.weights_path}}},
      {"input", a.has("image") ? a.get("image") : (a.has("input") ? a.get("input") : "")},
      {"prediction", prediction},
      {"objectives", nlohmann::json::array()},
      {"settings",
       {{"steps", cfg.steps},
        {"size", cfg.size},
        {"lr", cfg.lr},
        {"starts", starts},
        {"seed", cfg.seed},
        {"batch", cfg.batch},
        {"parameterisation", "fourier, decay 1, colour decorrelated, sigmoid"},
        {"transforms", transforms_json(cfg.transforms)},
        {"normalisation", {{"mean", cfg.mean}, {"std", cfg.std}}}}},
      {"spade", spade_json},
      {"dense", variant_json(variants[0], per_image)},
      {"spade_result", variants.size() == 2 ? variant_json(variants[1], per_image) : nlohmann::json(nullptr)},
      // The first image's final objective (dense), for scripts and benchmarks.
      {"objective", {{"final", variants[0].result.final_values.at(0)}}},
  };
  for (const fv::Objective& o : per_image) meta["objectives"].push_back(o.text);
  meta["timings"] = {{"optimise_s", variants[0].seconds},
                     {"spade_optimise_s", variants.size() == 2 ? variants[1].seconds : 0.0},
                     {"trace_s", trace_s},
                     {"total_s", seconds_since(t_start)}};
  write_json_file(join_path(out_dir, "meta.json"), meta, 2);
  if (!quiet) {
    for (const Variant& v : variants)
      for (int64_t k = 0; k < n; ++k)
        std::cout << v.name << " " << per_image[k].text << ": objective " << column(v.result.curve, k).front() << " -> "
                  << v.result.final_values[k] << "\n";
    std::cout << "wrote " << out_dir << " in " << seconds_since(t_start) << " s\n";
  }
  return 0;
}

}  // namespace spade::cli
