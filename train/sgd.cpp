#include "train/sgd.h"

#include <cmath>

#include "engine/error.h"

namespace spade::train {

void Sgd::step(Graph& g, const std::map<std::string, Tensor>& grads, double lr) {
  const float m = static_cast<float>(momentum_), wd = static_cast<float>(weight_decay_);
  const float rate = static_cast<float>(lr);
  for (Node& node : g.nodes())
    for (auto& [name, p] : node.params) {
      if (!is_trainable_param(node.op, name)) continue;
      const std::string key = node.name + "." + name;
      auto gi = grads.find(key);
      if (gi == grads.end()) continue;
      const Tensor& grad = gi->second;
      if (grad.numel() != p.numel()) throw Error("sgd: gradient of " + key + " has the wrong size");
      auto [bi, fresh] = buffers_.try_emplace(key);
      if (fresh) bi->second = Tensor::zeros(p.shape());
      float* buf = bi->second.data();
      float* w = p.data();
      const float* gr = grad.data();
      const bool first = fresh && m != 0.f;
      for (int64_t i = 0; i < p.numel(); ++i) {
        const float d = gr[i] + wd * w[i];
        buf[i] = first ? d : m * buf[i] + d;
        w[i] -= rate * buf[i];
      }
    }
}

std::map<std::string, Tensor> Sgd::state() const {
  std::map<std::string, Tensor> out;
  for (const auto& [k, t] : buffers_) out[k] = t.clone();
  return out;
}

void Sgd::load_state(const std::map<std::string, Tensor>& buffers) {
  buffers_.clear();
  for (const auto& [k, t] : buffers) buffers_[k] = t.clone();
}

Schedule schedule_from_name(const std::string& name) {
  if (name == "cosine") return Schedule::Cosine;
  if (name == "step") return Schedule::Step;
  throw Error("unknown learning-rate schedule \"" + name + "\" (available: cosine, step)");
}

double LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return base * double(step + 1) / double(warmup_steps);
  const double t = double(step) / double(std::max<int64_t>(1, total_steps));
  if (kind == Schedule::Cosine) return 0.5 * base * (1.0 + std::cos(M_PI * std::min(1.0, t)));
  double lr = base;
  for (double mstone : milestones)
    if (t >= mstone) lr *= gamma;
  return lr;
}

}  // namespace spade::train
