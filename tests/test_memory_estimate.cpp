// The batch memory estimate behind --max-memory: by hand on a small graph, against the bytes the
// executor really holds on the built-in models, and the size parsing and printing it uses.
#include <catch2/catch.hpp>

#include "engine/executor.h"
#include "engine/memory_estimate.h"
#include "formats/model.h"
#include "kernels/cpu/memory.h"
#include "support/test_support.h"

using namespace spade;

namespace {

// input (3,8,8) -> conv 3->4 3x3 pad 1 -> relu -> add(relu, conv) -> flatten (256) -> linear 10.
Graph small_graph() {
  Graph g;
  g.input_chw = {3, 8, 8};
  OpAttrs conv;
  conv.in_channels = 3;
  conv.out_channels = 4;
  conv.kernel = {3, 3};
  conv.padding = {1, 1};
  g.add("conv", OpKind::Conv2d, conv, {"input"});
  g.add("relu", OpKind::ReLU, {}, {"conv"});
  g.add("add", OpKind::Add, {}, {"relu", "conv"});
  g.add("flatten", OpKind::Flatten, {}, {"add"});
  OpAttrs fc;
  fc.in_channels = 256;
  fc.out_channels = 10;
  fc.bias = true;
  g.add("fc", OpKind::Linear, fc, {"flatten"});
  g.set_output("fc");
  return g;
}

// Bytes of tensors the pass allocated at its peak, beyond what was held before it (the input
// included, as the estimate counts it).
template <class F>
int64_t measured_peak(F&& pass) {
  const int64_t before = host_tensor_memory().live;
  reset_host_tensor_peak();
  pass();
  return host_tensor_memory().peak - before;
}

}  // namespace

TEST_CASE("estimate_pass_memory follows the executor on a small graph, by hand", "[memory]") {
  const Graph g = small_graph();
  // Per image, in floats: input 192, conv/relu/add/flatten 256 each, fc 10.
  // Forward: the input (its caller holds it throughout) + conv = 448, + relu = 704, + add = 960
  // while relu and conv are still held: the peak.
  const MemoryEstimate fwd = estimate_pass_memory(g, PassKind::Forward, 2);
  CHECK(fwd.per_image == 960 * 4);
  // Fixed: weights (conv 4*3*3*3 = 108, fc 2560 + 10) and one im2col buffer per thread
  // (27 rows x 64 pixels).
  const int64_t weights = (108 + 2570) * 4, scratch = 27 * 64 * 4;
  CHECK(fwd.fixed == weights + 2 * scratch);
  CHECK(fwd.bytes(5) == fwd.fixed + 5 * fwd.per_image);

  // Forward and backward: all activations (192 + 4 * 256 + 10 = 1226) plus the gradients at their
  // peak, at relu's step: add's gradient went to relu and conv (256 + 256), relu now passes one
  // more to conv, summed into a new buffer (256 + 256) -> 1024.
  const MemoryEstimate fb = estimate_pass_memory(g, PassKind::ForwardBackward, 1);
  CHECK(fb.per_image == (1226 + 1024) * 4);
  CHECK(fb.fixed == 2 * weights + scratch);
}

TEST_CASE("estimate_pass_memory bounds the tensors a pass really holds", "[memory]") {
  for (const std::string arch : {"cifar_resnet20", "cifar_mobilenet_v2", "resnet18"}) {
    INFO(arch);
    ZooOptions zo;
    zo.width = 0.25;
    Model m = make_zoo_model(arch, zo);
    random_init(m.graph, 3);
    if (arch == "resnet18") m.graph.input_chw = {3, 64, 64};
    const int64_t batch = 3;
    const MemoryEstimate fwd = estimate_pass_memory(m.graph, PassKind::Forward, 1);
    const MemoryEstimate fb = estimate_pass_memory(m.graph, PassKind::ForwardBackward, 1);
    const Shape shape = {batch, 3, m.graph.input_chw[1], m.graph.input_chw[2]};

    int64_t weights = 0;
    for (const auto& [key, t] : m.graph.parameters()) weights += t->numel() * 4;

    const int64_t forward_bytes = measured_peak([&] {
      ForwardOptions fo;
      fo.keep_activations = false;
      const Tensor x = test::random_tensor(shape, 1);
      forward(m.graph, x, fo);
    });
    // As training runs it: every activation kept, gradients of the input and of every parameter.
    const int64_t backward_bytes = measured_peak([&] {
      const Tensor x = test::random_tensor(shape, 1);
      const ForwardResult r = forward(m.graph, x);
      BackwardOptions bo;
      bo.param_grads = true;
      backward(m.graph, r, m.graph.output(), Tensor::full(r.out().shape(), 1.f), bo);
    });
    // The weights were there before the pass; the rest of the estimate must cover what it held
    // (in-place ReLUs and gradients that are never materialised only save), and not loosely: the
    // per-image part alone is within 40% of it.
    INFO("forward: estimated " << fwd.bytes(batch) - weights << ", measured " << forward_bytes);
    INFO("forward + backward: estimated " << fb.bytes(batch) - weights << ", measured " << backward_bytes);
    CHECK(forward_bytes <= fwd.bytes(batch) - weights);
    CHECK(forward_bytes >= 0.6 * static_cast<double>(batch * fwd.per_image));
    CHECK(backward_bytes <= fb.bytes(batch) - weights);
    CHECK(backward_bytes >= 0.6 * static_cast<double>(batch * fb.per_image));
  }
}

TEST_CASE("parse_size reads bytes and K/M/G/T suffixes, and refuses anything else", "[memory]") {
  CHECK(parse_size("2000000", "--max-memory") == 2000000);
  CHECK(parse_size("512M", "--max-memory") == int64_t{512} << 20);
  CHECK(parse_size("8G", "--max-memory") == int64_t{8} << 30);
  CHECK(parse_size("8gb", "--max-memory") == int64_t{8} << 30);
  CHECK(parse_size("1.5GiB", "--max-memory") == int64_t{3} << 29);
  CHECK(parse_size("100k", "--max-memory") == 102400);
  CHECK(parse_size("2T", "--max-memory") == int64_t{2} << 40);
  for (const std::string bad : {"", "G", "abc", "-1G", "0", "8X", "8GG", "nan", "inf", "1e30", "8 G"}) {
    INFO(bad);
    const std::string e = test::error_of([&] { parse_size(bad, "--max-memory"); });
    CHECK(e.find("--max-memory: \"" + bad + "\" is not a size") == 0);
  }
}

TEST_CASE("format_bytes", "[memory]") {
  using kernels::format_bytes;
  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(1023) == "1023 B");
  CHECK(format_bytes(1024) == "1.00 KiB");
  CHECK(format_bytes(1536) == "1.50 KiB");
  CHECK(format_bytes(size_t{3} << 20) == "3.00 MiB");
  CHECK(format_bytes(size_t{5} << 30) == "5.00 GiB");
}
