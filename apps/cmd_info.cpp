// spade info: layers, output shapes, parameter counts and FLOPs of a model.
#include <cstdio>
#include <iostream>

#include "apps/cli.h"
#include "apps/commands.h"
#include "engine/ops.h"
#include "formats/zoo.h"

namespace spade::cli {

namespace {
// Multiply-accumulates of one node for one image; FLOPs are counted as 2 per MAC. In double: a
// declared input of a million pixels a side overflows 64-bit integers (and is only a count).
double node_macs(const Node& n, const Shape& out) {
  if (n.op == OpKind::Conv2d) {
    const OpAttrs& a = n.attrs;
    return double(out[1]) * double(out[2]) * double(out[3]) * double(a.in_channels / a.groups) * double(a.kernel[0]) *
           double(a.kernel[1]);
  }
  if (n.op == OpKind::Linear) return double(n.attrs.in_channels) * double(n.attrs.out_channels);
  return 0;
}
}  // namespace

int cmd_info(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"list", "", "list the built-in architectures and exit", ""});
  opts.push_back({"size", "H,W", "input size to report shapes for (default: the model's)", ""});
  Args a("info", "Print a model's layers, output shapes, parameter counts and FLOPs.", opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  if (a.flag("list")) {
    for (const std::string& n : zoo_names()) std::cout << n << "\n";
    return 0;
  }
  Model m = load_model_from(a, Weights::Optional);
  if (a.has("size")) {
    long long h = 0, w = 0;
    char rest = 0;
    if (std::sscanf(a.get("size").c_str(), "%lld,%lld%c", &h, &w, &rest) != 2 || h <= 0 || w <= 0 || h > kMaxSide ||
        w > kMaxSide)
      throw Error("--size must be H,W with integers from 1 to " + std::to_string(kMaxSide));
    m.graph.input_chw[1] = h;
    m.graph.input_chw[2] = w;
  }
  std::vector<Shape> shapes = m.graph.infer_shapes(1);
  std::printf("model: %s (%s)\nweights: %s\ninput: %s, preprocess: resize %d, crop %d\n\n", m.source.c_str(),
              m.arch.c_str(), m.weights_path.empty() ? "(none)" : m.weights_path.c_str(),
              shape_str(shapes[0]).c_str(), m.preprocess.resize, m.preprocess.crop);
  std::printf("%-4s %-34s %-18s %-20s %-14s %12s %12s\n", "#", "node", "op", "output", "pad t,l,b,r", "params",
              "MFLOPs");
  int64_t total_params = 0;
  double total_macs = 0;
  bool any_same = false;
  for (int i = 1; i < m.graph.size(); ++i) {
    const Node& n = m.graph.node(i);
    int64_t params = 0;
    for (const auto& [k, t] : n.params)
      if (is_trainable_param(n.op, k)) params += t.numel();
    const double macs = node_macs(n, shapes[i]);
    total_params += params;
    total_macs += macs;
    // The padding as it applies at this input size ("SAME" resolved, marked with *).
    std::string pad;
    if (n.op == OpKind::Conv2d || n.op == OpKind::MaxPool2d || n.op == OpKind::AvgPool2d) {
      const Shape& in = shapes[n.inputs[0]];
      const Padding p = resolve_padding(n.attrs, in[2], in[3]);
      any_same |= n.attrs.padding.same;
      pad = std::to_string(p.top) + "," + std::to_string(p.left) + "," + std::to_string(p.bottom) + "," +
            std::to_string(p.right) + (n.attrs.padding.same ? " *" : "");
    }
    std::printf("%-4d %-34s %-18s %-20s %-14s %12lld %12.2f\n", i, n.name.c_str(), op_name(n.op),
                shape_str(shapes[i]).c_str(), pad.c_str(), static_cast<long long>(params), 2.0 * macs / 1e6);
  }
  if (any_same) std::printf("\n(* TensorFlow \"SAME\" padding, resolved for this input size)\n");
  std::printf("\nnodes: %d, parameters: %lld (%.2f M), FLOPs per image: %.3f G (%.3f G multiply-adds)\n",
              m.graph.size() - 1, static_cast<long long>(total_params), total_params / 1e6, 2.0 * total_macs / 1e9,
              total_macs / 1e9);
  return 0;
}

}  // namespace spade::cli
