// spade eval accuracy: top-1 over an ImageFolder directory or tar (and the dispatch of `spade eval`).
#include <cstdio>
#include <iostream>

#include "apps/cli.h"
#include "apps/commands.h"
#include "engine/executor.h"
#include "formats/image.h"
#include "formats/image_folder.h"

namespace spade::cli {

namespace {

int eval_accuracy(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"data", "DIR|FILE.tar", "ImageFolder tree (root/<class>/<image>) or a tar of one", ""});
  opts.push_back({"limit", "N", "evaluate only the first N images (in class, then file order)", "0", integer(0, kMaxCount)});
  opts.push_back({"batch", "B", "images per forward pass", "64", integer(1, kMaxBatch)});
  add_device_options(opts);
  Args a("eval accuracy",
         "Top-1 and top-5 accuracy of a model over a labelled image folder or tar. Class folders map to outputs by "
         "class id when the model has ids (--labels), else by name, else in sorted order.",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const Device device = device_from(a);
  Model m = load_model_from(a);
  const Graph graph = m.graph.to(device);
  ImageFolder data(a.require("data"));
  if (data.size() == 0) throw Error(data.path() + ": no images found");
  int64_t n = static_cast<int64_t>(data.size());
  if (a.get_int("limit") > 0) n = std::min(n, a.get_int("limit"));
  const int64_t batch = a.get_int("batch");
  check_batch_memory(a, m, batch, PassKind::Forward, device);
  const int64_t classes = m.graph.node(m.graph.output()).attrs.out_channels;
  std::vector<int64_t> map = model_class_indices(data, m.labels, m.label_ids);

  Progress bar("accuracy", n);
  int64_t correct = 0, correct5 = 0;
  ForwardOptions fo;
  fo.keep_activations = false;
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t end = std::min(n, start + batch);
    std::vector<Tensor> xs;
    std::vector<int64_t> labels;
    for (int64_t i = start; i < end; ++i) {
      LabeledImage li = data.get(static_cast<size_t>(i));
      const std::string name = data.path() + ":" + li.name;
      xs.push_back(preprocess_image(decode_image(li.bytes.data(), li.bytes.size(), name), m.preprocess, name));
      labels.push_back(map[li.label]);
    }
    const Tensor logits = forward(graph, cat0(xs).to(device), fo).out().cpu();
    for (int64_t b = 0; b < end - start; ++b) {
      const float* row = logits.data() + b * classes;
      // The label's rank: the classes ahead of it, ties going to the lower index (as argmax).
      const int64_t label = labels[b];
      int64_t higher = 0;
      for (int64_t c = 0; c < classes; ++c) higher += row[c] > row[label] || (row[c] == row[label] && c < label);
      correct += higher == 0;
      correct5 += higher < 5;
    }
    char acc[48];
    std::snprintf(acc, sizeof acc, "top-1 so far %.2f%%", 100.0 * correct / end);
    bar.update(end, acc);
  }
  bar.finish();
  std::printf("top-1: %.2f%%, top-5: %.2f%% (%lld images)\n", 100.0 * correct / n, 100.0 * correct5 / n,
              static_cast<long long>(n));
  return 0;
}

}  // namespace

int cmd_eval(int argc, char** argv, int first) {
  std::string what = first < argc ? argv[first] : "";
  if (what == "accuracy") return eval_accuracy(argc, argv, first + 1);
  if (what == "saliency") return cmd_eval_saliency(argc, argv, first + 1);
  if (what == "trojan") return cmd_eval_trojan(argc, argv, first + 1);
  if (what == "insertion") return cmd_eval_insertion(argc, argv, first + 1);
  if (what == "featurevis") return cmd_eval_featurevis(argc, argv, first + 1);
  if (what == "gridpg") return cmd_eval_gridpg(argc, argv, first + 1);
  if (what.empty() || what == "--help" || what == "-h") {
    std::cout << "usage: spade eval <what> [options]\n\n"
                 "  accuracy   top-1 accuracy over an ImageFolder directory or tar\n"
                 "  saliency   insertion/deletion AUC, Trojan AUC and pointing game of saliency maps\n"
                 "  trojan     Trojan AUC and pointing game of Dense, FastSPADE and SPADE maps (the paper's Table 1)\n"
                 "  insertion  insertion/deletion of Dense and FastSPADE maps on clean images (the paper's Table 2)\n"
                 "  featurevis which Score-CAM patch dense and SPADE visualisations resemble (the paper's Table 3)\n"
                 "  gridpg     grid pointing game: how much of each map lies on the photo it explains, Dense vs SPADE\n\n"
                 "Run `spade eval <what> --help` for the options.\n";
    if (what.empty()) throw Error("eval needs what to evaluate (see above)");
    return 0;
  }
  throw Error("unknown evaluation \"" + what + "\" (available: accuracy, saliency, trojan, insertion, featurevis, gridpg)");
}

}  // namespace spade::cli
