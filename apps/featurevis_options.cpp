#include "apps/featurevis_options.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace spade::cli {

namespace fv = interp::featurevis;

void add_render_options(std::vector<Option>& opts) {
  opts.push_back({"steps", "N", "Adam steps", "512", integer(1, kMaxCount)});
  opts.push_back({"lr", "LR", "Adam learning rate", "0.05", number(0, 1e3)});
  opts.push_back({"transforms", "scaled|standard|none",
                  "random transforms per step: standard = Lucent's (pad 12, jitter 8, scale 0.9-1.1, rotate -10..10, "
                  "jitter 4), scaled = those pixel sizes times size/224 (the same at 224), none",
                  "scaled"});
  opts.push_back({"vis-seed", "S", "seed of the random starts and transforms (the same for dense and SPADE)", "0", seed_bounds()});
}

fv::RenderConfig render_config_from(const Args& a, const Model& m, int64_t size) {
  fv::RenderConfig cfg;
  if (size < 8 || size > 4096) throw Error("--size must be between 8 and 4096, got " + std::to_string(size));
  cfg.size = size;
  cfg.steps = a.get_int("steps");
  cfg.lr = a.get_double("lr");
  if (!(cfg.lr > 0) || !std::isfinite(cfg.lr)) throw Error("--lr must be a positive number");
  cfg.seed = static_cast<uint64_t>(a.get_int("vis-seed"));
  const std::string t = a.get("transforms");
  if (t == "scaled") cfg.transforms = fv::TransformConfig::scaled_to(size);
  else if (t == "standard") cfg.transforms = fv::TransformConfig::standard();
  else if (t == "none") cfg.transforms = fv::TransformConfig::none();
  else throw Error("--transforms: expected scaled, standard or none, got \"" + t + "\"");
  cfg.mean = m.preprocess.mean;
  cfg.std = m.preprocess.std;
  return cfg;
}

Image unit_image(const Tensor& images, int64_t n, int zoom) {
  const int64_t H = images.dim(2), W = images.dim(3);
  Image im;
  im.width = int(W * zoom);
  im.height = int(H * zoom);
  im.rgb.resize(size_t(im.width) * im.height * 3);
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x)
      for (int c = 0; c < 3; ++c) {
        const float v = images[((n * 3 + c) * H + y / zoom) * W + x / zoom];
        im.rgb[(size_t(y) * im.width + x) * 3 + c] = uint8_t(std::lround(std::clamp(v, 0.f, 1.f) * 255.f));
      }
  return im;
}

}  // namespace spade::cli
