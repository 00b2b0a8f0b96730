// LIME and its parts: the weighted Lasso/Ridge against closed forms and the Lasso optimality
// conditions, quickshift/SLIC on synthetic images with known answers (and quickshift against a
// naive all-pairs transcription of skimage's algorithm), and LIME recovering the exact
// superpixel contributions of a linear model.
#include <catch2/catch.hpp>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "engine/error.h"
#include "engine/graph.h"
#include "interpret/sample_rng.h"
#include "interpret/saliency/lime.h"
#include "interpret/saliency/linear_fit.h"
#include "interpret/saliency/superpixels.h"
#include "support/test_support.h"

using spade::test::error_of;
using namespace spade;
using namespace spade::interp;

namespace {

// ---------------------------------------------------------------- regression helpers

RegressionData random_regression(int64_t n, int64_t p, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.1, 2.0);
  RegressionData d;
  d.rows = n;
  d.cols = p;
  d.x.resize(n * p);
  d.y.resize(n);
  d.weight.resize(n);
  std::vector<double> truth(p);
  for (int64_t j = 0; j < p; ++j) truth[j] = (j % 2 ? 0.05 : 1.5) * normal(rng);  // strong and weak features
  for (int64_t i = 0; i < n; ++i) {
    double yi = 0.7;
    for (int64_t j = 0; j < p; ++j) {
      d.x[i * p + j] = normal(rng);
      yi += truth[j] * d.x[i * p + j];
    }
    d.y[i] = yi + 0.3 * normal(rng);
    d.weight[i] = uniform(rng);
  }
  return d;
}

double residual(const RegressionData& d, const LinearFit& f, int64_t i) {
  double r = d.y[i] - f.intercept;
  for (int64_t j = 0; j < d.cols; ++j) r -= d.x[i * d.cols + j] * f.coef[j];
  return r;
}

// (1 / 2n) sum s_i r_i^2 + alpha |b|_1 with s = w * n / sum(w).
double lasso_objective(const RegressionData& d, const LinearFit& f, double alpha) {
  double wsum = 0.0;
  for (double w : d.weight) wsum += w;
  double obj = 0.0;
  for (int64_t i = 0; i < d.rows; ++i) {
    const double r = residual(d, f, i);
    obj += d.weight[i] * double(d.rows) / wsum * r * r;
  }
  obj /= 2.0 * double(d.rows);
  for (double b : f.coef) obj += alpha * std::fabs(b);
  return obj;
}

// ---------------------------------------------------------------- image helpers

// (H, W, 3) image of four flat colour blocks, one per quadrant.
std::vector<float> four_blocks(int64_t H, int64_t W, std::vector<int32_t>* block_of) {
  const float colours[4][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0, 0, 0}};
  std::vector<float> img(H * W * 3);
  block_of->resize(H * W);
  for (int64_t r = 0; r < H; ++r)
    for (int64_t c = 0; c < W; ++c) {
      const int b = int((r >= H / 2) * 2 + (c >= W / 2));
      (*block_of)[r * W + c] = b;
      for (int k = 0; k < 3; ++k) img[(r * W + c) * 3 + k] = colours[b][k];
    }
  return img;
}

// Smooth colour waves plus a little noise: a stand-in for a natural image.
std::vector<float> wavy_image(int64_t H, int64_t W, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-0.03f, 0.03f);
  std::vector<float> img(H * W * 3);
  for (int64_t r = 0; r < H; ++r)
    for (int64_t c = 0; c < W; ++c)
      for (int k = 0; k < 3; ++k) {
        const float v = 0.5f + 0.4f * std::sin(0.11f * r * (k + 1) + 0.07f * c * (3 - k)) + u(rng);
        img[(r * W + c) * 3 + k] = std::min(1.f, std::max(0.f, v));
      }
  return img;
}

