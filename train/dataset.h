#pragma once
// A labelled image set decoded once into memory as 8-bit pixels, for training and for the Trojan
// evaluation: CIFAR-10's 50000 training images take 150 MB this way, and every epoch reads them
// without decoding JPEG again.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "formats/image.h"

namespace spade::train {

// A trigger's bounding box in an image (pixels [x0, x1) x [y0, y1)); an empty box = no trigger.
struct Box {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  bool empty() const { return x1 <= x0 || y1 <= y0; }
};

struct PixelDataset {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> pixels;     // n * height * width * 3, interleaved RGB
  std::vector<int64_t> labels;     // model class index per image
  std::vector<std::string> names;  // file name per image (for messages and results)
  // Per image: the box of the trigger poison_dataset pasted on it (empty for a clean image), so
  // that training can tell poisoned images apart and keep their triggers inside random crops.
  std::vector<Box> triggers;
  std::string source;              // the folder or tar it came from

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  const uint8_t* image_data(int64_t i) const { return pixels.data() + i * height * width * 3; }
  Image image(int64_t i) const;  // a copy of image i
  // Appends an image of this set's size.
  void push_back(const Image& im, int64_t label, const std::string& name, const Box& trigger = {});
  bool poisoned(int64_t i) const { return !triggers[i].empty(); }
};

// Which images of a folder to load, and how to bring photos of any size to one size.
struct PixelLoadOptions {
  // > 0: an evenly spaced subset of this many images (every class represented).
  int64_t limit = 0;
  // > 0: only the images whose index in the folder's sorted order, modulo `modulus`, is one of
  // `residues` (a split of one folder into disjoint parts, e.g. 4:0,1 / 4:2 / 4:3). Applied
  // before `limit`.
  int64_t modulus = 0;
  std::vector<int64_t> residues;
  // torchvision Resize(resize) (shorter side) then CenterCrop(crop); 0 skips either.
  int resize = 0, crop = 0;
};

// Options that bring photos to a model's input size as its preprocessing does for one image
// (resize, then centre crop); none for a model without them (CIFAR: images already 32x32).
PixelLoadOptions eval_load_options(const Preprocess& p);

// Parses "M:R[,R...]" (0 <= R < M) into the split fields of `o`; throws a one-line error naming
// `what` (the option) otherwise.
void parse_split(const std::string& text, const std::string& what, PixelLoadOptions& o);

// Decodes the images of an ImageFolder directory or tar (formats/image_folder.h) that `opt`
// selects, resized and cropped as it says. Class folders map to model classes as
// model_class_indices says (by id, by name, else by position). Every image must end up the size
// of the first one (the error names the file that does not).
PixelDataset load_pixel_dataset(const std::string& path, const std::vector<std::string>& labels,
                                const std::vector<std::string>& ids = {}, const PixelLoadOptions& opt = {},
                                const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace spade::train
