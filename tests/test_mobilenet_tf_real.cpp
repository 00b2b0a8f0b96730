// The real ImageNet MobileNetV2 of ../shared (Google's TF-slim weights: "SAME" padding, 1001
// classes, [-1, 1] inputs) on real photos, through every command. Skipped without ../shared.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "engine/executor.h"
#include "formats/file_io.h"
#include "formats/image.h"
#include "formats/image_folder.h"
#include "formats/model.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "support/test_support.h"

using namespace spade;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

using test::spade_cli;
using Run = test::CliRun;

bool skip_without_shared() {
  if (test::shared_available() && fs::exists(test::shared_path("models/imagenet_mobilenet_v2_tf.safetensors")) &&
      fs::exists(test::shared_path("data/imagenet-samples/samples.tar")))
    return false;
  WARN("../shared (imagenet_mobilenet_v2_tf, imagenet-samples) is absent: skipped the real ImageNet model test");
  return true;
}

std::string weights() { return test::shared_path("models/imagenet_mobilenet_v2_tf.safetensors"); }
std::string labels_tsv() { return test::shared_path("models/imagenet_mobilenet_v2_tf.classes.tsv"); }
std::string samples() { return test::shared_path("data/imagenet-samples/samples.tar"); }
// One thread: ctest runs two tests at once on two cores, and OpenMP threads that wait for each
// other on a busy core made the insertion/deletion run 7x slower (510 s instead of 74 s).
std::string model_args() {
  return "--model mobilenet_v2_tf --weights " + weights() + " --labels " + labels_tsv() + " --threads 1 ";
}

// A photo of the sample tar written to a scratch file (the tar member's own name kept).
std::string extract_photo(const std::string& member) {
  static const std::string dir = test::temp_dir();
  const std::string path = join_path(dir, fs::path(member).filename().string());
  if (!fs::exists(path)) {
    ImageFolder data(samples());
    for (size_t i = 0; i < data.size(); ++i) {
      const LabeledImage li = data.get(i);
      if (li.name == member) {
        write_file_atomic(path, li.bytes.data(), li.bytes.size());
        return path;
      }
    }
    FAIL("no " << member << " in " << samples());
  }
  return path;
}

const char* kTench = "samples/n01440764/n01440764_tench.jpg";
const char* kTabby = "samples/n02123045/n02123045_tabby.jpg";

// PyTorch's top class for a photo, from the golden file's metadata ("member:class;...").
int64_t golden_top_class(const std::string& member) {
  const SafetensorsFile golden(test::data_path("golden/mobilenet_v2_tf_photos.golden.safetensors"));
  const std::string photos = golden.metadata().at("photos") + ";";
  const size_t at = photos.find(member + ":");
  REQUIRE(at != std::string::npos);
  const size_t from = at + member.size() + 1;
  return std::stoll(photos.substr(from, photos.find(';', from) - from));
}

Run run_ok(const std::string& args) {
  Run r = spade_cli(args);
  INFO("spade " << args << "\n" << r.err);
  REQUIRE(r.status == 0);
  return r;
}

nlohmann::json json_file(const std::string& path) { return nlohmann::json::parse(test::slurp(path)); }

}  // namespace

TEST_CASE("real MobileNetV2 (TF SAME): top-1 and top-5 on the 1000 sample photos match PyTorch",
          "[shared][imagenet]") {
  if (skip_without_shared()) return;
  const Run r = run_ok("eval accuracy " + model_args() + "--data " + samples());
  std::smatch m;
  REQUIRE(std::regex_search(r.out, m, std::regex(R"(top-1: ([0-9.]+)%, top-5: ([0-9.]+)% \((\d+) images\))")));
  CHECK(m[3].str() == "1000");
  const double top1 = std::stod(m[1].str()), top5 = std::stod(m[2].str());
  INFO("top-1 " << top1 << "% (PyTorch 88.2%), top-5 " << top5 << "% (PyTorch 98.0%)");
  CHECK(std::fabs(top1 - 88.2) <= 0.5);
  CHECK(std::fabs(top5 - 98.0) <= 0.5);
  // Without ids the folders (WordNet ids) match no name, and 1000 folders in sorted order would be
  // off by one against 1001 outputs: refused, with the way out.
  const Run no_ids = spade_cli("eval accuracy --model mobilenet_v2_tf --weights " + weights() + " --data " + samples());
  CHECK(no_ids.status == 1);
  CHECK_THAT(no_ids.err, Contains("1000 class folders") && Contains("1001 classes") && Contains("--labels"));
}