// Whether two labelings are the same partition of the pixels.
bool same_partition(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  if (a.size() != b.size()) return false;
  std::map<int32_t, int32_t> ab, ba;
  for (size_t i = 0; i < a.size(); ++i) {
    if (ab.emplace(a[i], b[i]).first->second != b[i]) return false;
    if (ba.emplace(b[i], a[i]).first->second != a[i]) return false;
  }
  return true;
}

// Labels use exactly 0..count-1 and first appear in increasing order along the raster.
bool raster_ordered(const Segments& s) {
  int32_t next = 0;
  for (int32_t l : s.labels) {
    if (l < 0 || l > next) return false;
    if (l == next) ++next;
  }
  return next == s.count;
}

bool all_segments_connected(const Segments& s, int64_t H, int64_t W) {
  std::vector<int> seen(H * W, 0);
  std::set<int32_t> started;
  for (int64_t start = 0; start < H * W; ++start) {
    if (seen[start]) continue;
    const int32_t l = s.labels[start];
    if (!started.insert(l).second) return false;  // a second fragment of label l
    std::vector<int64_t> stack{start};
    seen[start] = 1;
    while (!stack.empty()) {
      const int64_t i = stack.back();
      stack.pop_back();
      const int64_t r = i / W, c = i % W;
      const int64_t nbr[4] = {c > 0 ? i - 1 : -1, c + 1 < W ? i + 1 : -1, r > 0 ? i - W : -1, r + 1 < H ? i + W : -1};
      for (int64_t j : nbr)
        if (j >= 0 && !seen[j] && s.labels[j] == l) {
          seen[j] = 1;
          stack.push_back(j);
        }
    }
  }
  return true;
}

// skimage's quickshift transcribed as plainly as possible: all pixel pairs, the window as a
// condition, the forest flattened by repeated parent[parent] (numpy's loop), and the labels
// by rank of the root index (np.unique).
std::vector<int32_t> naive_quickshift(const std::vector<float>& rgb, int64_t H, int64_t W, double kernel_size,
                                      double max_dist, double ratio) {
  const std::vector<double> lab = rgb_to_lab({rgb.data(), H, W});
  const int64_t n = H * W, half = int64_t(std::ceil(3 * kernel_size));
  auto dist2 = [&](int64_t i, int64_t j) {
    double d = 0;
    for (int k = 0; k < 3; ++k) d += std::pow(ratio * lab[3 * i + k] - ratio * lab[3 * j + k], 2);
    return d + std::pow(double(i / W - j / W), 2) + std::pow(double(i % W - j % W), 2);
  };
  auto in_window = [&](int64_t i, int64_t j) {
    return std::abs(i / W - j / W) <= half && std::abs(i % W - j % W) <= half;
  };
  std::vector<double> density(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j)
      if (in_window(i, j)) density[i] += std::exp(-dist2(i, j) / (2 * kernel_size * kernel_size));
    density[i] += 1e-5 * SampleRng(42, i).normal();
  }
  std::vector<int64_t> parent(n);
  for (int64_t i = 0; i < n; ++i) {
    double closest = 1e300;
    parent[i] = i;
    for (int64_t j = 0; j < n; ++j)
      if (in_window(i, j) && density[j] > density[i] && dist2(i, j) < closest) {
        closest = dist2(i, j);
        parent[i] = j;
      }
    if (std::sqrt(closest) > max_dist) parent[i] = i;
  }
  for (bool changed = true; changed;) {
    changed = false;
    std::vector<int64_t> next(n);
    for (int64_t i = 0; i < n; ++i) {
      next[i] = parent[parent[i]];
      changed |= next[i] != parent[i];
    }
    parent = next;
  }
  std::map<int64_t, int32_t> rank;
  for (int64_t i = 0; i < n; ++i) rank[parent[i]] = 0;
  int32_t k = 0;
  for (auto& [root, r] : rank) r = k++;
  std::vector<int32_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = rank[parent[i]];
  return labels;
}

// ---------------------------------------------------------------- network helpers

