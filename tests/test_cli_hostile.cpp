// Hostile input through the commands themselves (docs/reliability.md): each class of fault a careful
// adversarial user found (crashes, hangs, unbounded numbers, floods of text, non-finite results)
// ends in one line on stderr and a non-zero exit, with nothing written.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <nlohmann/json.hpp>
#include <string>

#include "formats/image.h"
#include "formats/image_folder.h"
#include "formats/json_output.h"
#include "support/cli_failures.h"
#include "support/test_support.h"

using namespace spade;
namespace fs = std::filesystem;

namespace {

// A random-weight CIFAR ResNet-20 as a model JSON + safetensors pair in dir.
std::string small_model(const std::string& dir) {
  const std::string model = dir + "/m.json";
  REQUIRE(test::spade_cli("convert --model cifar_resnet20 --random-init 1 --out " + model).status == 0);
  return model;
}

struct ModelAndImage {
  std::string dir, model, img;
};
// What most cases start from: a fresh directory, small_model in it, and a test image.
ModelAndImage model_and_image() {
  const std::string dir = test::temp_dir();
  return {dir, small_model(dir), test::data_path("image/src.png")};
}

}  // namespace

TEST_CASE("numbers out of range are refused when the command line is read", "[cli][errors][hostile]") {
  const auto [dir, model, img] = model_and_image();
  const std::string out = dir + "/out";
  test::check_cli_failures(
      {
          // Used to crash inside the OpenMP runtime (a segfault, or an abort without a message).
          {"predict --model " + model + " --image " + img + " --threads 100000", "--threads must be an integer from 0 to 1024"},
          {"predict --model " + model + " --image " + img + " --threads 100000000000", "--threads"},
          {"predict --model " + model + " --image " + img + " --threads -3", "--threads"},
          {"predict --model " + model + " --image " + img + " --threads 99999999999999999999999", "--threads"},
          {"predict --model " + model + " --image " + img + " --topk 0", "--topk"},
          // Used to run (practically) forever.
          {"prune --model " + model + " --image " + img + " --augs 1000000000000 --out " + out + "/t.safetensors",
           "--augs must be an integer from 1 to 1048576"},
          {"explain --model " + model + " --image " + img + " --method integrated_gradients --steps -5 --out " + out, "--steps"},
          {"explain --model " + model + " --image " + img + " --method saliency --batch 0 --out " + out, "--batch"},
          {"explain --model " + model + " --image " + img + " --method lime --alpha nan --out " + out, "--alpha"},
          {"train --arch cifar_resnet20 --data " + dir + " --momentum 2 --out " + out + "/r.json", "--momentum"},
          {"eval gridpg --model " + model + " --data " + dir + " --cells 9 --out " + out, "--cells"},
          // A bad value is refused even where the option does not apply to this run.
          {"prune --model " + model + " --image " + img + " --percdamp -1 --out " + out + "/t.safetensors", "--percdamp"},
      },
      out, 120);
}

TEST_CASE("options that leave nothing to do are refused instead of crashing", "[cli][errors][hostile]") {
  const auto [dir, model, img] = model_and_image();
  // Used to segfault (means over an empty set of metrics).
  test::check_cli_failures({{"eval saliency --model " + model + " --image " + img +
                                 " --method saliency --no-insertion --out " + dir + "/out/r.json",
                             "--no-insertion leaves nothing to measure without --mask"}},
                           dir + "/out", 120);
}

