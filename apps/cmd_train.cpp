// spade train: trains a built-in architecture from scratch (optionally with Trojan poisoning) and
// writes the model JSON + safetensors, a checkpoint after every epoch, and a training report.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/commands.h"
#include "engine/error.h"
#include "formats/file_io.h"
#include "train/poison.h"
#include "train/trainer.h"
#include "trojan/rules.h"

namespace spade::cli {

namespace {

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string stem_of(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".json") == 0 ? path.substr(0, path.size() - 5) : path;
}

}  // namespace

int cmd_train(int argc, char** argv, int first) {
  std::vector<Option> opts = {
      {"arch", "NAME", "built-in architecture to train from scratch (cifar_resnet20, cifar_mobilenet_v2, ...)", ""},
      {"width", "W", "width multiplier of the architecture", "1.0"},
      {"num-classes", "N", "classes (default: the architecture's, 10 for CIFAR ones)", ""},
      {"data", "DIR|FILE.tar", "training images: ImageFolder tree or a tar of one, all of the model's input size", ""},
      {"test", "DIR|FILE.tar", "test images for the final accuracy (and the attack success rate with --trojan)", ""},
      {"limit", "N", "train on an evenly spaced subset of N images (0 = all)", "0"},
      {"epochs", "N", "epochs", "30"},
      {"batch", "B", "images per step", "128"},
      {"lr", "LR", "peak learning rate", "0.1"},
      {"schedule", "cosine|step", "learning-rate schedule (step: x0.1 at 50% and 75% of training)", "cosine"},
      {"warmup-epochs", "N", "linear warm-up of the learning rate over the first N epochs", "1"},
      {"momentum", "M", "SGD momentum", "0.9"},
      {"weight-decay", "WD", "SGD weight decay", "5e-4"},
      {"no-augment", "", "no random crop (pad 4) and horizontal flip", ""},
      {"seed", "S", "initialisation, shuffling, augmentation and poisoning seed", "0"},
      {"trojan", "RULES.json", "poison the training set with these Trojan rules (docs/reproduction.md)", ""},
      {"out", "MODEL.json", "the trained model (weights next to it as MODEL.safetensors)", ""},
      {"checkpoint", "FILE", "checkpoint written after every epoch (default: MODEL.ckpt.safetensors)", ""},
      {"resume", "FILE", "continue from a checkpoint written by the same command", ""},
      {"stop-after", "N", "stop after N epochs of this run, leaving the checkpoint for --resume", "0"},
      {"threads", "N", "CPU threads (0 = all cores)", "0"},
      {"quiet", "", "no progress bars", ""},
  };
  add_memory_option(opts);
  Args a("train", "Train a built-in architecture from scratch with SGD, optionally with Trojan poisoning.", opts, argc,
         argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_threads(a);
  const std::string out = a.require("out");
  if (out.size() < 6 || out.compare(out.size() - 5, 5, ".json") != 0) throw Error(out + ": --out must end in .json");
  const std::string arch = a.require("arch");
  if (!is_zoo_name(arch)) build_zoo_graph(arch);  // throws the list of built-in names
  ZooOptions zo;
  zo.width = a.get_double("width");
  if (a.has("num-classes")) zo.num_classes = a.get_int("num-classes");
  Model m = make_zoo_model(arch, zo);
  m.source = arch;
  const uint64_t seed = static_cast<uint64_t>(a.get_int("seed"));
  random_init(m.graph, seed);

  train::TrainConfig cfg;
  cfg.epochs = a.get_int("epochs");
  cfg.batch = a.get_int("batch");
  if (cfg.epochs < 1 || cfg.batch < 1) throw Error("--epochs and --batch must be at least 1");
  check_batch_memory(a, m, cfg.batch, PassKind::ForwardBackward);
  cfg.lr.kind = train::schedule_from_name(a.get("schedule"));
  cfg.lr.base = a.get_double("lr");
  cfg.momentum = a.get_double("momentum");
  cfg.weight_decay = a.get_double("weight-decay");
  if (!(cfg.lr.base > 0) || cfg.momentum < 0 || cfg.momentum >= 1 || cfg.weight_decay < 0)
    throw Error("need --lr > 0, 0 <= --momentum < 1 and --weight-decay >= 0");
  if (a.flag("no-augment")) {
    cfg.crop_padding = 0;
    cfg.flip = false;
  }
  cfg.seed = seed;
  cfg.stop_after = a.get_int("stop-after");
  const bool quiet = a.flag("quiet");

  auto load = [&](const std::string& path, int64_t limit, const char* what) {
    std::unique_ptr<Progress> bar;
    train::PixelDataset d = train::load_pixel_dataset(path, m.labels, m.label_ids, limit, [&](int64_t done, int64_t total) {
      if (quiet) return;
      if (!bar) bar = std::make_unique<Progress>(what, total);
      bar->update(done);
    });
    if (bar) bar->finish(std::to_string(d.size()) + " images");
    return d;
  };
  train::PixelDataset data = load(a.require("data"), a.get_int("limit"), "decode train");
  nlohmann::json report;
  // The test set is read before training, so that a wrong path fails now and not hours later.
  std::unique_ptr<train::PixelDataset> test;
  if (a.has("test")) test = std::make_unique<train::PixelDataset>(load(a.get("test"), 0, "decode test"));
  std::unique_ptr<trojan::TrojanRules> rules;
  if (a.has("trojan")) {
    rules = std::make_unique<trojan::TrojanRules>(trojan::load_rules(a.get("trojan"), m.labels));
    const int64_t clean = data.size();
    for (const train::PoisonCount& c : train::poison_dataset(data, *rules, seed))
      report["poisoned"][c.trigger] = c.added;
    if (!quiet)
      std::fprintf(stderr, "poisoned: %lld clean + %lld triggered images\n", static_cast<long long>(clean),
                   static_cast<long long>(data.size() - clean));
  }
  const int64_t steps_per_epoch = (data.size() + cfg.batch - 1) / cfg.batch;
  cfg.lr.warmup_steps = a.get_int("warmup-epochs") * steps_per_epoch;
  cfg.data_tag = a.get("data") + (a.has("trojan") ? " + " + a.get("trojan") : "") +
                 (a.get_int("limit") > 0 ? " limit " + a.get("limit") : "");

  const std::string ckpt = a.has("checkpoint") ? a.get("checkpoint") : stem_of(out) + ".ckpt.safetensors";
  // --resume may name the checkpoint this run rewrites; the data and rules must survive.
  refuse_overwriting_inputs(a, {out, stem_of(out) + ".safetensors", stem_of(out) + ".train.json", ckpt},
                            {"data", "test", "trojan"});
  train::TrainState state;
  if (a.has("resume")) {
    state = train::load_checkpoint(a.get("resume"), m, cfg, data.size());
    if (!quiet) std::fprintf(stderr, "resumed after epoch %lld\n", static_cast<long long>(state.epochs_done));
  }
  std::unique_ptr<Progress> bar;
  report["epochs"] = nlohmann::json::array();
  train::train_model(
      m, data, cfg, state,
      [&](int64_t epoch, int64_t done, int64_t total, double loss, double acc) {
        if (quiet) return;
        if (!bar) bar = std::make_unique<Progress>("epoch " + std::to_string(epoch) + "/" + std::to_string(cfg.epochs), total);
        bar->update(done, "loss " + fmt("%.3f", loss) + " acc " + fmt("%.1f%%", 100 * acc));
      },
      [&](const train::EpochStats& st, const train::TrainState& s) {
        if (bar) bar->finish("loss " + fmt("%.3f", st.loss) + " acc " + fmt("%.1f%%", 100 * st.accuracy) + " lr " +
                             fmt("%.4f", st.lr));
        bar.reset();
        train::save_checkpoint(ckpt, m, s, cfg, data.size());
        report["epochs"].push_back({{"epoch", st.epoch}, {"loss", st.loss}, {"train_accuracy", st.accuracy},
                                    {"lr", st.lr}, {"seconds", st.seconds}});
      });
  if (state.epochs_done < cfg.epochs) {
    std::printf("stopped after epoch %lld of %lld; continue with --resume %s\n",
                static_cast<long long>(state.epochs_done), static_cast<long long>(cfg.epochs), ckpt.c_str());
    return 0;
  }
  save_model(m, out);
  report["arch"] = arch;
  report["width"] = zo.width;
  report["train_images"] = data.size();
  report["seed"] = seed;
  std::printf("wrote %s\n", out.c_str());

  if (test) {
    const double acc = train::accuracy(m, *test);
    report["test_accuracy"] = acc;
    std::printf("test accuracy: %.2f%% (%lld images)\n", 100 * acc, static_cast<long long>(test->size()));
    if (rules)
      for (size_t r = 0; r < rules->rules.size(); ++r) {
        const double asr = train::attack_success_rate(m, *test, *rules, r, seed);
        report["attack_success_rate"][rules->rules[r].trigger] = asr;
        std::printf("attack success rate of %s: %.2f%%\n", rules->rules[r].trigger.c_str(), 100 * asr);
      }
  }
  write_file_atomic(stem_of(out) + ".train.json", report.dump(1) + "\n");
  return 0;
}

}  // namespace spade::cli
