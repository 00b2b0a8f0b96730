// `spade explain` and `spade eval saliency` run as a user would: the files they write against the
// library's own computation, the SPADE comparison, and bad input refused with nothing written.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "formats/image.h"
#include "formats/model.h"
#include "formats/npy.h"
#include "interpret/metrics/insertion_deletion.h"
#include "interpret/metrics/roc_auc.h"
#include "interpret/saliency/methods.h"
#include "interpret/spade/default_schedules.h"
#include "support/test_support.h"

using namespace spade;
namespace fs = std::filesystem;

namespace {

using test::slurp;
using test::spade_cli;
using Run = test::CliRun;

// A CIFAR ResNet-20 with random weights saved as model JSON + safetensors, and one input.
struct Fixture {
  std::string dir = test::temp_dir();
  std::string model = dir + "/m.json", input = dir + "/x.npy";
  Fixture() {
    Run c = spade_cli("convert --model cifar_resnet20 --random-init 5 --out " + model);
    REQUIRE(c.status == 0);
    save_npy(input, test::random_tensor({1, 3, 32, 32}, 21));
  }
};

}  // namespace

TEST_CASE("explain writes the method's attribution, its channel sum, PNGs and meta.json", "[cli][explain]") {
  Fixture f;
  const std::string out = f.dir + "/sal";
  Run r = spade_cli("explain --model " + f.model + " --input " + f.input + " --method input_x_gradient --out " + out);
  INFO(r.err);
  REQUIRE(r.status == 0);

  Model m = load_model(f.model);
  const Tensor x = load_npy(f.input);
  const interp::Network net{m.graph, nullptr, 16};
  const Tensor logits = interp::logits(net, x);
  const int64_t pred = std::max_element(logits.data(), logits.data() + 10) - logits.data();
  const Tensor expected = interp::input_x_gradient(net, x, pred, interp::captum_preset());

  const Tensor attr = load_npy(out + "/attribution.npy");
  REQUIRE(attr.shape() == Shape{3, 32, 32});
  CHECK(attr.to_vector() == expected.to_vector());  // same code, same input: bit-identical
  const Tensor map = load_npy(out + "/map.npy");
  REQUIRE(map.shape() == Shape{32, 32});
  for (int64_t i = 0; i < 32 * 32; ++i) CHECK(map[i] == Approx(attr[i] + attr[1024 + i] + attr[2048 + i]).margin(1e-7));
  for (const char* png : {"heatmap.png", "overlay.png"}) {
    const Image im = load_image(out + "/" + png);
    CHECK(im.width == 32);
    CHECK(im.height == 32);
  }
  const nlohmann::json meta = nlohmann::json::parse(slurp(out + "/meta.json"));
  CHECK(meta.at("method") == "input_x_gradient");
  CHECK(meta.at("target") == pred);
  CHECK(meta.at("dense_prediction").at("class") == pred);
  CHECK(meta.at("trace_prediction").is_null());
  CHECK(meta.at("spade").is_null());
  CHECK(meta.at("timings").at("attribution_s").get<double>() >= 0.0);

  SECTION("an explicit target and method options reach the method") {
    const std::string o2 = f.dir + "/ig";
    Run r2 = spade_cli("explain --model " + f.model + " --input " + f.input +
                       " --method integrated_gradients --steps 7 --target 4 --quiet --out " + o2);
    INFO(r2.err);
    REQUIRE(r2.status == 0);
    interp::MethodParams p;
    p.steps = 7;
    CHECK(load_npy(o2 + "/attribution.npy").to_vector() == interp::integrated_gradients(net, x, 4, p).to_vector());
    const nlohmann::json m2 = nlohmann::json::parse(slurp(o2 + "/meta.json"));
    CHECK(m2.at("target") == 4);
    CHECK(m2.at("settings").at("steps") == 7);
  }
}

