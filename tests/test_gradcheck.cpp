// Finite-difference checks of every op's input and parameter gradients, over sweeps of
// kernel, stride, padding, dilation and groups. The objective is sum(out * R) for a fixed
// random R, evaluated in double from the float32 outputs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "engine/executor.h"
#include "engine/ops.h"
#include "support/test_support.h"

using namespace spade;

namespace {

// Inputs whose entries are pairwise at least `gap` apart in magnitude and at least gap/2 away
// from the kinks at 0 and 6, so a perturbation eps < gap/2 never crosses a ReLU/ReLU6 kink or
// swaps a maximum: values +-(k + 1/2) * gap for a random permutation of k, up to `max_mag`.
Tensor spaced_tensor(const Shape& shape, uint64_t seed, float max_mag = 5.f) {
  Tensor t = Tensor::empty(shape);
  const int64_t n = t.numel();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  const float gap = max_mag / static_cast<float>(n / 2 + 1);
  for (int64_t i = 0; i < n; ++i) t[i] = (order[i] % 2 ? 1.f : -1.f) * (order[i] / 2 + 0.5f) * gap;
  return t;
}

ForwardOptions mode(bool train) {
  ForwardOptions o;
  o.train = train;
  return o;
}

double objective(const Graph& g, const Tensor& x, const Tensor& r, bool train) {
  Tensor out = forward(g, x, mode(train)).out();
  double s = 0;
  for (int64_t i = 0; i < out.numel(); ++i) s += static_cast<double>(out[i]) * r[i];
  return s;
}

// Compares analytic and numeric derivatives of up to `samples` entries of tensor t.
void check_entries(const std::string& what, Tensor& t, const std::function<double()>& f, const Tensor& analytic,
                   float eps, int samples, uint64_t seed) {
  REQUIRE(analytic.defined());
  REQUIRE(analytic.shape() == t.shape());
  std::mt19937_64 rng(seed);
  const int64_t n = t.numel();
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::shuffle(idx.begin(), idx.end(), rng);
  idx.resize(std::min<int64_t>(n, samples));
  for (int64_t i : idx) {
    const float saved = t[i];
    t[i] = saved + eps;
    const double up = f();
    t[i] = saved - eps;
    const double down = f();
    t[i] = saved;
    const double numeric = (up - down) / (2.0 * eps);
    const double a = analytic[i];
    INFO(what << " element " << i << ": analytic " << a << " numeric " << numeric);
    CHECK(std::fabs(a - numeric) <= 2e-3 + 2e-3 * std::fabs(numeric));
  }
}

// Gradient check of a one-op graph fed by the input node.
// Linear ops (conv, linear, pools but max, shortcut, eval BN) have no truncation error, so a
// large eps keeps float32 round-off small; ops with kinks need eps below half the input gap.
struct Check {
  float eps = 0.05f;
  float max_mag = 5.f;
  bool kinked = false;
};

void gradcheck(Graph& g, const Shape& in_shape, bool train, uint64_t seed, Check c = {}) {
  const float eps = c.eps;
  g.input_chw = {in_shape[1], in_shape.size() > 2 ? in_shape[2] : 1, in_shape.size() > 3 ? in_shape[3] : 1};
  Tensor x = spaced_tensor(in_shape, seed, c.max_mag);
  if (c.kinked) REQUIRE(0.5f * c.max_mag / static_cast<float>(x.numel() / 2 + 1) > eps);
  for (auto& [key, p] : g.parameters()) {
    Tensor r = test::random_tensor(p->shape(), seed + 7, -1.f, 1.f);
    if (key.find("running_var") != std::string::npos)
      for (int64_t i = 0; i < r.numel(); ++i) r[i] = 0.5f + std::fabs(r[i]);
    p->copy_from(r);
  }
  Tensor out = forward(g, x, mode(train)).out();
  Tensor r = test::random_tensor(out.shape(), seed + 11);
  ForwardResult fwd = forward(g, x, mode(train));
  BackwardOptions bo;
  bo.param_grads = true;
  BackwardResult b = backward(g, fwd, g.output(), r, bo);
  auto f = [&] { return objective(g, x, r, train); };
  check_entries("input", x, f, b.input_grad, eps, 40, seed + 1);
  for (auto& [key, p] : g.parameters()) {
    if (!is_trainable_param(OpKind::Conv2d, key.substr(key.rfind('.') + 1))) continue;
    check_entries(key, *p, f, b.param_grads.at(key), eps, 25, seed + 2);
  }
}

}  // namespace

