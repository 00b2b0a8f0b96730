// The executor beyond single ops: gradients at inner nodes, pluggable backward rules, freeing
// and in-place reuse during inference, the capture hook, weight overlays and determinism.
#include <catch2/catch.hpp>

#include "engine/executor.h"
#include "formats/model.h"
#include "kernels/cpu/parallel.h"
#include "support/test_support.h"

using namespace spade;

namespace {
Graph test_model() {
  Graph g = build_zoo_graph("resnet18", {10, 8.0 / 64});
  random_init(g, 3);
  g.input_chw = {3, 48, 48};
  return g;
}
}  // namespace

TEST_CASE("the gradient at an inner node continues to the same input gradient", "[executor]") {
  Graph g = test_model();
  Tensor x = test::random_tensor({2, 3, 48, 48}, 1);
  ForwardResult f = forward(g, x);
  Tensor gy = one_hot_grad(f.out().shape(), {3, 5});
  const int block = g.at("layer2.1.relu2");  // every path from the input passes through it
  BackwardOptions bo;
  bo.activation_grads = {block, g.at("layer3.0.conv1")};
  BackwardResult full = backward(g, f, g.output(), gy, bo);
  REQUIRE(full.activation_grads.at(block).shape() == f.acts[block].shape());
  // Chain rule: starting at the block with its gradient reproduces the full input gradient.
  BackwardResult part = backward(g, f, block, full.activation_grads.at(block));
  CHECK(test::max_rel_error(part.input_grad, full.input_grad) < 1e-6);
  // And the two requested gradients are different tensors with their node's shape.
  CHECK(full.activation_grads.at(g.at("layer3.0.conv1")).shape() == f.acts[g.at("layer3.0.conv1")].shape());
}

TEST_CASE("backward rules replace the gradient per op kind or per node", "[executor][rules]") {
  Graph g = test_model();
  Tensor x = test::random_tensor({1, 3, 48, 48}, 2);
  ForwardResult f = forward(g, x);
  Tensor gy = one_hot_grad(f.out().shape(), {1});
  BackwardResult plain = backward(g, f, g.output(), gy);

  // A rule that blocks every ReLU: every path from the input to the logits passes through the
  // stem's ReLU, so the input gradient becomes zero.
  int calls = 0;
  RuleSet block_relu;
  block_relu.set(OpKind::ReLU, [&](const BackwardContext& ctx, BackwardOutputs& out) {
    ++calls;
    out.input_grads = {Tensor::zeros(ctx.inputs[0]->shape())};
  });
  BackwardOptions bo;
  bo.rules = &block_relu;
  BackwardResult blocked = backward(g, f, g.output(), gy, bo);
  CHECK(calls > 0);
  double mx = 0;
  for (int64_t i = 0; i < blocked.input_grad.numel(); ++i) mx = std::max(mx, std::fabs((double)blocked.input_grad[i]));
  CHECK(mx == 0.0);

  // A node rule wins over the op rule; delegating to gradient_rule reproduces the plain result.
  RuleSet mixed = block_relu;
  for (const Node& n : g.nodes())
    if (n.op == OpKind::ReLU) mixed.set_node(n.name, gradient_rule);
  bo.rules = &mixed;
  CHECK(test::max_abs_error(backward(g, f, g.output(), gy, bo).input_grad, plain.input_grad) == 0.0);

  // Guided backprop as a rule: ReLU passes only positive gradients at positive inputs.
  RuleSet guided;
  guided.set(OpKind::ReLU, [](const BackwardContext& ctx, BackwardOutputs& out) {
    const Tensor& xin = *ctx.inputs[0];
    Tensor gx = Tensor::empty(xin.shape());
    for (int64_t i = 0; i < gx.numel(); ++i)
      gx[i] = (xin[i] > 0 && ctx.grad_output[i] > 0) ? ctx.grad_output[i] : 0.f;
    out.input_grads = {gx};
  });
  bo.rules = &guided;
  CHECK(test::max_abs_error(backward(g, f, g.output(), gy, bo).input_grad, plain.input_grad) > 0.0);
}

TEST_CASE("inference without kept activations gives the same output", "[executor]") {
  Graph g = test_model();
  Tensor x = test::random_tensor({3, 3, 48, 48}, 4);
  Tensor x_copy = x.clone();
  ForwardOptions lean;
  lean.keep_activations = false;
  ForwardResult a = forward(g, x, lean);
  ForwardResult b = forward(g, x);
  CHECK(test::max_abs_error(a.out(), b.out()) == 0.0);
  CHECK(test::max_abs_error(x, x_copy) == 0.0);  // in-place reuse never touches the caller's input
  int kept = 0;
  for (const Tensor& t : a.acts) kept += t.defined();
  CHECK(kept <= 3);  // the output, and the input that the caller still holds
}

TEST_CASE("the hook sees every node's inputs and output; overlays replace weights", "[executor]") {
  Graph g = test_model();
  Tensor x = test::random_tensor({1, 3, 48, 48}, 5);
  int seen = 0;
  int64_t fc_in = 0;
  ForwardOptions opt;
  opt.hook = [&](int i, const std::vector<const Tensor*>& in, const Tensor& out) {
    ++seen;
    if (g.node(i).name == "fc") fc_in = in[0]->dim(1);
    CHECK(out.defined());
  };
  Tensor base = forward(g, x, opt).out();
  CHECK(seen == g.size() - 1);
  CHECK(fc_in == 64);

  WeightOverlay overlay;
  overlay["fc.weight"] = Tensor::zeros(g.node(g.at("fc")).params.at("weight").shape());
  ForwardOptions o2;
  o2.overlay = &overlay;
  Tensor y = forward(g, x, o2).out();
  const Tensor& bias = g.node(g.at("fc")).params.at("bias");
  for (int c = 0; c < 10; ++c) CHECK(y[c] == bias[c]);  // zero weights leave only the bias
  CHECK(test::max_abs_error(forward(g, x).out(), base) == 0.0);  // the graph itself is unchanged
}

TEST_CASE("results are bit-identical run to run for a fixed thread count", "[executor][threads]") {
  Graph g = test_model();
  Tensor x = test::random_tensor({4, 3, 48, 48}, 6);
  for (int threads : {1, 2, 3}) {
    kernels::set_num_threads(threads);
    ForwardResult f1 = forward(g, x), f2 = forward(g, x);
    CHECK(test::max_abs_error(f1.out(), f2.out()) == 0.0);
    Tensor gy = one_hot_grad(f1.out().shape(), {0, 1, 2, 3});
    BackwardOptions bo;
    bo.param_grads = true;
    BackwardResult b1 = backward(g, f1, g.output(), gy, bo), b2 = backward(g, f2, g.output(), gy, bo);
    CHECK(test::max_abs_error(b1.input_grad, b2.input_grad) == 0.0);
    CHECK(test::max_abs_error(b1.param_grads.at("conv1.weight"), b2.param_grads.at("conv1.weight")) == 0.0);
  }
  kernels::set_num_threads(0);
}

TEST_CASE("train mode updates BatchNorm running statistics only through forward_train", "[executor]") {
  Graph g = test_model();
  Tensor x = test::random_tensor({4, 3, 48, 48}, 7);
  const Tensor before = g.node(g.at("bn1")).params.at("running_mean").clone();
  ForwardOptions t;
  t.train = true;
  forward(g, x, t);
  CHECK(test::max_abs_error(g.node(g.at("bn1")).params.at("running_mean"), before) == 0.0);
  forward_train(g, x);
  CHECK(test::max_abs_error(g.node(g.at("bn1")).params.at("running_mean"), before) > 0.0);
}
