#pragma once
// Superpixel segmentations for LIME's interpretable features, written here so the engine needs
// no scikit-image: quickshift with the semantics of skimage.segmentation.quickshift (what the
// `lime` package calls) and a SLIC of our own design (k-means in Lab + xy with enforced
// connectivity). Both take an RGB image with values in [0, 1] and return one label per pixel.
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace spade::interp {

struct Segments {
  std::vector<int32_t> labels;  // H * W, row-major, values 0 .. count - 1, every value used
  int64_t count = 0;
};

// An RGB image, interleaved (H, W, 3), values in [0, 1].
struct RgbView {
  const float* hwc = nullptr;
  int64_t height = 0, width = 0;
};

// CIE L*a*b* (D65, 2 degree observer) of sRGB values in [0, 1], as skimage.color.rgb2lab:
// out[3 * i + {0, 1, 2}] = L, a, b of pixel i.
std::vector<double> rgb_to_lab(const RgbView& img);

struct QuickshiftParams {
  double kernel_size = 4.0;  // the `lime` package's values (skimage's own defaults differ)
  double max_dist = 200.0;
  double ratio = 0.2;
  // skimage adds N(0, 1e-5) noise to the densities to break exact ties (flat regions); ours
  // comes from SampleRng(tie_seed, pixel), so the result is a pure function of the image.
  uint64_t tie_seed = 42;
};

// skimage.segmentation.quickshift(image, kernel_size, max_dist, ratio, sigma=0, convert2lab=True):
// features (ratio * L, ratio * a, ratio * b, row, col); density of pixel p = sum over the
// (2 * ceil(3 * kernel_size) + 1)^2 window around p of exp(-|f_p - f_q|^2 / (2 kernel_size^2));
// each pixel links to the nearest (in feature space) pixel of strictly higher density in that
// window (first in raster order on equal distance); links longer than max_dist are cut and every
// pixel takes the label of its tree's root. Labels are numbered by increasing root pixel index
// (skimage's np.unique(roots, return_inverse=True)).
Segments quickshift(const RgbView& img, const QuickshiftParams& p = {});

struct SlicParams {
  int64_t n_segments = 50;
  double compactness = 10.0;  // weight of xy distance (per grid step) against Lab distance
  int max_iter = 10;
  double min_size_factor = 0.5;  // fragments below this fraction of H*W/n_segments are merged
};

// SLIC (Achanta et al. 2012) on Lab: centres start on a regular grid of step
// S = sqrt(H * W / n_segments); each iteration assigns every pixel within 2S x 2S of a centre to
// the centre minimising (dLab)^2 + (compactness * dxy / S)^2 and moves centres to their pixels'
// means. Connectivity is then enforced: every 4-connected fragment of a label becomes its own
// segment, and fragments smaller than min_size_factor * H * W / n_segments are merged into the
// segment they touch first in raster order. Labels are numbered in raster order of first
// appearance; count is close to (not exactly) n_segments.
Segments slic(const RgbView& img, const SlicParams& p = {});

// A (3, H, W) or (1, 3, H, W) tensor of RGB values in [0, 1] as an interleaved (H, W, 3) buffer.
std::vector<float> chw_to_hwc(const Tensor& rgb_chw, int64_t* height, int64_t* width);

}  // namespace spade::interp
