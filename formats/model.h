#pragma once
// A model = a graph + its preprocessing + its class labels. Loaded from a built-in architecture
// name plus a weights file, or from a model JSON file (docs/model-format.md) whose weights file
// path is relative to the JSON.
#include <string>
#include <vector>

#include "engine/graph.h"
#include "formats/image.h"
#include "formats/zoo.h"

namespace spade {

// Ranges of a model JSON's numbers (docs/model-format.md), checked as the file is read: every
// integer (channels, kernel, stride, padding, dilation, groups) in [0, kMaxModelInteger], so shape
// arithmetic cannot overflow; the input's sides and preprocessing's resize and crop at most
// kMaxModelSide, which bounds what preprocessing allocates before --max-memory applies.
constexpr int64_t kMaxModelInteger = int64_t(1) << 24;
constexpr int64_t kMaxModelSide = 4096;

struct Model {
  std::string arch;  // zoo name, or "custom" for a graph spelled out in JSON
  Graph graph;
  Preprocess preprocess;
  std::vector<std::string> labels;     // one name per class; "class N" when unknown
  std::vector<std::string> label_ids;  // empty, or one id per class (WordNet ids; "" = none)
  std::string weights_path;         // where the weights came from ("" = none loaded)
  std::string source;               // the --model argument, for messages
};

// `model` is a zoo name or a path to a model JSON; `weights` (optional) is a safetensors file
// that overrides the JSON's own. A zoo model without weights keeps zero weights unless
// `random_init_seed` >= 0 (then Kaiming-uniform like PyTorch's default initialisation).
struct LoadOptions {
  std::string weights;
  std::string labels_file;  // replaces the labels (names and ids); formats/labels.h
  ZooOptions zoo;
  int64_t random_init_seed = -1;
};
Model load_model(const std::string& model, const LoadOptions& opt = {});

// Default preprocessing and labels for a zoo architecture with the given class count.
Model make_zoo_model(const std::string& arch, const ZooOptions& opt);

// Parses a model JSON document; `path` names it in errors and anchors the weights path.
Model parse_model_json(const std::string& text, const std::string& path);
// The JSON text for a model whose weights are stored at `weights_rel` (relative to the JSON).
std::string model_to_json(const Model& m, const std::string& weights_rel);
// Writes `<json_path>` and its weights file next to it (same stem, .safetensors), atomically.
void save_model(const Model& m, const std::string& json_path);

// Replaces the model's labels by those of a labels file (formats/labels.h), which must have one
// line per output.
void apply_labels_file(Model& m, const std::string& path);

// Fills every conv/linear weight with PyTorch's default (Kaiming-uniform a=sqrt(5)) init and
// biases likewise, BN to identity; deterministic for the seed.
void random_init(Graph& g, uint64_t seed);

std::vector<std::string> cifar10_labels();
std::vector<std::string> imagenet_labels();  // "class N" placeholders when not compiled in

}  // namespace spade
