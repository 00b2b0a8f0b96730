// The FastSPADE layer solver (kernels/cpu/sparsegpt) against a plain column-by-column
// re-implementation of SPADE.md 2.3 in float64, against the authors' algorithm run by PyTorch
// (tests/data/make_spade_golden.py), and against magnitude pruning.
#include <catch2/catch.hpp>

#include <Eigen/Dense>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "formats/safetensors.h"
#include "kernels/cpu/sparsegpt.h"
#include "support/test_support.h"

using namespace spade;
using Mat = Eigen::MatrixXd;

namespace {

// H = (2/n) X X^T from n random samples with correlated features.
Mat random_hessian(int64_t cols, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N01;
  Mat mix(cols, cols), x(cols, n);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) mix(i, j) = (i == j ? 1.0 : 0.3 * N01(rng));
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < n; ++j) x(i, j) = N01(rng);
  Mat xs = mix * x;
  return 2.0 / n * xs * xs.transpose();
}

std::vector<float> random_weights(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> N01;
  std::vector<float> w(rows * cols);
  for (auto& v : w) v = N01(rng);
  return w;
}

std::vector<double> row_major(const Mat& m) {
  std::vector<double> out(m.size());
  for (int64_t i = 0; i < m.rows(); ++i)
    for (int64_t j = 0; j < m.cols(); ++j) out[i * m.cols() + j] = m(i, j);
  return out;
}

// SPADE.md 2.3 written out directly: explicit inverse, upper Cholesky of it, one column at a
// time with the update applied to every later column immediately (no lazy blocks).
std::vector<double> reference_sparsegpt(const std::vector<float>& w0, int64_t rows, int64_t cols, Mat H,
                                        int64_t bs, double s) {
  Mat W(rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) W(r, j) = w0[r * cols + j];
  for (int64_t j = 0; j < cols; ++j)
    if (H(j, j) == 0) {
      H(j, j) = 1;
      W.col(j).setZero();
    }
  H.diagonal().array() += 0.01 * H.diagonal().mean();
  Mat Hinv = H.inverse();
  Mat U = Hinv.llt().matrixU();
  std::vector<char> mask(rows * cols, 0);
  for (int64_t i = 0; i < cols; ++i) {
    if (i % bs == 0) {
      const int64_t width = std::min(bs, cols - i);
      std::vector<std::pair<double, int64_t>> scores;  // (score, position in the block)
      for (int64_t k = 0; k < width; ++k)
        for (int64_t r = 0; r < rows; ++r)
          scores.push_back({W(r, i + k) * W(r, i + k) / (U(i + k, i + k) * U(i + k, i + k)), k * rows + r});
      std::sort(scores.begin(), scores.end());
      const int64_t count = std::llround(scores.size() * s);
      for (int64_t c = 0; c < count; ++c) {
        const int64_t k = scores[c].second / rows, r = scores[c].second % rows;
        mask[r * cols + i + k] = 1;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const double q = mask[r * cols + i] ? 0.0 : W(r, i);
      const double err = (W(r, i) - q) / U(i, i);
      for (int64_t k = i; k < cols; ++k) W(r, k) -= err * U(i, k);
      W(r, i) = q;
    }
  }
  std::vector<double> out(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) out[r * cols + j] = W(r, j);
  return out;
}

double recon_error(const std::vector<float>& dense, const std::vector<float>& pruned, int64_t rows, int64_t cols,
                   const Mat& H) {
  double e = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    Eigen::VectorXd d(cols);
    for (int64_t j = 0; j < cols; ++j) d(j) = dense[r * cols + j] - pruned[r * cols + j];
    e += d.dot(H * d);
  }
  return e;
}

}  // namespace

