// spade convert: write a model (built-in or JSON, with its weights) as a JSON + safetensors pair.
#include <iostream>

#include "apps/cli.h"
#include "apps/commands.h"

namespace spade::cli {

int cmd_convert(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"out", "OUT.json", "model JSON to write; the weights go beside it as OUT.safetensors", ""});
  opts.push_back({"random-init", "SEED", "no weights file: initialise randomly (PyTorch's default init)", "", seed_bounds()});
  Args a("convert",
         "Write a model as a spade model JSON (docs/model-format.md) plus a safetensors weights file.", opts, argc,
         argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  LoadOptions lo = load_options_from(a);
  if (a.has("random-init")) lo.random_init_seed = a.get_int("random-init");
  Model m = load_model(a.require("model"), lo);
  if (m.weights_path.empty() && !a.has("random-init"))
    throw Error("no weights: give --weights FILE or --random-init SEED");
  std::string out = a.require("out");
  if (out.size() < 5 || out.substr(out.size() - 5) != ".json") throw Error("--out must end in .json");
  refuse_overwriting_inputs(a, {out, out.substr(0, out.size() - 5) + ".safetensors"}, {"model", "weights", "labels"},
                            {m.weights_path});
  save_model(m, out);
  std::cout << "wrote " << out << " (" << m.graph.size() - 1 << " nodes)\n";
  return 0;
}

}  // namespace spade::cli
