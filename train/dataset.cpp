#include "train/dataset.h"

#include <algorithm>
#include <cstring>

#include "engine/error.h"
#include "engine/memory_estimate.h"
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

void PixelDataset::push_back(const Image& im, int64_t label, const std::string& name, const Box& trigger) {
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
  triggers.push_back(trigger);
}

PixelLoadOptions eval_load_options(const Preprocess& p) {
  PixelLoadOptions o;
  o.resize = p.resize;
  o.crop = p.crop;
  return o;
}

void parse_split(const std::string& text, const std::string& what, PixelLoadOptions& o) {
  const auto fail = [&] {
    throw Error(what + " \"" + text + "\": expected M:R[,R...] with 0 <= R < M (e.g. 4:0,1)");
  };
  const size_t colon = text.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) fail();
  auto number = [&](const std::string& t) {
    if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos) fail();
    return std::stoll(t);
  };
  o.modulus = number(text.substr(0, colon));
  if (o.modulus < 1) fail();
  o.residues.clear();
  std::string rest = text.substr(colon + 1) + ",";
  for (size_t a = 0, b; (b = rest.find(',', a)) != std::string::npos; a = b + 1) {
    const int64_t r = number(rest.substr(a, b - a));
    if (r >= o.modulus || std::find(o.residues.begin(), o.residues.end(), r) != o.residues.end()) fail();
    o.residues.push_back(r);
  }
}

PixelDataset load_pixel_dataset(const std::string& path, const std::vector<std::string>& labels,
                                const std::vector<std::string>& ids, const PixelLoadOptions& opt,
                                const std::function<void(int64_t, int64_t)>& progress) {
  ImageFolder folder(path);
  if (folder.size() == 0) throw Error(path + ": no images found");
  const std::vector<int64_t> map = model_class_indices(folder, labels, ids);
  std::vector<int64_t> selected;
  for (int64_t i = 0; i < static_cast<int64_t>(folder.size()); ++i)
    if (opt.modulus <= 0 || std::find(opt.residues.begin(), opt.residues.end(), i % opt.modulus) != opt.residues.end())
      selected.push_back(i);
  if (selected.empty()) throw Error(path + ": the split selects none of its " + std::to_string(folder.size()) + " images");
  const int64_t total = static_cast<int64_t>(selected.size());
  const int64_t n = opt.limit > 0 ? std::min(opt.limit, total) : total;
  PixelDataset d;
  d.source = path;
  d.labels.reserve(n);
  for (int64_t k = 0; k < n; ++k) {
    // Evenly spaced over the class-sorted files, so a subset keeps every class.
    const int64_t i = selected[n == total ? k : k * total / n];
    LabeledImage li = folder.get(static_cast<size_t>(i));
    const std::string name = path + ":" + li.name;
    Image im = decode_image(li.bytes.data(), li.bytes.size(), name);
    if (opt.resize > 0) im = resize_shorter_side(im, opt.resize);
    if (opt.crop > 0) im = center_crop(im, opt.crop, opt.crop);
    if (k == 0) {
      check_host_memory(3.0 * double(n) * im.width * im.height,
                        path + ": holding " + std::to_string(n) + " images of " + std::to_string(im.width) + "x" +
                            std::to_string(im.height) + " in memory");
      d.pixels.reserve(static_cast<size_t>(n) * im.width * im.height * 3);
    }
    d.push_back(im, map[li.label], name);
    if (progress && ((k + 1) % 100 == 0 || k + 1 == n)) progress(k + 1, n);
  }
  return d;
}

}  // namespace spade::train
