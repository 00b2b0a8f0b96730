#include "interpret/saliency/superpixels.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>

#include "engine/error.h"
#include "interpret/sample_rng.h"

namespace spade::interp {

namespace {

void check_view(const RgbView& img, const char* what) {
  if (img.hwc == nullptr || img.height < 1 || img.width < 1)
    throw Error(std::string(what) + ": empty image (" + std::to_string(img.height) + " x " +
                std::to_string(img.width) + ")");
  const int64_t n = img.height * img.width * 3;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(img.hwc[i])) throw Error(std::string(what) + ": image contains NaN or Inf");
}

// skimage's sRGB companding and CIE f(t), with its constants (not the exact 6/29 forms), so
// the Lab values match rgb2lab's.
double srgb_to_linear(double c) { return c > 0.04045 ? std::pow((c + 0.055) / 1.055, 2.4) : c / 12.92; }
double lab_f(double t) { return t > 0.008856 ? std::cbrt(t) : 7.787 * t + 16.0 / 116.0; }

}  // namespace

std::vector<double> rgb_to_lab(const RgbView& img) {
  static const double kXyzFromRgb[3][3] = {
      {0.412453, 0.357580, 0.180423}, {0.212671, 0.715160, 0.072169}, {0.019334, 0.119193, 0.950227}};
  static const double kWhiteD65[3] = {0.95047, 1.0, 1.08883};
  const int64_t n = img.height * img.width;
  std::vector<double> lab(size_t(n) * 3);
  for (int64_t i = 0; i < n; ++i) {
    double lin[3], f[3];
    for (int k = 0; k < 3; ++k) lin[k] = srgb_to_linear(img.hwc[3 * i + k]);
    for (int k = 0; k < 3; ++k) {
      const double xyz = kXyzFromRgb[k][0] * lin[0] + kXyzFromRgb[k][1] * lin[1] + kXyzFromRgb[k][2] * lin[2];
      f[k] = lab_f(xyz / kWhiteD65[k]);
    }
    lab[3 * i + 0] = 116.0 * f[1] - 16.0;
    lab[3 * i + 1] = 500.0 * (f[0] - f[1]);
    lab[3 * i + 2] = 200.0 * (f[1] - f[2]);
  }
  return lab;
}

Segments quickshift(const RgbView& img, const QuickshiftParams& p) {
  check_view(img, "quickshift");
  if (!(p.kernel_size >= 1.0) || !std::isfinite(p.kernel_size))
    throw Error("quickshift: kernel_size must be a finite number >= 1, got " + std::to_string(p.kernel_size));
  if (!(p.ratio >= 0.0) || !std::isfinite(p.ratio))
    throw Error("quickshift: ratio must be a finite number >= 0, got " + std::to_string(p.ratio));
  if (!(p.max_dist >= 0.0)) throw Error("quickshift: max_dist must be >= 0, got " + std::to_string(p.max_dist));
  const int64_t H = img.height, W = img.width, n = H * W;

  // Feature planes (ratio * L, ratio * a, ratio * b): planar so the window's inner loop over
  // columns reads contiguous memory.
  const std::vector<double> lab = rgb_to_lab(img);
  std::vector<double> planes(size_t(n) * 3);
  double* f0 = planes.data();
  double* f1 = f0 + n;
  double* f2 = f1 + n;
  for (int64_t i = 0; i < n; ++i) {
    f0[i] = p.ratio * lab[3 * i];
    f1[i] = p.ratio * lab[3 * i + 1];
    f2[i] = p.ratio * lab[3 * i + 2];
  }
  const int64_t half = static_cast<int64_t>(std::ceil(3.0 * p.kernel_size));
  const double neg_inv_2k2 = -0.5 / (p.kernel_size * p.kernel_size);

  // Parzen density with a Gaussian kernel, each pixel's sum in a fixed order (so the result does
  // not depend on the thread count).
  std::vector<double> density(n);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r = 0; r < H; ++r) {
    const int64_t r0 = std::max<int64_t>(r - half, 0), r1 = std::min(r + half + 1, H);
    for (int64_t c = 0; c < W; ++c) {
      const int64_t c0 = std::max<int64_t>(c - half, 0), c1 = std::min(c + half + 1, W);
      const int64_t i = r * W + c;
      const double a0 = f0[i], a1 = f1[i], a2 = f2[i];
      double sum = 0.0;
      for (int64_t rr = r0; rr < r1; ++rr) {
        const double dr = double(r - rr), dr2 = dr * dr;
        const int64_t row = rr * W;
        for (int64_t cc = c0; cc < c1; ++cc) {
          const double t0 = a0 - f0[row + cc], t1 = a1 - f1[row + cc], t2 = a2 - f2[row + cc];
          const double dc = double(c - cc);
          sum += std::exp((t0 * t0 + t1 * t1 + t2 * t2 + dr2 + dc * dc) * neg_inv_2k2);
        }
      }
      density[i] = sum;
    }
  }
  // skimage's tie breaker: without it a flat region has many pixels of exactly equal density and
  // none of them links to another.
  for (int64_t i = 0; i < n; ++i) density[i] += 1e-5 * SampleRng(p.tie_seed, i).normal();

  // Link each pixel to the nearest pixel of strictly higher density in its window; the link is
  // cut (the pixel stays a root) when none exists or it is farther than max_dist.
  std::vector<int64_t> parent(n);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r = 0; r < H; ++r) {
    const int64_t r0 = std::max<int64_t>(r - half, 0), r1 = std::min(r + half + 1, H);
    for (int64_t c = 0; c < W; ++c) {
      const int64_t c0 = std::max<int64_t>(c - half, 0), c1 = std::min(c + half + 1, W);
      const int64_t i = r * W + c;
      const double a0 = f0[i], a1 = f1[i], a2 = f2[i], own = density[i];
      double closest = DBL_MAX;
      int64_t best = i;
      for (int64_t rr = r0; rr < r1; ++rr) {
        const double dr = double(r - rr), dr2 = dr * dr;
        const int64_t row = rr * W;
        for (int64_t cc = c0; cc < c1; ++cc) {
          if (!(density[row + cc] > own)) continue;
          const double t0 = a0 - f0[row + cc], t1 = a1 - f1[row + cc], t2 = a2 - f2[row + cc];
          const double dc = double(c - cc);
          const double dist = t0 * t0 + t1 * t1 + t2 * t2 + dr2 + dc * dc;
          if (dist < closest) {
            closest = dist;
            best = row + cc;
          }
        }
      }
      parent[i] = std::sqrt(closest) > p.max_dist ? i : best;
    }
  }

  // Each pixel's root (parents have strictly higher density, so the chains end), then labels
  // by increasing root index.
  std::vector<int64_t> root(n, -1), path;
  for (int64_t i = 0; i < n; ++i) {
    int64_t j = i;
    path.clear();
    while (root[j] < 0 && parent[j] != j) {
      path.push_back(j);
      j = parent[j];
    }
    const int64_t r = root[j] >= 0 ? root[j] : j;
    root[j] = r;
    for (int64_t k : path) root[k] = r;
  }
  std::vector<int32_t> label_of_root(n, -1);
  Segments out;
  for (int64_t i = 0; i < n; ++i)
    if (root[i] == i) label_of_root[i] = static_cast<int32_t>(out.count++);
  out.labels.resize(n);
  for (int64_t i = 0; i < n; ++i) out.labels[i] = label_of_root[root[i]];
  return out;
}

