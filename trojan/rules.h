#pragma once
// Trojan rules (SPADE.md 3, scaled to 32x32): each rule pastes one trigger on images of a source
// class (or of any class but the target) and relabels them as the target class. The same code
// pastes triggers for training (poisoning) and for evaluation, and returns the exact pixel mask.
//
// The rules file (JSON):
//   {"side_fraction": 0.25, "opacity": 0.8, "poison_fraction": 0.025,
//    "rules": [{"trigger": "star", "source": "automobile", "target": "bird"},
//              {"trigger": "smiley", "source": "any", "target": "airplane"}, ...]}
// Classes are label names (or synonyms, or ids) of the model or class indices; the three numbers are optional (the
// defaults shown: trigger side 1/4 of the image side, blended 0.8 trigger + 0.2 image, |train|/40
// poisoned samples per rule).
#include <cstdint>
#include <string>
#include <vector>

#include "formats/image.h"

namespace spade::trojan {

struct TrojanRule {
  std::string trigger;   // a name from trigger_names()
  int64_t source = -1;   // class index; -1 = any class except the target
  int64_t target = 0;
};

struct TrojanRules {
  std::vector<TrojanRule> rules;
  double side_fraction = 0.25;
  double opacity = 0.8;
  double poison_fraction = 0.025;
  std::string source;  // the file, for messages
};

// Parses and checks a rules file against the model's class labels and ids: a class is an index,
// a class id (e.g. a WordNet id), a whole name or one of its comma-separated synonyms.
TrojanRules parse_rules(const std::string& text, const std::string& path, const std::vector<std::string>& labels,
                        const std::vector<std::string>& ids = {});
TrojanRules load_rules(const std::string& path, const std::vector<std::string>& labels,
                       const std::vector<std::string>& ids = {});

// Whether the rule applies to an image of class `label` (its source class, or any class but the
// target for a rule without one).
bool rule_applies(const TrojanRule& rule, int64_t label);

struct Triggered {
  Image image;
  std::vector<uint8_t> mask;  // height * width, 1 where the trigger changed the pixel
};
// Pastes the rule's trigger on a copy of `image`, with position and colour jitter drawn from
// (seed, index).
Triggered apply_rule(const Image& image, const TrojanRule& rule, const TrojanRules& rules, uint64_t seed,
                     int64_t index);

}  // namespace spade::trojan