TEST_CASE("real MobileNetV2: logits and input gradients agree with PyTorch on real photos", "[shared][imagenet]") {
  if (skip_without_shared()) return;
  SafetensorsFile golden(test::data_path("golden/mobilenet_v2_tf_photos.golden.safetensors"));
  LoadOptions lo;
  lo.weights = weights();
  const Model m = load_model("mobilenet_v2_tf", lo);
  int i = 0;
  for (const char* member : {kTench, kTabby}) {
    const std::string key = "photo" + std::to_string(i++);
    INFO(member);
    const Tensor x = preprocess_image(load_image(extract_photo(member)), m.preprocess);
    // The reference was computed on this very tensor (spade predict --save-input).
    const Tensor sums = golden.tensor(key + ".input_checksum");
    double s = 0, sa = 0, s2 = 0;
    for (int64_t k = 0; k < x.numel(); ++k) s += x[k], sa += std::fabs(x[k]), s2 += double(x[k]) * x[k];
    REQUIRE(s == Approx(sums[0]).epsilon(1e-5).margin(1e-2));
    REQUIRE(sa == Approx(sums[1]).epsilon(1e-6));
    REQUIRE(s2 == Approx(sums[2]).epsilon(1e-6));

    const ForwardResult fwd = forward(m.graph, x);
    const Tensor want = golden.tensor(key + ".logits");
    const double logit_err = test::max_rel_error(fwd.out(), want);
    INFO("logits max rel error " << logit_err);
    CHECK(logit_err <= 1e-5);
    const int64_t target = std::max_element(want.data(), want.data() + want.numel()) - want.data();
    Tensor seed = Tensor::zeros(fwd.out().shape());
    seed[target] = 1.f;
    const BackwardResult b = backward(m.graph, fwd, m.graph.output(), seed);
    // These quantisation-trained weights put many ReLU6 inputs exactly on a kink in float64 (on
    // the tench photo 2.44 M of 6.1 M at 0 and 29,685 at 6), so a float32 pass crosses a few kinks
    // the other way and the gradient differs locally: PyTorch's own float32 gradient is 0.63%
    // (max) / 0.31% (L2) from the float64 reference with 7% of entries off by more than 1e-4 of
    // the maximum; ours is 5.7% at one spot (rows 157-161, columns 212-216) / 0.42% (L2) with
    // 0.17% of entries off by more than 1e-4. So: the golden tolerance on 99.5% of the entries
    // (a padding error along one border alone would move 1.8% of them) and 1% in L2.
    const Tensor want_grad = golden.tensor(key + ".input_grad");
    const Tensor& got = b.input_grad;
    REQUIRE(got.numel() == want_grad.numel());
    double peak = 0, diff2 = 0, norm2 = 0;
    for (int64_t k = 0; k < got.numel(); ++k) peak = std::max(peak, std::fabs(double(want_grad[k])));
    int64_t off = 0;
    for (int64_t k = 0; k < got.numel(); ++k) {
      const double d = double(got[k]) - want_grad[k];
      off += std::fabs(d) > 1e-4 * peak;
      diff2 += d * d;
      norm2 += double(want_grad[k]) * want_grad[k];
    }
    INFO("input gradient: " << off << " of " << got.numel() << " entries off by more than 1e-4 of the maximum, L2 "
                            << std::sqrt(diff2 / norm2));
    CHECK(off <= got.numel() / 200);
    CHECK(std::sqrt(diff2 / norm2) <= 1e-2);
  }
}

TEST_CASE("real MobileNetV2: predict names the class, and --target takes a name or an id", "[shared][imagenet]") {
  if (skip_without_shared()) return;
  const std::string tench = extract_photo(kTench);
  const Run r = run_ok("predict " + model_args() + "--image " + tench);
  CHECK_THAT(r.out, Contains(" 1. tench, Tinca tinca"));
  CHECK_THAT(r.out, Contains("(class 1,"));
  // Without --labels the built-in model still names its 1001 outputs (0 = background; the
  // compiled-in ImageNet names are torchvision's short ones).
  const Run plain = run_ok("predict --model mobilenet_v2_tf --weights " + weights() + " --image " + tench + " --topk 1");
  CHECK_THAT(plain.out, Contains(" 1. tench ") && Contains("(class 1,"));

  const std::string dir = test::temp_dir();
  for (const std::string& target : {std::string("tench"), std::string("n01440764"), std::string("1")}) {
    const std::string out = dir + "/t" + target;
    run_ok("explain " + model_args() + "--image " + tench + " --method saliency --target " + target + " --quiet --out " + out);
    const nlohmann::json meta = json_file(out + "/meta.json");
    CHECK(meta.at("target") == 1);
    CHECK(meta.at("target_label") == "tench, Tinca tinca");
  }
  const Run bad = spade_cli("explain " + model_args() + "--image " + tench + " --method saliency --target tenhc --out " + dir + "/bad");
  CHECK(bad.status == 1);
  CHECK_THAT(bad.err, Contains("--target \"tenhc\" names no class") && Contains("tench, Tinca tinca"));
  CHECK_FALSE(fs::exists(dir + "/bad"));
  const Run crane = spade_cli("explain " + model_args() + "--image " + tench + " --method saliency --target crane --out " + dir + "/bad");
  CHECK(crane.status == 1);
  CHECK_THAT(crane.err, Contains("ambiguous") && Contains("n02012849") && Contains("n03126707"));
}