TEST_CASE("conv2d gradients match finite differences over a sweep", "[gradcheck][conv]") {
  struct Cfg {
    int64_t cin, cout, kh, kw, stride, pad_h, pad_w, dil, groups;
    bool bias;
  };
  const std::vector<Cfg> cfgs = {
      {3, 4, 3, 3, 1, 1, 1, 1, 1, true},   {3, 4, 3, 3, 2, 1, 1, 1, 1, false},
      {4, 6, 3, 3, 3, 2, 2, 1, 1, true},   {4, 4, 3, 3, 1, 2, 2, 2, 1, false},
      {4, 6, 1, 1, 1, 0, 0, 1, 1, true},   {4, 6, 1, 1, 2, 0, 0, 1, 1, false},
      {4, 4, 3, 5, 1, 1, 2, 1, 1, true},   {4, 6, 3, 3, 1, 1, 1, 1, 2, true},
      {4, 8, 3, 3, 2, 1, 1, 1, 4, false},  {4, 4, 3, 3, 1, 1, 1, 1, 4, true},
      {4, 8, 3, 3, 2, 1, 1, 1, 4, false},  {4, 4, 3, 3, 1, 2, 2, 2, 4, true},
      {3, 4, 7, 7, 2, 3, 3, 1, 1, false},  {6, 6, 5, 5, 1, 2, 2, 1, 6, false},
      {2, 3, 2, 2, 1, 0, 0, 1, 1, true},   {4, 4, 3, 3, 2, 0, 0, 2, 2, true},
  };
  for (size_t i = 0; i < cfgs.size(); ++i) {
    const Cfg& c = cfgs[i];
    DYNAMIC_SECTION("config " << i) {
      Graph g;
      OpAttrs a;
      a.in_channels = c.cin;
      a.out_channels = c.cout;
      a.kernel = {c.kh, c.kw};
      a.stride = {c.stride, c.stride};
      a.padding = {c.pad_h, c.pad_w};
      a.dilation = {c.dil, c.dil};
      a.groups = c.groups;
      a.bias = c.bias;
      g.add("conv", OpKind::Conv2d, a, {"input"});
      gradcheck(g, {2, c.cin, 9, 8}, false, 100 + i);
    }
  }
}

TEST_CASE("conv2d and pooling gradients match finite differences with asymmetric and SAME padding",
          "[gradcheck][conv][padding]") {
  struct Cfg {
    OpKind op;
    int64_t cin, cout, k, stride, dil, groups;
    Padding padding;
    bool include_pad;  // average pooling
  };
  const Padding same = Padding::tf_same();
  const std::vector<Cfg> cfgs = {
      {OpKind::Conv2d, 3, 4, 3, 2, 1, 1, {0, 0, 1, 1}, true},  // MobileNet's stem on an even input
      {OpKind::Conv2d, 3, 4, 3, 2, 1, 1, same, true},          // 9x8: 1/1 rows, 0/1 columns
      {OpKind::Conv2d, 4, 4, 3, 2, 1, 4, same, true},          // depthwise
      {OpKind::Conv2d, 4, 8, 3, 2, 2, 4, same, true},          // depthwise x2, dilation 2
      {OpKind::Conv2d, 4, 6, 3, 1, 1, 1, {2, 0, 1, 2}, true},  // every side different
      {OpKind::Conv2d, 3, 4, 4, 3, 1, 1, same, true},          // even kernel, stride 3
      {OpKind::MaxPool2d, 2, 2, 3, 2, 1, 1, same, true},
      {OpKind::MaxPool2d, 2, 2, 2, 1, 1, 1, {1, 0, 0, 1}, true},
      {OpKind::AvgPool2d, 2, 2, 3, 2, 1, 1, same, true},
      {OpKind::AvgPool2d, 2, 2, 3, 2, 1, 1, same, false},
      {OpKind::AvgPool2d, 2, 2, 3, 1, 1, 1, {0, 1, 1, 0}, false},
  };
  for (size_t i = 0; i < cfgs.size(); ++i) {
    const Cfg& c = cfgs[i];
    DYNAMIC_SECTION("config " << i) {
      Graph g;
      OpAttrs a;
      a.in_channels = c.cin;
      a.out_channels = c.cout;
      a.kernel = {c.k, c.k};
      a.stride = {c.stride, c.stride};
      a.padding = c.padding;
      a.dilation = {c.dil, c.dil};
      a.groups = c.groups;
      a.count_include_pad = c.include_pad;
      g.add("op", c.op, a, {"input"});
      const bool is_max = c.op == OpKind::MaxPool2d;
      const Shape in{2, c.cin, 9, 8};
      // The padding really is asymmetric here: the output size says so.
      const Padding p = resolve_padding(a, in[2], in[3]);
      CHECK(!p.symmetric());
      gradcheck(g, in, false, 300 + i, {is_max ? 1e-2f : 0.05f, 5.f, is_max});
    }
  }
}