Segments slic(const RgbView& img, const SlicParams& p) {
  check_view(img, "slic");
  if (p.n_segments < 1) throw Error("slic: n_segments must be at least 1, got " + std::to_string(p.n_segments));
  if (!(p.compactness > 0.0) || !std::isfinite(p.compactness))
    throw Error("slic: compactness must be a finite number > 0, got " + std::to_string(p.compactness));
  if (p.max_iter < 0) throw Error("slic: max_iter must be >= 0, got " + std::to_string(p.max_iter));
  if (!(p.min_size_factor >= 0.0 && p.min_size_factor <= 1.0))
    throw Error("slic: min_size_factor must be in [0, 1], got " + std::to_string(p.min_size_factor));
  const int64_t H = img.height, W = img.width, n = H * W;
  const int64_t k_wanted = std::min(p.n_segments, n);
  const std::vector<double> lab = rgb_to_lab(img);

  // A grid of about k_wanted cells, as square as the image allows.
  const double step0 = std::sqrt(double(n) / double(k_wanted));
  const int64_t grid_rows = std::clamp<int64_t>(std::llround(double(H) / step0), 1, H);
  const int64_t grid_cols = std::clamp<int64_t>(std::llround(double(k_wanted) / double(grid_rows)), 1, W);
  const int64_t k = grid_rows * grid_cols;
  const double step = std::sqrt(double(n) / double(k));
  const double spatial_weight = p.compactness / step;  // xy distance in units of step, times m
  const int64_t reach = static_cast<int64_t>(std::ceil(step));

  struct Centre {
    double y, x, l, a, b;
  };
  std::vector<Centre> centres(k);
  std::vector<int32_t> assign(n);
  for (int64_t gi = 0; gi < grid_rows; ++gi)
    for (int64_t gj = 0; gj < grid_cols; ++gj) {
      Centre& ce = centres[gi * grid_cols + gj];
      ce.y = (double(gi) + 0.5) * double(H) / double(grid_rows);
      ce.x = (double(gj) + 0.5) * double(W) / double(grid_cols);
      const int64_t pi = std::min<int64_t>(H - 1, int64_t(ce.y)) * W + std::min<int64_t>(W - 1, int64_t(ce.x));
      ce.l = lab[3 * pi];
      ce.a = lab[3 * pi + 1];
      ce.b = lab[3 * pi + 2];
    }
  // Until a centre reaches it, a pixel belongs to its grid cell.
  for (int64_t r = 0; r < H; ++r)
    for (int64_t c = 0; c < W; ++c)
      assign[r * W + c] = static_cast<int32_t>((r * grid_rows / H) * grid_cols + c * grid_cols / W);

  std::vector<double> best(n);
  std::vector<double> sums(size_t(k) * 6);
  for (int it = 0; it < p.max_iter; ++it) {
    std::fill(best.begin(), best.end(), DBL_MAX);
    for (int64_t ci = 0; ci < k; ++ci) {
      const Centre& ce = centres[ci];
      const int64_t cy = std::llround(ce.y), cx = std::llround(ce.x);
      const int64_t r0 = std::max<int64_t>(0, cy - reach), r1 = std::min(H, cy + reach + 1);
      const int64_t c0 = std::max<int64_t>(0, cx - reach), c1 = std::min(W, cx + reach + 1);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t i = r * W + c;
          const double dl = lab[3 * i] - ce.l, da = lab[3 * i + 1] - ce.a, db = lab[3 * i + 2] - ce.b;
          const double dy = (double(r) - ce.y) * spatial_weight, dx = (double(c) - ce.x) * spatial_weight;
          const double d = dl * dl + da * da + db * db + dy * dy + dx * dx;
          if (d < best[i]) {
            best[i] = d;
            assign[i] = static_cast<int32_t>(ci);
          }
        }
    }
    std::fill(sums.begin(), sums.end(), 0.0);
    for (int64_t r = 0; r < H; ++r)
      for (int64_t c = 0; c < W; ++c) {
        const int64_t i = r * W + c;
        double* s = &sums[size_t(assign[i]) * 6];
        s[0] += double(r);
        s[1] += double(c);
        s[2] += lab[3 * i];
        s[3] += lab[3 * i + 1];
        s[4] += lab[3 * i + 2];
        s[5] += 1.0;
      }
    for (int64_t ci = 0; ci < k; ++ci) {
      const double* s = &sums[size_t(ci) * 6];
      if (s[5] == 0.0) continue;  // an empty cluster keeps its centre
      centres[ci] = {s[0] / s[5], s[1] / s[5], s[2] / s[5], s[3] / s[5], s[4] / s[5]};
    }
  }

  // Connectivity: flood-fill each 4-connected fragment in raster order. A fragment's first
  // pixel has its left (or upper) neighbour in an earlier, already numbered segment, so merging
  // a small fragment into that segment keeps every segment connected, and new labels still
  // appear in raster order.
  const int64_t min_size = std::max<int64_t>(1, int64_t(p.min_size_factor * double(n) / double(k_wanted)));
  Segments out;
  out.labels.assign(n, -1);
  std::vector<int64_t> fragment;
  for (int64_t start = 0; start < n; ++start) {
    if (out.labels[start] >= 0) continue;
    const int32_t kmeans_label = assign[start];
    const int32_t fresh = static_cast<int32_t>(out.count);
    fragment.clear();
    fragment.push_back(start);
    out.labels[start] = fresh;
    for (size_t q = 0; q < fragment.size(); ++q) {
      const int64_t i = fragment[q], r = i / W, c = i % W;
      const int64_t nbr[4] = {c > 0 ? i - 1 : -1, c + 1 < W ? i + 1 : -1, r > 0 ? i - W : -1, r + 1 < H ? i + W : -1};
      for (int64_t j : nbr)
        if (j >= 0 && out.labels[j] < 0 && assign[j] == kmeans_label) {
          out.labels[j] = fresh;
          fragment.push_back(j);
        }
    }
    const int64_t r = start / W, c = start % W;
    const int32_t earlier = c > 0 ? out.labels[start - 1] : (r > 0 ? out.labels[start - W] : -1);
    if (int64_t(fragment.size()) < min_size && earlier >= 0) {
      for (int64_t i : fragment) out.labels[i] = earlier;
    } else {
      ++out.count;
    }
  }
  return out;
}

std::vector<float> chw_to_hwc(const Tensor& rgb_chw, int64_t* height, int64_t* width) {
  const bool batched = rgb_chw.ndim() == 4 && rgb_chw.dim(0) == 1;
  if (!(rgb_chw.ndim() == 3 || batched) || rgb_chw.dim(-3) != 3)
    throw Error("superpixels: expected an RGB image (3, H, W) or (1, 3, H, W), got " + shape_str(rgb_chw.shape()));
  const int64_t H = rgb_chw.dim(-2), W = rgb_chw.dim(-1), plane = H * W;
  std::vector<float> hwc(size_t(plane) * 3);
  for (int64_t ch = 0; ch < 3; ++ch)
    for (int64_t i = 0; i < plane; ++i) hwc[3 * i + ch] = rgb_chw[ch * plane + i];
  *height = H;
  *width = W;
  return hwc;
}

}  // namespace spade::interp
