#include "interpret/spade/calibration.h"

#include <algorithm>
#include <filesystem>
#include <vector>

#include "engine/error.h"
#include "formats/file_io.h"
#include "formats/image_folder.h"

namespace spade::interp {

namespace {

class Augmented : public Calibration {
 public:
  Augmented(Image image, const AugmentConfig& c, int64_t count, uint64_t seed)
      : image_(std::move(image)), config_(c), count_(count), seed_(seed) {}
  int64_t size() const override { return count_; }
  Tensor batch(int64_t first, int64_t count) const override {
    return augment_batch(image_, config_, seed_, first, count);
  }
  Tensor batch_on(Device device, int64_t first, int64_t count) const override {
    if (device == Device::CPU) return batch(first, count);
    return augment_batch_cuda(image_, config_, seed_, first, count);
  }
  std::string describe() const override {
    return std::to_string(count_) + " augmentations (seed " + std::to_string(seed_) + ")";
  }

 private:
  Image image_;
  AugmentConfig config_;
  int64_t count_;
  uint64_t seed_;
};

class Given : public Calibration {
 public:
  Given(Tensor x, std::string name) : x_(std::move(x)), name_(std::move(name)) {}
  int64_t size() const override { return x_.dim(0); }
  Tensor batch(int64_t first, int64_t count) const override { return x_.slice0(first, first + count); }
  std::string describe() const override { return std::to_string(size()) + " inputs from " + name_; }

 private:
  Tensor x_;
  std::string name_;
};

bool is_image_name(const std::string& name) {
  std::string ext = std::filesystem::path(name).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

class ImageSet : public Calibration {
 public:
  ImageSet(const std::string& path, const Preprocess& p) : path_(path), pre_(p) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec))
        if (it->is_regular_file(ec) && is_image_name(it->path().string())) files_.push_back(it->path().string());
      if (ec) throw Error(path + ": cannot list the directory (" + ec.message() + ")");
      std::sort(files_.begin(), files_.end());
    } else {
      folder_ = std::make_unique<ImageFolder>(path);
    }
    if (size() == 0) throw Error(path + ": no images (.jpg .jpeg .png .bmp) found");
  }
  int64_t size() const override { return folder_ ? static_cast<int64_t>(folder_->size()) : static_cast<int64_t>(files_.size()); }
  Tensor batch(int64_t first, int64_t count) const override {
    std::vector<Tensor> xs;
    for (int64_t i = first; i < first + count; ++i) {
      Image im;
      std::string name;
      if (folder_) {
        LabeledImage li = folder_->get(static_cast<size_t>(i));
        name = path_ + ":" + li.name;
        im = decode_image(li.bytes.data(), li.bytes.size(), name);
      } else {
        name = files_[i];
        im = load_image(name);
      }
      xs.push_back(preprocess_image(im, pre_, name));
      if (xs.back().shape() != xs.front().shape())
        throw Error(path_ + ": images preprocess to different shapes " + shape_str(xs.front().shape()) + " and " +
                    shape_str(xs.back().shape()) + "; give the model a crop size");
    }
    return cat0(xs);
  }
  std::string describe() const override { return std::to_string(size()) + " images from " + path_; }

 private:
  std::string path_;
  Preprocess pre_;
  std::vector<std::string> files_;
  std::unique_ptr<ImageFolder> folder_;
};

}  // namespace

std::unique_ptr<Calibration> augmented_calibration(Image image, const AugmentConfig& config, int64_t count,
                                                   uint64_t seed) {
  if (count <= 0) throw Error("--augs: need at least one augmentation, got " + std::to_string(count));
  return std::make_unique<Augmented>(std::move(image), config, count, seed);
}

std::unique_ptr<Calibration> tensor_calibration(Tensor x, std::string name) {
  if (x.ndim() != 4 || x.dim(1) != 3 || x.dim(0) == 0)
    throw Error(name + ": calibration inputs must be (N, 3, H, W) with N >= 1, got " + shape_str(x.shape()));
  return std::make_unique<Given>(std::move(x), std::move(name));
}

std::unique_ptr<Calibration> image_set_calibration(const std::string& path, const Preprocess& preprocess) {
  return std::make_unique<ImageSet>(path, preprocess);
}

}  // namespace spade::interp