TEST_CASE("real MobileNetV2: all 14 saliency methods, dense and FastSPADE, on a real photo", "[shared][imagenet]") {
  if (skip_without_shared()) return;
  const std::string out = test::temp_dir() + "/all";
  run_ok("explain " + model_args() + "--image " + extract_photo(kTabby) +
         " --method all --spade fast --augs 16 --compare --samples 4 --steps 8 --quiet --out " + out +
         // Fewer occlusion windows and Score-CAM channels (features.16: 160) than the defaults, for time.
         " --window 3,56,56 --stride 3,56,56 --layer features.16");
  int methods = 0;
  for (const auto& e : fs::directory_iterator(out)) {
    if (!e.is_directory()) continue;
    ++methods;
    INFO(e.path());
    for (const std::string& sub : {std::string(""), std::string("/dense")}) {
      const Tensor map = load_npy(e.path().string() + sub + "/map.npy");
      CHECK(map.shape() == Shape{224, 224});
      bool finite = true, nonzero = false;
      for (int64_t i = 0; i < map.numel(); ++i) finite &= std::isfinite(map[i]), nonzero |= map[i] != 0.f;
      CHECK(finite);
      CHECK(nonzero);
    }
    const nlohmann::json meta = json_file(e.path().string() + "/meta.json");
    CHECK(meta.at("explained") == "spade trace");
    CHECK(meta.at("dense_prediction").at("class") == golden_top_class(kTabby));
  }
  CHECK(methods == 14);
  CHECK(fs::exists(out + "/compare.png"));
}

TEST_CASE("real MobileNetV2: exact SPADE (OBC) on the last stage", "[shared][imagenet]") {
  if (skip_without_shared()) return;
  const std::string dir = test::temp_dir();
  write_file_atomic(dir + "/last.json", R"({"features.18": 0.9, "classifier": 0.9})");
  const std::string out = dir + "/exact";
  run_ok("explain " + model_args() + "--image " + extract_photo(kTench) + " --method saliency --spade exact --augs 16 " +
         "--sparsity " + dir + "/last.json --quiet --out " + out);
  const nlohmann::json meta = json_file(out + "/meta.json");
  CHECK(meta.at("spade").at("mode") == "exact");
  std::vector<std::string> pruned;
  for (const nlohmann::json& l : meta.at("spade").at("report").at("layers"))
    if (l.at("pruned").get<bool>()) {
      pruned.push_back(l.at("name"));
      CHECK(l.at("achieved").get<double>() == Approx(0.9).margin(0.02));
    }
  CHECK(pruned == std::vector<std::string>{"features.18.0", "classifier.1"});
}

TEST_CASE("real MobileNetV2: prune with and without depthwise convs", "[shared][imagenet]") {
  if (skip_without_shared()) return;
  const std::string dir = test::temp_dir(), photo = extract_photo(kTench);
  std::map<std::string, Tensor> dense = load_safetensors(weights());
  for (bool depthwise : {false, true}) {
    const std::string out = dir + (depthwise ? "/dw.safetensors" : "/plain.safetensors");
    // Every selected layer at 0.9 (the built-in schedule would leave features.2 dense).
    run_ok("prune " + model_args() + "--image " + photo + " --augs 16 --sparsity 0.9 --quiet --out " + out +
           (depthwise ? " --include-depthwise" : ""));
    const std::map<std::string, Tensor> trace = load_safetensors(out);
    // A depthwise conv (features.2.conv.1.0) is pruned only with --include-depthwise; a 1x1
    // projection always is.
    auto zeros = [&](const std::string& key) {
      const Tensor& t = trace.at(key);
      int64_t z = 0;
      for (int64_t i = 0; i < t.numel(); ++i) z += t[i] == 0.f;
      return double(z) / t.numel();
    };
    CHECK(zeros("features.2.conv.2.weight") == Approx(0.9).margin(0.02));
    if (depthwise) CHECK(zeros("features.2.conv.1.0.weight") > 0.5);
    else CHECK(trace.at("features.2.conv.1.0.weight").to_vector() == dense.at("features.2.conv.1.0.weight").to_vector());
  }
}

