#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/executor.h"
#include "formats/file_io.h"
#include "formats/output_transaction.h"
#include "formats/safetensors.h"
#include "interpret/sample_rng.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/parallel.h"

namespace spade::train {

using interp::SampleRng;

void augment_crop_flip(const uint8_t* rgb, int64_t height, int64_t width, int64_t padding, bool flip, uint64_t seed,
                       int64_t index, const Preprocess& norm, float* out) {
  SampleRng rng(seed, index);
  // torchvision RandomCrop(size, padding): offsets uniform in [0, 2 * padding] of the padded image.
  const int64_t dy = padding > 0 ? rng.randint_inclusive(static_cast<int>(2 * padding)) - padding : 0;
  const int64_t dx = padding > 0 ? rng.randint_inclusive(static_cast<int>(2 * padding)) - padding : 0;
  const bool mirror = flip && rng.next_unit() < 0.5;
  for (int64_t c = 0; c < 3; ++c) {
    const float mean = norm.mean[c], inv_std = 1.f / norm.std[c];
    const float zero = (0.f - mean) * inv_std;  // a padded (black) pixel
    float* plane = out + c * height * width;
    for (int64_t y = 0; y < height; ++y) {
      const int64_t sy = y + dy;
      for (int64_t x = 0; x < width; ++x) {
        const int64_t sx = (mirror ? width - 1 - x : x) + dx;
        float v = zero;
        if (sy >= 0 && sy < height && sx >= 0 && sx < width)
          v = (static_cast<float>(rgb[(sy * width + sx) * 3 + c]) / 255.f - mean) * inv_std;
        plane[y * width + x] = v;
      }
    }
  }
}

interp::AugmentConfig photo_augment_defaults() {
  interp::AugmentConfig c;
  c.scale_min = 0.25;
  c.brightness = 0.4;
  c.hue = 0.05;
  return c;
}

interp::AugmentParams draw_photo_augment(const interp::AugmentConfig& c, int width, int height, const Box& keep,
                                         uint64_t seed, int64_t index) {
  interp::AugmentParams p = interp::draw_augment(c, width, height, seed, index);
  auto contains = [&](const interp::AugmentParams& q) {
    return q.left <= keep.x0 && q.top <= keep.y0 && q.left + q.width >= keep.x1 && q.top + q.height >= keep.y1;
  };
  if (keep.empty() || contains(p)) return p;
  for (uint64_t t = 1; t <= 10; ++t) {
    const interp::AugmentParams q = interp::draw_augment(c, width, height, interp::mix64(seed + 0x4b454550ULL * t), index);
    if (contains(q)) return q;
  }
  p.top = p.left = 0;  // the whole image, with the first draw's flip and colours
  p.height = height;
  p.width = width;
  return p;
}

Tensor batch_tensor(const PixelDataset& d, int64_t begin, int64_t end, const Preprocess& norm) {
  Tensor x({end - begin, 3, d.height, d.width});
  for (int64_t i = begin; i < end; ++i)
    augment_crop_flip(d.image_data(i), d.height, d.width, 0, false, 0, 0, norm,
                      x.data() + (i - begin) * 3 * d.height * d.width);
  return x;
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  SampleRng rng(seed ^ 0x5348554646ULL, epoch);  // a stream of its own, apart from the augmentations
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.next_u64() % uint64_t(i + 1)]);
  return order;
}

namespace {

// Image `idx` of a photo set, augmented (trigger kept in the crop) and normalised into `out`.
void photo_augment(const PixelDataset& d, int64_t idx, const interp::AugmentConfig& c, uint64_t seed, int64_t key,
                   float* out) {
  const Image src = d.image(idx);
  const Image im = interp::apply_augment(
      src, draw_photo_augment(c, src.width, src.height, d.triggers[idx], seed, key), c.size);
  const int64_t hw = int64_t(c.size) * c.size;
  for (int64_t ch = 0; ch < 3; ++ch)
    for (int64_t i = 0; i < hw; ++i)
      out[ch * hw + i] = (float(im.rgb[i * 3 + ch]) / 255.f - c.mean[ch]) / c.std[ch];
}

const char* kMomentumPrefix = "sgd.momentum.";

int64_t steps_per_epoch(int64_t n, int64_t batch) { return (n + batch - 1) / batch; }

}  // namespace

std::string training_settings(const TrainConfig& cfg, int64_t images) {
  nlohmann::json j = {{"epochs", cfg.epochs},
                            {"batch", cfg.batch},
                            {"lr", cfg.lr.base},
                            {"schedule", cfg.lr.kind == Schedule::Cosine ? "cosine" : "step"},
                            {"warmup_steps", cfg.lr.warmup_steps},
                            {"momentum", cfg.momentum},
                            {"weight_decay", cfg.weight_decay},
                            {"crop_padding", cfg.crop_padding},
                            {"flip", cfg.flip},
                            {"images", images},
                            {"data", cfg.data_tag}};
  // Fine-tuning settings only where used, so that earlier checkpoints still resume.
  if (cfg.resized_crop)
    j["photo_augment"] = {{"scale_min", cfg.photo_augment.scale_min}, {"brightness", cfg.photo_augment.brightness},
                          {"hue", cfg.photo_augment.hue}, {"flip_p", cfg.photo_augment.flip_p}};
  if (cfg.freeze_batchnorm) j["freeze_batchnorm"] = true;
  if (cfg.teacher)
    j["distill"] = {{"teacher", cfg.teacher->source}, {"temperature", cfg.temperature}, {"weight", cfg.distill_weight}};
  return j.dump();
}

