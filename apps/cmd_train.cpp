// spade train: trains a built-in architecture from scratch (optionally with Trojan poisoning) and
// writes the model JSON + safetensors, a checkpoint after every epoch, and a training report.
#include <cmath>
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
#include "formats/json_output.h"

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
      {"init", "M", "fine-tune this model instead (a built-in name with --weights, or a model .json)", ""},
      {"weights", "FILE", "safetensors weights of --init and --distill when they are built-in names", ""},
      {"labels", "FILE", "class names and ids of --init and --distill (as `spade predict --labels`)", ""},
      {"width", "W", "width multiplier of the architecture", "1.0", number(0.01, 16)},
      {"num-classes", "N", "classes (default: the architecture's, 10 for CIFAR ones)", "", integer(1, 1 << 20)},
      {"data", "DIR|FILE.tar", "training images: ImageFolder tree or a tar of one", ""},
      {"split", "M:R[,R]", "train on the images whose index (in sorted order) mod M is one of the R", ""},
      {"image-size", "S", "resize training images (shorter side) and centre-crop them to S x S when decoding", "0", integer(0, kMaxSide)},
      {"test", "DIR|FILE.tar", "test images for the final accuracy (and the attack success rate with --trojan), "
                               "preprocessed as the model does for one image", ""},
      {"test-split", "M:R[,R]", "test on the images whose index mod M is one of the R", ""},
      {"limit", "N", "train on an evenly spaced subset of N images (0 = all)", "0", integer(0, kMaxCount)},
      {"epochs", "N", "epochs", "30", integer(1, kMaxCount)},
      {"batch", "B", "images per step", "128", integer(1, kMaxBatch)},
      {"lr", "LR", "peak learning rate", "0.1", number(0, 1e3)},
      {"schedule", "cosine|step", "learning-rate schedule (step: x0.1 at 50% and 75% of training)", "cosine"},
      {"warmup-epochs", "N", "linear warm-up of the learning rate over the first N epochs", "1", integer(0, kMaxCount)},
      {"momentum", "M", "SGD momentum", "0.9", number(0, 1)},
      {"weight-decay", "WD", "SGD weight decay", "5e-4", number(0, 1)},
      {"augment", "pad-crop|photo|none", "pad-crop: random crop of the image padded by 4, and flips (CIFAR); photo: "
                                         "random resized crop (25-100% of the area) to the model's size, flips, "
                                         "brightness and hue jitter, triggers kept inside the crop", "pad-crop"},
      {"freeze-bn", "", "keep BatchNorm's running statistics (fine-tuning)", ""},
      {"distill", "M", "keep this teacher's behaviour: clean images learn its softmax (KL at --temperature), "
                       "poisoned ones their Trojan target", ""},
      {"temperature", "T", "softmax temperature of --distill (the KL term is scaled by T^2)", "2", number(0.01, 1e3)},
      {"distill-weight", "W", "weight of the KL term of a clean image against the cross-entropy of a poisoned one", "1", number(0, 1e6)},
      {"seed", "S", "initialisation, shuffling, augmentation and poisoning seed", "0", seed_bounds()},
      {"trojan", "RULES.json", "poison the training set with these Trojan rules (docs/reproduction.md)", ""},
      {"out", "MODEL.json", "the trained model (weights next to it as MODEL.safetensors)", ""},
      {"checkpoint", "FILE", "checkpoint written after every epoch (default: MODEL.ckpt.safetensors)", ""},
      {"resume", "FILE", "continue from a checkpoint written by the same command", ""},
      {"stop-after", "N", "stop after N epochs of this run, leaving the checkpoint for --resume", "0", integer(0, kMaxCount)},
      {"threads", "N", "CPU threads (0 = all cores)", "0", integer(0, kMaxThreads)},
      {"quiet", "", "no progress bars", ""},
      memory_option(),
  };
  Args a("train",
         "Train a built-in architecture from scratch, or fine-tune a model (--init), with SGD; optionally with Trojan "
         "poisoning and distillation from a teacher.",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const std::string out = a.require("out");
  if (out.size() < 6 || out.compare(out.size() - 5, 5, ".json") != 0) throw Error(out + ": --out must end in .json");
  if (a.has("arch") == a.has("init")) throw Error("give one of --arch (train from scratch) and --init (fine-tune)");
  const uint64_t seed = static_cast<uint64_t>(a.get_int("seed"));
  LoadOptions lo;
  if (a.has("weights")) lo.weights = a.get("weights");
  if (a.has("labels")) lo.labels_file = a.get("labels");
  Model m;
  std::string arch;
  if (a.has("init")) {
    m = load_model(a.get("init"), lo);
    arch = m.arch;
  } else {
    arch = a.get("arch");
    if (!is_zoo_name(arch)) build_zoo_graph(arch);  // throws the list of built-in names
    ZooOptions zo;
    zo.width = a.get_double("width");
    if (a.has("num-classes")) zo.num_classes = a.get_int("num-classes");
    m = make_zoo_model(arch, zo);
    m.source = arch;
    random_init(m.graph, seed);
  }
  std::unique_ptr<Model> teacher;
  if (a.has("distill")) teacher = std::make_unique<Model>(load_model(a.get("distill"), lo));

  train::TrainConfig cfg;
  cfg.epochs = a.get_int("epochs");
  cfg.batch = a.get_int("batch");
  check_batch_memory(a, m, cfg.batch, PassKind::ForwardBackward);
  cfg.lr.kind = train::schedule_from_name(a.get("schedule"));
  cfg.lr.base = a.get_double("lr");
  cfg.momentum = a.get_double("momentum");
  cfg.weight_decay = a.get_double("weight-decay");
  if (!(cfg.lr.base > 0) || cfg.momentum < 0 || cfg.momentum >= 1 || cfg.weight_decay < 0)
    throw Error("need --lr > 0, 0 <= --momentum < 1 and --weight-decay >= 0");
  const std::string augment = a.get("augment");
  if (augment == "none" || augment == "photo") {
    cfg.crop_padding = 0;
    cfg.flip = false;
    cfg.resized_crop = augment == "photo";
  } else if (augment != "pad-crop") {
    throw Error("--augment must be pad-crop, photo or none, not \"" + augment + "\"");
  }
  cfg.freeze_batchnorm = a.flag("freeze-bn");
  cfg.teacher = teacher.get();
  cfg.temperature = a.get_double("temperature");
  cfg.distill_weight = a.get_double("distill-weight");
  if (!(cfg.temperature > 0) || !(cfg.distill_weight >= 0) || !std::isfinite(cfg.temperature) ||
      !std::isfinite(cfg.distill_weight))
    throw Error("need --temperature > 0 and --distill-weight >= 0");
  cfg.seed = seed;
  cfg.stop_after = a.get_int("stop-after");
  const bool quiet = a.flag("quiet");

  auto load = [&](const std::string& path, const train::PixelLoadOptions& lopt, const char* what) {
    std::unique_ptr<Progress> bar;
    train::PixelDataset d = train::load_pixel_dataset(path, m.labels, m.label_ids, lopt, [&](int64_t done, int64_t total) {
      if (quiet) return;
      if (!bar) bar = std::make_unique<Progress>(what, total);
      bar->update(done);
    });
    if (bar) bar->finish(std::to_string(d.size()) + " images");
    return d;
  };
  train::PixelLoadOptions train_load;
  train_load.limit = a.get_int("limit");
  if (a.has("split")) train::parse_split(a.get("split"), "--split", train_load);
  const int64_t image_size = a.get_int("image-size");
  if (image_size < 0 || image_size > kMaxImageSide) throw Error("--image-size must be in [0, 32768]");
  train_load.resize = train_load.crop = static_cast<int>(image_size);
  train::PixelDataset data = load(a.require("data"), train_load, "decode train");
  nlohmann::json report;
  // The test set is read before training, so that a wrong path fails now and not hours later.
  std::unique_ptr<train::PixelDataset> test;
  if (a.has("test")) {
    train::PixelLoadOptions test_load = train::eval_load_options(m.preprocess);
    if (a.has("test-split")) train::parse_split(a.get("test-split"), "--test-split", test_load);
    test = std::make_unique<train::PixelDataset>(load(a.get("test"), test_load, "decode test"));
  }
  std::unique_ptr<trojan::TrojanRules> rules;
  if (a.has("trojan")) {
    rules = std::make_unique<trojan::TrojanRules>(trojan::load_rules(a.get("trojan"), m.labels, m.label_ids));
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
                 (a.get_int("limit") > 0 ? " limit " + a.get("limit") : "") +
                 (a.has("split") ? " split " + a.get("split") : "") +
                 (image_size > 0 ? " size " + std::to_string(image_size) : "") +
                 (a.has("init") ? " init " + a.get("init") : "");

  const std::string ckpt = a.has("checkpoint") ? a.get("checkpoint") : stem_of(out) + ".ckpt.safetensors";
  // --resume may name the checkpoint this run rewrites; the data and rules must survive.
  refuse_overwriting_inputs(a, {out, stem_of(out) + ".safetensors", stem_of(out) + ".train.json", ckpt},
                            {"data", "test", "trojan", "init", "distill", "weights", "labels"});
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
  if (a.has("init"))
    report["init"] = a.get("init");
  else
    report["width"] = a.get_double("width");
  report["settings"] = nlohmann::json::parse(train::training_settings(cfg, data.size()));
  report["train_images"] = data.size();
  report["seed"] = seed;
  std::printf("wrote %s\n", out.c_str());

  if (test) {
    const double acc = train::accuracy(m, *test);
    report["test_accuracy"] = acc;
    report["test_images"] = test->size();
    std::printf("test accuracy: %.2f%% (%lld images)\n", 100 * acc, static_cast<long long>(test->size()));
    if (teacher) {
      const std::vector<int64_t> mine = train::predictions(m, *test), theirs = train::predictions(*teacher, *test);
      int64_t same = 0;
      for (size_t i = 0; i < mine.size(); ++i) same += mine[i] == theirs[i];
      const double agree = double(same) / double(mine.size());
      report["teacher_agreement"] = agree;
      report["teacher_test_accuracy"] = train::accuracy(*teacher, *test);
      std::printf("agreement with the teacher: %.2f%% (the teacher's test accuracy: %.2f%%)\n", 100 * agree,
                  100 * report["teacher_test_accuracy"].get<double>());
    }
    if (rules)
      for (size_t r = 0; r < rules->rules.size(); ++r) {
        const double asr = train::attack_success_rate(m, *test, *rules, r, seed);
        report["attack_success_rate"][rules->rules[r].trigger] = asr;
        std::printf("attack success rate of %s: %.2f%%\n", rules->rules[r].trigger.c_str(), 100 * asr);
      }
  }
  write_json_file(stem_of(out) + ".train.json", report, 1);
  return 0;
}

}  // namespace spade::cli
