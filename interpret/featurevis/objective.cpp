#include "interpret/featurevis/objective.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <set>
#include <sstream>

#include "engine/error.h"
#include "interpret/saliency/network.h"

namespace spade::interp::featurevis {

namespace {

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(cur);
  return parts;
}

bool parse_int(const std::string& s, int64_t& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long r = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  v = r;
  return true;
}

[[noreturn]] void bad(const std::string& text, const std::string& why) {
  throw Error("objective \"" + text + "\": " + why);
}

int node_of(const std::string& layer, const Graph& g, const std::string& text) {
  if (layer == "logit") return g.output();
  try {
    return resolve_layer(g, layer);
  } catch (const Error& e) {
    bad(text, e.what());
  }
}

// Channels of a node's output (its dimension 1).
int64_t channels_of(const Graph& g, int node) { return g.infer_shapes(1).at(node).at(1); }

// "[W*]LAYER:CH[@Y,X|@center]" with CH a number, or a range "A-B" when `range` is given.
ObjectiveTerm parse_term(const std::string& raw, const Graph& g, const std::string& text,
                         std::pair<int64_t, int64_t>* range = nullptr) {
  std::string s = trim(raw);
  ObjectiveTerm t;
  const size_t star = s.find('*');
  if (star != std::string::npos) {
    const std::string w = trim(s.substr(0, star));
    char* end = nullptr;
    t.weight = std::strtod(w.c_str(), &end);
    if (w.empty() || *end != '\0' || !std::isfinite(t.weight)) bad(text, "\"" + w + "\" is not a weight");
    s = trim(s.substr(star + 1));
  }
  std::string where;
  const size_t at = s.find('@');
  if (at != std::string::npos) {
    where = trim(s.substr(at + 1));
    s = trim(s.substr(0, at));
  }
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0)
    bad(text, "expected LAYER:CHANNEL (e.g. fc:99 or layer4:7), got \"" + raw + "\"");
  t.layer = trim(s.substr(0, colon));
  const std::string ch = trim(s.substr(colon + 1));
  t.node = node_of(t.layer, g, text);
  const int64_t channels = channels_of(g, t.node);
  const size_t dash = ch.find('-', 1);
  if (range && dash != std::string::npos) {
    int64_t a = 0, b = 0;
    if (!parse_int(ch.substr(0, dash), a) || !parse_int(ch.substr(dash + 1), b) || a > b)
      bad(text, "\"" + ch + "\" is not a channel range A-B");
    if (a < 0 || b >= channels)
      bad(text, "channels " + ch + " out of range: \"" + t.layer + "\" has " + std::to_string(channels));
    *range = {a, b};
    t.channel = a;
  } else {
    if (!parse_int(ch, t.channel)) bad(text, "\"" + ch + "\" is not a channel number");
    if (t.channel < 0 || t.channel >= channels)
      bad(text, "channel " + ch + " out of range: \"" + t.layer + "\" has " + std::to_string(channels));
    if (range) *range = {t.channel, t.channel};
  }
  if (!where.empty()) {
    if (g.infer_shapes(1).at(t.node).size() != 4)
      bad(text, "\"" + t.layer + "\" has no spatial positions, so @" + where + " does not apply");
    t.neuron = true;
    if (where == "center" || where == "centre") {
      t.center = true;
    } else {
      const std::vector<std::string> yx = split(where, ',');
      if (yx.size() != 2 || !parse_int(trim(yx[0]), t.y) || !parse_int(trim(yx[1]), t.x) || t.y < 0 || t.x < 0)
        bad(text, "expected @Y,X or @center after the channel, got \"@" + where + "\"");
    }
  }
  return t;
}

std::string term_text(const ObjectiveTerm& t) {
  std::ostringstream os;
  if (t.weight != 1.0) os << t.weight << "*";
  os << t.layer << ":" << t.channel;
  if (t.center) os << "@center";
  else if (t.neuron) os << "@" << t.y << "," << t.x;
  return os.str();
}

std::string objective_text(const Objective& o) {
  std::string s;
  for (const ObjectiveTerm& t : o.terms) s += (s.empty() ? "" : " + ") + term_text(t);
  return s;
}

}  // namespace