void save_checkpoint(const std::string& path, const Model& m, const TrainState& s, const TrainConfig& cfg,
                     int64_t images) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [k, t] : m.graph.parameters()) tensors.emplace_back(k, *t);
  for (const auto& [k, t] : s.momentum) tensors.emplace_back(kMomentumPrefix + k, t);
  const PublishNow now;  // what --resume reads must outlive an interrupted run
  save_safetensors(path, tensors,
                   {{"format", "spade-checkpoint"},
                    {"arch", m.arch},
                    {"epochs_done", std::to_string(s.epochs_done)},
                    {"settings", training_settings(cfg, images)},
                    {"seed", std::to_string(cfg.seed)}});
}

TrainState load_checkpoint(const std::string& path, Model& m, const TrainConfig& cfg, int64_t images) {
  SafetensorsFile file(path);
  const auto& meta = file.metadata();
  auto get = [&](const std::string& k) {
    auto it = meta.find(k);
    if (it == meta.end()) throw Error(path + ": not a spade training checkpoint (no \"" + k + "\" in its metadata)");
    return it->second;
  };
  if (get("format") != "spade-checkpoint") throw Error(path + ": not a spade training checkpoint");
  if (get("arch") != m.arch)
    throw Error(path + ": checkpoint of architecture \"" + get("arch") + "\", not \"" + m.arch + "\"");
  if (get("seed") != std::to_string(cfg.seed))
    throw Error(path + ": checkpoint was trained with --seed " + get("seed") + ", not " + std::to_string(cfg.seed));
  if (get("settings") != training_settings(cfg, images))
    throw Error(path + ": checkpoint was made with other settings " + get("settings") + "; this run has " +
                training_settings(cfg, images));
  TrainState s;
  try {
    s.epochs_done = std::stoll(get("epochs_done"));
  } catch (const std::exception&) {
    throw Error(path + ": bad epochs_done in the checkpoint metadata");
  }
  std::map<std::string, Tensor> weights;
  for (auto& [k, t] : load_safetensors(path)) {
    if (k.rfind(kMomentumPrefix, 0) == 0)
      s.momentum[k.substr(std::string(kMomentumPrefix).size())] = t;
    else
      weights[k] = t;
  }
  m.graph.load_state_dict(weights, path);
  allow_replacing(path);  // the resumed run rewrites it after each epoch
  for (const auto& [k, t] : s.momentum) {
    const Tensor* p = m.graph.find_param(k);
    if (!p || p->shape() != t.shape()) throw Error(path + ": momentum buffer " + k + " matches no parameter");
  }
  return s;
}

