#include "interpret/experiments/trojan_pool.h"

#include <algorithm>

#include "engine/executor.h"
#include "train/trainer.h"

namespace spade::interp {

namespace {

std::vector<int64_t> argmax_rows(const Tensor& logits) {
  std::vector<int64_t> out(logits.dim(0));
  const int64_t c = logits.dim(1);
  for (int64_t i = 0; i < logits.dim(0); ++i)
    out[i] = std::max_element(logits.data() + i * c, logits.data() + (i + 1) * c) - (logits.data() + i * c);
  return out;
}

}  // namespace

TrojanPool trojan_test_pool(const Model& m, const train::PixelDataset& test, const trojan::TrojanRules& rules,
                            const PoolOptions& opt, const std::function<void(int64_t, int64_t)>& progress) {
  std::vector<int64_t> order;
  for (int64_t i : train::epoch_order(test.size(), opt.seed, 0))
    if (opt.parity < 0 || i % 2 == opt.parity) order.push_back(i);
  const size_t R = rules.rules.size();
  TrojanPool pool;
  ForwardOptions fo;
  fo.keep_activations = false;
  // The test images are at the model's input size already (train::eval_load_options).
  const Preprocess normalise = normalisation_of(m.preprocess);
  constexpr int64_t kChunk = 64;
  int64_t candidate = 0;
  for (size_t start = 0; start < order.size() && static_cast<int64_t>(pool.samples.size()) < opt.count;
       start += kChunk) {
    std::vector<TrojanSample> chunk;
    std::vector<Tensor> clean, triggered;
    for (size_t k = start; k < std::min(order.size(), start + kChunk); ++k, ++candidate) {
      const int64_t idx = order[k];
      for (size_t t = 0; t < R; ++t) {
        const size_t r = (candidate + t) % R;
        if (!trojan::rule_applies(rules.rules[r], test.labels[idx])) continue;
        TrojanSample s;
        s.name = test.names[idx];
        s.index = idx;
        s.rule = r;
        s.trigger = rules.rules[r].trigger;
        s.target = rules.rules[r].target;
        const Image im = test.image(idx);
        trojan::Triggered tr = trojan::apply_rule(im, rules.rules[r], rules, opt.seed, idx);
        s.image = std::move(tr.image);
        s.mask = std::move(tr.mask);
        s.x = preprocess_image(s.image, normalise);
        clean.push_back(preprocess_image(im, normalise));
        triggered.push_back(s.x);
        chunk.push_back(std::move(s));
        break;
      }
    }
    if (chunk.empty()) continue;
    const std::vector<int64_t> with = argmax_rows(forward(m.graph, cat0(triggered), fo).out());
    const std::vector<int64_t> without = argmax_rows(forward(m.graph, cat0(clean), fo).out());
    for (size_t i = 0; i < chunk.size(); ++i) {
      ++pool.tried;
      if (with[i] != chunk[i].target || without[i] == chunk[i].target) continue;
      chunk[i].clean_prediction = without[i];
      pool.samples.push_back(std::move(chunk[i]));
      if (static_cast<int64_t>(pool.samples.size()) == opt.count) break;
    }
    if (progress) progress(static_cast<int64_t>(pool.samples.size()), opt.count);
  }
  return pool;
}

}  // namespace spade::interp
