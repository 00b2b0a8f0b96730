// The `spade` command line, run as a user would: outputs, --help everywhere, one-line errors
// with a non-zero exit, no partial files; and real pretrained weights when ../shared is present.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "engine/executor.h"
#include "engine/memory_estimate.h"
#include "formats/image.h"
#include "formats/model.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "support/cli_failures.h"
#include "support/test_support.h"

using namespace spade;
namespace fs = std::filesystem;

namespace {

using test::slurp;
using test::spade_cli;
using Run = test::CliRun;

int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace

TEST_CASE("every command has --help", "[cli]") {
  for (const char* cmd : {"--help", "predict --help", "eval --help", "eval accuracy --help", "info --help",
                          "convert --help", "prune --help", "explain --help", "eval saliency --help"}) {
    INFO(cmd);
    Run r = spade_cli(cmd);
    CHECK(r.status == 0);
    CHECK(r.out.find("usage: spade") != std::string::npos);
  }
  // `spade help CMD [SUB]` prints what `spade CMD [SUB] --help` does.
  for (const char* cmd : {"explain", "eval trojan", "eval"}) {
    INFO(cmd);
    const Run help = spade_cli(std::string("help ") + cmd), direct = spade_cli(std::string(cmd) + " --help");
    CHECK(help.status == 0);
    CHECK(help.out == direct.out);
    CHECK(help.out.find("usage: spade " + std::string(cmd)) != std::string::npos);
  }
}

TEST_CASE("predict matches the library's forward pass and prints JSON", "[cli]") {
  const std::string dir = test::temp_dir();
  Run conv = spade_cli("convert --model cifar_resnet20 --random-init 7 --out " + dir + "/m.json");
  REQUIRE(conv.status == 0);
  const std::string img = test::data_path("image/src.png");
  Run r = spade_cli("predict --model " + dir + "/m.json --image " + img + " --json --topk 3");
  INFO(r.err);
  REQUIRE(r.status == 0);
  nlohmann::json j = nlohmann::json::parse(r.out);
  REQUIRE(j["logits"].size() == 10);
  REQUIRE(j["probs"].size() == 10);
  REQUIRE(j["top"].size() == 3);

  Model m = load_model(dir + "/m.json");
  Tensor x = preprocess_image(load_image(img), m.preprocess);
  Tensor logits = forward(m.graph, x).out();
  double psum = 0;
  for (int c = 0; c < 10; ++c) {
    CHECK(j["logits"][c].get<float>() == Approx(logits[c]).epsilon(1e-6));
    psum += j["probs"][c].get<double>();
  }
  CHECK(psum == Approx(1.0).epsilon(1e-5));
  int64_t best = 0;
  for (int c = 1; c < 10; ++c)
    if (logits[c] > logits[best]) best = c;
  CHECK(j["top"][0]["class"].get<int64_t>() == best);
  CHECK(j["top"][0]["label"].get<std::string>() == cifar10_labels()[best]);

  SECTION("the same input as .npy gives the same logits") {
    save_npy(dir + "/x.npy", x);
    Run rn = spade_cli("predict --model " + dir + "/m.json --input " + dir + "/x.npy --json");
    REQUIRE(rn.status == 0);
    CHECK(nlohmann::json::parse(rn.out)["logits"] == j["logits"]);
  }
  SECTION("text output lists the top classes") {
    Run rt = spade_cli("predict --model " + dir + "/m.json --image " + img + " --topk 2");
    REQUIRE(rt.status == 0);
    CHECK(lines(rt.out) == 2);
    CHECK(rt.out.find(cifar10_labels()[best]) != std::string::npos);
  }
}

TEST_CASE("bad input gives a one-line error naming the problem and a non-zero exit", "[cli][errors]") {
  const std::string dir = test::temp_dir();
  {
    std::ofstream(dir + "/junk.safetensors") << "this is not a safetensors file at all";
    std::ofstream(dir + "/junk.png") << "not a png";
    std::ofstream(dir + "/bad.json") << "{\"format\": \"spade-model\", \"nodes\": 5}";
  }
  Tensor nan = Tensor::zeros({1, 3, 32, 32});
  nan[17] = NAN;
  save_npy(dir + "/nan.npy", nan);
  save_npy(dir + "/wrong.npy", Tensor::zeros({2, 5}));
  const std::string img = test::data_path("image/src.png");
  const std::string model = dir + "/m.json";
  REQUIRE(spade_cli("convert --model cifar_resnet20 --random-init 1 --out " + model).status == 0);
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {"predict --model cifar_resnet20 --weights " + dir + "/missing.safetensors --image " + img, "missing.safetensors"},
      {"predict --model cifar_resnet20 --weights " + dir + "/junk.safetensors --image " + img, "junk.safetensors"},
      {"predict --model " + dir + "/bad.json --image " + img, "bad.json"},
      {"predict --model cifar_resnet20 --image " + img, "no weights"},
      {"predict --model " + model + " --image " + dir + "/junk.png", "junk.png"},
      {"predict --model " + model + " --image " + dir + "/nope.png", "nope.png"},
      {"predict --model " + model + " --input " + dir + "/nan.npy", "NaN"},
      {"predict --model " + model + " --input " + dir + "/wrong.npy", "wrong.npy"},
      {"predict --model " + model, "--image"},
      {"predict --model resnet7 --image " + img, "unknown architecture"},
      {"predict --model " + model + " --image " + img + " --bogus", "--bogus"},
      {"predict --model " + model + " --image " + img + " --topk x", "--topk"},
      {"predict --model " + model + " --image " + img + " --device tpu", "unknown device \"tpu\""},
      {"predict --model " + model + " --image " + img + " --device cuda:x", "cuda:N"},
      {"predict --model " + model + " --image " + img + " --device cpu --tf32", "--tf32 applies to the GPU only"},
      {"eval accuracy --model " + model + " --data " + dir + "/none", "none"},
      // A built-in architecture without weights ran on zeros and exited 0 (every computing command now refuses).
      {"explain --model cifar_resnet20 --image " + img + " --method gradcam --out " + dir + "/e", "no weights"},
      {"eval accuracy --model cifar_resnet20 --data " + dir + "/none", "no weights"},
      {"eval saliency --model cifar_resnet20 --image " + img + " --method saliency --spade off --mask " + img, "no weights"},
      {"visualize --model cifar_resnet20 --objective linear:1 --steps 2 --out " + dir + "/v", "no weights"},
      {"convert --model cifar_resnet20 --out " + dir + "/c.json", "--random-init"},
      {"frobnicate", "unknown command"},
      {"", "no command given"},
      {"eval", "eval needs what to evaluate"},
      {"explain --bogus", "error: unknown option --bogus"},  // the command is named once, by the prefix
      {"prune --model " + model + " --image " + img + " --out " + dir + "/t.safetensors --solver magic", "magic"},
      {"prune --model " + model + " --image " + img + " --out " + dir + "/t.safetensors --sparsity 2", "outside [0, 1]"},
      {"prune --model " + model + " --image " + img + " --out " + dir + "/t.safetensors --sparsity " + dir + "/bad.json",
       "bad.json"},
      {"prune --model " + model + " --out " + dir + "/t.safetensors", "--image"},
      {"prune --model " + model + " --image " + img + " --out " + dir + "/t.safetensors --augs 0", "--augs"},
      {"prune --model " + model + " --calib " + dir + "/nan.npy --out " + dir + "/t.safetensors", "NaN"},
      {"prune --model " + model + " --calib " + dir + "/wrong.npy --out " + dir + "/t.safetensors", "wrong.npy"},
      {"prune --model " + model + " --image " + img, "--out"},
      // Outputs never overwrite inputs: the model's own weights, the model JSON, the image.
      {"prune --model " + model + " --image " + img + " --out " + dir + "/m.safetensors", "would overwrite the input"},
      {"prune --model " + model + " --image " + img + " --out " + img, "would overwrite --image"},
      {"convert --model " + model + " --out " + model, "would overwrite --model"},
      {"convert --model cifar_resnet20 --weights " + dir + "/m.safetensors --out " + model, "would overwrite --weights"},
  };
  for (const Case& c : cases) {
    INFO(c.args);
    Run r = spade_cli(c.args);
    INFO(r.err);
    CHECK(r.status == 1);  // every error, usage errors included
    CHECK(lines(r.err) == 1);
    CHECK(r.err.find(c.needle) != std::string::npos);
  }
  CHECK(!fs::exists(dir + "/t.safetensors"));  // no failed prune left a trace behind
  CHECK(load_model(model).weights_path == dir + "/m.safetensors");  // the inputs are intact
  CHECK(load_image(img).width > 0);
  // A failed convert leaves nothing behind.
  CHECK(!fs::exists(dir + "/c.json"));
  CHECK(!fs::exists(dir + "/c.safetensors"));
}

