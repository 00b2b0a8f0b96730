#include "fuzz/targets.h"

#include <unistd.h>

#include <cstdio>
#include <string>

#include "apps/cli.h"
#include "engine/error.h"
#include "formats/image.h"
#include "formats/model.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "formats/zoo.h"
#include "interpret/featurevis/objective.h"
#include "interpret/spade/layers.h"
#include "trojan/rules.h"

namespace spade::fuzz {

namespace {

// The readers of binary formats take a path: the input goes to a file of this process's own.
std::string as_file(const uint8_t* data, size_t size, const char* ext) {
  const std::string path = "/tmp/spade-fuzz-" + std::to_string(getpid()) + ext;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error(path + ": cannot write the fuzz input");
  if (size > 0 && std::fwrite(data, 1, size, f) != size) {
    std::fclose(f);
    throw Error(path + ": cannot write the fuzz input");
  }
  std::fclose(f);
  return path;
}

std::string as_text(const uint8_t* data, size_t size) { return std::string(reinterpret_cast<const char*>(data), size); }

// A small real graph for the readers that check names against one.
const Graph& cifar_graph() {
  static const Graph g = build_zoo_graph("cifar_resnet20", ZooOptions{});
  return g;
}

void safetensors(const uint8_t* data, size_t size) {
  const std::string path = as_file(data, size, ".safetensors");
  SafetensorsFile f(path);
  for (const SafetensorsEntry& e : f.entries()) {
    Tensor t = f.tensor(e.name);
    (void)t;
  }
  load_safetensors(path);
}

void npy(const uint8_t* data, size_t size) { load_npy(as_file(data, size, ".npy")); }

void model_json(const uint8_t* data, size_t size) {
  Model m = parse_model_json(as_text(data, size), "fuzz.json");
  m.graph.infer_shapes(1);
  model_to_json(m, "fuzz.safetensors");
}

void image(const uint8_t* data, size_t size) {
  const Image im = decode_image(data, size, "fuzz");
  Preprocess p;
  p.resize = 36;
  p.crop = 32;
  preprocess_image(im, p);
}

void sparsity(const uint8_t* data, size_t size) {
  const interp::SparsitySchedule s = interp::SparsitySchedule::from_json(as_text(data, size), "fuzz.json");
  interp::plan_layers(cifar_graph(), s, interp::LayerSelection{});
}

void rules(const uint8_t* data, size_t size) { trojan::parse_rules(as_text(data, size), "fuzz.json", cifar10_labels()); }

void objective(const uint8_t* data, size_t size) { interp::featurevis::parse_objectives(as_text(data, size), cifar_graph()); }

// The command line: the input split at newlines into arguments, parsed against a table with
// every kind of option (values, flags, numbers), then every numeric option read as a number.
void command_line(const uint8_t* data, size_t size) {
  std::vector<std::string> words;
  std::string cur;
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == '\n') {
      words.push_back(cur);
      cur.clear();
    } else {
      cur += char(data[i]);
    }
  }
  if (!cur.empty()) words.push_back(cur);
  std::vector<char*> argv;
  static char program[] = "spade";
  argv.push_back(program);
  for (std::string& w : words) argv.push_back(w.data());
  std::vector<cli::Option> opts = cli::model_options();
  opts.push_back({"steps", "N", "", "512"});
  opts.push_back({"lr", "LR", "", "0.05"});
  opts.push_back({"sparsity", "S", "", "0.9"});
  opts.push_back({"objective", "OBJ", "", ""});
  opts.push_back({"quiet", "", "", ""});
  cli::Args a("fuzz", "", opts, int(argv.size()), argv.data(), 1);
  a.get_int("steps");
  a.get_int("threads");
  a.get_double("lr");
  a.get_double("width");
  // A number only: a path would make the parser read whatever file the input names.
  const std::string s = a.get("sparsity");
  if (s.find('/') == std::string::npos && s.find('.') != 0) interp::SparsitySchedule::parse(s);
  if (a.has("objective")) interp::featurevis::parse_objectives(a.get("objective"), cifar_graph());
}

}  // namespace

const std::vector<Target>& all_targets() {
  static const std::vector<Target> t = {
      {"safetensors", "safetensors reader (SafetensorsFile, every tensor converted, load_safetensors)", safetensors},
      {"npy", "NPY reader (load_npy)", npy},
      {"model_json", "model JSON reader (parse_model_json, shape inference, writing it back)", model_json},
      {"image", "image decoding (PNG, JPEG, BMP, ...) and preprocessing", image},
      {"sparsity", "sparsity schedule JSON and its layer plan on cifar_resnet20", sparsity},
      {"rules", "Trojan rules JSON", rules},
      {"objective", "feature-visualisation objectives on cifar_resnet20", objective},
      {"cli", "command-line parsing and numeric option values", command_line},
  };
  return t;
}

const Target* find_target(const std::string& name) {
  for (const Target& t : all_targets())
    if (name == t.name) return &t;
  return nullptr;
}

void run_one(const Target& t, const uint8_t* data, size_t size) {
  try {
    t.fn(data, size);
  } catch (const Error&) {
    // A clean, one-line refusal: what bad input should get.
  }
}

}  // namespace spade::fuzz
