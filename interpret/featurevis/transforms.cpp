#include "interpret/featurevis/transforms.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"
#include "interpret/sample_rng.h"
#include "kernels/cpu/parallel.h"

namespace spade::interp::featurevis {

namespace {

struct Dims {
  int64_t planes, h, w;
};
Dims dims_of(const Tensor& x, const char* what) {
  if (x.ndim() != 4 || x.device() != Device::CPU)
    throw Error(std::string(what) + ": expected CPU images (N, C, H, W), got " + shape_str(x.shape()));
  return {x.dim(0) * x.dim(1), x.dim(2), x.dim(3)};
}

// One bilinear tap: the source index and its weight; index -1 marks a tap outside the image.
struct Taps {
  int64_t i0, i1;
  float w0, w1;
};

// The taps of a source coordinate with zeros outside [0, n - 1] (grid_sample's "zeros" padding).
Taps zero_padded_taps(float src, int64_t n) {
  const float f = std::floor(src);
  const int64_t i0 = static_cast<int64_t>(f);
  const float w1 = src - f;
  Taps t{i0, i0 + 1, 1.f - w1, w1};
  if (t.i0 < 0 || t.i0 >= n) t.i0 = -1;
  if (t.i1 < 0 || t.i1 >= n) t.i1 = -1;
  return t;
}

// F.interpolate(bilinear, align_corners=True) taps for output index o: source o * (in-1)/(out-1)
// in float, like PyTorch's CPU kernel.
std::vector<Taps> align_corners_taps(int64_t in, int64_t out) {
  const float ratio = out > 1 ? float(in - 1) / float(out - 1) : 0.f;
  std::vector<Taps> taps(out);
  for (int64_t o = 0; o < out; ++o) {
    const float src = ratio * float(o);
    const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(src), in - 1);
    const int64_t i1 = std::min<int64_t>(i0 + 1, in - 1);
    const float w1 = src - float(i0);
    taps[o] = {i0, i1, 1.f - w1, w1};
  }
  return taps;
}

// Rotation taps: for every output pixel the source point's x and y taps (M^-1 of the pixel).
struct RotationMap {
  std::vector<Taps> tx, ty;  // per output pixel
};
RotationMap rotation_map(int64_t h, int64_t w, double degrees) {
  const double a = degrees * 3.14159265358979323846 / 180.0;
  const double c = std::cos(a), s = std::sin(a);
  const double cx = (w - 1) / 2.0, cy = (h - 1) / 2.0;
  RotationMap m;
  m.tx.resize(h * w);
  m.ty.resize(h * w);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      // M maps a source point to (R (src - centre) + centre) with R = [[c, s], [-s, c]]; its inverse
      // applies R^T.
      const double sx = c * (x - cx) - s * (y - cy) + cx;
      const double sy = s * (x - cx) + c * (y - cy) + cy;
      m.tx[y * w + x] = zero_padded_taps(float(sx), w);
      m.ty[y * w + x] = zero_padded_taps(float(sy), h);
    }
  return m;
}

}  // namespace

Tensor pad_constant(const Tensor& x, int64_t p, float value) {
  const Dims d = dims_of(x, "pad");
  const int64_t H = d.h + 2 * p, W = d.w + 2 * p;
  Tensor out = Tensor::full({x.dim(0), x.dim(1), H, W}, value);
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads())
  for (int64_t pl = 0; pl < d.planes; ++pl)
    for (int64_t y = 0; y < d.h; ++y)
      std::copy_n(x.data() + (pl * d.h + y) * d.w, d.w, out.data() + (pl * H + y + p) * W + p);
  return out;
}

Tensor pad_constant_backward(const Tensor& grad_out, int64_t p) {
  const Dims d = dims_of(grad_out, "pad backward");
  const int64_t h = d.h - 2 * p, w = d.w - 2 * p;
  Tensor gx = Tensor::empty({grad_out.dim(0), grad_out.dim(1), h, w});
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads())
  for (int64_t pl = 0; pl < d.planes; ++pl)
    for (int64_t y = 0; y < h; ++y)
      std::copy_n(grad_out.data() + (pl * d.h + y + p) * d.w + p, w, gx.data() + (pl * h + y) * w);
  return gx;
}

namespace {
// out[y, x] = in[y - dy, x - dx] (zeros outside); the backward is the same shift by (-dx, -dy).
Tensor shift(const Tensor& x, int64_t dx, int64_t dy) {
  const Dims d = dims_of(x, "translate");
  Tensor out = Tensor::zeros(x.shape());
  const int64_t x_lo = std::max<int64_t>(0, dx), x_hi = std::min(d.w, d.w + dx);
  if (x_hi <= x_lo) return out;
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads())
  for (int64_t pl = 0; pl < d.planes; ++pl)
    for (int64_t y = std::max<int64_t>(0, dy); y < std::min(d.h, d.h + dy); ++y)
      std::copy_n(x.data() + (pl * d.h + y - dy) * d.w + x_lo - dx, x_hi - x_lo, out.data() + (pl * d.h + y) * d.w + x_lo);
  return out;
}
}  // namespace

