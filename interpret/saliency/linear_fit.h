#pragma once
// Weighted linear regression with an intercept, for LIME's surrogate models: the Lasso and Ridge
// that Captum (sklearn.linear_model.Lasso) and the `lime` package (sklearn Ridge) fit, with
// sklearn's handling of sample weights, so the same data gives the same coefficients.
#include <cstdint>
#include <vector>

namespace spade::interp {

// The data of one fit: X is (rows, cols) row-major, y and weight have `rows` entries.
struct RegressionData {
  std::vector<double> x;
  std::vector<double> y;
  std::vector<double> weight;  // >= 0, not all 0
  int64_t rows = 0, cols = 0;
};

struct LinearFit {
  std::vector<double> coef;
  double intercept = 0.0;
  int iterations = 0;      // coordinate-descent sweeps (0 for ridge)
  bool converged = true;   // false when lasso stopped at max_iter (sklearn warns then)
};

// sklearn.linear_model.Lasso(alpha, tol, max_iter).fit(X, y, sample_weight): minimises
//   (1 / (2 n)) sum_i s_i (y_i - c - x_i.b)^2 + alpha |b|_1,   s = weight * n / sum(weight),
// by cyclic coordinate descent from b = 0 on the weighted-centred data (c is recovered from the
// weighted means), stopping like sklearn's enet_coordinate_descent: once the largest coefficient
// update is below tol times the largest coefficient, when the duality gap is below
// tol * |y_centred|^2.
LinearFit fit_lasso(const RegressionData& d, double alpha, double tol = 1e-4, int max_iter = 1000);

// sklearn.linear_model.Ridge(alpha).fit(X, y, sample_weight): minimises
//   sum_i w_i (y_i - c - x_i.b)^2 + alpha |b|^2
// exactly (Cholesky of the weighted-centred normal equations; minimum-norm least squares when
// alpha = 0 leaves them singular). The weights are not rescaled, as in sklearn's Ridge.
LinearFit fit_ridge(const RegressionData& d, double alpha);

}  // namespace spade::interp
