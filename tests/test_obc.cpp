// Exact greedy OBS (OBC): against an exhaustive greedy written plainly here, the loss bookkeeping,
// dead columns and damping, thread-count independence, and a sanity comparison with magnitude
// pruning.
#include <catch2/catch.hpp>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/obc.h"
#include "kernels/cpu/parallel.h"
#include "support/test_support.h"

using namespace spade;
using kernels::ObcOptions;
using kernels::ObcStats;

namespace {

using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;

struct Layer {
  int64_t rows = 0, cols = 0;
  std::vector<float> W;   // rows x cols
  std::vector<double> H;  // cols x cols, row-major
};

// H = X X^T / samples + ridge, with X's rows mixed so that the columns are correlated.
std::vector<double> random_hessian(int64_t n, uint64_t seed, double ridge = 1e-2) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  const int64_t samples = 2 * n + 8;
  Mat Z(n, samples), A(n, n);
  for (int64_t i = 0; i < Z.size(); ++i) Z.data()[i] = g(rng);
  for (int64_t i = 0; i < A.size(); ++i) A.data()[i] = g(rng) * 0.4;
  A.diagonal().array() += 1.0;
  Mat X = A * Z;
  Mat H = X * X.transpose() / double(samples);
  H.diagonal().array() += ridge;
  std::vector<double> out(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) out[i * n + j] = 0.5 * (H(i, j) + H(j, i));  // exactly symmetric
  return out;
}

Layer random_layer(int64_t rows, int64_t cols, uint64_t seed) {
  Layer l;
  l.rows = rows;
  l.cols = cols;
  std::mt19937_64 rng(seed * 7 + 1);
  std::normal_distribution<float> g(0.f, 1.f);
  l.W.resize(rows * cols);
  for (float& v : l.W) v = g(rng);
  l.H = random_hessian(cols, seed);
  return l;
}

Mat to_mat(const std::vector<double>& H, int64_t n) {
  Mat m(n, n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) m(i, j) = H[i * n + j];
  return m;
}

Vec row_of(const std::vector<float>& W, int64_t cols, int64_t i) {
  Vec w(cols);
  for (int64_t j = 0; j < cols; ++j) w[j] = W[i * cols + j];
  return w;
}

// dw H dw^T summed over rows, with dw = after - before.
double reconstruction_error(const std::vector<float>& before, const std::vector<float>& after, const Mat& H,
                            int64_t rows, int64_t cols) {
  double e = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const Vec dw = row_of(after, cols, i) - row_of(before, cols, i);
    e += dw.dot(H * dw);
  }
  return e;
}

int64_t expected_count(int64_t total, double sparsity) {
  return static_cast<int64_t>(std::ceil(static_cast<double>(total) * sparsity - 1e-9));
}

// The least-squares optimum of one row with the columns in `zero` forced to 0:
// min (w' - w) H (w' - w)^T, solved directly on the kept columns.
Vec least_squares(const Vec& w, const Mat& H, const std::vector<char>& zero) {
  const int64_t n = w.size();
  std::vector<int64_t> F, S;
  for (int64_t j = 0; j < n; ++j) (zero[j] ? S : F).push_back(j);
  Vec out = Vec::Zero(n);
  if (F.empty()) return out;
  Vec wS(S.size());
  for (size_t s = 0; s < S.size(); ++s) wS[s] = w[S[s]];
  Vec wF(F.size());
  for (size_t f = 0; f < F.size(); ++f) wF[f] = w[F[f]];
  const Vec x = wF + Mat(H(F, F)).partialPivLu().solve(Mat(H(F, S)) * wS);
  for (size_t f = 0; f < F.size(); ++f) out[F[f]] = x[f];
  return out;
}

// A row's greedy removal: the weights after every step and the loss of every step.
struct Trace {
  std::vector<Vec> weights;  // weights[k]: after k steps
  std::vector<double> loss;  // loss[k]: of step k
};