// input (C, H, W) -> flatten -> linear(classes): the target logit is linear in the pixels.
Graph linear_model(int64_t C, int64_t H, int64_t W, int64_t classes, uint64_t seed) {
  Graph g;
  g.input_chw = {C, H, W};
  g.add("flatten", OpKind::Flatten, OpAttrs{}, {"input"});
  OpAttrs fc;
  fc.in_channels = C * H * W;
  fc.out_channels = classes;
  fc.bias = true;
  g.add("fc", OpKind::Linear, fc, {"flatten"});
  Node& node = g.node(g.at("fc"));
  node.params["weight"] = test::random_tensor({classes, C * H * W}, seed);
  node.params["bias"] = test::random_tensor({classes}, seed + 1);
  return g;
}

// The exact contribution of each superpixel to logit[target]: sum over its pixels and channels
// of W[target, p] * x[p].
std::vector<double> segment_contributions(const Graph& g, const Tensor& x, int64_t target,
                                          const std::vector<int32_t>& seg, int64_t K) {
  const Tensor& w = g.node(g.at("fc")).params.at("weight");
  const int64_t per = x.numel(), plane = int64_t(seg.size());
  std::vector<double> e(K, 0.0);
  for (int64_t p = 0; p < per; ++p) e[seg[p % plane]] += double(w[target * per + p]) * double(x[p]);
  return e;
}

// An irregular segmentation of an 8 x 8 image into 6 labels.
std::vector<int32_t> irregular_segments() {
  std::vector<int32_t> seg(64);
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 8; ++c) seg[r * 8 + c] = ((r / 4) * 3 + (c * 3) / 8 + ((r * c) % 5 == 0 ? 1 : 0)) % 6;
  return seg;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

}  // namespace

// ================================================================ linear_fit

TEST_CASE("ridge equals the weighted normal equations with an unpenalised intercept", "[lime][linear_fit]") {
  const RegressionData d = random_regression(40, 5, 1);
  const double alpha = 0.7;
  const LinearFit f = fit_ridge(d, alpha);
  // [sum w, w'X; X'w, X'WX + alpha I] [c; b] = [w'y; X'Wy], solved without centring.
  const int64_t p = d.cols;
  Eigen::MatrixXd A = Eigen::MatrixXd::Zero(p + 1, p + 1);
  Eigen::VectorXd rhs = Eigen::VectorXd::Zero(p + 1);
  for (int64_t i = 0; i < d.rows; ++i) {
    Eigen::VectorXd row(p + 1);
    row[0] = 1.0;
    for (int64_t j = 0; j < p; ++j) row[j + 1] = d.x[i * p + j];
    A += d.weight[i] * row * row.transpose();
    rhs += d.weight[i] * d.y[i] * row;
  }
  for (int64_t j = 1; j <= p; ++j) A(j, j) += alpha;
  const Eigen::VectorXd sol = A.ldlt().solve(rhs);
  CHECK(f.intercept == Approx(sol[0]).epsilon(1e-10));
  for (int64_t j = 0; j < p; ++j) CHECK(f.coef[j] == Approx(sol[j + 1]).epsilon(1e-10).margin(1e-12));
}

TEST_CASE("ridge without a penalty on duplicated columns gives the minimum-norm solution", "[lime][linear_fit]") {
  RegressionData d = random_regression(30, 2, 2);
  // Append a copy of column 0: the least-squares solutions form a line; the shortest splits the
  // coefficient evenly between the copies.
  RegressionData dup = d;
  dup.cols = 3;
  dup.x.clear();
  for (int64_t i = 0; i < d.rows; ++i) {
    dup.x.push_back(d.x[i * 2]);
    dup.x.push_back(d.x[i * 2 + 1]);
    dup.x.push_back(d.x[i * 2]);
  }
  const LinearFit single = fit_ridge(d, 0.0), both = fit_ridge(dup, 0.0);
  CHECK(both.coef[0] == Approx(single.coef[0] / 2).epsilon(1e-9));
  CHECK(both.coef[2] == Approx(single.coef[0] / 2).epsilon(1e-9));
  CHECK(both.coef[1] == Approx(single.coef[1]).epsilon(1e-9));
  CHECK(both.intercept == Approx(single.intercept).epsilon(1e-9));
}

