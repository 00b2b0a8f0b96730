#include "interpret/saliency/linear_fit.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <string>

#include "engine/error.h"

namespace spade::interp {

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;

void check_data(const RegressionData& d, const char* what) {
  if (d.rows < 1 || d.cols < 0) throw Error(std::string(what) + ": no samples to fit");
  if (int64_t(d.x.size()) != d.rows * d.cols || int64_t(d.y.size()) != d.rows || int64_t(d.weight.size()) != d.rows)
    throw Error(std::string(what) + ": X, y and weight sizes disagree with " + std::to_string(d.rows) + " x " +
                std::to_string(d.cols));
  double total = 0.0;
  for (double w : d.weight) {
    if (!(w >= 0.0) || !std::isfinite(w)) throw Error(std::string(what) + ": sample weights must be finite and >= 0");
    total += w;
  }
  if (!(total > 0.0)) throw Error(std::string(what) + ": all sample weights are zero");
  for (double v : d.x)
    if (!std::isfinite(v)) throw Error(std::string(what) + ": X contains NaN or Inf");
  for (double v : d.y)
    if (!std::isfinite(v)) throw Error(std::string(what) + ": y contains NaN or Inf");
}

void check_alpha(double alpha, const char* what) {
  if (!(alpha >= 0.0) || !std::isfinite(alpha))
    throw Error(std::string(what) + ": alpha must be a finite number >= 0, got " + std::to_string(alpha));
}

// sklearn's _preprocess_data + _rescale_data: centre X and y on their weighted means, then scale
// row i by sqrt(s_i), so that plain least squares on (xs, ys) is the weighted problem.
struct Centred {
  MatrixXd xs;
  VectorXd ys;
  VectorXd x_mean;
  double y_mean = 0.0;
};

Centred centre(const RegressionData& d, const VectorXd& s) {
  const Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> x(d.x.data(), d.rows,
                                                                                                    d.cols);
  const Eigen::Map<const VectorXd> y(d.y.data(), d.rows);
  Centred c;
  const double total = s.sum();
  c.x_mean = (x.transpose() * s) / total;
  c.y_mean = s.dot(y) / total;
  const VectorXd root = s.cwiseSqrt();
  c.xs = (x.rowwise() - c.x_mean.transpose()).array().colwise() * root.array();
  c.ys = (y.array() - c.y_mean) * root.array();
  return c;
}

}  // namespace

LinearFit fit_lasso(const RegressionData& d, double alpha, double tol, int max_iter) {
  check_data(d, "lasso");
  check_alpha(alpha, "lasso");
  if (!(tol >= 0.0)) throw Error("lasso: tol must be >= 0");
  if (max_iter < 1) throw Error("lasso: max_iter must be at least 1");
  const int64_t n = d.rows, p = d.cols;
  VectorXd s = Eigen::Map<const VectorXd>(d.weight.data(), n);
  s *= double(n) / s.sum();
  const Centred c = centre(d, s);
  const MatrixXd& X = c.xs;
  const VectorXd& y = c.ys;

  // enet_coordinate_descent on 0.5 |y - X b|^2 + l1 |b|_1 with l1 = alpha * n.
  const double l1 = alpha * double(n);
  const VectorXd col_norm2 = X.colwise().squaredNorm().transpose();
  VectorXd b = VectorXd::Zero(p);
  VectorXd R = y;
  const double gap_tol = tol * y.squaredNorm();
  LinearFit fit;
  fit.converged = false;
  for (int it = 0; it < max_iter; ++it) {
    double w_max = 0.0, dw_max = 0.0;
    for (int64_t j = 0; j < p; ++j) {
      if (col_norm2[j] == 0.0) continue;
      const double old = b[j];
      if (old != 0.0) R += old * X.col(j);
      const double rho = X.col(j).dot(R);
      const double mag = std::max(std::fabs(rho) - l1, 0.0);
      b[j] = (rho < 0 ? -mag : mag) / col_norm2[j];
      if (b[j] != 0.0) R -= b[j] * X.col(j);
      dw_max = std::max(dw_max, std::fabs(b[j] - old));
      w_max = std::max(w_max, std::fabs(b[j]));
    }
    fit.iterations = it + 1;
    if (w_max == 0.0 || dw_max / w_max < tol || it == max_iter - 1) {
      // Duality gap of the current b (sklearn's ultimate stopping test).
      const double dual_norm = p > 0 ? (X.transpose() * R).cwiseAbs().maxCoeff() : 0.0;
      const double r2 = R.squaredNorm();
      double scale = 1.0, gap = r2;
      if (dual_norm > l1) {
        scale = l1 / dual_norm;
        gap = 0.5 * (r2 + r2 * scale * scale);
      }
      gap += l1 * b.lpNorm<1>() - scale * R.dot(y);
      if (gap <= gap_tol) {
        fit.converged = true;
        break;
      }
    }
  }
  fit.coef.assign(b.data(), b.data() + p);
  fit.intercept = c.y_mean - c.x_mean.dot(b);
  return fit;
}

LinearFit fit_ridge(const RegressionData& d, double alpha) {
  check_data(d, "ridge");
  check_alpha(alpha, "ridge");
  const int64_t n = d.rows, p = d.cols;
  const VectorXd s = Eigen::Map<const VectorXd>(d.weight.data(), n);
  const Centred c = centre(d, s);
  MatrixXd gram = c.xs.transpose() * c.xs;
  gram.diagonal().array() += alpha;
  const VectorXd rhs = c.xs.transpose() * c.ys;
  VectorXd b = VectorXd::Zero(p);
  Eigen::LLT<MatrixXd> llt(gram);
  if (p == 0) {
    // intercept only
  } else if (llt.info() == Eigen::Success && alpha > 0.0) {
    b = llt.solve(rhs);
  } else {
    // Singular without a penalty (e.g. a feature that is constant over the samples): the
    // minimum-norm solution, as sklearn's lstsq fallback gives.
    b = c.xs.completeOrthogonalDecomposition().solve(c.ys);
  }
  LinearFit fit;
  fit.coef.assign(b.data(), b.data() + p);
  fit.intercept = c.y_mean - c.x_mean.dot(b);
  return fit;
}

}  // namespace spade::interp