TEST_CASE("a FIFO or a device where a file is expected is refused, never waited on", "[cli][errors][hostile]") {
  const auto [dir, model, img] = model_and_image();
  const std::string fifo = dir + "/fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // A model JSON whose weights are the FIFO (read through the memory-mapped safetensors path).
  nlohmann::json j = nlohmann::json::parse(test::slurp(model));
  j["weights"] = fifo;
  std::ofstream(dir + "/fifo_weights.json") << j.dump();
  const std::string out = dir + "/out";
  test::check_cli_failures(
      {
          {"predict --model " + model + " --image " + fifo, "not a regular file"},
          {"predict --model " + dir + "/fifo_weights.json --image " + img, "not a regular file"},
          {"predict --model cifar_resnet20 --weights " + fifo + " --image " + img, "not a regular file"},
          {"predict --model " + model + " --input " + fifo, "not a regular file"},
          {"predict --model " + model + " --image " + img + " --labels " + fifo, "not a regular file"},
          {"predict --model " + model + " --image /dev/zero", "not a regular file"},
          {"prune --model " + model + " --image " + img + " --sparsity " + fifo + " --out " + out + "/t.safetensors",
           "not a regular file"},
      },
      out, 60);
  // The same FIFO under a .json name, read as a model description.
  REQUIRE(::mkfifo((dir + "/pipe.json").c_str(), 0600) == 0);
  test::check_cli_failures({{"predict --model " + dir + "/pipe.json --image " + img, "not a regular file"}}, out, 60);
}

TEST_CASE("a folder with symlink cycles is walked once per directory", "[image_folder][hostile]") {
  // Two links back to the root in every directory made the walk exponential under the depth limit.
  const std::string root = test::temp_dir();
  fs::create_directories(root + "/cat");
  fs::copy_file(test::data_path("image/src.png"), root + "/cat/a.png");
  fs::create_directory_symlink("..", root + "/cat/up");
  fs::create_directory_symlink("..", root + "/cat/up2");
  fs::create_directory_symlink("cat", root + "/again");
  ImageFolder f(root);
  REQUIRE(f.size() == 1);
  CHECK(f.get(0).name.find("a.png") != std::string::npos);
}

TEST_CASE("a huge value inside an error is cut, so an error stays one short line", "[cli][errors][hostile]") {
  const auto [dir, model, img] = model_and_image();
  const std::string key(10 << 20, 'k');  // a 10 MB layer name
  std::ofstream(dir + "/big.json") << "{\"" << key << "\": 0.5}";
  const test::CliRun r = test::spade_cli("prune --model " + model + " --image " + img + " --sparsity " + dir +
                                         "/big.json --out " + dir + "/t.safetensors");
  INFO(r.err.substr(0, 500));
  CHECK(r.status == 1);
  CHECK(r.err.size() < 400);
  CHECK(r.err.find("big.json") != std::string::npos);
  CHECK(r.err.find("...") != std::string::npos);
  CHECK(!fs::exists(dir + "/t.safetensors"));
}

TEST_CASE("a visualisation that overflows is an error, not an image of NaN", "[cli][errors][hostile]") {
  const std::string dir = test::temp_dir();
  const std::string model = small_model(dir);
  test::check_cli_failures({{"visualize --model " + model + " --objective '1e308*linear:1' --steps 4 --quiet --out " + dir + "/out",
                             "NaN or infinite"}},
                           dir + "/out", 120);
}

TEST_CASE("a JSON result holding NaN or Inf is an error naming the key and is not written", "[errors][hostile]") {
  // Every command's JSON (results, meta, reports, checkpoints) goes through write_json_file, which
  // nlohmann alone would let write NaN as null.
  const std::string dir = test::temp_dir();
  nlohmann::json j;
  j["methods"]["lrp"]["auc"] = 0.5;
  j["methods"]["lrp"]["curve"] = {0.1, std::nan(""), 0.3};
  CHECK_THROWS_WITH(write_json_file(dir + "/r.json", j, 1), Catch::Contains("r.json: methods.lrp.curve[1] is NaN"));
  j["methods"]["lrp"]["curve"][1] = -HUGE_VAL;
  CHECK_THROWS_WITH(write_json_file(dir + "/r.json", j, 1), Catch::Contains("methods.lrp.curve[1] is -Inf"));
  CHECK(!fs::exists(dir + "/r.json"));
  j["methods"]["lrp"]["curve"][1] = 0.2;
  write_json_file(dir + "/r.json", j, 1);
  CHECK(nlohmann::json::parse(test::slurp(dir + "/r.json")) == j);
}