TEST_CASE("lasso meets its optimality (KKT) conditions", "[lime][linear_fit]") {
  const RegressionData d = random_regression(60, 8, 3);
  const double alpha = 0.08;
  const LinearFit f = fit_lasso(d, alpha, 1e-14, 100000);
  REQUIRE(f.converged);
  double wsum = 0.0;
  for (double w : d.weight) wsum += w;
  const double n = double(d.rows);
  int zeros = 0, nonzeros = 0;
  double intercept_grad = 0.0;
  for (int64_t i = 0; i < d.rows; ++i) intercept_grad += d.weight[i] * n / wsum * residual(d, f, i);
  CHECK(std::fabs(intercept_grad / n) < 1e-9);
  for (int64_t j = 0; j < d.cols; ++j) {
    double g = 0.0;  // -d/db_j of the smooth part
    for (int64_t i = 0; i < d.rows; ++i) g += d.weight[i] * n / wsum * d.x[i * d.cols + j] * residual(d, f, i);
    g /= n;
    INFO("feature " << j << " coef " << f.coef[j] << " gradient " << g);
    if (f.coef[j] != 0.0) {
      ++nonzeros;
      CHECK(std::fabs(g - alpha * (f.coef[j] > 0 ? 1.0 : -1.0)) < 1e-7);
    } else {
      ++zeros;
      CHECK(std::fabs(g) <= alpha + 1e-7);
    }
  }
  // The data were built so that alpha zeroes the weak features and keeps the strong ones.
  CHECK(zeros > 0);
  CHECK(nonzeros > 0);

  // sklearn's default stopping (tol 1e-4) lands within a hair of the optimum.
  const LinearFit loose = fit_lasso(d, alpha);
  CHECK(loose.converged);
  const double best = lasso_objective(d, f, alpha);
  CHECK(lasso_objective(d, loose, alpha) - best <= 1e-4 * best);
}

TEST_CASE("lasso rescales sample weights, so only their ratios matter", "[lime][linear_fit]") {
  RegressionData d = random_regression(50, 6, 4);
  const LinearFit a = fit_lasso(d, 0.05, 1e-14, 100000);
  for (double& w : d.weight) w *= 37.5;
  const LinearFit b = fit_lasso(d, 0.05, 1e-14, 100000);
  for (size_t j = 0; j < a.coef.size(); ++j) CHECK(b.coef[j] == Approx(a.coef[j]).margin(1e-9));
  CHECK(b.intercept == Approx(a.intercept).margin(1e-9));
}

TEST_CASE("lasso with a large alpha keeps only the weighted mean", "[lime][linear_fit]") {
  const RegressionData d = random_regression(25, 4, 5);
  const LinearFit f = fit_lasso(d, 1e3);
  double wy = 0.0, w = 0.0;
  for (int64_t i = 0; i < d.rows; ++i) {
    wy += d.weight[i] * d.y[i];
    w += d.weight[i];
  }
  for (double b : f.coef) CHECK(b == 0.0);
  CHECK(f.intercept == Approx(wy / w).epsilon(1e-12));
}

TEST_CASE("linear fits reject bad data with a message", "[lime][linear_fit]") {
  RegressionData d = random_regression(10, 2, 6);
  RegressionData neg = d;
  neg.weight[3] = -1.0;
  CHECK(error_of([&] { fit_lasso(neg, 0.1); }).find("sample weights must be finite and >= 0") != std::string::npos);
  RegressionData zero = d;
  std::fill(zero.weight.begin(), zero.weight.end(), 0.0);
  CHECK(error_of([&] { fit_ridge(zero, 0.1); }).find("all sample weights are zero") != std::string::npos);
  RegressionData bad = d;
  bad.y.pop_back();
  CHECK(error_of([&] { fit_ridge(bad, 0.1); }).find("sizes disagree") != std::string::npos);
  CHECK(error_of([&] { fit_lasso(d, -1.0); }).find("alpha must be") != std::string::npos);
}

