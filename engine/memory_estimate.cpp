#include "engine/memory_estimate.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <vector>

#include "engine/error.h"
#include "engine/ops.h"
#include "kernels/cpu/memory.h"

namespace spade {

namespace {

int64_t float_bytes(const Shape& s) { return shape_numel(s) * static_cast<int64_t>(sizeof(float)); }

// The largest im2col buffer of any convolution: each thread keeps one (kernels/cpu/conv.cpp).
int64_t conv_scratch_bytes(const Graph& g, const std::vector<Shape>& shapes) {
  int64_t most = 0;
  for (int i = 1; i < g.size(); ++i) {
    const Node& nd = g.node(i);
    if (nd.op != OpKind::Conv2d) continue;
    const kernels::ConvGeom geom = conv_geom(nd, shapes[nd.inputs[0]]);
    if (geom.depthwise()) continue;
    most = std::max(most, geom.col_rows() * geom.out_h() * geom.out_w() * static_cast<int64_t>(sizeof(float)));
  }
  return most;
}

// Forward pass that frees activations after their last consumer: the most bytes alive at once,
// counting a node's output while its inputs are still held. The input batch stays: its caller
// holds it.
int64_t forward_peak(const Graph& g, const std::vector<Shape>& shapes) {
  const int n = g.size();
  std::vector<int> last_use(n, -1);
  for (int i = 0; i < n; ++i)
    for (int j : g.node(i).inputs) last_use[j] = std::max(last_use[j], i);
  last_use[g.output()] = n;
  last_use[0] = n;
  int64_t live = float_bytes(shapes[0]), peak = live;
  for (int i = 1; i < n; ++i) {
    live += float_bytes(shapes[i]);
    peak = std::max(peak, live);
    for (int j : g.node(i).inputs)
      if (last_use[j] == i) live -= float_bytes(shapes[j]);
  }
  return peak;
}

// Forward + backward from the output: every activation is kept; walking back, a node's gradient
// lives from the first of its consumers' backward steps until its own, and a node with several
// consumers briefly holds a second buffer for the sum.
int64_t forward_backward_peak(const Graph& g, const std::vector<Shape>& shapes) {
  const int n = g.size();
  int64_t acts = 0;
  for (int i = 0; i < n; ++i) acts += float_bytes(shapes[i]);
  std::vector<bool> alive(n, false);
  alive[g.output()] = true;
  int64_t grads = float_bytes(shapes[g.output()]), peak = grads;
  for (int i = g.output(); i >= 1; --i) {
    if (!alive[i]) continue;
    int64_t step = 0;
    for (int j : g.node(i).inputs) {
      step += float_bytes(shapes[j]);
      if (alive[j]) step += float_bytes(shapes[j]);  // the new sum next to the two addends
    }
    peak = std::max(peak, grads + step);
    for (int j : g.node(i).inputs)
      if (!alive[j]) {
        alive[j] = true;
        grads += float_bytes(shapes[j]);
      }
    alive[i] = false;
    grads -= float_bytes(shapes[i]);
  }
  return acts + peak;
}

}  // namespace

MemoryEstimate estimate_pass_memory(const Graph& g, PassKind kind, int threads) {
  // Shapes for two images: the difference from one image is the per-image part, whatever
  // reshapes (Flatten, Linear) do to the batch dimension.
  const std::vector<Shape> one = g.infer_shapes(1), two = g.infer_shapes(2);
  auto peak = [&](const std::vector<Shape>& s) {
    return kind == PassKind::Forward ? forward_peak(g, s) : forward_backward_peak(g, s);
  };
  MemoryEstimate e;
  e.per_image = peak(two) - peak(one);
  int64_t weights = 0;
  for (const auto& [key, t] : g.parameters()) weights += t->numel() * static_cast<int64_t>(sizeof(float));
  e.fixed = weights + static_cast<int64_t>(std::max(1, threads)) * conv_scratch_bytes(g, one);
  if (kind == PassKind::ForwardBackward) e.fixed += weights;  // parameter gradients
  return e;
}

int64_t parse_size(const std::string& text, const std::string& what) {
  auto fail = [&] {
    return Error(what + ": \"" + text + "\" is not a size (expected bytes or a number with K, M, G or T, e.g. 8G)");
  };
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw fail();
  }
  std::string unit = text.substr(used);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && unit.back() == 'B') unit.pop_back();  // "GB", "GIB" -> "G", "GI"
  if (unit.size() == 2 && unit[1] == 'I') unit.pop_back();
  double scale = 1;
  if (unit == "K") scale = 1024.0;
  else if (unit == "M") scale = 1024.0 * 1024;
  else if (unit == "G") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T") scale = 1024.0 * 1024 * 1024 * 1024;
  else if (!unit.empty() && unit != "B") throw fail();
  const double bytes = value * scale;
  if (!std::isfinite(bytes) || bytes <= 0 || bytes > 9.0e18) throw fail();
  return static_cast<int64_t>(bytes);
}

namespace {
struct HostMemoryLimit {
  int64_t bytes = -1;  // -1: not set, use 80% of RAM
  std::string source;
};
HostMemoryLimit& host_limit() {
  static HostMemoryLimit limit;
  return limit;
}
}  // namespace

void set_host_memory_limit(int64_t bytes, const std::string& source) {
  if (bytes <= 0) throw Error("set_host_memory_limit: the limit must be positive");
  host_limit() = {bytes, source};
}

void check_host_memory(double bytes, const std::string& what) {
  HostMemoryLimit limit = host_limit();
  if (limit.bytes < 0) {
    const int64_t total = kernels::physical_memory_bytes();
    if (total <= 0) return;
    limit = {total / 10 * 8, "80% of the " + kernels::format_bytes(static_cast<size_t>(total)) + " of RAM (--max-memory)"};
  }
  if (!(bytes > static_cast<double>(limit.bytes))) return;
  throw Error(what + " needs about " + kernels::format_bytes(static_cast<size_t>(std::min(bytes, 9.0e18))) +
              ", more than " + limit.source);
}

}  // namespace spade
