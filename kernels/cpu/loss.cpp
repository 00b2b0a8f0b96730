#include "kernels/cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <string>

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

}  // namespace spade::kernels
