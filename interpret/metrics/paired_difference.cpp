#include "interpret/metrics/paired_difference.h"

#include <cmath>
#include <string>

#include "engine/error.h"

namespace spade::interp {

PairedDifference paired_difference(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size())
    throw Error("paired_difference: " + std::to_string(a.size()) + " and " + std::to_string(b.size()) + " samples");
  PairedDifference d;
  d.n = static_cast<int64_t>(a.size());
  if (d.n == 0) return d;
  for (size_t i = 0; i < a.size(); ++i) d.mean += (a[i] - b[i]) / double(d.n);
  if (d.n < 2) return d;
  double ss = 0.0;
  for (size_t i = 0; i < a.size(); ++i) ss += (a[i] - b[i] - d.mean) * (a[i] - b[i] - d.mean);
  d.se = std::sqrt(ss / double(d.n - 1) / double(d.n));
  return d;
}

}  // namespace spade::interp