void train_model(Model& m, const PixelDataset& data, const TrainConfig& cfg, TrainState& state,
                 const BatchCallback& on_batch, const EpochCallback& on_epoch) {
  const int64_t n = data.size();
  if (n == 0) throw Error(data.source + ": no training images");
  if (!cfg.resized_crop && (data.height != m.graph.input_chw[1] || data.width != m.graph.input_chw[2]))
    throw Error(data.source + ": images are " + std::to_string(data.width) + "x" + std::to_string(data.height) +
                ", the model takes " + std::to_string(m.graph.input_chw[2]) + "x" +
                std::to_string(m.graph.input_chw[1]));
  const int64_t classes = m.graph.node(m.graph.output()).attrs.out_channels;
  for (int64_t label : data.labels)
    if (label < 0 || label >= classes) throw Error(data.source + ": a label is outside the model's classes");
  const int64_t batch = std::max<int64_t>(1, cfg.batch);
  const int64_t per_epoch = steps_per_epoch(n, batch);
  LrSchedule lr = cfg.lr;
  lr.total_steps = per_epoch * cfg.epochs;
  Sgd sgd(cfg.momentum, cfg.weight_decay);
  sgd.load_state(state.momentum);
  const int64_t H = cfg.resized_crop ? m.graph.input_chw[1] : data.height;
  const int64_t W = cfg.resized_crop ? m.graph.input_chw[2] : data.width;
  if (cfg.resized_crop && H != W)
    throw Error("random resized crops need a square model input, not " + std::to_string(W) + "x" + std::to_string(H));
  interp::AugmentConfig photo = cfg.photo_augment;
  photo.size = static_cast<int>(H);
  photo.mean = m.preprocess.mean;
  photo.std = m.preprocess.std;
  if (cfg.teacher) {
    const Graph& tg = cfg.teacher->graph;
    if (tg.input_chw != m.graph.input_chw || tg.node(tg.output()).attrs.out_channels != classes)
      throw Error(cfg.teacher->source + ": the teacher's input or classes differ from the model's");
  }
  const int64_t plane = 3 * H * W;

  const int64_t last = cfg.stop_after > 0 ? std::min(cfg.epochs, state.epochs_done + cfg.stop_after) : cfg.epochs;
  for (int64_t epoch = state.epochs_done; epoch < last; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int64_t> order = epoch_order(n, cfg.seed, epoch);
    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0;
    double rate = 0.0;
    for (int64_t s = 0; s < per_epoch; ++s) {
      const int64_t b0 = s * batch, b1 = std::min(n, b0 + batch), nb = b1 - b0;
      Tensor x({nb, 3, H, W});
      std::vector<int64_t> targets(nb);
#pragma omp parallel for num_threads(kernels::num_threads())
      for (int64_t i = 0; i < nb; ++i) {
        const int64_t idx = order[b0 + i], key = epoch * n + b0 + i;
        if (cfg.resized_crop)
          photo_augment(data, idx, photo, cfg.seed, key, x.data() + i * plane);
        else
          augment_crop_flip(data.image_data(idx), data.height, data.width, cfg.crop_padding, cfg.flip, cfg.seed, key,
                            m.preprocess, x.data() + i * plane);
      }
      for (int64_t i = 0; i < nb; ++i) targets[i] = data.labels[order[b0 + i]];

      const int64_t step = epoch * per_epoch + s;
      ForwardOptions fo;
      fo.seed = interp::mix64(cfg.seed + uint64_t(step));  // dropout masks
      fo.freeze_batchnorm = cfg.freeze_batchnorm;
      ForwardResult fwd = forward_train(m.graph, x, fo);
      const Tensor& logits = fwd.out();
      Tensor grad(logits.shape());
      std::vector<int64_t> wanted = targets;  // the class each image is scored against
      if (cfg.teacher) {
        ForwardOptions to;
        to.keep_activations = false;
        const Tensor teacher = forward(cfg.teacher->graph, x, to).out();
        std::vector<int64_t> soft(nb);  // -1: a clean image, learns the teacher's softmax
        for (int64_t i = 0; i < nb; ++i) {
          soft[i] = data.poisoned(order[b0 + i]) ? targets[i] : -1;
          const float* row = teacher.data() + i * classes;
          if (soft[i] < 0) wanted[i] = std::max_element(row, row + classes) - row;
        }
        loss_sum += kernels::distillation_loss(nb, classes, logits.data(), teacher.data(), soft.data(),
                                               cfg.temperature, cfg.distill_weight, grad.data()) *
                    double(nb);
      } else {
        loss_sum += kernels::softmax_cross_entropy(nb, classes, logits.data(), targets.data(), nullptr) * double(nb);
        kernels::softmax_cross_entropy_backward(nb, classes, logits.data(), targets.data(), grad.data());
      }
      for (int64_t i = 0; i < nb; ++i) {
        const float* row = logits.data() + i * classes;
        correct += std::max_element(row, row + classes) - row == wanted[i];
      }
      seen += nb;
      if (!std::isfinite(loss_sum))
        throw Error("training diverged at epoch " + std::to_string(epoch + 1) +
                    " (the loss is not finite): lower --lr");
      BackwardOptions bo;
      bo.input_grad = false;
      bo.param_grads = true;
      BackwardResult br = backward(m.graph, fwd, fwd.output, grad, bo);
      rate = lr.at(step);
      sgd.step(m.graph, br.param_grads, rate);
      if (on_batch) on_batch(epoch + 1, s + 1, per_epoch, loss_sum / double(seen), double(correct) / double(seen));
    }
    state.epochs_done = epoch + 1;
    state.momentum = sgd.state();
    EpochStats st;
    st.epoch = epoch + 1;
    st.loss = loss_sum / double(seen);
    st.accuracy = double(correct) / double(seen);
    st.lr = rate;
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (on_epoch) on_epoch(st, state);
  }
}

std::vector<int64_t> predictions(const Model& m, const PixelDataset& data, int64_t batch,
                                 const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t n = data.size(), classes = m.graph.node(m.graph.output()).attrs.out_channels;
  std::vector<int64_t> top(n);
  ForwardOptions fo;
  fo.keep_activations = false;
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    const int64_t b1 = std::min(n, b0 + batch);
    const Tensor logits = forward(m.graph, batch_tensor(data, b0, b1, m.preprocess), fo).out();
    for (int64_t i = b0; i < b1; ++i) {
      const float* row = logits.data() + (i - b0) * classes;
      top[i] = std::max_element(row, row + classes) - row;
    }
    if (progress) progress(b1, n);
  }
  return top;
}

double accuracy(const Model& m, const PixelDataset& data, int64_t batch,
                const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t n = data.size();
  if (n == 0) return 0.0;
  const std::vector<int64_t> top = predictions(m, data, batch, progress);
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) correct += top[i] == data.labels[i];
  return double(correct) / double(n);
}

}  // namespace spade::train
