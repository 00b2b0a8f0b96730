// Whole models against PyTorch: reduced-width ResNet-18/50, MobileNetV2 (ImageNet and CIFAR strides)
// and CIFAR ResNet-20 with
// random weights (tests/data/golden/*, made by tests/data/make_golden.py): logits, the input
// gradient of one logit per image, and parameter gradients.
#include <catch2/catch.hpp>

#include "engine/executor.h"
#include "formats/safetensors.h"
#include "formats/zoo.h"
#include "support/test_support.h"

using namespace spade;

namespace {

struct Case {
  const char* file;
  const char* arch;
  double width;
};

}  // namespace

TEST_CASE("built-in models match PyTorch logits and gradients", "[golden][models]") {
  const Case cases[] = {{"cifar_resnet20", "cifar_resnet20", 1.0},
                        {"resnet18_w8", "resnet18", 8.0 / 64},
                        {"resnet50_w8", "resnet50", 8.0 / 64},
                        {"mobilenet_v2_w025", "mobilenet_v2", 0.25},
                        {"cifar_mobilenet_v2_w050", "cifar_mobilenet_v2", 0.5}};
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.file) {
      ZooOptions zo;
      zo.num_classes = 10;
      zo.width = c.width;
      Graph g = build_zoo_graph(c.arch, zo);
      const std::string wpath = test::data_path(std::string("golden/") + c.file + ".weights.safetensors");
      g.load_state_dict(load_safetensors(wpath), wpath);  // also skips num_batches_tracked
      SafetensorsFile golden(test::data_path(std::string("golden/") + c.file + ".golden.safetensors"));
      const Tensor x = golden.tensor("input");
      g.input_chw = {x.dim(1), x.dim(2), x.dim(3)};

      ForwardResult fwd = forward(g, x);
      const double logit_err = test::max_rel_error(fwd.out(), golden.tensor("logits"));
      INFO("logits max relative error " << logit_err);
      CHECK(logit_err <= 1e-4);

      const Tensor t = golden.tensor("targets");
      std::vector<int64_t> targets;
      for (int64_t i = 0; i < t.numel(); ++i) targets.push_back(static_cast<int64_t>(t[i]));
      BackwardOptions bo;
      bo.param_grads = true;
      BackwardResult b = backward(g, fwd, g.output(), one_hot_grad(fwd.out().shape(), targets), bo);
      const double gx_err = test::max_rel_error(b.input_grad, golden.tensor("input_grad"));
      INFO("input gradient max relative error " << gx_err);
      CHECK(gx_err <= 1e-3);

      int grads = 0;
      for (const SafetensorsEntry& e : golden.entries()) {
        if (e.name.rfind("grad.", 0) != 0) continue;
        const std::string key = e.name.substr(5);
        REQUIRE(b.param_grads.count(key));
        const double err = test::max_rel_error(b.param_grads.at(key), golden.tensor(e.name));
        INFO("gradient of " << key << " max relative error " << err);
        CHECK(err <= 1e-3);
        ++grads;
      }
      CHECK(grads > 10);
    }
  }
}