TEST_CASE("sparsegpt equals the plain column-by-column algorithm", "[sparsegpt]") {
  struct Case {
    int64_t rows, cols, bs;
    double s;
  };
  // cols > 128 crosses the lazy-block boundary; 9-column blocks like 3x3 convs.
  for (Case c : {Case{7, 12, 1, 0.5}, Case{6, 36, 9, 0.5}, Case{5, 45, 9, 0.9}, Case{4, 300, 9, 0.7},
                 Case{3, 200, 1, 0.25}, Case{8, 18, 9, 0.0}}) {
    INFO("rows " << c.rows << " cols " << c.cols << " blocksize " << c.bs << " sparsity " << c.s);
    Mat H = random_hessian(c.cols, 4 * c.cols, c.cols * 31 + c.rows);
    std::vector<float> w = random_weights(c.rows, c.cols, c.cols + 7);
    std::vector<double> ref = reference_sparsegpt(w, c.rows, c.cols, H, c.bs, c.s);
    std::vector<double> h = row_major(H);
    kernels::SparseGptOptions opt;
    opt.blocksize = c.bs;
    opt.sparsity = c.s;
    kernels::SparseGptStats st = kernels::sparsegpt_prune(w.data(), c.rows, c.cols, h.data(), opt);
    REQUIRE(st.ok);
    double scale = 0.0, worst = 0.0;
    int64_t mask_diff = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      scale = std::max(scale, std::abs(ref[i]));
      worst = std::max(worst, std::abs(ref[i] - w[i]));
      mask_diff += (ref[i] == 0.0) != (w[i] == 0.f);
    }
    CHECK(mask_diff == 0);
    CHECK(worst <= 1e-4 * scale);
    // The loss it reports is the reconstruction error it caused.
    std::vector<float> dense = random_weights(c.rows, c.cols, c.cols + 7);
    const double direct = recon_error(dense, w, c.rows, c.cols, H);
    CHECK(st.loss == Approx(direct).epsilon(1e-3).margin(1e-9));
  }
}

TEST_CASE("sparsegpt prunes exactly the target in every block", "[sparsegpt]") {
  const int64_t rows = 10, cols = 9 * 12;
  Mat H = random_hessian(cols, 400, 5);
  std::vector<double> h = row_major(H);
  for (double s : {0.1, 0.5, 0.9, 1.0}) {
    std::vector<float> w = random_weights(rows, cols, 11);
    kernels::SparseGptOptions opt;
    opt.blocksize = 9;
    opt.sparsity = s;
    REQUIRE(kernels::sparsegpt_prune(w.data(), rows, cols, h.data(), opt).ok);
    for (int64_t b = 0; b < cols / 9; ++b) {
      int64_t zeros = 0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < 9; ++k) zeros += w[r * cols + b * 9 + k] == 0.f;
      CHECK(zeros == std::llround(rows * 9 * s));
    }
  }
  SECTION("the authors' threshold prunes one more per block, even at 0") {
    std::vector<float> w = random_weights(rows, cols, 11);
    kernels::SparseGptOptions opt;
    opt.blocksize = 9;
    opt.sparsity = 0.0;
    opt.authors_threshold = true;
    REQUIRE(kernels::sparsegpt_prune(w.data(), rows, cols, h.data(), opt).ok);
    CHECK(std::count(w.begin(), w.end(), 0.f) == cols / 9);
  }
}

TEST_CASE("sparsegpt beats magnitude pruning on the layer's reconstruction error", "[sparsegpt]") {
  const int64_t rows = 16, cols = 64;
  Mat H = random_hessian(cols, 300, 77);
  std::vector<double> h = row_major(H);
  const std::vector<float> dense = random_weights(rows, cols, 3);
  std::vector<float> w = dense;
  kernels::SparseGptOptions opt;
  opt.sparsity = 0.5;
  REQUIRE(kernels::sparsegpt_prune(w.data(), rows, cols, h.data(), opt).ok);
  // Magnitude pruning with the same per-column counts (blocksize 1: half of each column).
  std::vector<float> mag = dense;
  for (int64_t j = 0; j < cols; ++j) {
    std::vector<int64_t> idx(rows);
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(),
              [&](int64_t a, int64_t b) { return std::abs(dense[a * cols + j]) < std::abs(dense[b * cols + j]); });
    for (int64_t k = 0; k < rows / 2; ++k) mag[idx[k] * cols + j] = 0.f;
  }
  const double e_sgpt = recon_error(dense, w, rows, cols, H), e_mag = recon_error(dense, mag, rows, cols, H);
  INFO("sparsegpt " << e_sgpt << " magnitude " << e_mag);
  CHECK(e_sgpt < 0.8 * e_mag);
}

