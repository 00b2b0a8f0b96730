#pragma once
// Layer-wise relevance propagation as backward rules: the executor's backward pass, given the
// rules of lrp_rules(), carries relevance instead of gradients (nothing about the network is
// copied). Relevance enters as the target logit at the target class; what arrives at the input
// is the attribution. The rules expect an eval-mode forward pass (BatchNorm with its running
// statistics, Dropout off). In short (docs/saliency.md spells them out):
//   conv / linear   alpha1beta0: z+ rule on signed inputs, biases ignored (relevance conserved
//                   except at outputs with no positive contribution);
//                   epsilon: z = Wx + b, s = R / (z + eps sign z). A BatchNorm that is a conv's
//                   only consumer is folded into it (W * gamma / sqrt(var + eps)).
//   first layer     alpha1beta0: z^B with the image's own min and max as bounds; epsilon: as above
//   ReLU, ReLU6, Dropout, Flatten: unchanged; MaxPool: winner takes all; average pools: the
//   layer rule with the pool's positive weights; Add: split in proportion to a and b;
//   ShortcutA: back to the subsampled positions.
#include <string>

#include "engine/graph.h"
#include "engine/rules.h"

namespace spade::interp {

enum class LrpRule { Alpha1Beta0, Epsilon };

struct LrpConfig {
  LrpRule rule = LrpRule::Epsilon;  // Captum's default, as MethodParams::lrp_rule
  double epsilon = 1e-9;  // the epsilon rule's stabiliser (>= 0)
};

// "alpha1beta0" or "epsilon"; throws Error naming the valid rules otherwise.
LrpRule lrp_rule_from_name(const std::string& name);

// The relevance rules for every node of g. `weights` must be the overlay the forward pass used
// (nullptr: the graph's own parameters). The rules keep (shared) handles to the parameters they
// read, so they stay valid after g and the overlay are gone. Throws Error for a negative or
// non-finite epsilon.
RuleSet lrp_rules(const Graph& g, const WeightOverlay* weights, const LrpConfig& config);

}  // namespace spade::interp
