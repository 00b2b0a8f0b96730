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

struct PixelDataset {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> pixels;     // n * height * width * 3, interleaved RGB
  std::vector<int64_t> labels;     // model class index per image
  std::vector<std::string> names;  // file name per image (for messages and results)
  std::string source;              // the folder or tar it came from

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  const uint8_t* image_data(int64_t i) const { return pixels.data() + i * height * width * 3; }
  Image image(int64_t i) const;  // a copy of image i
  // Appends an image of this set's size.
  void push_back(const Image& im, int64_t label, const std::string& name);
};

// Decodes every image of an ImageFolder directory or tar (formats/image_folder.h). Class folders
// map to model classes as model_class_indices says (by id, by name, else by position). Every
// image must have the size of the first one (the error names the file that does not); `limit` > 0
// keeps an evenly spaced subset of that many images (every class represented).
PixelDataset load_pixel_dataset(const std::string& path, const std::vector<std::string>& labels,
                                const std::vector<std::string>& ids = {}, int64_t limit = 0,
                                const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace spade::train