TEST_CASE("sparsegpt: dead columns, damping retries and hopeless Hessians", "[sparsegpt]") {
  const int64_t rows = 4, cols = 10;
  Mat H = random_hessian(cols, 200, 9);
  H.row(3).setZero();
  H.col(3).setZero();
  std::vector<double> h = row_major(H);
  std::vector<float> w = random_weights(rows, cols, 1);
  kernels::SparseGptOptions opt;
  opt.sparsity = 0.25;
  kernels::SparseGptStats st = kernels::sparsegpt_prune(w.data(), rows, cols, h.data(), opt);
  REQUIRE(st.ok);
  CHECK(st.dead_columns == 1);
  for (int64_t r = 0; r < rows; ++r) CHECK(w[r * cols + 3] == 0.f);

  SECTION("an indefinite Hessian gets more damping") {
    Mat bad = random_hessian(cols, 200, 9);
    bad(0, 0) = 0.5 * bad(0, 0);
    bad(0, 1) = bad(1, 0) = 3.0 * std::sqrt(bad(0, 0) * bad(1, 1));  // |corr| > 1
    std::vector<double> hb = row_major(bad);
    std::vector<float> wb = random_weights(rows, cols, 2);
    kernels::SparseGptStats sb = kernels::sparsegpt_prune(wb.data(), rows, cols, hb.data(), opt);
    REQUIRE(sb.ok);
    CHECK(sb.retries > 0);
    CHECK(sb.damping > 0.01 * bad.diagonal().mean());
    for (float v : wb) CHECK(std::isfinite(v));
  }
  SECTION("a NaN Hessian is refused and the weights are left alone") {
    h[5] = std::nan("");
    std::vector<float> wn = random_weights(rows, cols, 3), before = wn;
    CHECK_FALSE(kernels::sparsegpt_prune(wn.data(), rows, cols, h.data(), opt).ok);
    CHECK(wn == before);
  }
}

TEST_CASE("inverse_upper_cholesky gives U with U^T U = A^-1", "[sparsegpt]") {
  for (int64_t n : {1, 5, 64, 65, 200}) {
    Mat A = random_hessian(n, 3 * n + 5, n);
    std::vector<float> a(n * n), u(n * n);
    for (int64_t i = 0; i < n * n; ++i) a[i] = static_cast<float>(A(i / n, i % n));
    REQUIRE(kernels::inverse_upper_cholesky(n, a.data(), u.data()));
    Mat U(n, n);
    for (int64_t i = 0; i < n * n; ++i) U(i / n, i % n) = u[i];
    CHECK(U.triangularView<Eigen::StrictlyLower>().toDenseMatrix().cwiseAbs().maxCoeff() == 0.0);
    const double err = (U.transpose() * U * A - Mat::Identity(n, n)).cwiseAbs().maxCoeff();
    // The float32 accuracy to expect for this A: the authors' route (inverse, then Cholesky)
    // done in float32 by Eigen.
    Eigen::MatrixXf Af = A.cast<float>();
    Eigen::MatrixXf Uf = Eigen::MatrixXf(Af.inverse()).llt().matrixU();
    const double ref = (Uf.cast<double>().transpose() * Uf.cast<double>() * A - Mat::Identity(n, n)).cwiseAbs().maxCoeff();
    INFO("n " << n << " max |U^T U A - I| " << err << ", float32 inverse-then-Cholesky " << ref);
    CHECK(err <= 3 * ref + 1e-6);
  }
}

TEST_CASE("sparsegpt with the authors' threshold reproduces their PyTorch code", "[sparsegpt][golden]") {
  // tests/data/make_spade_golden.py runs SparseGPT's fasterprune as SPADE calls it.
  SafetensorsFile f(test::data_path("spade/sparsegpt.golden.safetensors"));
  const nlohmann::json cases = nlohmann::json::parse(f.metadata().at("cases"));
  REQUIRE(cases.size() >= 6);
  for (const auto& c : cases) {
    const std::string name = c.at("name");
    INFO(name);
    const int64_t rows = c.at("rows"), cols = c.at("cols");
    Tensor W = f.tensor(name + ".W"), Hf = f.tensor(name + ".H"), expected = f.tensor(name + ".W_pruned");
    std::vector<double> H(Hf.data(), Hf.data() + Hf.numel());
    std::vector<float> w = W.to_vector();
    kernels::SparseGptOptions opt;
    opt.blocksize = c.at("blocksize");
    opt.sparsity = c.at("sparsity");
    opt.percdamp = c.at("percdamp");
    opt.authors_threshold = true;
    kernels::SparseGptStats st = kernels::sparsegpt_prune(w.data(), rows, cols, H.data(), opt);
    REQUIRE(st.ok);
    CHECK(st.dead_columns == static_cast<int64_t>(c.at("dead_columns").size()));
    int64_t zeros = 0, mask_diff = 0;
    double worst = 0.0, scale = 0.0;
    for (int64_t i = 0; i < rows * cols; ++i) {
      zeros += w[i] == 0.f;
      mask_diff += (w[i] == 0.f) != (expected[i] == 0.f);
      worst = std::max(worst, static_cast<double>(std::abs(w[i] - expected[i])));
      scale = std::max(scale, static_cast<double>(std::abs(expected[i])));
    }
    CHECK(zeros == c.at("zeros").get<int64_t>());
    CHECK(mask_diff == 0);
    // Both run in float32 but factor H by different routes (theirs: Cholesky, inverse, Cholesky).
    CHECK(worst <= 1e-4 * scale);
  }
}
