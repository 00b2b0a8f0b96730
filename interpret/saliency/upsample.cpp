#include "interpret/saliency/upsample.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/error.h"

namespace spade::interp {

namespace {

void check_map(const Tensor& m, int64_t H, int64_t W) {
  if (m.ndim() != 4) throw Error("upsample: expected (N, C, h, w), got " + shape_str(m.shape()));
  if (H < 1 || W < 1) throw Error("upsample: empty target size");
}

// One axis of a bilinear resize: the two source indices and the weight of the second.
struct Tap {
  int64_t i0, i1;
  float l1;
};

std::vector<Tap> bilinear_taps(int64_t in, int64_t out, bool align_corners) {
  std::vector<Tap> taps(out);
  for (int64_t o = 0; o < out; ++o) {
    float src;
    if (align_corners) {
      src = out > 1 ? float(o) * (float(in - 1) / float(out - 1)) : 0.f;
    } else {
      const float scale = float(in) / float(out);
      src = std::max(0.f, (float(o) + 0.5f) * scale - 0.5f);
    }
    const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(src), in - 1);
    const int64_t i1 = std::min<int64_t>(i0 + 1, in - 1);
    taps[o] = {i0, i1, src - float(i0)};
  }
  return taps;
}

}  // namespace

Tensor upsample_nearest(const Tensor& m, int64_t H, int64_t W) {
  check_map(m, H, W);
  const int64_t NC = m.dim(0) * m.dim(1), h = m.dim(2), w = m.dim(3);
  Tensor out = Tensor::empty({m.dim(0), m.dim(1), H, W});
  const float sy = float(h) / float(H), sx = float(w) / float(W);
  std::vector<int64_t> xs(W);
  for (int64_t x = 0; x < W; ++x) xs[x] = std::min<int64_t>(static_cast<int64_t>(std::floor(float(x) * sx)), w - 1);
  for (int64_t p = 0; p < NC; ++p)
    for (int64_t y = 0; y < H; ++y) {
      const int64_t iy = std::min<int64_t>(static_cast<int64_t>(std::floor(float(y) * sy)), h - 1);
      const float* src = m.data() + (p * h + iy) * w;
      float* dst = out.data() + (p * H + y) * W;
      for (int64_t x = 0; x < W; ++x) dst[x] = src[xs[x]];
    }
  return out;
}

Tensor upsample_bilinear(const Tensor& m, int64_t H, int64_t W, bool align_corners) {
  check_map(m, H, W);
  const int64_t NC = m.dim(0) * m.dim(1), h = m.dim(2), w = m.dim(3);
  Tensor out = Tensor::empty({m.dim(0), m.dim(1), H, W});
  const std::vector<Tap> ty = bilinear_taps(h, H, align_corners), tx = bilinear_taps(w, W, align_corners);
  for (int64_t p = 0; p < NC; ++p)
    for (int64_t y = 0; y < H; ++y) {
      const float* r0 = m.data() + (p * h + ty[y].i0) * w;
      const float* r1 = m.data() + (p * h + ty[y].i1) * w;
      const float ly1 = ty[y].l1, ly0 = 1.f - ly1;
      float* dst = out.data() + (p * H + y) * W;
      for (int64_t x = 0; x < W; ++x) {
        const Tap& t = tx[x];
        const float lx0 = 1.f - t.l1;
        dst[x] = ly0 * (lx0 * r0[t.i0] + t.l1 * r0[t.i1]) + ly1 * (lx0 * r1[t.i0] + t.l1 * r1[t.i1]);
      }
    }
  return out;
}

Tensor broadcast_channels(const Tensor& m, int64_t C) {
  if (m.ndim() != 4 || m.dim(1) != 1) throw Error("broadcast_channels: expected (N, 1, H, W), got " + shape_str(m.shape()));
  const int64_t N = m.dim(0), HW = m.dim(2) * m.dim(3);
  Tensor out = Tensor::empty({N, C, m.dim(2), m.dim(3)});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) std::copy(m.data() + n * HW, m.data() + (n + 1) * HW, out.data() + (n * C + c) * HW);
  return out;
}

}  // namespace spade::interp
