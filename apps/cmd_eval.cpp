// spade eval accuracy: top-1 over an ImageFolder directory or tar (and the dispatch of `spade eval`).
#include <cstdio>
#include <iostream>
#include <map>

#include "apps/cli.h"
#include "apps/commands.h"
#include "engine/executor.h"
#include "formats/image.h"
#include "formats/image_folder.h"

namespace spade::cli {

namespace {

// Dataset class index -> model class index: by label name when every folder name is one of the
// model's labels, else by position (folder order = class order, as torchvision's ImageFolder).
std::vector<int64_t> class_map(const ImageFolder& data, const Model& m, int64_t classes) {
  std::map<std::string, int64_t> by_name;
  for (size_t i = 0; i < m.labels.size(); ++i) by_name[m.labels[i]] = static_cast<int64_t>(i);
  std::vector<int64_t> map;
  bool all_named = true;
  for (const std::string& c : data.classes()) {
    auto it = by_name.find(c);
    if (it == by_name.end()) all_named = false;
    map.push_back(it == by_name.end() ? -1 : it->second);
  }
  if (all_named) return map;
  if (static_cast<int64_t>(data.classes().size()) > classes)
    throw Error(data.path() + ": " + std::to_string(data.classes().size()) + " class folders but the model has " +
                std::to_string(classes) + " classes");
  for (size_t i = 0; i < map.size(); ++i) map[i] = static_cast<int64_t>(i);
  return map;
}

int eval_accuracy(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"data", "DIR|FILE.tar", "ImageFolder tree (root/<class>/<image>) or a tar of one", ""});
  opts.push_back({"limit", "N", "evaluate only the first N images (in class, then file order)", "0"});
  opts.push_back({"batch", "B", "images per forward pass", "64"});
  add_device_options(opts);
  Args a("eval accuracy", "Top-1 accuracy of a model over a labelled image folder or tar.", opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_threads(a);
  const Device device = device_from(a);
  Model m = load_model_from(a);
  const Graph graph = m.graph.to(device);
  ImageFolder data(a.require("data"));
  if (data.size() == 0) throw Error(data.path() + ": no images found");
  int64_t n = static_cast<int64_t>(data.size());
  if (a.get_int("limit") > 0) n = std::min(n, a.get_int("limit"));
  const int64_t batch = std::max<int64_t>(1, a.get_int("batch"));
  const int64_t classes = m.graph.node(m.graph.output()).attrs.out_channels;
  std::vector<int64_t> map = class_map(data, m, classes);

  Progress bar("accuracy", n);
  int64_t correct = 0;
  ForwardOptions fo;
  fo.keep_activations = false;
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t end = std::min(n, start + batch);
    std::vector<Tensor> xs;
    std::vector<int64_t> labels;
    for (int64_t i = start; i < end; ++i) {
      LabeledImage li = data.get(static_cast<size_t>(i));
      xs.push_back(preprocess_image(decode_image(li.bytes.data(), li.bytes.size(), data.path() + ":" + li.name),
                                    m.preprocess));
      labels.push_back(map[li.label]);
    }
    const Tensor logits = forward(graph, cat0(xs).to(device), fo).out().cpu();
    for (int64_t b = 0; b < end - start; ++b) {
      const float* row = logits.data() + b * classes;
      int64_t best = 0;
      for (int64_t c = 1; c < classes; ++c)
        if (row[c] > row[best]) best = c;
      correct += best == labels[b];
    }
    char acc[48];
    std::snprintf(acc, sizeof acc, "top-1 so far %.2f%%", 100.0 * correct / end);
    bar.update(end, acc);
  }
  bar.finish();
  std::printf("top-1: %.2f%% (%lld images)\n", 100.0 * correct / n, static_cast<long long>(n));
  return 0;
}

}  // namespace

int cmd_eval(int argc, char** argv, int first) {
  std::string what = first < argc ? argv[first] : "";
  if (what == "accuracy") return eval_accuracy(argc, argv, first + 1);
  if (what == "saliency") return cmd_eval_saliency(argc, argv, first + 1);
  if (what.empty() || what == "--help" || what == "-h") {
    std::cout << "usage: spade eval <what> [options]\n\n"
                 "  accuracy   top-1 accuracy over an ImageFolder directory or tar\n"
                 "  saliency   insertion/deletion AUC, Trojan AUC and pointing game of saliency maps\n\n"
                 "Run `spade eval <what> --help` for the options.\n";
    return what.empty() ? 2 : 0;
  }
  throw Error("unknown evaluation \"" + what + "\" (available: accuracy, saliency)");
}

}  // namespace spade::cli
