#include "interpret/featurevis/adam.h"

#include <cmath>

#include "engine/error.h"

namespace spade::interp::featurevis {

void Adam::step(std::vector<float>& params, const std::vector<float>& grad) {
  if (grad.size() != params.size()) throw Error("Adam: gradient and parameters differ in size");
  if (m_.empty()) {
    m_.assign(params.size(), 0.f);
    v_.assign(params.size(), 0.f);
  }
  ++t_;
  // torch computes these in double and applies them to float32 state, as here.
  const double bc1 = 1.0 - std::pow(beta1_, double(t_));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(beta2_, double(t_)));
  const float step_size = float(lr_ / bc1);
  const float b1 = float(beta1_), b2 = float(beta2_);
  for (size_t i = 0; i < params.size(); ++i) {
    m_[i] = b1 * m_[i] + (1.f - b1) * grad[i];
    v_[i] = b2 * v_[i] + (1.f - b2) * grad[i] * grad[i];
    const float denom = std::sqrt(v_[i]) / float(bc2_sqrt) + float(eps_);
    params[i] -= step_size * m_[i] / denom;
  }
}

}  // namespace spade::interp::featurevis