TEST_CASE("no output option overwrites an input, whatever names them", "[cli][errors][hostile]") {
  const std::string dir = test::temp_dir();
  const std::string model = small_model(dir);
  const std::string weights = dir + "/m.safetensors";
  const std::string img = dir + "/img.png";
  fs::copy_file(test::data_path("image/src.png"), img);
  REQUIRE(test::spade_cli("predict --model " + model + " --image " + img + " --save-input " + dir + "/x.npy").status == 0);
  fs::create_directory_symlink(dir, dir + "/link");
  const std::string bytes_w = test::slurp(weights), bytes_i = test::slurp(img), bytes_x = test::slurp(dir + "/x.npy");
  const std::string prune = "prune --model " + model + " --image " + img + " --augs 4 --sparsity 0.5 --quiet --out " + dir +
                            "/t.safetensors --report ";
  test::check_cli_failures(
      {
          // --report used to overwrite the weights or the image, exit 0.
          {prune + weights, "would overwrite"},
          {prune + dir + "/link/img.png", "would overwrite the input " + img},
          // --out of eval saliency used to overwrite its --input.
          {"eval saliency --model " + model + " --input " + dir + "/x.npy --method saliency --quiet --out " + dir + "/x.npy",
           "would overwrite"},
      },
      dir + "/none", 120);
  CHECK(!fs::exists(dir + "/t.safetensors"));
  // An input inside explain's output directory, named like one of its outputs.
  fs::copy_file(dir + "/x.npy", dir + "/map.npy");
  const test::CliRun r = test::spade_cli("explain --model " + model + " --input " + dir + "/map.npy --method saliency --quiet --out " + dir);
  INFO(r.err);
  CHECK(r.status == 1);
  CHECK(r.err.find("would overwrite") != std::string::npos);
  CHECK(test::slurp(dir + "/map.npy") == bytes_x);
  CHECK(test::slurp(weights) == bytes_w);
  CHECK(test::slurp(img) == bytes_i);
  CHECK(test::slurp(dir + "/x.npy") == bytes_x);
}

TEST_CASE("every number of a model JSON has a range, checked as the file is read", "[cli][errors][hostile]") {
  const auto [dir, model, img] = model_and_image();
  const nlohmann::json base = nlohmann::json::parse(test::slurp(model));
  int k = 0;
  // Writes base with `edit` applied as a new model JSON beside the weights.
  auto variant = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = base;
    edit(j);
    const std::string path = dir + "/v" + std::to_string(k++) + ".json";
    std::ofstream(path) << j.dump();
    return path;
  };
  auto first_conv = [](nlohmann::json& j) -> nlohmann::json& {
    for (auto& n : j["nodes"])
      if (n["op"] == "conv2d") return n;
    FAIL("no conv2d node");
    return j;
  };
  const std::string out = dir + "/out";
  test::check_cli_failures(
      {
          // 2^32 + 32 used to wrap to 32.
          {"predict --image " + img + " --model " + variant([](auto& j) { j["preprocess"]["resize"] = 4294967328LL; }),
           "\"resize\" must be from 0 to 4096, got 4294967328"},
          // A 16000-pixel crop used to take ~4 GB before failing.
          {"predict --image " + img + " --model " + variant([](auto& j) { j["preprocess"]["crop"] = 16000; }), "\"crop\""},
          // A huge mean used to be blamed on the image.
          {"predict --image " + img + " --model " + variant([](auto& j) { j["preprocess"]["mean"] = {1e30, 0, 0}; }),
           "\"mean\" must be an array of 3 numbers from -10000 to 10000"},
          {"predict --image " + img + " --model " + variant([](auto& j) { j["preprocess"]["std"] = {0, 1, 1}; }), "\"std\""},
          // Overflowing dilation and padding used to be reported with nonsense shapes.
          {"info --model " + variant([&](auto& j) { first_conv(j)["dilation"] = 1LL << 40; }), "\"dilation\" must be from 1 to 16777216"},
          {"info --model " + variant([&](auto& j) { first_conv(j)["padding"] = {-1, 1}; }), "\"padding\""},
          {"info --model " + variant([&](auto& j) { first_conv(j)["out_channels"] = 0; }), "\"out_channels\""},
          // A huge declared input used to print negative FLOPs.
          {"info --model " + variant([](auto& j) { j["input"] = {3, 1000000, 1000000}; }), "must be from 1 to 4096"},
          {"info --model " + model + " --size 100000,100000", "--size must be H,W with integers from 1 to 16384"},
      },
      out, 60);
  // Within the ranges, info's FLOPs stay positive at the largest input.
  const test::CliRun r = test::spade_cli("info --model " + model + " --size 16384,16384");
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(r.out.find("FLOPs per image: -") == std::string::npos);
}

