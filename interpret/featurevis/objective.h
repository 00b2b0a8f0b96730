#pragma once
// What a feature visualisation maximises: a weighted sum of terms, each the mean over space of one
// channel of a node's output (a class logit for a (N, classes) output) or the value of one neuron
// (one position of a channel).
//
// Written as text (docs/cli.md): terms joined by "+", each "[WEIGHT*]LAYER:CHANNEL[@Y,X|@center]",
// e.g. "fc:99", "layer4:7", "layer3.1:5@center", "0.5*layer3:4 + -1*fc:2". LAYER is a node name or
// a module prefix meaning the module's output ("layer4" = the last node under it); "logit" means
// the graph's output.
#include <map>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "engine/graph.h"

namespace spade::interp::featurevis {

struct ObjectiveTerm {
  double weight = 1.0;
  int node = 0;
  std::string layer;  // as written, for messages
  int64_t channel = 0;
  bool neuron = false;  // one position instead of the mean over space
  bool center = false;  // the neuron at the map's centre (h / 2, w / 2), whatever the map's size
  int64_t y = 0, x = 0;
};

struct Objective {
  std::vector<ObjectiveTerm> terms;
  std::string text;  // canonical form
};

// Parses and checks one objective against the graph (layer names, channel ranges). Throws Error.
Objective parse_objective(const std::string& text, const Graph& g);

// Several objectives separated by ",", one image each; a term's channel may be a range "A-B"
// (inclusive) when the objective is a single term, expanding to one objective per channel:
// "layer4:0-3" = "layer4:0,layer4:1,layer4:2,layer4:3".
std::vector<Objective> parse_objectives(const std::string& text, const Graph& g);

// The class-logit objective "logit:K" for output class k.
Objective class_objective(const Graph& g, int64_t k);

// The nodes whose outputs the objectives read (to keep in a forward pass that frees the rest).
std::vector<int> objective_nodes(const std::vector<Objective>& objectives);

// Evaluates objectives[n] on image n of a forward pass and fills `seeds` with d(sum of the
// objectives)/d(node output) for backward(). Throws Error when a neuron's position is outside the
// node's map at this input size.
std::vector<double> evaluate_objectives(const Graph& g, const ForwardResult& fwd, const std::vector<Objective>& objectives,
                                        std::map<int, Tensor>* seeds);

}  // namespace spade::interp::featurevis