Tensor translate(const Tensor& x, int64_t dx, int64_t dy) { return shift(x, dx, dy); }
Tensor translate_backward(const Tensor& grad_out, int64_t dx, int64_t dy) { return shift(grad_out, -dx, -dy); }

namespace {
struct ScaleGeometry {
  int64_t h, w;    // resized
  int64_t py, px;  // zero padding each side
};
ScaleGeometry scale_geometry(int64_t H, int64_t W, double s) {
  if (!(s > 0) || !std::isfinite(s)) throw Error("scale: factor must be positive");
  ScaleGeometry g;
  g.h = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(s * double(H))));
  g.w = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(s * double(W))));
  g.py = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((H - g.h) / 2.0)));
  g.px = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((W - g.w) / 2.0)));
  return g;
}
}  // namespace

Shape scaled_shape(const Shape& in, double s) {
  const ScaleGeometry g = scale_geometry(in.at(2), in.at(3), s);
  return {in[0], in[1], g.h + 2 * g.py, g.w + 2 * g.px};
}

Tensor scale(const Tensor& x, double s) {
  const Dims d = dims_of(x, "scale");
  const ScaleGeometry g = scale_geometry(d.h, d.w, s);
  const std::vector<Taps> ty = align_corners_taps(d.h, g.h), tx = align_corners_taps(d.w, g.w);
  const int64_t H = g.h + 2 * g.py, W = g.w + 2 * g.px;
  Tensor out = Tensor::zeros({x.dim(0), x.dim(1), H, W});
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads())
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    const float* src = x.data() + pl * d.h * d.w;
    for (int64_t y = 0; y < g.h; ++y) {
      const float* r0 = src + ty[y].i0 * d.w;
      const float* r1 = src + ty[y].i1 * d.w;
      float* dst = out.data() + (pl * H + y + g.py) * W + g.px;
      for (int64_t x = 0; x < g.w; ++x) {
        const Taps& t = tx[x];
        dst[x] = ty[y].w0 * (t.w0 * r0[t.i0] + t.w1 * r0[t.i1]) + ty[y].w1 * (t.w0 * r1[t.i0] + t.w1 * r1[t.i1]);
      }
    }
  }
  return out;
}

Tensor scale_backward(const Tensor& grad_out, const Shape& in_shape, double s) {
  const Dims d = dims_of(grad_out, "scale backward");
  const ScaleGeometry g = scale_geometry(in_shape.at(2), in_shape.at(3), s);
  const int64_t h = in_shape[2], w = in_shape[3];
  if (d.h != g.h + 2 * g.py || d.w != g.w + 2 * g.px)
    throw Error("scale backward: gradient " + shape_str(grad_out.shape()) + " does not match the input " +
                shape_str(in_shape) + " scaled by " + std::to_string(s));
  const std::vector<Taps> ty = align_corners_taps(h, g.h), tx = align_corners_taps(w, g.w);
  Tensor gx = Tensor::zeros(in_shape);
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads())
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    float* dst = gx.data() + pl * h * w;
    for (int64_t y = 0; y < g.h; ++y) {
      float* r0 = dst + ty[y].i0 * w;
      float* r1 = dst + ty[y].i1 * w;
      const float* go = grad_out.data() + (pl * d.h + y + g.py) * d.w + g.px;
      for (int64_t x = 0; x < g.w; ++x) {
        const Taps& t = tx[x];
        const float a = ty[y].w0 * go[x], b = ty[y].w1 * go[x];
        r0[t.i0] += t.w0 * a;
        r0[t.i1] += t.w1 * a;
        r1[t.i0] += t.w0 * b;
        r1[t.i1] += t.w1 * b;
      }
    }
  }
  return gx;
}

namespace {
// Calls f(source index, weight) for each of the (up to four) taps of output pixel p that lie in the
// image: rotate gathers through them, its backward scatters through the same ones.
template <class F>
void for_each_tap(const RotationMap& m, int64_t p, int64_t w, F&& f) {
  const Taps& tx = m.tx[p];
  const Taps& ty = m.ty[p];
  if (ty.i0 >= 0) {
    if (tx.i0 >= 0) f(ty.i0 * w + tx.i0, ty.w0 * tx.w0);
    if (tx.i1 >= 0) f(ty.i0 * w + tx.i1, ty.w0 * tx.w1);
  }
  if (ty.i1 >= 0) {
    if (tx.i0 >= 0) f(ty.i1 * w + tx.i0, ty.w1 * tx.w0);
    if (tx.i1 >= 0) f(ty.i1 * w + tx.i1, ty.w1 * tx.w1);
  }
}
}  // namespace

