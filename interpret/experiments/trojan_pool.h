#pragma once
// The Trojan test pool (SPADE.md 3): triggers pasted on test images, a sample kept only if the
// dense model predicts the trigger's target with the trigger and another class without it.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "formats/model.h"
#include "train/dataset.h"
#include "trojan/rules.h"

namespace spade::interp {

struct TrojanSample {
  std::string name;        // the test image's file
  int64_t index = 0;       // in the test set
  size_t rule = 0;         // index into the rules
  std::string trigger;
  int64_t target = 0;      // the rule's target class: the class every map explains
  int64_t clean_prediction = 0;
  Image image;             // with the trigger, 8-bit
  Tensor x;                // the same, normalised (1, 3, H, W)
  std::vector<uint8_t> mask;  // H * W, 1 on the trigger's pixels
};

struct PoolOptions {
  int64_t count = 100;
  uint64_t seed = 0;  // image order and trigger placement
  // Which test images may be used: -1 all, 0 even indices, 1 odd ones (tuning and evaluation
  // images are kept disjoint this way).
  int parity = -1;
};

struct TrojanPool {
  std::vector<TrojanSample> samples;
  int64_t tried = 0;  // candidates pasted and classified
};

// Candidates are the test images in a seeded random order; candidate k gets rule k mod R (or the
// next rule that applies to its class). Stops after `count` kept samples or when the images run out.
TrojanPool trojan_test_pool(const Model& m, const train::PixelDataset& test, const trojan::TrojanRules& rules,
                            const PoolOptions& opt, const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace spade::interp