TEST_CASE("a batch whose estimate exceeds --max-memory is refused before any work", "[cli][errors]") {
  const std::string dir = test::temp_dir();
  const std::string model = dir + "/m.json", img = test::data_path("image/src.png"), out = dir + "/x";
  REQUIRE(spade_cli("convert --model cifar_resnet20 --random-init 1 --out " + model).status == 0);
  fs::create_directories(dir + "/data/cat");
  save_png(dir + "/data/cat/a.png", load_image(img));

  // A limit that holds ten images of explain's forward and backward passes (one thread) and a half.
  const MemoryEstimate e = estimate_pass_memory(load_model(model).graph, PassKind::ForwardBackward, 1);
  const std::string limit = std::to_string(e.fixed + 10 * e.per_image + e.per_image / 2);
  const std::string explain = "explain --model " + model + " --image " + img + " --method saliency --threads 1 --quiet";
  Run fits = spade_cli(explain + " --batch 10 --max-memory " + limit + " --out " + dir + "/fits");
  INFO(fits.err);
  CHECK(fits.status == 0);
  CHECK(fs::exists(dir + "/fits/map.npy"));

  test::check_cli_failures(
      {
          {explain + " --batch 11 --max-memory " + limit + " --out " + out, "use --batch 10 or less"},
          {explain + " --batch 4 --max-memory 2X --out " + out, "--max-memory: \"2X\" is not a size"},
          {explain + " --batch 4 --max-memory 0 --out " + out, "--max-memory: \"0\" is not a size"},
          // The largest --batch there is: ~200 GB of passes for this model, more than 80% of the RAM.
          {explain + " --batch 65536 --out " + out, "of RAM (--max-memory)"},
          {"eval accuracy --model " + model + " --data " + dir + "/data --batch 0", "--batch must be an integer from 1 to 65536"},
          {"eval accuracy --model " + model + " --data " + dir + "/data --batch 64 --max-memory 1M",
           "more than --max-memory 1.00 MiB"},
          {"prune --model " + model + " --image " + img + " --out " + out + " --batch 64 --max-memory 1M",
           "--batch 64 needs about"},
          {"train --arch cifar_resnet20 --data " + dir + "/data --out " + out + ".json --batch 128 --max-memory 10M",
           "--batch 128 needs about"},
          {"visualize --model " + model + " --out " + out + " --batch 8 --max-memory 1M", "--batch 8 needs about"},
          {"eval saliency --model " + model + " --image " + img + " --method saliency --out " + out +
               ".json --batch 8 --max-memory 1M",
           "--batch 8 needs about"},
      },
      out);
  // Nothing but the inputs and the run that fitted is left.
  std::set<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir)) left.insert(entry.path().filename().string());
  CHECK(left == std::set<std::string>{"data", "fits", "m.json", "m.safetensors"});
}

