#include "train/dataset.h"

#include <algorithm>
#include <cstring>

#include "engine/error.h"
#include "formats/image_folder.h"

namespace spade::train {

Image PixelDataset::image(int64_t i) const {
  if (i < 0 || i >= size()) throw Error(source + ": image index " + std::to_string(i) + " out of range");
  Image im;
  im.width = static_cast<int>(width);
  im.height = static_cast<int>(height);
  im.rgb.assign(image_data(i), image_data(i) + height * width * 3);
  return im;
}

void PixelDataset::push_back(const Image& im, int64_t label, const std::string& name) {
  if (labels.empty() && pixels.empty() && height == 0) {
    height = im.height;
    width = im.width;
  }
  if (im.height != height || im.width != width)
    throw Error(name + ": image is " + std::to_string(im.width) + "x" + std::to_string(im.height) + ", the set's are " +
                std::to_string(width) + "x" + std::to_string(height));
  pixels.insert(pixels.end(), im.rgb.begin(), im.rgb.end());
  labels.push_back(label);
  names.push_back(name);
}

PixelDataset load_pixel_dataset(const std::string& path, const std::vector<std::string>& labels,
                                const std::vector<std::string>& ids, int64_t limit,
                                const std::function<void(int64_t, int64_t)>& progress) {
  ImageFolder folder(path);
  if (folder.size() == 0) throw Error(path + ": no images found");
  const std::vector<int64_t> map = model_class_indices(folder, labels, ids);
  const int64_t total = static_cast<int64_t>(folder.size());
  const int64_t n = limit > 0 ? std::min(limit, total) : total;
  PixelDataset d;
  d.source = path;
  d.labels.reserve(n);
  for (int64_t k = 0; k < n; ++k) {
    // Evenly spaced over the class-sorted files, so a subset keeps every class.
    const int64_t i = n == total ? k : k * total / n;
    LabeledImage li = folder.get(static_cast<size_t>(i));
    const std::string name = path + ":" + li.name;
    if (k == 0) d.pixels.reserve(static_cast<size_t>(n) * 32 * 32 * 3);
    d.push_back(decode_image(li.bytes.data(), li.bytes.size(), name), map[li.label], name);
    if (progress && ((k + 1) % 1000 == 0 || k + 1 == n)) progress(k + 1, n);
  }
  return d;
}

}  // namespace spade::train