// Exhaustive greedy: every step tries every remaining block, solving from scratch, and keeps the
// cheapest (lowest block index on ties).
Trace exhaustive_greedy(const Vec& w, const Mat& H, int64_t block) {
  const int64_t n = w.size(), nb = n / block;
  Trace t;
  t.weights.push_back(w);
  std::vector<char> zero(n, 0), taken(nb, 0);
  double err = 0;
  for (int64_t step = 0; step < nb; ++step) {
    int64_t best = -1;
    double best_err = 0;
    Vec best_w;
    for (int64_t b = 0; b < nb; ++b) {
      if (taken[b]) continue;
      std::vector<char> z = zero;
      for (int64_t c = 0; c < block; ++c) z[b * block + c] = 1;
      const Vec wb = least_squares(w, H, z);
      const double e = (wb - w).dot(H * (wb - w));
      if (best < 0 || e < best_err) best = b, best_err = e, best_w = wb;
    }
    taken[best] = 1;
    for (int64_t c = 0; c < block; ++c) zero[best * block + c] = 1;
    t.weights.push_back(best_w);
    t.loss.push_back(best_err - err);
    err = best_err;
  }
  return t;
}

// Textbook sequential OBS: full H^-1, the block update formulas applied one step after another.
Trace sequential_obs(const Vec& w0, const Mat& H, int64_t block) {
  const int64_t n = w0.size(), nb = n / block;
  Mat Hinv = H.inverse();
  Vec w = w0;
  std::vector<char> taken(nb, 0);
  Trace t;
  t.weights.push_back(w);
  for (int64_t step = 0; step < nb; ++step) {
    int64_t best = -1;
    double best_loss = 0;
    for (int64_t b = 0; b < nb; ++b) {
      if (taken[b]) continue;
      const Vec wb = w.segment(b * block, block);
      const double l = wb.dot(Hinv.block(b * block, b * block, block, block).inverse() * wb);
      if (best < 0 || l < best_loss) best = b, best_loss = l;
    }
    const int64_t b0 = best * block;
    const Mat Minv = Hinv.block(b0, b0, block, block).inverse();
    const Mat col = Hinv.middleCols(b0, block);
    w -= col * (Minv * w.segment(b0, block));
    w.segment(b0, block).setZero();
    Hinv -= col * Minv * col.transpose();
    taken[best] = 1;
    t.weights.push_back(w);
    t.loss.push_back(best_loss);
  }
  return t;
}

struct Reference {
  std::vector<double> W;  // rows x cols
  double loss = 0;
  int64_t removed = 0;
};

// Global allocation over the traces, as obc.h describes: the `count` cheapest steps of the
// layer (ties by row, then step), each row at its own count.
Reference allocate(const std::vector<Trace>& traces, int64_t cols, int64_t block, double sparsity) {
  const int64_t rows = traces.size(), nb = cols / block;
  struct Step {
    double loss;
    int64_t row, step;
  };
  std::vector<Step> all;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0; k < nb; ++k) all.push_back({traces[i].loss[k], i, k});
  std::sort(all.begin(), all.end(), [](const Step& a, const Step& b) {
    if (a.loss != b.loss) return a.loss < b.loss;
    return a.row != b.row ? a.row < b.row : a.step < b.step;
  });
  const int64_t count = expected_count(rows * nb, sparsity);
  std::vector<int64_t> r(rows, 0);
  for (int64_t c = 0; c < count; ++c) ++r[all[c].row];
  Reference ref;
  ref.W.resize(rows * cols);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) ref.W[i * cols + j] = traces[i].weights[r[i]][j];
    for (int64_t k = 0; k < r[i]; ++k) ref.loss += traces[i].loss[k];
    ref.removed += r[i];
  }
  return ref;
}

// max over elements of |got - want| beyond float rounding of want, relative to max |want|.
double excess_error(const std::vector<float>& got, const std::vector<double>& want) {
  double scale = 1e-300, worst = 0;
  for (double v : want) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < got.size(); ++i) {
    const double rounding = std::fabs(want[i]) * std::ldexp(1.0, -23);
    worst = std::max(worst, std::max(0.0, std::fabs(double(got[i]) - want[i]) - rounding));
  }
  return worst / scale;
}

ObcStats prune(Layer& l, int64_t block, double sparsity) {
  ObcOptions opt;
  opt.block = block;
  opt.sparsity = sparsity;
  return kernels::obc_prune(l.W.data(), l.rows, l.cols, l.H.data(), opt);
}


}  // namespace

