#pragma once
// Trojan poisoning of a training set (SPADE.md 3): every rule adds round(poison_fraction * |clean
// set|) images, drawn without replacement from the images the rule applies to, with the trigger
// pasted and the label set to the rule's target. The clean images stay as they are.
#include <cstdint>
#include <vector>

#include "formats/model.h"
#include "train/dataset.h"
#include "trojan/rules.h"

namespace spade::train {

struct PoisonCount {
  std::string trigger;
  int64_t added = 0;
};

// Appends the poisoned images to `d`; deterministic for the seed.
std::vector<PoisonCount> poison_dataset(PixelDataset& d, const trojan::TrojanRules& rules, uint64_t seed);

// The fraction of the images rule `r` applies to (target class excluded) that the model classifies
// as the target once the trigger is pasted (position and jitter from `seed`).
double attack_success_rate(const Model& m, const PixelDataset& test, const trojan::TrojanRules& rules, size_t r,
                           uint64_t seed);

}  // namespace spade::train
