#pragma once
// The options `spade visualize` and `spade eval featurevis` share: the optimisation's steps,
// learning rate, transforms and seed, turned into a RenderConfig; and visualisations as pictures.
#include <vector>

#include "apps/cli.h"
#include "formats/image.h"
#include "interpret/featurevis/render.h"

namespace spade::cli {

// --steps, --lr, --transforms, --vis-seed.
void add_render_options(std::vector<Option>& opts);

// The RenderConfig those options describe for square images of side `size`, with the model's
// normalisation. Throws Error for out-of-range values.
interp::featurevis::RenderConfig render_config_from(const Args& a, const Model& m, int64_t size);

// Image n of (N, 3, H, W) values in [0, 1] as 8-bit pixels, each pixel repeated zoom x zoom times.
Image unit_image(const Tensor& images, int64_t n, int zoom = 1);

}  // namespace spade::cli