TEST_CASE("the sequential OBS updates reproduce the exhaustive greedy", "[obc]") {
  // Checks the test's own references against each other: the greedy trace's weights after k steps
  // are the least-squares optimum with those k blocks zeroed, which obc_prune relies on.
  for (int64_t block : {1, 2, 3}) {
    const Layer l = random_layer(2, 12, 10 + block);
    const Mat H = to_mat(l.H, l.cols);
    for (int64_t i = 0; i < l.rows; ++i) {
      const Vec w = row_of(l.W, l.cols, i);
      const Trace a = exhaustive_greedy(w, H, block), b = sequential_obs(w, H, block);
      for (size_t k = 0; k < a.loss.size(); ++k) {
        CHECK(std::fabs(a.loss[k] - b.loss[k]) <= 1e-9 * (1 + std::fabs(a.loss[k])));
        CHECK((a.weights[k + 1] - b.weights[k + 1]).cwiseAbs().maxCoeff() <= 1e-9 * (1 + w.cwiseAbs().maxCoeff()));
      }
    }
  }
}

TEST_CASE("obc_prune equals the exhaustive greedy with global allocation", "[obc]") {
  struct Case {
    int64_t rows, cols, block;
    uint64_t seed;
  };
  const Case cases[] = {{3, 8, 1, 1}, {5, 12, 1, 2}, {4, 12, 2, 3}, {3, 12, 3, 4}, {5, 20, 1, 5}, {4, 6, 1, 6}};
  // 0.07 and 0.55 of 100 steps are 7.000000000000001 and 55.00000000000001 in floating point.
  const double sparsities[] = {0.25, 0.5, 1.0 / 3.0, 0.07, 0.55, 0.8, 1.0};
  for (const Case& c : cases) {
    const Layer base = random_layer(c.rows, c.cols, c.seed);
    const Mat H = to_mat(base.H, c.cols);
    std::vector<Trace> traces;
    for (int64_t i = 0; i < c.rows; ++i) traces.push_back(exhaustive_greedy(row_of(base.W, c.cols, i), H, c.block));
    for (double s : sparsities) {
      INFO("rows " << c.rows << " cols " << c.cols << " block " << c.block << " sparsity " << s);
      const Reference ref = allocate(traces, c.cols, c.block, s);
      Layer l = base;
      const ObcStats st = prune(l, c.block, s);
      REQUIRE(st.ok);
      CHECK(st.retries == 0);
      CHECK(st.damping == 0.0);
      CHECK(st.dead_columns == 0);
      CHECK(st.removed_blocks == expected_count(c.rows * c.cols / c.block, s));
      CHECK(st.removed_blocks == ref.removed);
      CHECK(std::fabs(st.loss - ref.loss) <= 1e-9 * ref.loss);
      CHECK(excess_error(l.W, ref.W) <= 1e-9);
    }
  }
}

TEST_CASE("obc_prune rounds the step count up, with a guard against representation error", "[obc]") {
  Layer l = random_layer(1, 8, 7);
  CHECK(prune(l, 1, 0.5).removed_blocks == 4);  // 8 * 0.5 = 4 exactly, not 5
  l = random_layer(5, 20, 7);
  CHECK(prune(l, 1, 0.07).removed_blocks == 7);  // 7.000000000000001
  l = random_layer(5, 20, 7);
  CHECK(prune(l, 1, 0.31).removed_blocks == 31);
  l = random_layer(5, 20, 7);
  CHECK(prune(l, 1, 0.305).removed_blocks == 31);  // 30.5 -> 31
  l = random_layer(5, 20, 7);
  CHECK(prune(l, 2, 0.305).removed_blocks == 16);  // 50 blocks: 15.25 -> 16
}

TEST_CASE("obc_prune breaks ties in the global allocation by row", "[obc]") {
  // Two identical rows have bit-identical step losses; 3 of 12 steps: both rows' first steps,
  // then the first row's second one.
  Layer l = random_layer(2, 6, 81);
  std::copy(l.W.begin(), l.W.begin() + 6, l.W.begin() + 6);
  const ObcStats st = prune(l, 1, 0.25);
  REQUIRE(st.ok);
  CHECK(st.removed_blocks == 3);
  CHECK(std::count(l.W.begin(), l.W.begin() + 6, 0.f) == 2);
  CHECK(std::count(l.W.begin() + 6, l.W.end(), 0.f) == 1);
}

