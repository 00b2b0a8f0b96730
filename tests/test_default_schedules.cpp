// The built-in sparsity schedules (models/defaults/*.json, interpret/spade/default_schedules.h)
// and compute_traces, which several methods' schedules share one Hessian pass through.
#include <catch2/catch.hpp>

#include <set>

#include "engine/error.h"
#include "formats/model.h"
#include "formats/zoo.h"
#include "interpret/saliency/methods.h"
#include "interpret/spade/default_schedules.h"
#include "interpret/spade/trace.h"
#include "support/test_support.h"

using namespace spade;
using namespace spade::interp;

TEST_CASE("every embedded default-schedule file parses and fits its architectures", "[spade][defaults]") {
  const auto& files = embedded_default_schedule_files();
  REQUIRE(!files.empty());
  std::set<std::string> seen;
  for (const auto& [file, text] : files) {
    INFO(file);
    const DefaultScheduleFile f = parse_default_schedule_file(text, file);
    CHECK(!f.made.empty());  // every file says how its schedules were made
    CHECK(!f.methods.empty());
    for (const std::string& arch : f.architectures) {
      INFO(arch);
      CHECK(seen.insert(arch).second);  // no architecture in two files
      REQUIRE(is_zoo_name(arch));
      const Graph g = build_zoo_graph(arch);
      // A prefix that matches no layer would be refused when used; every selectable block is named
      // (tuned schedules list them all), so nothing is left to the schedule's implicit 0.
      auto check = [&](const SparsitySchedule& s) {
        const std::vector<PlannedLayer> plan = plan_layers(g, s, {});
        CHECK(!plan.empty());
        int64_t pruned = 0;
        for (const auto& p : plan) pruned += p.target > 0.0;
        CHECK(pruned > 0);
      };
      for (const auto& [method, json] : f.methods) {
        INFO(method);
        CHECK(find_method(method).name == method);
        check(default_schedule(arch, method).value());
      }
      check(*default_schedule(arch, ""));
    }
  }
}

TEST_CASE("default_schedule: the method's own, else the file's other_methods, else none", "[spade][defaults]") {
  const std::vector<std::string> archs = architectures_with_default_schedules();
  REQUIRE(!archs.empty());
  const std::string arch = archs.front();
  std::string file_text, file_name;
  for (const auto& [file, text] : embedded_default_schedule_files()) {
    const DefaultScheduleFile f = parse_default_schedule_file(text, file);
    for (const auto& a : f.architectures)
      if (a == arch) file_text = text, file_name = file;
  }
  const DefaultScheduleFile f = parse_default_schedule_file(file_text, file_name);
  const auto& [method, json] = f.methods.front();
  const auto own = default_schedule(arch, method);
  REQUIRE(own.has_value());
  CHECK(own->describe() == "built-in " + arch + "/" + method);
  CHECK(own->same_targets(SparsitySchedule::from_json(json, "x")));
  const auto other = default_schedule(arch, "no such method");
  REQUIRE(other.has_value());
  CHECK(other->describe() == "built-in " + arch + "/other_methods");
  CHECK(other->same_targets(SparsitySchedule::from_json(f.other_methods, "x")));
  CHECK(default_schedule(arch, "")->describe() == other->describe());
  CHECK(!default_schedule("custom", method).has_value());
}

TEST_CASE("default-schedule files: malformed ones are refused naming the file", "[spade][defaults]") {
  auto error = [](const std::string& text) {
    try {
      parse_default_schedule_file(text, "models/defaults/x.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string ok = R"({"architectures": ["cifar_resnet20"], "made": "m",
                             "methods": {"saliency": {"linear": 0.9}}, "other_methods": {"layer3": 0.5}})";
  CHECK(error(ok).empty());
  const DefaultScheduleFile f = parse_default_schedule_file(ok, "f");
  CHECK(f.architectures == std::vector<std::string>{"cifar_resnet20"});
  CHECK(f.made == "m");
  REQUIRE(f.methods.size() == 1);
  CHECK(f.methods[0].first == "saliency");
  for (const std::string bad : {"{", "[]", R"({"architectures": [], "methods": {}, "other_methods": {"a": 0.1}})",
                                R"({"architectures": ["a"], "methods": {"saliency": 3}, "other_methods": {"a": 0.1}})",
                                R"({"architectures": ["a"], "methods": {"saliency": {"x": 2}}, "other_methods": {"a": 0.1}})",
                                R"({"architectures": ["a"], "methods": {}})"}) {
    INFO(bad);
    const std::string e = error(bad);
    CHECK(e.find("models/defaults/x.json") == 0);
  }
}

TEST_CASE("compute_traces: one Hessian pass, each schedule's trace as compute_trace makes it", "[spade][defaults]") {
  Model m = make_zoo_model("cifar_resnet20", {});
  random_init(m.graph, 11);
  auto calib = tensor_calibration(test::random_tensor({12, 3, 32, 32}, 6, -2.f, 2.f), "random");
  PruneConfig cfg;
  cfg.batch = 5;
  const std::vector<SparsitySchedule> schedules = {
      SparsitySchedule::from_json(R"({"layer3": 0.9, "linear": 0.5})", "late"),
      SparsitySchedule::from_json(R"({"layer1.0": 0.4, "layer3.2": 0.95})", "mixed"),
      SparsitySchedule::uniform(0.0)};
  int64_t hessian_images = 0;
  std::vector<std::string> stages;
  const std::vector<Trace> traces = compute_traces(m.graph, *calib, cfg, schedules, [&](const std::string& s, int64_t done, int64_t) {
    if (s == "hessians") hessian_images = done;
    if (stages.empty() || stages.back() != s) stages.push_back(s);
  });
  REQUIRE(traces.size() == 3);
  CHECK(hessian_images == 12);  // one pass over the calibration images for all three
  CHECK(stages == std::vector<std::string>{"hessians", "solve 1/3", "solve 2/3", "solve 3/3"});
  for (size_t k = 0; k < schedules.size(); ++k) {
    INFO(schedules[k].describe());
    PruneConfig one = cfg;
    one.sparsity = schedules[k];
    const Trace want = compute_trace(m.graph, *calib, one);
    CHECK(traces[k].sparsity == schedules[k].describe());
    CHECK(traces[k].samples == 12);
    REQUIRE(traces[k].weights.size() == want.weights.size());
    for (const auto& [key, w] : want.weights) CHECK(traces[k].weights.at(key).to_vector() == w.to_vector());
    REQUIRE(traces[k].layers.size() == want.layers.size());
    for (size_t i = 0; i < want.layers.size(); ++i) {
      CHECK(traces[k].layers[i].name == want.layers[i].name);
      CHECK(traces[k].layers[i].pruned == want.layers[i].pruned);
      CHECK(traces[k].layers[i].zeros == want.layers[i].zeros);
      CHECK(traces[k].layers[i].loss == Approx(want.layers[i].loss).epsilon(1e-12));
    }
  }
  CHECK(traces[2].weights.empty());
  CHECK_THROWS_AS(compute_traces(m.graph, *calib, cfg, {}), Error);
}