TEST_CASE("the memory limit covers decoding and preprocessing an image as well as the batch", "[cli][errors][hostile]") {
  const std::string dir = test::temp_dir();
  const std::string model = small_model(dir);
  // The model's preprocessing resizes the shorter side to 256 (then crops 32): a 4000x100 strip
  // decodes in ~4 MB but becomes 10240x256 on the way, ~11 MB.
  nlohmann::json j = nlohmann::json::parse(test::slurp(model));
  j["preprocess"]["resize"] = 256;
  j["preprocess"]["crop"] = 32;
  const std::string resizing = dir + "/resizing.json";
  std::ofstream(resizing) << j.dump();
  Image strip;
  strip.width = 4000, strip.height = 100;
  strip.rgb.assign(size_t(strip.width) * strip.height * 3, 90);
  save_png(dir + "/strip.png", strip);
  Image big;
  big.width = big.height = 1500;
  big.rgb.assign(size_t(big.width) * big.height * 3, 90);
  save_png(dir + "/big.png", big);
  const std::string out = dir + "/out";
  test::check_cli_failures(
      {
          {"predict --model " + model + " --image " + dir + "/big.png --max-memory 8M",
           "big.png: decoding a 1500x1500 image needs about 21.46 MiB, more than --max-memory 8.00 MiB"},
          {"predict --model " + resizing + " --image " + dir + "/strip.png --max-memory 6M",
           "strip.png: preprocessing a 4000x100 image (resize 256) needs about 10.44 MiB, more than --max-memory 6.00 MiB"},
          {"explain --method saliency --model " + resizing + " --image " + dir + "/strip.png --max-memory 6M --out " + out,
           "more than --max-memory 6.00 MiB"},
      },
      out, 60);
  // The same runs fit a larger limit.
  const test::CliRun r = test::spade_cli("predict --model " + resizing + " --image " + dir + "/strip.png --max-memory 64M");
  INFO(r.err);
  CHECK(r.status == 0);
}

namespace {

// Runs `spade ARGS` with SPADE_TEST_FAULT=fault (formats/output_transaction.cpp's test hook).
test::CliRun spade_with_fault(const std::string& fault, const std::string& args) {
  ::setenv("SPADE_TEST_FAULT", fault.c_str(), 1);
  const test::CliRun r = test::spade_cli(args, 300);
  ::unsetenv("SPADE_TEST_FAULT");
  return r;
}

// Every regular file under dir (relative names), hidden ones included.
std::set<std::string> files_under(const std::string& dir) {
  std::set<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), dir).string());
  return out;
}

}  // namespace

TEST_CASE("a write that fails part-way (disk full) leaves nothing of the run", "[cli][errors][hostile]") {
  const auto [dir, model, img] = model_and_image();
  // explain --method all writes ~60 files; the 9th fails. It used to leave 8.
  const test::CliRun e = spade_with_fault("fail:9", "explain --model " + model + " --image " + img +
                                                        " --method all --quiet --out " + dir + "/ex");
  INFO(e.err);
  CHECK(e.status == 1);
  CHECK(e.err.find("No space left on device") != std::string::npos);
  CHECK(!fs::exists(dir + "/ex"));
  // prune: the report used to be left without the trace.
  const std::string prune = "prune --model " + model + " --image " + img + " --augs 4 --sparsity 0.5 --quiet --out " + dir +
                            "/p/t.safetensors --report " + dir + "/p/r.json";
  CHECK(spade_with_fault("fail:2", prune).status == 1);
  CHECK(!fs::exists(dir + "/p"));
  // convert: the weights used to be left without the JSON.
  CHECK(spade_with_fault("fail:2", "convert --model " + model + " --out " + dir + "/c/c.json").status == 1);
  CHECK(!fs::exists(dir + "/c"));
  // Into a directory that holds an earlier run: that run's files are untouched.
  REQUIRE(test::spade_cli(prune).status == 0);
  const std::string before = test::slurp(dir + "/p/t.safetensors");
  const std::string prune2 = "prune --model " + model + " --image " + img + " --augs 4 --sparsity 0.9 --quiet --out " +
                             dir + "/p/t.safetensors --report " + dir + "/p/r.json";
  CHECK(spade_with_fault("fail:2", prune2).status == 1);
  CHECK(test::slurp(dir + "/p/t.safetensors") == before);
  CHECK(files_under(dir + "/p") == std::set<std::string>{"r.json", "t.safetensors"});
}

