#include "interpret/experiments/featurevis_study.h"

#include <cmath>
#include <limits>

#include "engine/error.h"
#include "engine/executor.h"
#include "interpret/saliency/upsample.h"

namespace spade::interp {

namespace {

// Sum of every patch x patch window, by a summed-area table: sums[y * (W - p + 1) + x].
std::vector<double> window_sums(const Tensor& map, int64_t H, int64_t W, int64_t p) {
  std::vector<double> sat((H + 1) * (W + 1), 0.0);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      sat[(y + 1) * (W + 1) + x + 1] =
          map[y * W + x] + sat[y * (W + 1) + x + 1] + sat[(y + 1) * (W + 1) + x] - sat[y * (W + 1) + x];
  const int64_t ny = H - p + 1, nx = W - p + 1;
  std::vector<double> sums(ny * nx);
  for (int64_t y = 0; y < ny; ++y)
    for (int64_t x = 0; x < nx; ++x)
      sums[y * nx + x] = sat[(y + p) * (W + 1) + x + p] - sat[y * (W + 1) + x + p] - sat[(y + p) * (W + 1) + x] +
                         sat[y * (W + 1) + x];
  return sums;
}

}  // namespace

PatchPair extreme_patches(const Tensor& map, int64_t patch) {
  const int64_t H = map.dim(-2), W = map.dim(-1);
  if (map.numel() != H * W) throw Error("extreme_patches: expected one (H, W) map, got " + shape_str(map.shape()));
  if (patch < 1 || patch > H || patch > W)
    throw Error("extreme_patches: patch side " + std::to_string(patch) + " does not fit a " + std::to_string(H) + "x" +
                std::to_string(W) + " map");
  for (int64_t i = 0; i < map.numel(); ++i)
    if (!std::isfinite(map[i])) throw Error("extreme_patches: the map contains NaN or Inf");
  const std::vector<double> sums = window_sums(map, H, W, patch);
  const int64_t nx = W - patch + 1;
  PatchPair pp;
  int64_t best = 0;
  for (int64_t i = 1; i < int64_t(sums.size()); ++i)
    if (sums[i] > sums[best]) best = i;
  pp.top_y = best / nx;
  pp.top_x = best % nx;
  auto apart = [&](int64_t i) {
    const int64_t y = i / nx, x = i % nx;
    return std::abs(y - pp.top_y) >= patch || std::abs(x - pp.top_x) >= patch;
  };
  bool any_apart = false;
  for (int64_t i = 0; i < int64_t(sums.size()) && !any_apart; ++i) any_apart = apart(i);
  int64_t worst = -1;
  for (int64_t i = 0; i < int64_t(sums.size()); ++i)
    if ((!any_apart || apart(i)) && (worst < 0 || sums[i] < sums[worst])) worst = i;
  pp.bottom_y = worst / nx;
  pp.bottom_x = worst % nx;
  return pp;
}

Tensor crop_resized(const Tensor& x, int64_t y0, int64_t x0, int64_t patch, int64_t size) {
  if (x.ndim() != 4 || x.dim(0) != 1) throw Error("crop_resized: expected one image (1, C, H, W)");
  const int64_t C = x.dim(1), H = x.dim(2), W = x.dim(3);
  if (y0 < 0 || x0 < 0 || y0 + patch > H || x0 + patch > W) throw Error("crop_resized: patch outside the image");
  Tensor crop({1, C, patch, patch});
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < patch; ++y)
      for (int64_t xx = 0; xx < patch; ++xx) crop[(c * patch + y) * patch + xx] = x[(c * H + y0 + y) * W + x0 + xx];
  return upsample_bilinear(crop, size, size, false);
}

int penultimate_node(const Graph& g) {
  const Node& out = g.node(g.output());
  if (out.op != OpKind::Linear)
    throw Error("the model's output node \"" + out.name + "\" is not a Linear classifier, so it has no penultimate features");
  int k = out.inputs.at(0);
  if (g.node(k).op == OpKind::Flatten || g.node(k).op == OpKind::Dropout) k = g.node(k).inputs.at(0);
  return k;
}

Tensor penultimate_features(const Graph& g, const Tensor& x) {
  const int k = penultimate_node(g);
  ForwardOptions fo;
  fo.keep_activations = false;
  fo.keep = {k};
  const ForwardResult fwd = forward(g, x, fo);
  const Tensor& f = fwd.acts.at(k);
  return f.reshape({f.dim(0), f.numel() / f.dim(0)});
}

double cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
}

Vote PatchVote::vote(double margin) const {
  const double d = difference();
  return d > margin ? Vote::Agree : (d < -margin ? Vote::Disagree : Vote::Undecided);
}

const char* vote_name(Vote v) { return v == Vote::Agree ? "agree" : (v == Vote::Undecided ? "undecided" : "disagree"); }

VoteRates vote_rates(const std::vector<PatchVote>& votes, double margin) {
  VoteRates r;
  r.count = int64_t(votes.size());
  if (votes.empty()) return r;
  for (const PatchVote& v : votes) {
    const Vote k = v.vote(margin);
    r.agree += k == Vote::Agree;
    r.undecided += k == Vote::Undecided;
    r.disagree += k == Vote::Disagree;
    r.mean_difference += v.difference();
  }
  r.agree /= double(r.count);
  r.undecided /= double(r.count);
  r.disagree /= double(r.count);
  r.mean_difference /= double(r.count);
  return r;
}

}  // namespace spade::interp