Objective parse_objective(const std::string& text, const Graph& g) {
  Objective o;
  for (const std::string& part : split(text, '+')) {
    if (trim(part).empty()) bad(text, "empty term");
    o.terms.push_back(parse_term(part, g, text));
  }
  o.text = objective_text(o);
  return o;
}

std::vector<Objective> parse_objectives(const std::string& text, const Graph& g) {
  std::vector<Objective> out;
  // Split on the commas between objectives; the first comma after an "@" separates Y from X.
  std::vector<std::string> items;
  std::string cur;
  bool in_position = false;
  for (char c : text) {
    if (c == ',' && in_position && std::isdigit(static_cast<unsigned char>(trim(cur.substr(cur.rfind('@') + 1)).c_str()[0]))) {
      in_position = false;
    } else if (c == ',') {
      items.push_back(cur);
      cur.clear();
      continue;
    } else if (c == '@') {
      in_position = true;
    } else if (c == '+') {
      in_position = false;
    }
    cur += c;
  }
  items.push_back(cur);
  for (const std::string& item : items) {
    if (trim(item).empty()) bad(text, "empty objective in the list");
    if (item.find('+') == std::string::npos) {
      std::pair<int64_t, int64_t> range;
      const ObjectiveTerm first = parse_term(item, g, text, &range);
      for (int64_t c = range.first; c <= range.second; ++c) {
        Objective o;
        o.terms.push_back(first);
        o.terms.back().channel = c;
        o.text = objective_text(o);
        out.push_back(o);
      }
    } else {
      out.push_back(parse_objective(item, g));
    }
  }
  return out;
}

Objective class_objective(const Graph& g, int64_t k) { return parse_objective("logit:" + std::to_string(k), g); }

std::vector<int> objective_nodes(const std::vector<Objective>& objectives) {
  std::set<int> nodes;
  for (const Objective& o : objectives)
    for (const ObjectiveTerm& t : o.terms) nodes.insert(t.node);
  return {nodes.begin(), nodes.end()};
}

std::vector<double> evaluate_objectives(const Graph& g, const ForwardResult& fwd, const std::vector<Objective>& objectives,
                                        std::map<int, Tensor>* seeds) {
  const int64_t n = static_cast<int64_t>(objectives.size());
  std::vector<double> values(n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (const ObjectiveTerm& t : objectives[i].terms) {
      const Tensor& act = fwd.acts.at(t.node);
      if (!act.defined() || act.dim(0) != n)
        throw Error("objective: the forward pass has no output of \"" + g.node(t.node).name + "\" for " +
                    std::to_string(n) + " images");
      const int64_t C = act.dim(1);
      const int64_t h = act.ndim() == 4 ? act.dim(2) : 1, w = act.ndim() == 4 ? act.dim(3) : 1;
      const int64_t base = (i * C + t.channel) * h * w;
      Tensor* seed = nullptr;
      if (seeds) {
        auto it = seeds->find(t.node);
        if (it == seeds->end()) it = seeds->emplace(t.node, Tensor::zeros(act.shape())).first;
        seed = &it->second;
      }
      if (t.neuron) {
        const int64_t y = t.center ? h / 2 : t.y, x = t.center ? w / 2 : t.x;
        if (y >= h || x >= w)
          throw Error("objective \"" + objectives[i].text + "\": position (" + std::to_string(y) + ", " +
                      std::to_string(x) + ") is outside \"" + t.layer + "\"'s " + std::to_string(h) + "x" +
                      std::to_string(w) + " map at this input size");
        values[i] += t.weight * act[base + y * w + x];
        if (seed) (*seed)[base + y * w + x] += float(t.weight);
      } else {
        double sum = 0;
        for (int64_t p = 0; p < h * w; ++p) sum += act[base + p];
        values[i] += t.weight * sum / double(h * w);
        if (seed)
          for (int64_t p = 0; p < h * w; ++p) (*seed)[base + p] += float(t.weight / double(h * w));
      }
    }
  return values;
}

}  // namespace spade::interp::featurevis
