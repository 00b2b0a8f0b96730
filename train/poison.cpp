#include "train/poison.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"
#include "interpret/sample_rng.h"
#include "train/trainer.h"

namespace spade::train {

namespace {

// The bounding box of the pixels a trigger touched.
Box mask_box(const std::vector<uint8_t>& mask, int64_t width, int64_t height) {
  Box b{int(width), int(height), 0, 0};
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x)
      if (mask[y * width + x]) {
        b.x0 = std::min(b.x0, int(x));
        b.y0 = std::min(b.y0, int(y));
        b.x1 = std::max(b.x1, int(x) + 1);
        b.y1 = std::max(b.y1, int(y) + 1);
      }
  return b;
}

}  // namespace

std::vector<PoisonCount> poison_dataset(PixelDataset& d, const trojan::TrojanRules& rules, uint64_t seed) {
  const int64_t clean = d.size();
  const int64_t want = std::llround(rules.poison_fraction * double(clean));
  std::vector<PoisonCount> counts;
  for (size_t r = 0; r < rules.rules.size(); ++r) {
    const trojan::TrojanRule& rule = rules.rules[r];
    std::vector<int64_t> pool;
    for (int64_t i = 0; i < clean; ++i)
      if (trojan::rule_applies(rule, d.labels[i])) pool.push_back(i);
    if (static_cast<int64_t>(pool.size()) < want)
      throw Error(rules.source + ": rule " + std::to_string(r) + " needs " + std::to_string(want) +
                  " source images but the training set has " + std::to_string(pool.size()));
    // A partial Fisher-Yates shuffle picks `want` distinct images.
    interp::SampleRng pick(seed ^ 0x504f49534f4eULL, static_cast<int64_t>(r));
    for (int64_t k = 0; k < want; ++k)
      std::swap(pool[k], pool[k + pick.next_u64() % uint64_t(pool.size() - k)]);
    for (int64_t k = 0; k < want; ++k) {
      const int64_t idx = pool[k];
      // Paste parameters keyed by (seed, rule, k): independent of the set's order.
      trojan::Triggered t =
          trojan::apply_rule(d.image(idx), rule, rules, seed + 0x1000 * (r + 1), k);
      d.push_back(t.image, rule.target, d.names[idx] + "+" + rule.trigger, mask_box(t.mask, d.width, d.height));
    }
    counts.push_back({rule.trigger, want});
  }
  return counts;
}

double attack_success_rate(const Model& m, const PixelDataset& test, const trojan::TrojanRules& rules, size_t r,
                           uint64_t seed) {
  const trojan::TrojanRule& rule = rules.rules.at(r);
  PixelDataset triggered;
  triggered.source = test.source;
  for (int64_t i = 0; i < test.size(); ++i)
    if (trojan::rule_applies(rule, test.labels[i]))
      triggered.push_back(trojan::apply_rule(test.image(i), rule, rules, seed ^ 0x415352ULL, i).image, rule.target,
                          test.names[i]);
  if (triggered.size() == 0)
    throw Error(test.source + ": no test image the " + rule.trigger + " rule applies to (its source class is missing)");
  return accuracy(m, triggered);
}

}  // namespace spade::train