TEST_CASE("prune writes a trace that predict loads, and a report", "[cli][spade][long]") {
  const std::string dir = test::temp_dir();
  const std::string model = dir + "/m.json", trace = dir + "/trace.safetensors", report = dir + "/r.json";
  REQUIRE(spade_cli("convert --model cifar_resnet20 --random-init 3 --out " + model).status == 0);
  const std::string img = test::data_path("image/src.png");
  Run p = spade_cli("prune --model " + model + " --image " + img + " --augs 24 --sparsity 0.6 --out " + trace +
                    " --report " + report);
  INFO(p.err);
  REQUIRE(p.status == 0);
  CHECK(p.out.find("wrote " + trace) != std::string::npos);
  const nlohmann::json r = nlohmann::json::parse(slurp(report));
  CHECK(r.at("solver") == "sparsegpt");
  CHECK(r.at("samples") == 24);
  CHECK(r.at("layers").size() == 19);
  for (const auto& l : r.at("layers")) {
    INFO(l.dump());
    CHECK(l.at("achieved").get<double>() >= 0.59);
    CHECK(l.at("loss").get<double>() >= 0.0);
    CHECK(l.contains("damping"));
    CHECK(l.contains("seconds"));
  }
  // Same keys as the dense weights: predict takes the trace as --weights.
  Model dense = load_model(model);
  std::map<std::string, Tensor> t = load_safetensors(trace);
  CHECK(t.size() == dense.graph.state_dict().size());
  Run pr = spade_cli("predict --model cifar_resnet20 --weights " + trace + " --image " + img + " --json");
  REQUIRE(pr.status == 0);
  // The stem and every BatchNorm are the dense ones.
  CHECK(t.at("conv1.weight").to_vector() == dense.graph.state_dict().at("conv1.weight").to_vector());
  CHECK(t.at("bn1.running_var").to_vector() == dense.graph.state_dict().at("bn1.running_var").to_vector());

  SECTION("an already-normalised input is augmented too") {
    save_npy(dir + "/x.npy", test::random_tensor({1, 3, 32, 32}, 9));
    Run c = spade_cli("prune --model " + model + " --input " + dir + "/x.npy --augs 8 --quiet --out " + dir +
                      "/t3.safetensors --report " + dir + "/r3.json");
    INFO(c.err);
    REQUIRE(c.status == 0);
    CHECK(nlohmann::json::parse(slurp(dir + "/r3.json")).at("samples") == 8);
  }
  SECTION("a calibration set instead of augmentations") {
    save_npy(dir + "/calib.npy", test::random_tensor({5, 3, 32, 32}, 4));
    Run c = spade_cli("prune --model " + model + " --calib " + dir + "/calib.npy --solver obc --sparsity 0.5 --quiet --out " +
                      dir + "/t2.safetensors --report " + dir + "/r2.json");
    INFO(c.err);
    REQUIRE(c.status == 0);
    CHECK(nlohmann::json::parse(slurp(dir + "/r2.json")).at("samples") == 5);
  }
}