TEST_CASE("batchnorm2d gradients match finite differences (eval and train)", "[gradcheck][bn]") {
  for (bool train : {false, true}) {
    DYNAMIC_SECTION((train ? "train" : "eval")) {
      Graph g;
      OpAttrs a;
      a.in_channels = 3;
      g.add("bn", OpKind::BatchNorm2d, a, {"input"});
      gradcheck(g, {3, 3, 4, 5}, train, train ? 7 : 8, {train ? 1e-2f : 0.05f, 2.f, false});
    }
  }
}

TEST_CASE("activation, pooling, linear, shortcut and add gradients match finite differences", "[gradcheck]") {
  SECTION("relu") {
    Graph g;
    g.add("relu", OpKind::ReLU, OpAttrs{}, {"input"});
    gradcheck(g, {2, 3, 4, 4}, false, 21, {1e-2f, 5.f, true});
  }
  SECTION("relu6") {
    Graph g;
    g.add("relu6", OpKind::ReLU6, OpAttrs{}, {"input"});
    gradcheck(g, {2, 3, 6, 6}, false, 22, {1e-2f, 7.5f, true});  // inputs reach past 6
  }
  struct PoolCfg {
    OpKind op;
    int64_t k, s, p;
    bool ceil, include_pad;
  };
  const std::vector<PoolCfg> pools = {
      {OpKind::MaxPool2d, 3, 2, 1, false, true}, {OpKind::MaxPool2d, 2, 2, 0, false, true},
      {OpKind::MaxPool2d, 3, 2, 0, true, true},  {OpKind::AvgPool2d, 2, 2, 0, false, true},
      {OpKind::AvgPool2d, 3, 1, 1, false, true}, {OpKind::AvgPool2d, 3, 1, 1, false, false},
      {OpKind::AvgPool2d, 3, 2, 1, true, false}, {OpKind::AvgPool2d, 3, 2, 0, true, true},
  };
  for (size_t i = 0; i < pools.size(); ++i) {
    DYNAMIC_SECTION("pool " << i) {
      Graph g;
      OpAttrs a;
      a.kernel = {pools[i].k, pools[i].k};
      a.stride = {pools[i].s, pools[i].s};
      a.padding = {pools[i].p, pools[i].p};
      a.ceil_mode = pools[i].ceil;
      a.count_include_pad = pools[i].include_pad;
      g.add("pool", pools[i].op, a, {"input"});
      const bool is_max = pools[i].op == OpKind::MaxPool2d;
      gradcheck(g, {2, 2, 7, 8}, false, 30 + i, {is_max ? 1e-2f : 0.05f, 5.f, is_max});
    }
  }
  SECTION("adaptive average pool + flatten + linear") {
    Graph g;
    g.add("gap", OpKind::AdaptiveAvgPool2d, OpAttrs{}, {"input"});
    g.add("flat", OpKind::Flatten, OpAttrs{}, {"gap"});
    OpAttrs l;
    l.in_channels = 4;
    l.out_channels = 5;
    l.bias = true;
    g.add("fc", OpKind::Linear, l, {"flat"});
    gradcheck(g, {3, 4, 3, 5}, false, 41);
  }
  SECTION("option-A shortcut") {
    Graph g;
    OpAttrs a;
    a.pad_channels = 2;
    a.stride = {2, 2};
    g.add("sc", OpKind::ShortcutA, a, {"input"});
    gradcheck(g, {2, 3, 5, 6}, false, 42);
  }
  SECTION("add of two branches (gradient accumulates into the shared input)") {
    Graph g;
    g.add("r", OpKind::ReLU, OpAttrs{}, {"input"});
    OpAttrs c;
    c.in_channels = 2;
    c.out_channels = 2;
    c.kernel = {3, 3};
    c.padding = {1, 1};
    g.add("conv", OpKind::Conv2d, c, {"input"});
    g.add("sum", OpKind::Add, OpAttrs{}, {"r", "conv"});
    gradcheck(g, {2, 2, 5, 5}, false, 43, {1e-2f, 5.f, true});
  }
  SECTION("dropout in train mode (fixed mask for a fixed seed)") {
    Graph g;
    OpAttrs d;
    d.p = 0.3f;
    g.add("drop", OpKind::Dropout, d, {"input"});
    gradcheck(g, {2, 3, 4, 4}, true, 44);
  }
}