// ================================================================ superpixels

TEST_CASE("rgb_to_lab gives the CIE Lab values of the sRGB primaries", "[lime][superpixels]") {
  // Published sRGB -> CIELAB (D65) values, e.g. those skimage.color.rgb2lab returns.
  const std::vector<float> rgb = {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0};
  const double want[5][3] = {
      {53.24, 80.09, 67.20}, {87.73, -86.18, 83.18}, {32.30, 79.19, -107.86}, {100.0, 0.0, 0.0}, {0.0, 0.0, 0.0}};
  const std::vector<double> lab = rgb_to_lab({rgb.data(), 1, 5});
  for (int i = 0; i < 5; ++i)
    for (int k = 0; k < 3; ++k) {
      INFO("colour " << i << " component " << k);
      CHECK(lab[3 * i + k] == Approx(want[i][k]).margin(0.02));
    }
}

TEST_CASE("quickshift finds exactly the blocks of a four-colour image", "[lime][superpixels]") {
  // With the `lime` package's parameters (max_dist 200 never cuts) a pixel is a root only when
  // no pixel of its 25 x 25 window is denser: 25 x 25 blocks have a single such pixel each,
  // their centre, and every other pixel has a denser neighbour of its own colour.
  std::vector<int32_t> blocks;
  const std::vector<float> img = four_blocks(50, 50, &blocks);
  const Segments s = quickshift({img.data(), 50, 50});
  CHECK(s.count == 4);
  CHECK(same_partition(s.labels, blocks));
  // Smaller blocks lie within each other's windows, so their modes link up, into one segment...
  std::vector<int32_t> small_blocks;
  const std::vector<float> small = four_blocks(24, 24, &small_blocks);
  CHECK(quickshift({small.data(), 24, 24}).count == 1);
  // ...unless max_dist cuts every link between colours.
  QuickshiftParams tight;
  tight.max_dist = 5.0;
  const Segments t = quickshift({small.data(), 24, 24}, tight);
  CHECK(t.count == 4);
  CHECK(same_partition(t.labels, small_blocks));
}

TEST_CASE("quickshift matches a naive all-pairs transcription of skimage's algorithm", "[lime][superpixels]") {
  for (const double max_dist : {3.0, 200.0}) {
    const int64_t H = 11, W = 13;
    const std::vector<float> img = wavy_image(H, W, 7);
    QuickshiftParams p;
    p.kernel_size = 1.5;
    p.max_dist = max_dist;
    p.ratio = 0.5;
    const Segments s = quickshift({img.data(), H, W}, p);
    const std::vector<int32_t> want = naive_quickshift(img, H, W, p.kernel_size, p.max_dist, p.ratio);
    INFO("max_dist " << max_dist << ", " << s.count << " segments");
    CHECK(s.labels == want);  // same partition and same (root-index) numbering
    if (max_dist < 10) CHECK(s.count > 1);  // cuts happen
    CHECK(s.count == 1 + *std::max_element(want.begin(), want.end()));
  }
  // A flat image: the noise alone orders the plateau's densities, and the denser neighbours
  // tie in distance, so the tie rule (first in raster order) decides the trees.
  const int64_t H = 16, W = 18;
  const std::vector<float> flat(H * W * 3, 0.4f);
  QuickshiftParams p;
  p.kernel_size = 1.0;
  const Segments s = quickshift({flat.data(), H, W}, p);
  CHECK(s.count > 1);
  CHECK(s.labels == naive_quickshift(flat, H, W, p.kernel_size, p.max_dist, p.ratio));
}