TEST_CASE("obc_prune at sparsity 0 leaves W bit-identical and at 1 zeroes it", "[obc]") {
  const Layer base = random_layer(4, 10, 21);
  Layer l = base;
  ObcStats st = prune(l, 1, 0.0);
  REQUIRE(st.ok);
  CHECK(st.removed_blocks == 0);
  CHECK(st.loss == 0.0);
  CHECK(l.W == base.W);

  l = base;
  st = prune(l, 2, 1.0);
  REQUIRE(st.ok);
  CHECK(st.removed_blocks == 4 * 5);
  CHECK(std::all_of(l.W.begin(), l.W.end(), [](float v) { return v == 0.f; }));
  // Removing everything costs w H w^T per row.
  const double direct = reconstruction_error(base.W, l.W, to_mat(base.H, base.cols), base.rows, base.cols);
  CHECK(std::fabs(st.loss - direct) <= 1e-9 * direct);
}

TEST_CASE("obc_prune's loss is the reconstruction error it causes, on layers that use the lazy updates",
          "[obc][long]") {
  // cols well above the lazily buffered downdate columns, so the stale inverse is updated
  // several times (and above the update's 480-row blocking for the last two); compared with the
  // sequential textbook OBS as well.
  struct Case {
    int64_t rows, cols, block;
  };
  for (const Case c : {Case{3, 150, 1}, Case{3, 150, 5}, Case{2, 144, 9}, Case{2, 640, 1}, Case{1, 603, 9}}) {
    INFO("cols " << c.cols << " block " << c.block);
    const Layer base = random_layer(c.rows, c.cols, 40 + c.block);
    const Mat H = to_mat(base.H, c.cols);
    std::vector<Trace> traces;
    for (int64_t i = 0; i < c.rows; ++i) traces.push_back(sequential_obs(row_of(base.W, c.cols, i), H, c.block));
    for (double s : {0.3, 0.5, 0.9}) {
      Layer l = base;
      const ObcStats st = prune(l, c.block, s);
      REQUIRE(st.ok);
      const double direct = reconstruction_error(base.W, l.W, H, c.rows, c.cols);
      // The float output moves the directly measured error slightly.
      CHECK(std::fabs(st.loss - direct) <= 1e-6 * direct);
      const Reference ref = allocate(traces, c.cols, c.block, s);
      CHECK(st.removed_blocks == ref.removed);
      CHECK(std::fabs(st.loss - ref.loss) <= 1e-8 * ref.loss);
      CHECK(excess_error(l.W, ref.W) <= 1e-8);
    }
  }
}

TEST_CASE("obc_prune zeroes dead columns", "[obc]") {
  Layer base = random_layer(3, 10, 31);
  const int64_t n = base.cols;
  for (int64_t dead : {2, 7}) {
    for (int64_t k = 0; k < n; ++k) base.H[dead * n + k] = base.H[k * n + dead] = 0.0;
  }
  for (double s : {0.0, 0.5}) {
    Layer l = base;
    const ObcStats st = prune(l, 1, s);
    REQUIRE(st.ok);
    CHECK(st.dead_columns == 2);
    CHECK(st.retries == 0);
    for (int64_t i = 0; i < l.rows; ++i) {
      CHECK(l.W[i * n + 2] == 0.f);
      CHECK(l.W[i * n + 7] == 0.f);
    }
    if (s == 0.0) {
      for (int64_t i = 0; i < l.rows * n; ++i)
        if (i % n != 2 && i % n != 7) CHECK(l.W[i] == base.W[i]);
    } else {
      // The zeroed dead weights cost nothing and are removed first; the loss is measured from W
      // with those columns zeroed.
      std::vector<float> zeroed = base.W;
      for (int64_t i = 0; i < l.rows; ++i) zeroed[i * n + 2] = zeroed[i * n + 7] = 0.f;
      const double direct = reconstruction_error(zeroed, l.W, to_mat(base.H, n), l.rows, n);
      CHECK(std::fabs(st.loss - direct) <= 1e-6 * direct);
    }
  }
}