TEST_CASE("SIGTERM while a run writes removes what it wrote and exits 143", "[cli][errors][hostile]") {
  const auto [dir, model, img] = model_and_image();
  const std::string out = dir + "/ex";
  // The run pauses before its second write (the first is staged); the script waits for the staged
  // file to appear, then sends SIGTERM.
  const std::string script = "SPADE_TEST_FAULT=pause:2 " + std::string(SPADE_BINARY) + " explain --model " + model +
                             " --image " + img + " --method saliency --quiet --out " + out + " 2>" + dir +
                             "/err & pid=$!; for i in $(seq 600); do ls -a " + out +
                             " 2>/dev/null | grep -q staged && break; sleep 0.1; done; kill -TERM $pid; wait $pid; echo $? >" +
                             dir + "/rc";
  REQUIRE(std::system(("bash -c '" + script + "'").c_str()) == 0);
  const std::string err = test::slurp(dir + "/err");
  INFO(err);
  CHECK(std::stoi(test::slurp(dir + "/rc")) == 143);
  CHECK(err.find("interrupted by SIGTERM") != std::string::npos);
  CHECK(std::count(err.begin(), err.end(), '\n') == 1);
  CHECK(!fs::exists(out));
}

TEST_CASE("two runs into one output directory are serialised, never mixed", "[cli][hostile]") {
  const auto [dir, model, img] = model_and_image();
  const std::string out = dir + "/ex";
  auto explain = [&](int target, const std::string& to) {
    return std::string(SPADE_BINARY) + " explain --model " + model + " --image " + img +
           " --method saliency,gradcam --quiet --target " + std::to_string(target) + " --out " + to;
  };
  // Each run alone, for reference.
  REQUIRE(std::system((explain(3, dir + "/alone3") + " >/dev/null").c_str()) == 0);
  REQUIRE(std::system((explain(5, dir + "/alone5") + " >/dev/null").c_str()) == 0);
  for (int round = 0; round < 3; ++round) {
    const std::string both = "bash -c '" + explain(3, out) + " >/dev/null & " + explain(5, out) + " >/dev/null & wait'";
    REQUIRE(std::system(both.c_str()) == 0);
    // Whichever published last, every file is from that one run.
    const nlohmann::json meta = nlohmann::json::parse(test::slurp(out + "/saliency/meta.json"));
    const int target = meta.at("target").get<int>();
    REQUIRE((target == 3 || target == 5));
    const std::string ref = dir + "/alone" + std::to_string(target);
    for (const char* f : {"saliency/map.npy", "saliency/attribution.npy", "gradcam/map.npy"})
      CHECK(test::slurp(out + "/" + f) == test::slurp(ref + "/" + f));
    CHECK(nlohmann::json::parse(test::slurp(out + "/gradcam/meta.json")).at("target") == target);
    CHECK(files_under(out) == files_under(ref));
  }
}

TEST_CASE("files a killed run staged are removed by the next run that writes there", "[cli][hostile]") {
  const std::string dir = test::temp_dir();
  const std::string model = small_model(dir);
  const std::string out = dir + "/ex";
  fs::create_directories(out);
  // A PID above Linux's limit (2^22) names no live process.
  const std::string stale = out + "/.map.npy.spade-99999999.staged";
  std::ofstream(stale) << "half a file";
  REQUIRE(test::spade_cli("explain --model " + model + " --image " + test::data_path("image/src.png") +
                          " --method saliency --quiet --out " + out).status == 0);
  CHECK(!fs::exists(stale));
  CHECK(fs::exists(out + "/map.npy"));
}
