#pragma once
// The mean of per-sample differences between two variants scored on the same samples (SPADE
// minus Dense), with its standard error: what says whether a difference in a table is more than
// the noise of the samples drawn.
#include <cstdint>
#include <vector>

namespace spade::interp {

struct PairedDifference {
  double mean = 0.0;
  double se = 0.0;  // sample standard deviation of the differences / sqrt(n); 0 for n < 2
  int64_t n = 0;
  // |mean| > 1.96 SE: different from zero at about the 5% level (normal approximation).
  bool significant() const { return n >= 2 && (mean > 1.96 * se || mean < -1.96 * se) && mean != 0.0; }
};

// Throws spade::Error when the sizes differ.
PairedDifference paired_difference(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace spade::interp