TEST_CASE("quickshift labels are 0..K-1, each used", "[lime][superpixels]") {
  const std::vector<float> img = wavy_image(40, 56, 8);
  const Segments s = quickshift({img.data(), 40, 56});
  REQUIRE(s.labels.size() == size_t(40 * 56));
  std::vector<int> used(s.count, 0);
  for (int32_t l : s.labels) {
    REQUIRE(l >= 0);
    REQUIRE(l < s.count);
    used[l] = 1;
  }
  CHECK(std::count(used.begin(), used.end(), 1) == s.count);
}

TEST_CASE("slic returns connected segments, about n_segments of them", "[lime][superpixels]") {
  for (const int64_t n : {16, 50}) {
    const int64_t H = 96, W = 80;
    const std::vector<float> img = wavy_image(H, W, 9);
    SlicParams p;
    p.n_segments = n;
    const Segments s = slic({img.data(), H, W}, p);
    INFO("n_segments " << n << " -> " << s.count);
    CHECK(s.count >= n / 2);
    CHECK(s.count <= 3 * n / 2);
    CHECK(raster_ordered(s));
    CHECK(all_segments_connected(s, H, W));
  }
  // Four flat blocks and four segments wanted: the blocks.
  std::vector<int32_t> blocks;
  const std::vector<float> img = four_blocks(32, 32, &blocks);
  SlicParams four;
  four.n_segments = 4;
  const Segments s = slic({img.data(), 32, 32}, four);
  CHECK(s.count == 4);
  CHECK(same_partition(s.labels, blocks));
}

TEST_CASE("segmentations reject bad input", "[lime][superpixels]") {
  std::vector<float> img = wavy_image(8, 8, 1);
  QuickshiftParams small;
  small.kernel_size = 0.5;
  CHECK(error_of([&] { quickshift({img.data(), 8, 8}, small); }).find("kernel_size") != std::string::npos);
  SlicParams none;
  none.n_segments = 0;
  CHECK(error_of([&] { slic({img.data(), 8, 8}, none); }).find("n_segments") != std::string::npos);
  img[5] = std::nanf("");
  CHECK(error_of([&] { quickshift({img.data(), 8, 8}); }).find("NaN") != std::string::npos);
  CHECK(error_of([&] { slic({nullptr, 0, 8}); }).find("empty image") != std::string::npos);
}

// ================================================================ LIME

TEST_CASE("lime samples and similarities follow Captum and the lime package", "[lime]") {
  MethodParams captum;
  MethodParams package;
  package.kernel_sqrt = true;
  package.kernel_width = 0.25;
  CHECK(lime_sample(package, 0, 30) == std::vector<uint8_t>(30, 1));
  double on = 0;
  for (int64_t s = 0; s < 400; ++s)
    for (uint8_t v : lime_sample(captum, s, 10)) on += v;
  CHECK(on / 4000.0 == Approx(0.5).margin(0.03));
  CHECK(lime_sample(captum, 0, 30) != std::vector<uint8_t>(30, 1));

  // lime package: cosine distance in z space, sqrt of the exponential kernel.
  const std::vector<double> unused(4, 1.0);
  CHECK(lime_similarity(package, {1, 1, 1, 1}, unused) == Approx(1.0));
  const double d = 1.0 - 2.0 / (std::sqrt(2.0) * 2.0);
  CHECK(lime_similarity(package, {1, 0, 1, 0}, unused) == Approx(std::sqrt(std::exp(-d * d / 0.0625))));
  CHECK(lime_similarity(package, {0, 0, 0, 0}, unused) == Approx(std::sqrt(std::exp(-1.0 / 0.0625))));
  // Captum: cosine between x and the perturbed x (energies 1 and 3: cos = sqrt(1/4)), exp(-d^2/2w^2).
  CHECK(lime_similarity(captum, {1, 0}, {1.0, 3.0}) == Approx(std::exp(-0.25 / 2.0)));
  MethodParams wide = captum;
  wide.kernel_width = 2.0;
  CHECK(lime_similarity(wide, {1, 0}, {1.0, 3.0}) == Approx(std::exp(-0.25 / 8.0)));
  CHECK(lime_similarity(captum, {0, 0}, {1.0, 3.0}) == Approx(std::exp(-0.5)));
}

