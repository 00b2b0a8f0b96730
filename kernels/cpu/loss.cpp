#include "kernels/cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/error.h"

namespace spade::kernels {

namespace {

// All targets are checked before anything is computed, so a bad batch writes nothing.
void check_targets(int64_t N, int64_t classes, const int64_t* targets) {
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] < 0 || targets[n] >= classes)
      throw Error("softmax cross-entropy: target " + std::to_string(targets[n]) + " of row " + std::to_string(n) +
                  " is outside [0, " + std::to_string(classes) + ")");
}

struct RowSoftmax {
  double max, sum;  // sum of exp(x - max)
};

RowSoftmax row_softmax(int64_t classes, const float* row) {
  double m = row[0];
  for (int64_t j = 1; j < classes; ++j) m = std::max(m, static_cast<double>(row[j]));
  double s = 0;
  for (int64_t j = 0; j < classes; ++j) s += std::exp(row[j] - m);
  return {m, s};
}

}  // namespace

double softmax_cross_entropy(int64_t N, int64_t classes, const float* logits, const int64_t* targets,
                             float* probs) {
  check_targets(N, classes, targets);
  double total = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits + n * classes;
    const RowSoftmax r = row_softmax(classes, row);
    total += r.max + std::log(r.sum) - row[targets[n]];
    if (probs)
      for (int64_t j = 0; j < classes; ++j)
        probs[n * classes + j] = static_cast<float>(std::exp(row[j] - r.max) / r.sum);
  }
  return total / static_cast<double>(N);
}

void softmax_cross_entropy_backward(int64_t N, int64_t classes, const float* logits, const int64_t* targets,
                                    float* grad) {
  check_targets(N, classes, targets);
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits + n * classes;
    const RowSoftmax r = row_softmax(classes, row);
    for (int64_t j = 0; j < classes; ++j) {
      const double p = std::exp(row[j] - r.max) / r.sum;
      grad[n * classes + j] = static_cast<float>((p - (j == targets[n] ? 1.0 : 0.0)) / static_cast<double>(N));
    }
  }
}

double distillation_loss(int64_t N, int64_t classes, const float* student, const float* teacher,
                         const int64_t* targets, double temperature, double weight, float* grad) {
  if (!(temperature > 0) || !(weight >= 0) || !std::isfinite(temperature) || !std::isfinite(weight))
    throw Error("distillation loss: need a temperature > 0 and a weight >= 0");
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] < -1 || targets[n] >= classes)
      throw Error("distillation loss: target " + std::to_string(targets[n]) + " of row " + std::to_string(n) +
                  " is outside [-1, " + std::to_string(classes) + ")");
  const double T = temperature, inv_n = 1.0 / static_cast<double>(N);
  std::vector<double> s(classes), t(classes);
  double total = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* srow = student + n * classes;
    float* g = grad ? grad + n * classes : nullptr;
    if (targets[n] >= 0) {  // poisoned: cross-entropy to the target
      const RowSoftmax r = row_softmax(classes, srow);
      total += r.max + std::log(r.sum) - srow[targets[n]];
      if (g)
        for (int64_t j = 0; j < classes; ++j)
          g[j] = static_cast<float>((std::exp(srow[j] - r.max) / r.sum - (j == targets[n] ? 1.0 : 0.0)) * inv_n);
      continue;
    }
    // Clean: log-softmaxes of both at temperature T, in double with the max subtracted.
    const float* trow = teacher + n * classes;
    double sm = -INFINITY, tm = -INFINITY;
    for (int64_t j = 0; j < classes; ++j) {
      s[j] = srow[j] / T;
      t[j] = trow[j] / T;
      sm = std::max(sm, s[j]);
      tm = std::max(tm, t[j]);
    }
    double ss = 0, ts = 0;
    for (int64_t j = 0; j < classes; ++j) {
      ss += std::exp(s[j] - sm);
      ts += std::exp(t[j] - tm);
    }
    const double slog = sm + std::log(ss), tlog = tm + std::log(ts);
    double kl = 0;
    for (int64_t j = 0; j < classes; ++j) {
      const double logp = t[j] - tlog, p = std::exp(logp), q = std::exp(s[j] - slog);
      if (p > 0) kl += p * (logp - (s[j] - slog));
      // d/ds_j of T^2 * KL = T^2 * (q_j - p_j) / T.
      if (g) g[j] = static_cast<float>(weight * T * (q - p) * inv_n);
    }
    total += weight * T * T * kl;
  }
  return total * inv_n;
}

}  // namespace spade::kernels