Tensor rotate(const Tensor& x, double degrees) {
  const Dims d = dims_of(x, "rotate");
  const RotationMap m = rotation_map(d.h, d.w, degrees);
  Tensor out = Tensor::empty(x.shape());
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads())
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    const float* src = x.data() + pl * d.h * d.w;
    float* dst = out.data() + pl * d.h * d.w;
    for (int64_t p = 0; p < d.h * d.w; ++p) {
      float v = 0.f;
      for_each_tap(m, p, d.w, [&](int64_t i, float wt) { v += wt * src[i]; });
      dst[p] = v;
    }
  }
  return out;
}

Tensor rotate_backward(const Tensor& grad_out, double degrees) {
  const Dims d = dims_of(grad_out, "rotate backward");
  const RotationMap m = rotation_map(d.h, d.w, degrees);
  Tensor gx = Tensor::zeros(grad_out.shape());
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads())
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    const float* go = grad_out.data() + pl * d.h * d.w;
    float* dst = gx.data() + pl * d.h * d.w;
    for (int64_t p = 0; p < d.h * d.w; ++p) for_each_tap(m, p, d.w, [&](int64_t i, float wt) { dst[i] += wt * go[p]; });
  }
  return gx;
}

Tensor normalise(const Tensor& x, const float* mean, const float* std) {
  const Dims d = dims_of(x, "normalise");
  const int64_t C = x.dim(1), hw = d.h * d.w;
  Tensor out = Tensor::empty(x.shape());
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    const float m = mean[pl % C], s = std[pl % C];
    for (int64_t i = 0; i < hw; ++i) out[pl * hw + i] = (x[pl * hw + i] - m) / s;
  }
  return out;
}

Tensor normalise_backward(const Tensor& grad_out, const float* std) {
  const Dims d = dims_of(grad_out, "normalise backward");
  const int64_t C = grad_out.dim(1), hw = d.h * d.w;
  Tensor gx = Tensor::empty(grad_out.shape());
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    const float s = std[pl % C];
    for (int64_t i = 0; i < hw; ++i) gx[pl * hw + i] = grad_out[pl * hw + i] / s;
  }
  return gx;
}

TransformConfig TransformConfig::standard() {
  TransformConfig c;
  for (int i = 0; i <= 10; ++i) c.scales.push_back(1.0 + (i - 5) / 50.0);
  // Lucent's list: every whole degree in [-10, 10] plus five more zeros, so "no rotation" is drawn
  // six times as often as any one angle.
  for (int a = -10; a <= 10; ++a) c.angles.push_back(a);
  for (int k = 0; k < 5; ++k) c.angles.push_back(0);
  return c;
}

TransformConfig TransformConfig::scaled_to(int64_t size) {
  TransformConfig c = standard();
  const double f = double(size) / 224.0;
  c.pad = std::max<int64_t>(1, std::llround(12 * f));
  c.jitter = std::max<int64_t>(2, std::llround(8 * f));
  c.jitter2 = std::max<int64_t>(2, std::llround(4 * f));
  return c;
}

TransformConfig TransformConfig::none() {
  TransformConfig c;
  c.pad = 0;
  c.jitter = 1;
  c.jitter2 = 1;
  return c;
}

TransformDraw draw_transforms(const TransformConfig& cfg, uint64_t seed, int64_t step) {
  SampleRng rng(seed ^ 0x7472616e73666f72ULL, step);  // its own stream, apart from the spectrum's
  TransformDraw d;
  d.dx1 = rng.randint_inclusive(int(std::max<int64_t>(1, cfg.jitter) - 1));
  d.dy1 = rng.randint_inclusive(int(std::max<int64_t>(1, cfg.jitter) - 1));
  if (!cfg.scales.empty()) d.scale = cfg.scales[rng.randint_inclusive(int(cfg.scales.size()) - 1)];
  if (!cfg.angles.empty()) d.angle = cfg.angles[rng.randint_inclusive(int(cfg.angles.size()) - 1)];
  d.dx2 = rng.randint_inclusive(int(std::max<int64_t>(1, cfg.jitter2) - 1));
  d.dy2 = rng.randint_inclusive(int(std::max<int64_t>(1, cfg.jitter2) - 1));
  return d;
}

Tensor TransformChain::forward(const Tensor& x) {
  Tensor t = cfg_.pad > 0 ? pad_constant(x, cfg_.pad, cfg_.pad_value) : x;
  t = translate(t, draw_.dx1, draw_.dy1);
  scale_in_ = t.shape();
  if (draw_.scale != 1.0) t = scale(t, draw_.scale);
  if (draw_.angle != 0.0) t = rotate(t, draw_.angle);
  return translate(t, draw_.dx2, draw_.dy2);
}

Tensor TransformChain::backward(const Tensor& grad_out) const {
  Tensor g = translate_backward(grad_out, draw_.dx2, draw_.dy2);
  if (draw_.angle != 0.0) g = rotate_backward(g, draw_.angle);
  if (draw_.scale != 1.0) g = scale_backward(g, scale_in_, draw_.scale);
  g = translate_backward(g, draw_.dx1, draw_.dy1);
  return cfg_.pad > 0 ? pad_constant_backward(g, cfg_.pad) : g;
}

}  // namespace spade::interp::featurevis
