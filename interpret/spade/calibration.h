#pragma once
// Where a trace's calibration images come from: augmentations of the one sample (the paper's
// setting) or a given set used as it is (no augmentation). Batches are produced on demand so
// that only one batch is ever in memory.
#include <cstdint>
#include <memory>
#include <string>

#include "engine/tensor.h"
#include "formats/image.h"
#include "interpret/spade/augment.h"

namespace spade::interp {

class Calibration {
 public:
  virtual ~Calibration() = default;
  virtual int64_t size() const = 0;
  // Images [first, first + count) as a normalised (count, 3, H, W) tensor.
  virtual Tensor batch(int64_t first, int64_t count) const = 0;
  // The same batch on `device`; augmentations are made there directly (augment_batch_cuda).
  virtual Tensor batch_on(Device device, int64_t first, int64_t count) const {
    return batch(first, count).to(device);
  }
  virtual std::string describe() const = 0;
};

// `count` augmentations of `image` (augment.h), sample i drawn from (seed, i).
std::unique_ptr<Calibration> augmented_calibration(Image image, const AugmentConfig& config, int64_t count,
                                                   uint64_t seed);
// Rows of an already-normalised (N, 3, H, W) tensor.
std::unique_ptr<Calibration> tensor_calibration(Tensor x, std::string name);
// Every image file under a directory (recursively, sorted by path) or in a tar, each
// preprocessed like a single input (resize, centre crop, normalise).
std::unique_ptr<Calibration> image_set_calibration(const std::string& path, const Preprocess& preprocess);

}  // namespace spade::interp
