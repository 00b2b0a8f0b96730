#pragma once
// Tensor-level forward of every op and the kernel geometry it implies. The gradients live in
// rules.cpp (gradient_rule); both call the same kernels.
#include <vector>

#include "engine/backend.h"
#include "engine/graph.h"
#include "engine/rules.h"
#include "kernels/cpu/batchnorm.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/pool.h"

namespace spade {

// The parameter a node uses: the overlay's replacement when it has one, else the node's own.
const Tensor& effective_param(const Node& node, const WeightOverlay* overlay, const std::string& name);

// The explicit padding a conv or pool with these attributes applies to an h x w input ("SAME"
// resolved; pools must leave dilation at 1).
Padding resolve_padding(const OpAttrs& a, int64_t h, int64_t w);
kernels::ConvGeom conv_geom(const Node& node, const Shape& in);
kernels::PoolGeom pool_geom(const Node& node, const Shape& in);
kernels::BNGeom bn_geom(const Shape& in);
kernels::ShortcutGeom shortcut_geom(const Node& node, const Shape& in);

// Per-channel mean and 1/sqrt(var + eps) used to normalise, on x's device: running statistics
// in eval mode, batch statistics in train mode (then `stats`, when given, is the node whose
// running statistics receive PyTorch's momentum update).
backend::BnCoefficients bn_coefficients(const Node& node, const WeightOverlay* overlay, const Tensor& x, bool train,
                                        Node* stats = nullptr);

// Computes one node's output. `stats`, when given, is the node whose BatchNorm running
// statistics a train-mode pass updates (PyTorch's momentum rule, unbiased variance).
// With `reuse_input`, pointwise ops (BatchNorm, ReLU, ReLU6, Add) may write their output into
// the first input's storage: the caller promises nothing else will read that input again.
Tensor node_forward(const Node& node, const std::vector<const Tensor*>& inputs, const WeightOverlay* overlay,
                    bool train, uint64_t seed, Node* stats, bool reuse_input = false);

// The dropout seed of one node in one pass.
uint64_t node_seed(uint64_t pass_seed, int node_index);

}  // namespace spade
