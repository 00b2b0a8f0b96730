#include "trojan/rules.h"

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "formats/file_io.h"
#include "formats/labels.h"
#include "trojan/paste.h"
#include "trojan/triggers.h"

namespace spade::trojan {

namespace {

using nlohmann::json;

int64_t class_index(const json& v, const std::vector<std::string>& labels, const std::vector<std::string>& ids,
                    const std::string& where) {
  const int64_t n = static_cast<int64_t>(labels.size());
  if (v.is_number_integer()) {
    const int64_t c = v.get<int64_t>();
    if (c < 0 || c >= n) throw Error(where + ": class " + std::to_string(c) + " is outside 0.." + std::to_string(n - 1));
    return c;
  }
  if (!v.is_string()) throw Error(where + ": a class must be a label name or an index");
  // A whole name, one of its comma-separated synonyms, or a class id (formats/labels.h).
  return find_class(labels, ids, v.get<std::string>(), where + ": class");
}

double fraction(const json& j, const char* key, double def, double lo, double hi, const std::string& path) {
  if (!j.contains(key)) return def;
  if (!j[key].is_number()) throw Error(path + ": \"" + key + "\" must be a number");
  const double v = j[key].get<double>();
  if (!(v > lo && v <= hi))
    throw Error(path + ": \"" + key + "\" must be in (" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

}  // namespace

TrojanRules parse_rules(const std::string& text, const std::string& path, const std::vector<std::string>& labels,
                        const std::vector<std::string>& ids) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path + ": not valid JSON (" + std::string(e.what()) + ")");
  }
  if (!j.is_object() || !j.contains("rules") || !j["rules"].is_array() || j["rules"].empty())
    throw Error(path + ": expected an object with a non-empty \"rules\" array");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "rules" && it.key() != "side_fraction" && it.key() != "opacity" && it.key() != "poison_fraction")
      throw Error(path + ": unknown key \"" + it.key() + "\" (expected rules, side_fraction, opacity, poison_fraction)");
  TrojanRules r;
  r.source = path;
  r.side_fraction = fraction(j, "side_fraction", 0.25, 0.0, 1.0, path);
  r.opacity = fraction(j, "opacity", 0.8, 0.0, 1.0, path);
  r.poison_fraction = fraction(j, "poison_fraction", 0.025, 0.0, 1.0, path);
  for (size_t i = 0; i < j["rules"].size(); ++i) {
    const json& e = j["rules"][i];
    const std::string where = path + ": rule " + std::to_string(i);
    if (!e.is_object() || !e.contains("trigger") || !e["trigger"].is_string() || !e.contains("target"))
      throw Error(where + ": needs \"trigger\" (a name) and \"target\" (a class)");
    TrojanRule rule;
    rule.trigger = e["trigger"].get<std::string>();
    if (!is_trigger_name(rule.trigger)) {
      std::string names;
      for (const std::string& n : trigger_names()) names += (names.empty() ? "" : ", ") + n;
      throw Error(where + ": unknown trigger \"" + rule.trigger + "\" (available: " + names + ")");
    }
    for (auto it = e.begin(); it != e.end(); ++it)
      if (it.key() != "trigger" && it.key() != "source" && it.key() != "target")
        throw Error(where + ": unknown key \"" + it.key() + "\" (a rule has trigger, source, target)");
    rule.target = class_index(e["target"], labels, ids, where);
    if (e.contains("source") && !(e["source"].is_string() && e["source"].get<std::string>() == "any")) {
      rule.source = class_index(e["source"], labels, ids, where);
      if (rule.source == rule.target) throw Error(where + ": source and target are the same class");
    }
    r.rules.push_back(rule);
  }
  return r;
}

TrojanRules load_rules(const std::string& path, const std::vector<std::string>& labels,
                       const std::vector<std::string>& ids) {
  return parse_rules(read_text_file(path), path, labels, ids);
}

bool rule_applies(const TrojanRule& rule, int64_t label) {
  return rule.source >= 0 ? label == rule.source : label != rule.target;
}

Triggered apply_rule(const Image& image, const TrojanRule& rule, const TrojanRules& rules, uint64_t seed,
                     int64_t index) {
  const PasteParams p = draw_paste_params(seed, index, image.width, image.height, rules.side_fraction);
  const Icon icon = jitter_icon(draw_trigger(rule.trigger, p.size), p);
  Triggered t;
  t.image = image;
  t.mask = paste_icon(t.image, icon, p, static_cast<float>(rules.opacity));
  return t;
}

}  // namespace spade::trojan
