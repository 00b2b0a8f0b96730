// spade: explain what a vision network does on one image. Entry point: dispatches subcommands
// and turns every spade::Error into one line on stderr and exit status 1.
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "engine/error.h"
#include "formats/file_io.h"
#include "formats/output_transaction.h"

namespace {

void usage() {
  std::cout << "usage: spade <command> [options]\n\n"
               "commands:\n"
               "  demo            the Trojan experiment on one rendered image with a committed backdoored model\n"
               "  predict         classify one image (or .npy input) and print the top classes\n"
               "  eval accuracy   top-1 accuracy over an ImageFolder directory or tar\n"
               "  eval saliency   insertion/deletion, Trojan AUC and pointing game of saliency maps\n"
               "  info            layers, shapes, parameter counts and FLOPs of a model\n"
               "  convert         write a model as a JSON + safetensors pair\n"
               "  prune           compute a SPADE trace (sample-specific pruned weights) for one image\n"
               "  explain         saliency maps of one image for the dense model or its SPADE trace\n"
               "  visualize       feature visualisation of a class, channel or neuron, dense and on a SPADE trace\n"
               "  train           train a built-in architecture from scratch, optionally with Trojan poisoning\n"
               "  tune            per-block sparsity search maximising the Trojan AUC (the paper's tuning)\n"
               "  eval trojan     Trojan AUC and pointing game of Dense, FastSPADE and SPADE maps (Table 1)\n"
               "  eval insertion  insertion/deletion of Dense and FastSPADE maps on clean images (Table 2)\n"
               "  eval featurevis which Score-CAM patch dense and SPADE visualisations resemble (Table 3)\n"
               "  eval gridpg     grid pointing game of Dense, FastSPADE and SPADE maps on grids of photos\n\n"
               "Run `spade <command> --help` for the options of each command.\n";
}

// An error is one line of at most a few hundred characters: a huge value inside a message (a 10 MB
// key of a sparsity file, a path) is cut in the middle, and line breaks and other control
// characters are shown as '?', so one error never floods a terminal or a log.
std::string one_line(const std::string& message) {
  constexpr size_t kHead = 240, kTail = 60;
  std::string s = message.size() > kHead + kTail + 3
                      ? message.substr(0, kHead) + "..." + message.substr(message.size() - kTail)
                      : message;
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s;
}

int run_command(const std::string& cmd, int argc, char** argv) {
  if (cmd == "predict") return spade::cli::cmd_predict(argc, argv, 2);
  if (cmd == "eval") return spade::cli::cmd_eval(argc, argv, 2);
  if (cmd == "info") return spade::cli::cmd_info(argc, argv, 2);
  if (cmd == "convert") return spade::cli::cmd_convert(argc, argv, 2);
  if (cmd == "prune") return spade::cli::cmd_prune(argc, argv, 2);
  if (cmd == "explain") return spade::cli::cmd_explain(argc, argv, 2);
  if (cmd == "train") return spade::cli::cmd_train(argc, argv, 2);
  if (cmd == "tune") return spade::cli::cmd_tune(argc, argv, 2);
  if (cmd == "demo") return spade::cli::cmd_demo(argc, argv, 2);
  if (cmd == "visualize") return spade::cli::cmd_visualize(argc, argv, 2);
  if (cmd == "--version" || cmd == "version") {
    std::cout << "spade 0.1.0\n";
    return 0;
  }
  throw spade::Error("unknown command \"" + cmd + "\" (see spade --help)");
}

}  // namespace

int main(int argc, char** argv) {
  // `spade help CMD [SUB]` is `spade CMD [SUB] --help`.
  std::vector<char*> help_args;
  static char help_flag[] = "--help";
  if (argc >= 3 && !std::strcmp(argv[1], "help")) {
    help_args.push_back(argv[0]);
    for (int i = 2; i < argc; ++i) help_args.push_back(argv[i]);
    help_args.push_back(help_flag);
    argc = static_cast<int>(help_args.size());
    argv = help_args.data();
  }
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage();
    if (argc < 2) std::cerr << "spade: error: no command given (see spade --help)\n";
    return argc < 2 ? 1 : 0;  // every usage error exits 1
  }
  const std::string cmd = one_line(argv[1]);
  // Everything a run writes is one transaction: published when the command succeeds, removed when
  // it fails or is interrupted; no output replaces an input (docs/reliability.md, Outputs).
  spade::protect_inputs();
  spade::install_interrupt_handlers();
  try {
    spade::OutputTransaction outputs;
    const int rc = run_command(cmd, argc, argv);
    if (rc == 0) outputs.commit();
    return rc;
  } catch (const spade::Error& e) {
    if (const int sig = spade::interrupted_signal()) {
      std::cerr << "spade " << cmd << ": " << one_line(e.what()) << " (its unfinished outputs were removed)\n";
      return 128 + sig;
    }
    std::cerr << "spade " << cmd << ": error: " << one_line(e.what()) << "\n";
  } catch (const std::bad_alloc&) {
    std::cerr << "spade " << cmd << ": error: out of memory\n";
  } catch (const std::exception& e) {
    std::cerr << "spade " << cmd << ": internal error: " << one_line(e.what()) << "\n";
  }
  return 1;
}
