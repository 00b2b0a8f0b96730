#pragma once
// Adam on a flat parameter vector, with torch.optim.Adam's update (bias-corrected moments, eps
// added to the corrected second moment's square root, no weight decay).
#include <cstdint>
#include <vector>

namespace spade::interp::featurevis {

class Adam {
 public:
  explicit Adam(double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
      : lr_(lr), beta1_(beta1), beta2_(beta2), eps_(eps) {}
  // params -= lr * m_hat / (sqrt(v_hat) + eps) for the gradient `grad` (same size every step).
  void step(std::vector<float>& params, const std::vector<float>& grad);
  int64_t steps() const { return t_; }

 private:
  double lr_, beta1_, beta2_, eps_;
  int64_t t_ = 0;
  std::vector<float> m_, v_;
};

}  // namespace spade::interp::featurevis
