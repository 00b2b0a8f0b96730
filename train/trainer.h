#pragma once
// Supervised training of a Model on a PixelDataset: random crop (zero padding) and horizontal
// flip, the model's normalisation, shuffled mini-batches, BatchNorm in train mode, softmax
// cross-entropy, SGD with momentum and weight decay, a cosine or step schedule. Deterministic for
// a seed: the shuffle of epoch e and the augmentation of each position depend only on
// (seed, e, position), so a run resumed from a checkpoint continues exactly as if never stopped.
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "formats/model.h"
#include "interpret/spade/augment.h"
#include "train/dataset.h"
#include "train/sgd.h"

namespace spade::train {

// The photo augmentation of fine-tuning: random resized crops of 25-100% of the area, flips,
// brightness x[0.6, 1.4] and hue +-0.05 turn (milder than SPADE's, which a trigger must survive).
interp::AugmentConfig photo_augment_defaults();

struct TrainConfig {
  int64_t epochs = 1;
  int64_t batch = 128;
  LrSchedule lr;            // total_steps is set from epochs and the set's size
  double momentum = 0.9;
  double weight_decay = 5e-4;
  int64_t crop_padding = 4;  // 0: no random crop
  bool flip = true;
  // Photos: instead of the padded crop, SPADE's augmentation (random resized crop of any stored
  // size to the model's input size, flip, brightness and hue jitter; interp::AugmentConfig; its
  // size and normalisation are taken from the model). A poisoned image's crop keeps its trigger.
  bool resized_crop = false;
  interp::AugmentConfig photo_augment = photo_augment_defaults();
  // BatchNorm keeps its running statistics (PyTorch: bn.eval() while training).
  bool freeze_batchnorm = false;
  // Distillation (fine-tuning with a backdoor without forgetting): a clean image's loss is
  // distill_weight * T^2 * KL(teacher || student) at temperature T, a poisoned image's the
  // cross-entropy to its label (kernels::distillation_loss). Null: cross-entropy on every image.
  const Model* teacher = nullptr;
  double temperature = 2.0;
  double distill_weight = 1.0;
  uint64_t seed = 0;
  // What the data was (e.g. the --data and --trojan arguments): recorded in checkpoints with the
  // settings above and the set's size, and compared on resume.
  std::string data_tag;
  // Stop after this many epochs in this call (0: run to `epochs`); a later call resumes.
  int64_t stop_after = 0;
};

struct EpochStats {
  int64_t epoch = 0;  // 1-based
  double loss = 0.0;  // mean training loss over the epoch
  // Training accuracy (on the augmented batches), in [0, 1]; with a teacher, against the
  // teacher's class on clean images and the label on poisoned ones.
  double accuracy = 0.0;
  double lr = 0.0;    // at the epoch's last step
  double seconds = 0.0;
};

// One augmented, normalised image: a random crop of the zero-padded image and a coin-flip mirror,
// drawn from interp::SampleRng(seed, index). Writes 3 * height * width floats (CHW) to `out`.
void augment_crop_flip(const uint8_t* rgb, int64_t height, int64_t width, int64_t padding, bool flip, uint64_t seed,
                       int64_t index, const Preprocess& norm, float* out);
// The photo augmentation of image `index` for a width x height image: a poisoned image's crop box
// must contain its trigger's box (up to ten redraws from other streams, then the whole image).
interp::AugmentParams draw_photo_augment(const interp::AugmentConfig& c, int width, int height, const Box& keep,
                                         uint64_t seed, int64_t index);
// Images [begin, end) of the set as a normalised (n, 3, H, W) batch, no augmentation.
Tensor batch_tensor(const PixelDataset& d, int64_t begin, int64_t end, const Preprocess& norm);

// The order of the images in epoch `epoch` (0-based): a Fisher-Yates shuffle keyed by (seed, epoch).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

struct TrainState {
  int64_t epochs_done = 0;
  std::map<std::string, Tensor> momentum;  // SGD's buffers by state_dict key
};

// Writes / reads a checkpoint: every parameter and buffer, the momentum buffers and the number of
// epochs done (safetensors). Resuming refuses a checkpoint of another architecture or made with
// other settings (training_settings), which would not continue the same run.
void save_checkpoint(const std::string& path, const Model& m, const TrainState& s, const TrainConfig& cfg,
                     int64_t images);
TrainState load_checkpoint(const std::string& path, Model& m, const TrainConfig& cfg, int64_t images);
// The settings a checkpoint records, as one line of JSON.
std::string training_settings(const TrainConfig& cfg, int64_t images);

using BatchCallback = std::function<void(int64_t epoch, int64_t done, int64_t total, double loss, double acc)>;
using EpochCallback = std::function<void(const EpochStats&, const TrainState&)>;

// Trains from state.epochs_done to cfg.epochs, calling on_batch after every step and on_epoch after
// every epoch (where `spade train` writes its checkpoint).
void train_model(Model& m, const PixelDataset& data, const TrainConfig& cfg, TrainState& state,
                 const BatchCallback& on_batch = {}, const EpochCallback& on_epoch = {});

// The model's eval-mode top-1 class of every image of the set.
std::vector<int64_t> predictions(const Model& m, const PixelDataset& data, int64_t batch = 64,
                                 const std::function<void(int64_t, int64_t)>& progress = {});
// Top-1 accuracy (in [0, 1]) of the model in eval mode on the set.
double accuracy(const Model& m, const PixelDataset& data, int64_t batch = 64,
                const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace spade::train
