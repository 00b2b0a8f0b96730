#pragma once
// One function per subcommand; each parses its own options (argv from index `first`).
namespace spade::cli {

int cmd_predict(int argc, char** argv, int first);
int cmd_eval(int argc, char** argv, int first);
int cmd_info(int argc, char** argv, int first);
int cmd_convert(int argc, char** argv, int first);
int cmd_prune(int argc, char** argv, int first);
int cmd_explain(int argc, char** argv, int first);
int cmd_train(int argc, char** argv, int first);
int cmd_tune(int argc, char** argv, int first);
int cmd_demo(int argc, char** argv, int first);
int cmd_visualize(int argc, char** argv, int first);
int cmd_eval_trojan(int argc, char** argv, int first);    // `spade eval trojan`
int cmd_eval_insertion(int argc, char** argv, int first); // `spade eval insertion`
int cmd_eval_gridpg(int argc, char** argv, int first);    // `spade eval gridpg`
int cmd_eval_saliency(int argc, char** argv, int first);  // `spade eval saliency`
int cmd_eval_featurevis(int argc, char** argv, int first); // `spade eval featurevis`

}  // namespace spade::cli