TEST_CASE("lime recovers the superpixel contributions of a linear model", "[lime]") {
  const Graph g = linear_model(3, 8, 8, 2, 11);
  const Network net{g, nullptr, 16};
  const Tensor x = test::random_tensor({1, 3, 8, 8}, 12);
  const std::vector<int32_t> seg = irregular_segments();
  const int64_t K = 6, target = 1;
  const std::vector<double> want = segment_contributions(g, x, target, seg, K);
  REQUIRE(*std::min_element(want.begin(), want.end()) < 0.0);  // so "positives only" is tested
  REQUIRE(*std::max_element(want.begin(), want.end()) > 0.0);
  const double bias = g.node(g.at("fc")).params.at("bias")[target];
  const double scale = max_abs(want);

  MethodParams ridge;
  ridge.regression = "ridge";
  ridge.regression_alpha = 1e-6;
  ridge.samples = 200;
  MethodParams package = ridge;  // the lime package's kernel and forced first sample
  package.kernel_sqrt = true;
  package.kernel_width = 0.25;
  for (const MethodParams* p : {&ridge, &package}) {
    const LimeSurrogate fit = lime_surrogate(net, x, target, seg, K, *p);
    for (int64_t k = 0; k < K; ++k) {
      INFO("segment " << k << " kernel_sqrt " << p->kernel_sqrt);
      CHECK(std::fabs(fit.weights[k] - want[k]) <= 1e-4 * scale);
    }
    CHECK(fit.intercept == Approx(bias).margin(1e-4 * scale));
  }

  // Lasso (Captum's default surrogate) with a small alpha: shrunk by about alpha / var(z) = 4 alpha.
  MethodParams lasso;
  lasso.regression_alpha = 1e-4;
  lasso.samples = 200;
  const LimeSurrogate fit = lime_surrogate(net, x, target, seg, K, lasso);
  for (int64_t k = 0; k < K; ++k) CHECK(std::fabs(fit.weights[k] - want[k]) <= 2e-3);

  // The map: each pixel, every channel, the positive part of its superpixel's weight.
  const Tensor map = lime_with_segments(net, x, target, seg, K, ridge);
  REQUIRE(map.shape() == x.shape());
  for (int64_t i = 0; i < map.numel(); ++i) {
    const double w = want[seg[i % 64]];
    CHECK(map[i] >= 0.f);
    CHECK(std::fabs(map[i] - std::max(w, 0.0)) <= 1e-4 * scale);
  }
}

TEST_CASE("lime does not depend on the batch size", "[lime]") {
  const Graph g = linear_model(3, 8, 8, 3, 21);
  const Tensor x = test::random_tensor({1, 3, 8, 8}, 22);
  const std::vector<int32_t> seg = irregular_segments();
  MethodParams p;
  p.samples = 37;
  p.seed = 5;
  const Tensor ref = lime_with_segments(Network{g, nullptr, 1}, x, 2, seg, 6, p);
  for (const int64_t batch : {3, 16, 64}) {
    const Tensor other = lime_with_segments(Network{g, nullptr, batch}, x, 2, seg, 6, p);
    INFO("batch " << batch);
    CHECK(test::max_rel_error(other, ref) < 1e-6);
  }
  // A different seed draws different samples.
  MethodParams q = p;
  q.seed = 6;
  const LimeSurrogate a = lime_surrogate(Network{g, nullptr, 4}, x, 2, seg, 6, p);
  const LimeSurrogate b = lime_surrogate(Network{g, nullptr, 4}, x, 2, seg, 6, q);
  CHECK(a.weights != b.weights);
}