TEST_CASE("explain --method all --spade fast --compare writes every method for both models", "[cli][explain][spade][long]") {
  Fixture f;
  const std::string out = f.dir + "/all";
  Run r = spade_cli("explain --model " + f.model + " --input " + f.input +
                    " --method all --spade fast --augs 8 --sparsity 0.5 --compare --quiet --samples 8 --out " + out);
  INFO(r.err);
  REQUIRE(r.status == 0);
  for (const auto& info : interp::all_methods()) {
    INFO(info.name);
    const std::string d = out + "/" + info.name;
    CHECK(load_npy(d + "/attribution.npy").shape() == Shape{3, 32, 32});
    CHECK(load_npy(d + "/dense/attribution.npy").shape() == Shape{3, 32, 32});
    const nlohmann::json meta = nlohmann::json::parse(slurp(d + "/meta.json"));
    CHECK(meta.at("explained") == "spade trace");
    CHECK(meta.at("spade").at("report").at("layers").size() == 19);
    CHECK(meta.at("trace_prediction").contains("class"));
    CHECK(meta.at("timings").contains("dense_attribution_s"));
  }
  // The panel: one row per method, three columns of 32x32 cells enlarged 4x.
  const Image panel = load_image(out + "/compare.png");
  CHECK(panel.height > 14 * 128);
  CHECK(panel.width > 3 * 128);
  // The dense map of --compare is the dense model's own (as explained without --spade).
  const std::string dense_only = f.dir + "/dense_only";
  REQUIRE(spade_cli("explain --model " + f.model + " --input " + f.input + " --method saliency --quiet --out " +
                    dense_only).status == 0);
  CHECK(load_npy(dense_only + "/attribution.npy").to_vector() ==
        load_npy(out + "/saliency/dense/attribution.npy").to_vector());
}

TEST_CASE("explain refuses bad input with one line and writes nothing", "[cli][explain][errors]") {
  Fixture f;
  save_npy(f.dir + "/nan.npy", Tensor::full({1, 3, 32, 32}, NAN));
  const std::string base = "explain --model " + f.model + " --out " + f.dir + "/o ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {base + "--input " + f.input + " --method nope", "unknown method"},
      {base + "--input " + f.input + " --method saliency --target 10", "out of range"},
      {base + "--input " + f.input + " --method saliency --compare", "--compare needs"},
      {base + "--input " + f.input + " --method occlusion --window 3,40,4", "does not fit"},
      {base + "--input " + f.input + " --method occlusion --window 3,a,4", "--window"},
      {base + "--input " + f.input + " --method gradcam --layer layer9", "no layer named"},
      {base + "--input " + f.input + " --method gradient_shap --baselines zero,mean", "--baselines"},
      {base + "--input " + f.dir + "/nan.npy --method saliency", "NaN"},
      {base + "--input " + f.dir + "/missing.npy --method saliency", "missing.npy"},
      {base + "--input " + f.input + " --method saliency --spade fast --augs 0", "--augs"},
  };
  for (const auto& [args, needle] : cases) {
    INFO(args);
    Run r = spade_cli(args);
    CHECK(r.status == 1);
    INFO(r.err);
    CHECK(r.err.find(needle) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(!fs::exists(f.dir + "/o"));
  }
}

