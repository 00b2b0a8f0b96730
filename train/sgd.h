#pragma once
// Stochastic gradient descent with momentum and weight decay, with PyTorch's torch.optim.SGD
// update (dampening 0, not Nesterov): g += wd * p; buf = momentum * buf + g (buf = g at the first
// step); p -= lr * buf. And the learning-rate schedules `spade train` offers.
#include <map>
#include <string>

#include "engine/graph.h"

namespace spade::train {

class Sgd {
 public:
  Sgd(double momentum, double weight_decay) : momentum_(momentum), weight_decay_(weight_decay) {}
  // One step on every trainable parameter of `g` that has a gradient in `grads` (state_dict keys).
  void step(Graph& g, const std::map<std::string, Tensor>& grads, double lr);

  // Momentum buffers by state_dict key (copies: a saved state does not change with later steps).
  std::map<std::string, Tensor> state() const;
  void load_state(const std::map<std::string, Tensor>& buffers);

 private:
  double momentum_, weight_decay_;
  std::map<std::string, Tensor> buffers_;
};

enum class Schedule { Cosine, Step };
Schedule schedule_from_name(const std::string& name);  // "cosine" | "step"

struct LrSchedule {
  Schedule kind = Schedule::Cosine;
  double base = 0.1;
  int64_t warmup_steps = 0;  // linear warm-up from base / warmup over these many steps
  int64_t total_steps = 1;
  // Step: multiply by `gamma` at each of these fractions of training (PyTorch MultiStepLR-like).
  std::vector<double> milestones{0.5, 0.75};
  double gamma = 0.1;
  double at(int64_t step) const;  // the learning rate of optimisation step `step` (0-based)
};

}  // namespace spade::train
