// Layer Hessians for SPADE (interpret/spade/hessians, kernels/cpu/hessian): equal to
// (2/n) sum X X^T built from an explicitly unfolded input, for every conv geometry, and
// independent of how the images are batched.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "formats/safetensors.h"
#include "interpret/spade/hessians.h"
#include "kernels/cpu/hessian.h"
#include "kernels/cpu/parallel.h"
#include "support/test_support.h"

using namespace spade;
using namespace spade::interp;

namespace {

struct ConvCase {
  const char* what;
  int64_t cin, cout, k, stride, pad, dil, groups, h, w;
};

Graph conv_graph(const ConvCase& c) {
  Graph g;
  OpAttrs a;
  a.in_channels = c.cin;
  a.out_channels = c.cout;
  a.kernel = {c.k, c.k};
  a.stride = {c.stride, c.stride};
  a.padding = {c.pad, c.pad};
  a.dilation = {c.dil, c.dil};
  a.groups = c.groups;
  g.add("conv", OpKind::Conv2d, a, {"input"});
  g.set_output("conv");
  g.input_chw = {c.cin, c.h, c.w};
  return g;
}

// (2/n) sum over images and output positions of x x^T, x the receptive field written out.
std::vector<double> explicit_hessian(const ConvCase& c, const Tensor& x) {
  const int64_t N = x.dim(0), cg = c.cin / c.groups, dim = cg * c.k * c.k;
  const int64_t oh = (c.h + 2 * c.pad - c.dil * (c.k - 1) - 1) / c.stride + 1;
  const int64_t ow = (c.w + 2 * c.pad - c.dil * (c.k - 1) - 1) / c.stride + 1;
  std::vector<double> H(c.groups * dim * dim, 0.0), col(dim);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < c.groups; ++g)
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t xo = 0; xo < ow; ++xo) {
          for (int64_t ch = 0; ch < cg; ++ch)
            for (int64_t r = 0; r < c.k; ++r)
              for (int64_t s = 0; s < c.k; ++s) {
                const int64_t iy = y * c.stride - c.pad + r * c.dil, ix = xo * c.stride - c.pad + s * c.dil;
                const bool in = iy >= 0 && iy < c.h && ix >= 0 && ix < c.w;
                col[(ch * c.k + r) * c.k + s] = in ? x[((n * c.cin + g * cg + ch) * c.h + iy) * c.w + ix] : 0.f;
              }
          for (int64_t i = 0; i < dim; ++i)
            for (int64_t j = 0; j < dim; ++j) H[(g * dim + i) * dim + j] += static_cast<double>(col[i]) * col[j];
        }
  for (auto& v : H) v *= 2.0 / N;
  return H;
}

template <class A, class B>
double max_rel(const A& a, const B& b) {
  double scale = 0.0, worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(b[i]));
    worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst / (scale + 1e-30);
}

}  // namespace

TEST_CASE("conv Hessians equal (2/n) X X^T of the explicitly unfolded input", "[hessian]") {
  const ConvCase cases[] = {
      {"3x3 pad 1", 4, 6, 3, 1, 1, 1, 1, 7, 9},
      {"3x3 stride 2", 5, 4, 3, 2, 1, 1, 1, 9, 8},
      {"3x3 dilation 2 pad 2", 3, 4, 3, 1, 2, 2, 1, 8, 8},
      {"grouped (2)", 6, 4, 3, 1, 1, 1, 2, 7, 7},
      {"depthwise", 5, 5, 3, 2, 1, 1, 5, 9, 7},
      {"1x1 stride 2", 8, 3, 1, 2, 0, 1, 1, 7, 7},
      {"large (tiled) 40 channels 3x3", 40, 2, 3, 1, 1, 1, 1, 6, 6},  // dim 360: several tiles
  };
  for (const auto& c : cases) {
    INFO(c.what);
    Graph g = conv_graph(c);
    const PrunableLayer layer = conv_and_linear_layers(g).at(0);
    Tensor x = test::random_tensor({5, c.cin, c.h, c.w}, 42);
    HessianAccumulator acc(g, layer);
    acc.add(x);
    acc.finalize();
    const LayerHessian& h = acc.hessian();
    CHECK(h.groups == c.groups);
    CHECK(h.samples == 5);
    CHECK(max_rel(h.h, explicit_hessian(c, x)) < 1e-6);

    SECTION("batching changes nothing beyond rounding") {
      HessianAccumulator parts(g, layer);
      parts.add(x.slice0(0, 2));
      parts.add(x.slice0(2, 3));
      parts.add(x.slice0(3, 5));
      parts.finalize();
      CHECK(parts.hessian().samples == 5);
      CHECK(max_rel(parts.hessian().h, h.h) < 1e-6);
    }
  }
}