TEST_CASE("eval saliency reports insertion/deletion, Trojan AUC and pointing as the library computes them",
          "[cli][explain][metrics][long]") {
  Fixture f;
  // A square "trigger" mask of the input's size.
  Tensor mask = Tensor::zeros({32, 32});
  std::vector<uint8_t> mask_bytes(32 * 32, 0);
  for (int y = 8; y < 20; ++y)
    for (int x = 10; x < 22; ++x) mask[y * 32 + x] = 1.f, mask_bytes[y * 32 + x] = 1;
  save_npy(f.dir + "/mask.npy", mask);
  Run r = spade_cli("eval saliency --model " + f.model + " --input " + f.input + " --method saliency,gradcam --target 3 " +
                    "--mask " + f.dir + "/mask.npy --quiet --out " + f.dir + "/res.json");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const nlohmann::json res = nlohmann::json::parse(slurp(f.dir + "/res.json"));

  Model m = load_model(f.model);
  const Tensor x = load_npy(f.input);
  const interp::Network net{m.graph, nullptr, 16};
  for (const char* method : {"saliency", "gradcam"}) {
    INFO(method);
    const Tensor a = interp::find_method(method).fn(net, x, 3, interp::captum_preset());
    const interp::InsertionDeletion id = interp::insertion_deletion(x, a, interp::class_probability(net, 3));
    const interp::TrojanAuc t = interp::trojan_auc(a, mask_bytes);
    const nlohmann::json& got = res.at("mean").at(method);
    CHECK(got.at("insertion").get<double>() == Approx(id.insertion));
    CHECK(got.at("deletion").get<double>() == Approx(id.deletion));
    CHECK(got.at("trojan_auc_signed").get<double>() == Approx(t.signed_auc));
    CHECK(got.at("trojan_auc_abs").get<double>() == Approx(t.abs_auc));
    CHECK(got.at("insertion").get<double>() >= 0.0);
    CHECK(got.at("insertion").get<double>() <= 99.0);
  }
  CHECK(res.at("per_image").size() == 1);

  SECTION("a mask of the wrong size is refused") {
    save_npy(f.dir + "/small.npy", Tensor::zeros({16, 16}));
    Run bad = spade_cli("eval saliency --model " + f.model + " --input " + f.input + " --method saliency --mask " +
                        f.dir + "/small.npy --out " + f.dir + "/bad.json");
    CHECK(bad.status == 1);
    CHECK(bad.err.find("does not match") != std::string::npos);
    CHECK(!fs::exists(f.dir + "/bad.json"));
  }
}

TEST_CASE("explain --spade without --sparsity: each method's built-in schedule, said in meta.json",
          "[cli][explain][spade][defaults]") {
  Fixture f;
  const std::string out = f.dir + "/defaults";
  Run r = spade_cli("explain --model " + f.model + " --input " + f.input +
                    " --method saliency,gradcam --spade fast --augs 8 --quiet --out " + out);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("note:") == std::string::npos);
  const auto own = interp::default_schedule("cifar_resnet20", "saliency");
  REQUIRE(own.has_value());
  const nlohmann::json sal = nlohmann::json::parse(slurp(out + "/saliency/meta.json"));
  CHECK(sal.at("spade").at("sparsity") == "built-in cifar_resnet20/saliency");
  CHECK(sal.at("spade").at("report").at("sparsity") == "built-in cifar_resnet20/saliency");
  const nlohmann::json cam = nlohmann::json::parse(slurp(out + "/gradcam/meta.json"));
  CHECK(cam.at("spade").at("sparsity") == "built-in cifar_resnet20/other_methods");

  // The same map as the schedule given explicitly, and --sparsity overrides the default.
  nlohmann::json targets = nlohmann::json::object();
  for (const auto& [prefix, v] : own->prefixes()) targets[prefix] = v;
  const std::string file = f.dir + "/saliency_schedule.json";
  std::ofstream(file) << targets.dump();
  const std::string given = f.dir + "/given";
  REQUIRE(spade_cli("explain --model " + f.model + " --input " + f.input + " --method saliency --spade fast --augs 8 "
                    "--quiet --sparsity " + file + " --out " + given).status == 0);
  CHECK(load_npy(given + "/attribution.npy").to_vector() == load_npy(out + "/saliency/attribution.npy").to_vector());
  CHECK(nlohmann::json::parse(slurp(given + "/meta.json")).at("spade").at("sparsity") == file);

  // An architecture without defaults: every layer at 0.9, and a note that says so.
  nlohmann::json model = nlohmann::json::parse(slurp(f.model));
  model["arch"] = "custom";
  const std::string custom = f.dir + "/custom.json";
  std::ofstream(custom) << model.dump();
  const std::string out2 = f.dir + "/custom_out";
  Run c = spade_cli("explain --model " + custom + " --input " + f.input +
                    " --method saliency,gradcam --spade fast --augs 8 --quiet --out " + out2);
  INFO(c.err);
  REQUIRE(c.status == 0);
  CHECK(c.err.find("no built-in sparsity schedule for architecture \"custom\"") != std::string::npos);
  CHECK(c.err.find("note:") == c.err.rfind("note:"));  // once, not per method
  CHECK(nlohmann::json::parse(slurp(out2 + "/saliency/meta.json")).at("spade").at("sparsity") == "0.9");
}