TEST_CASE("lime segments the displayable image and explains each image on its own", "[lime]") {
  const int64_t H = 20, W = 24;
  const Graph g = linear_model(3, H, W, 2, 31);
  // Two images in normalised space whose displayable versions are a wavy picture.
  MethodParams p;
  p.samples = 30;
  p.segmentation = "quickshift";
  Tensor x({2, 3, H, W});
  for (int64_t n = 0; n < 2; ++n) {
    const std::vector<float> rgb = wavy_image(H, W, 40 + n);
    for (int64_t ch = 0; ch < 3; ++ch)
      for (int64_t i = 0; i < H * W; ++i) x[(n * 3 + ch) * H * W + i] = (rgb[3 * i + ch] - p.mean[ch]) / p.std[ch];
  }
  std::vector<std::pair<int64_t, int64_t>> calls;
  p.progress = [&](int64_t done, int64_t total) { calls.emplace_back(done, total); };
  const Tensor map = lime(Network{g, nullptr, 8}, x, 1, p);
  REQUIRE(map.shape() == x.shape());
  REQUIRE(!calls.empty());
  CHECK(calls.back() == std::make_pair(int64_t(60), int64_t(60)));
  p.progress = nullptr;
  for (int64_t n = 0; n < 2; ++n) {
    // The same wavy image, segmented directly with the `lime` package's quickshift parameters.
    const std::vector<float> rgb = wavy_image(H, W, 40 + n);
    std::vector<float> shown(rgb.size());
    for (int64_t i = 0; i < H * W; ++i)
      for (int64_t ch = 0; ch < 3; ++ch) {
        const float v = x[(n * 3 + ch) * H * W + i] * p.std[ch] + p.mean[ch];
        shown[3 * i + ch] = std::min(1.f, std::max(0.f, v));
      }
    const Segments seg = quickshift({shown.data(), H, W});
    const Tensor xn = x.slice0(n, n + 1);
    const Tensor one = lime_with_segments(Network{g, nullptr, 8}, xn, 1, seg.labels, seg.count, p);
    CHECK(test::max_abs_error(map.slice0(n, n + 1), one) == 0.0);
  }
  MethodParams s = p;
  s.segmentation = "slic";
  s.slic_segments = 6;
  const Tensor slic_map = lime(Network{g, nullptr, 8}, x.slice0(0, 1), 1, s);
  for (int64_t i = 0; i < slic_map.numel(); ++i) REQUIRE(slic_map[i] >= 0.f);
}

TEST_CASE("lime rejects bad arguments with a message", "[lime]") {
  const Graph g = linear_model(3, 8, 8, 2, 41);
  const Network net{g, nullptr, 4};
  const Tensor x = test::random_tensor({1, 3, 8, 8}, 42);
  const std::vector<int32_t> seg = irregular_segments();
  MethodParams p;
  MethodParams bad = p;
  bad.regression = "elasticnet";
  CHECK(error_of([&] { lime_with_segments(net, x, 0, seg, 6, bad); }).find("unknown regression") != std::string::npos);
  bad = p;
  bad.segmentation = "felzenszwalb";
  CHECK(error_of([&] { lime(net, x, 0, bad); }).find("unknown segmentation") != std::string::npos);
  CHECK(error_of([&] { lime_with_segments(net, x, 0, std::vector<int32_t>(10, 0), 1, p); }).find("labels for") !=
        std::string::npos);
  CHECK(error_of([&] { lime_with_segments(net, x, 0, seg, 3, p); }).find("outside [0, 3)") != std::string::npos);
  CHECK(error_of([&] { lime_with_segments(net, x, 5, seg, 6, p); }).find("out of range") != std::string::npos);
  bad = p;
  bad.samples = 0;
  CHECK(error_of([&] { lime_with_segments(net, x, 0, seg, 6, bad); }).find("samples") != std::string::npos);
  const Graph gray = linear_model(1, 8, 8, 2, 43);
  CHECK(error_of([&] { lime(Network{gray, nullptr, 4}, test::random_tensor({1, 1, 8, 8}, 44), 0, p); })
            .find("RGB") != std::string::npos);
}