TEST_CASE("linear Hessians are (2/n) X^T X", "[hessian]") {
  Graph g;
  OpAttrs a;
  a.in_channels = 300;  // more than one tile
  a.out_channels = 3;
  g.add("fc", OpKind::Linear, a, {"input"});
  const PrunableLayer layer = conv_and_linear_layers(g).at(0);
  Tensor x = test::random_tensor({7, 300}, 3);
  HessianAccumulator acc(g, layer);
  acc.add(x);
  acc.finalize();
  std::vector<double> ref(300 * 300, 0.0);
  for (int64_t n = 0; n < 7; ++n)
    for (int64_t i = 0; i < 300; ++i)
      for (int64_t j = 0; j < 300; ++j) ref[i * 300 + j] += 2.0 / 7 * x[n * 300 + i] * x[n * 300 + j];
  CHECK(max_rel(acc.hessian().h, ref) < 1e-6);
  CHECK_THROWS(acc.add(Tensor::zeros({2, 299})));
}

TEST_CASE("syrk_lower_add: tiles and the split inner dimension agree with a plain product", "[hessian]") {
  for (int64_t n : {1, 17, 256, 257, 600}) {
    const int64_t k = 3000;
    Tensor a = test::random_tensor({n, k}, n);
    std::vector<double> c(n * n, 0.0);
    kernels::syrk_lower_add(n, k, a.data(), k, c.data());
    double worst = 0.0, scale = 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        if (j > i) {
          CHECK(c[i * n + j] == 0.0);  // upper triangle untouched
          continue;
        }
        double ref = 0.0;
        for (int64_t t = 0; t < k; ++t) ref += static_cast<double>(a[i * k + t]) * a[j * k + t];
        worst = std::max(worst, std::abs(ref - c[i * n + j]));
        scale = std::max(scale, std::abs(ref));
      }
    INFO("n " << n);
    CHECK(worst < 1e-5 * scale);
  }
  SECTION("same thread count, same bits") {
    Tensor a = test::random_tensor({100, 5000}, 1);
    std::vector<double> c1(100 * 100, 0.0), c2(100 * 100, 0.0);
    kernels::syrk_lower_add(100, 5000, a.data(), 5000, c1.data());
    kernels::syrk_lower_add(100, 5000, a.data(), 5000, c2.data());
    CHECK(c1 == c2);
  }
}

TEST_CASE("Hessians match PyTorch's nn.Unfold (golden)", "[hessian][golden]") {
  // tests/data/make_spade_golden.py: H = (2/n) sum U U^T with U = nn.Unfold(...)(x), per group.
  SafetensorsFile f(test::data_path("spade/hessian.golden.safetensors"));
  const nlohmann::json cases = nlohmann::json::parse(f.metadata().at("cases"));
  REQUIRE(cases.size() >= 6);
  for (const auto& c : cases) {
    const std::string name = c.at("name");
    INFO(name);
    Graph g;
    OpAttrs a;
    a.in_channels = c.at("in_channels");
    a.out_channels = c.at("groups").get<int64_t>() * 2;
    const bool linear = c.at("kind") == "linear";
    if (!linear) {
      a.kernel = {c.at("kernel")[0], c.at("kernel")[1]};
      a.stride = {c.at("stride")[0], c.at("stride")[1]};
      a.padding = {c.at("padding")[0], c.at("padding")[1]};
      a.dilation = {c.at("dilation")[0], c.at("dilation")[1]};
      a.groups = c.at("groups");
    }
    g.add("layer", linear ? OpKind::Linear : OpKind::Conv2d, a, {"input"});
    HessianAccumulator acc(g, conv_and_linear_layers(g).at(0));
    acc.add(f.tensor(name + ".X"));
    acc.finalize();
    Tensor expected = f.tensor(name + ".H");
    std::vector<double> ref(expected.data(), expected.data() + expected.numel());
    REQUIRE(acc.hessian().h.size() == ref.size());
    CHECK(max_rel(acc.hessian().h, ref) < 1e-6);
  }
}
