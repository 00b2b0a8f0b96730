#pragma once
// The modified ReLU backward passes of GuidedBackprop and Deconvolution, as backward rules on
// every ReLU and ReLU6 node (Captum hooks nn.ReLU only; spade treats ReLU6, MobileNet's
// rectifier, the same way so the methods mean the same thing on every model).
#include "engine/rules.h"

namespace spade::interp {

// A rule on every ReLU and ReLU6 node passing back the positive part of the incoming gradient,
// and with `gate_by_input` only where the forward input was in the rectifier's linear range
// (0 < x < 6 or infinity). Written with the backend's clamp kernels, so it runs on the device
// the pass runs on (the RuleSet says so: runs_on_any_device()).
RuleSet rectifier_rules(bool gate_by_input);

// Guided backprop: d/dx = [x in the rectifier's linear range] * max(incoming gradient, 0).
RuleSet guided_backprop_rules();
// Deconvolution (Zeiler & Fergus): d/dx = max(incoming gradient, 0), whatever the forward input.
RuleSet deconvolution_rules();

}  // namespace spade::interp