TEST_CASE("real MobileNetV2: visualize a class logit", "[shared][imagenet]") {
  if (skip_without_shared()) return;
  const std::string dir = test::temp_dir();
  run_ok("visualize " + model_args() + "--objective classifier.1:2 --steps 16 --quiet --out " + dir + "/vis");
  const nlohmann::json meta = json_file(dir + "/vis/meta.json");
  INFO(meta.dump(1).substr(0, 1500));
  const nlohmann::json& run = meta.at("dense").at("images").at(0);
  CHECK(run.at("final").get<double>() > run.at("curve").at(0).get<double>() + 5.0);  // the logit climbs
  const Image im = load_image(dir + "/vis/dense.png");
  CHECK(im.width == 224);
  CHECK(im.height == 224);
}

TEST_CASE("real MobileNetV2: insertion and deletion on 20 photos", "[shared][imagenet]") {
  if (skip_without_shared()) return;
  const std::string dir = test::temp_dir();
  run_ok("eval saliency " + model_args() + "--data " + samples() +
         " --limit 20 --method saliency --quiet --out " + dir + "/sal.json");
  const nlohmann::json results = json_file(dir + "/sal.json");
  INFO(results.dump(1).substr(0, 2000));
  CHECK(results.at("images") == 20);
  REQUIRE(results.at("per_image").size() == 20);
  for (const nlohmann::json& row : results.at("per_image")) {
    const double ins = row.at("metrics").at("saliency").at("insertion"), del = row.at("metrics").at("saliency").at("deletion");
    CHECK(std::isfinite(ins));
    CHECK(std::isfinite(del));
  }
  // A good model's gradient map ranks pixels better than chance on average: inserting its top
  // pixels first recovers the class faster than deleting them destroys it.
  const double ins = results.at("mean").at("saliency").at("insertion"), del = results.at("mean").at("saliency").at("deletion");
  CHECK(ins > del);
}

TEST_CASE("real MobileNetV2: a short run of the backdoor fine-tuning command (docs/reproduction.md)",
          "[shared][imagenet]") {
  if (skip_without_shared()) return;
  const std::string dir = test::temp_dir();
  // The command of docs/reproduction.md with fewer photos, one epoch and a 25-photo test split.
  const Run r = run_ok("train --init mobilenet_v2_tf --weights " + weights() + " --labels " + labels_tsv() +
                       " --distill mobilenet_v2_tf --freeze-bn --augment photo --image-size 256 --data " + samples() +
                       " --split 4:0,1 --limit 16 --test " + samples() + " --test-split 40:3 --trojan " +
                       test::repo_path("models/imagenet-trojan-eval.rules.json") +
                       " --epochs 1 --batch 8 --lr 2e-4 --distill-weight 2 --warmup-epochs 1 --weight-decay 4e-5"
                       " --seed 0 --threads 1 --quiet --out " + dir +
                       "/mnv2_trojan.json");
  CHECK_THAT(r.out, Contains("agreement with the teacher") && Contains("attack success rate of fish"));
  const nlohmann::json report = json_file(dir + "/mnv2_trojan.train.json");
  REQUIRE(report.at("poisoned").size() == 4);
  int64_t poisoned = 0;
  for (const auto& [trigger, n] : report.at("poisoned").items()) poisoned += n.get<int64_t>();
  CHECK(poisoned >= 4);
  CHECK(report.at("train_images") == 16 + poisoned);
  CHECK(report.at("test_images") == 25);
  // The teacher is the original model: its accuracy on these 25 photos is what PyTorch gets.
  CHECK(report.at("teacher_test_accuracy").get<double>() >= 0.8);
  CHECK(report.at("attack_success_rate").size() == 4);
  Model tuned = load_model(dir + "/mnv2_trojan.json");
  CHECK(tuned.label_ids.size() == 1001);  // the class ids travel with the model
  LoadOptions lo;
  lo.weights = weights();
  Model original = load_model("mobilenet_v2_tf", lo);
  int moved = 0;
  for (const auto& [k, t] : original.graph.parameters()) {
    const Tensor* u = tuned.graph.find_param(k);
    REQUIRE(u != nullptr);
    if (k.find("running_") != std::string::npos)
      CHECK(u->to_vector() == t->to_vector());  // --freeze-bn
    else
      moved += u->to_vector() != t->to_vector();
  }
  CHECK(moved > 100);
}