TEST_CASE("info reports parameters and FLOPs", "[cli]") {
  Run r = spade_cli("info --model resnet50");
  REQUIRE(r.status == 0);
  CHECK(r.out.find("parameters: 25557032") != std::string::npos);
  CHECK(r.out.find("FLOPs per image: 8.17") != std::string::npos);
  Run l = spade_cli("info --list");
  CHECK(l.out.find("mobilenetv2_100") != std::string::npos);
}

TEST_CASE("pretrained CIFAR ResNet-20 reaches the PyTorch reference accuracy", "[cli][shared]") {
  if (!test::shared_available()) {
    WARN("../shared is absent: skipped the real-weights accuracy test");
    return;
  }
  Run r = spade_cli("eval accuracy --model cifar_resnet20 --weights " + test::shared_path("models/cifar10_resnet20.safetensors") +
                    " --data " + test::shared_path("data/cifar10/test.tar"));
  INFO(r.err);
  REQUIRE(r.status == 0);
  std::smatch m;
  REQUIRE(std::regex_search(r.out, m, std::regex(R"(top-1: ([0-9.]+)%, top-5: ([0-9.]+)% \((\d+) images\))")));
  CHECK(m[3].str() == "10000");
  const double acc = std::stod(m[1].str());
  CHECK(std::stod(m[2].str()) >= acc);
  INFO("top-1 " << acc << "%, PyTorch reference 81.03%");
  CHECK(std::fabs(acc - 81.03) <= 0.3);
}

TEST_CASE("asking for the GPU without a usable one is a clear error, and the CPU always works", "[cli]") {
  const std::string dir = test::temp_dir();
  const std::string model = dir + "/m.json", img = test::data_path("image/src.png");
  REQUIRE(spade_cli("convert --model cifar_resnet20 --random-init 3 --out " + model).status == 0);
  const Run cpu = spade_cli("predict --model " + model + " --image " + img + " --device cpu --json");
  INFO(cpu.err);
  CHECK(cpu.status == 0);
  if (cuda_backend_available()) return;  // a GPU machine runs the command instead (cuda_test_engine.cpp)
  const Run r = spade_cli("predict --model " + model + " --image " + img + " --device cuda");
  CHECK(r.status != 0);
  CHECK((r.err.find("no CUDA device is available") != std::string::npos ||
         r.err.find("no CUDA backend") != std::string::npos));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}