TEST_CASE("obc_prune damps an indefinite H and rejects a NaN one", "[obc]") {
  const Layer base = random_layer(3, 12, 51);
  const int64_t n = base.cols;
  // Subtract 30 v v^T for a unit v: v^T H v is a few units, so that direction becomes negative and
  // only lambda = 100 repairs it.
  Layer l = base;
  Vec v = Vec::Ones(n).normalized();
  Mat H = to_mat(l.H, n) - 30.0 * v * v.transpose();
  REQUIRE(Eigen::SelfAdjointEigenSolver<Mat>(H).eigenvalues().minCoeff() < 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) l.H[i * n + j] = H(i, j);
  const ObcStats st = prune(l, 1, 0.5);
  REQUIRE(st.ok);
  CHECK(st.retries > 0);
  CHECK(st.damping >= 1.0);
  CHECK(st.damping == std::pow(10.0, st.retries - 1));
  CHECK(st.removed_blocks == 18);
  CHECK(std::all_of(l.W.begin(), l.W.end(), [](float x) { return std::isfinite(x); }));
  // The loss is the error under the damped H that was actually used.
  Mat damped = H;
  damped.diagonal().array() += st.damping;
  const double direct = reconstruction_error(base.W, l.W, damped, l.rows, n);
  CHECK(std::fabs(st.loss - direct) <= 1e-6 * direct);

  Layer bad = base;
  bad.H[3 * n + 5] = bad.H[5 * n + 3] = std::nan("");
  const ObcStats nan_st = prune(bad, 1, 0.5);
  CHECK_FALSE(nan_st.ok);
  CHECK(bad.W == base.W);
}

TEST_CASE("obc_prune rejects a block that does not divide the columns", "[obc]") {
  Layer l = random_layer(2, 10, 3);
  const std::vector<float> before = l.W;
  CHECK_FALSE(prune(l, 3, 0.5).ok);
  CHECK_FALSE(prune(l, 0, 0.5).ok);
  CHECK_FALSE(prune(l, 1, 1.5).ok);
  CHECK(l.W == before);
}

TEST_CASE("obc_prune does not depend on the thread count", "[obc]") {
  test::ThreadGuard guard;
  const Layer base = random_layer(7, 96, 61);
  for (int64_t block : {1, 4}) {
    Layer one = base, two = base;
    std::vector<int64_t> seen;
    kernels::set_num_threads(1);
    const ObcStats a = prune(one, block, 0.6);
    kernels::set_num_threads(2);
    ObcOptions opt;
    opt.block = block;
    opt.sparsity = 0.6;
    opt.progress = [&](int64_t done) { seen.push_back(done); };
    const ObcStats b = kernels::obc_prune(two.W.data(), two.rows, two.cols, two.H.data(), opt);
    REQUIRE(a.ok);
    REQUIRE(b.ok);
    CHECK(one.W == two.W);
    CHECK(a.loss == b.loss);
    CHECK(a.removed_blocks == b.removed_blocks);
    REQUIRE_FALSE(seen.empty());
    CHECK(std::is_sorted(seen.begin(), seen.end()));
    CHECK(seen.back() == base.rows);
  }
}

TEST_CASE("OBC reconstructs better than magnitude pruning at the same sparsity", "[obc]") {
  const Layer base = random_layer(8, 64, 71);
  const Mat H = to_mat(base.H, base.cols);
  Layer obc = base;
  REQUIRE(prune(obc, 1, 0.5).ok);
  // Magnitude pruning: zero the smallest half of each row, no compensation.
  std::vector<float> mag = base.W;
  for (int64_t i = 0; i < base.rows; ++i) {
    std::vector<float> a(mag.begin() + i * base.cols, mag.begin() + (i + 1) * base.cols);
    for (float& x : a) x = std::fabs(x);
    std::nth_element(a.begin(), a.begin() + base.cols / 2, a.end());
    const float cut = a[base.cols / 2];
    for (int64_t j = 0; j < base.cols; ++j)
      if (std::fabs(mag[i * base.cols + j]) < cut) mag[i * base.cols + j] = 0.f;
  }
  const int64_t zeros = std::count(obc.W.begin(), obc.W.end(), 0.f);
  CHECK(zeros == base.rows * base.cols / 2);
  const double e_obc = reconstruction_error(base.W, obc.W, H, base.rows, base.cols);
  const double e_mag = reconstruction_error(base.W, mag, H, base.rows, base.cols);
  CHECK(e_obc < e_mag);
}
