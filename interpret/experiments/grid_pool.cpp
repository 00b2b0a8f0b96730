#include "interpret/experiments/grid_pool.h"

#include <algorithm>
#include <cmath>
#include <deque>

#include "engine/error.h"
#include "engine/executor.h"
#include "train/trainer.h"

namespace spade::interp {

namespace {

// Pastes `cell` (side x side) at cell position `k` of `grid` (row-major).
void paste(Image& grid, const Image& cell, int64_t k, int64_t cells) {
  const int side = cell.width;
  const int y0 = static_cast<int>(k / cells) * side, x0 = static_cast<int>(k % cells) * side;
  for (int y = 0; y < side; ++y)
    std::copy_n(cell.rgb.data() + size_t(y) * side * 3, size_t(side) * 3,
                grid.rgb.data() + (size_t(y0 + y) * grid.width + x0) * 3);
}

}  // namespace

GridPool grid_pool(const Model& m, const train::PixelDataset& photos, const GridPoolOptions& opt,
                   const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t H = m.graph.input_chw[1], W = m.graph.input_chw[2];
  if (opt.grid < 1 || H != W || H % opt.grid != 0)
    throw Error("grid pool: a " + std::to_string(opt.grid) + "x" + std::to_string(opt.grid) + " grid needs a square input whose side it divides (the model's is " +
                std::to_string(H) + "x" + std::to_string(W) + ")");
  if (photos.size() > 0 && (photos.height != H || photos.width != W))
    throw Error(photos.source + ": photos are " + std::to_string(photos.height) + "x" + std::to_string(photos.width) +
                ", not the model's input size " + std::to_string(H) + "x" + std::to_string(W));
  const int64_t cells = opt.grid * opt.grid;
  const int side = static_cast<int>(H / opt.grid);
  const Preprocess normalise = normalisation_of(m.preprocess);  // photos are at the input size already
  const std::vector<int64_t> order = train::epoch_order(photos.size(), opt.seed, 0);

  GridPool pool;
  std::vector<std::pair<int64_t, double>> eligible;  // photo index and confidence, in the seeded order
  ForwardOptions fo;
  fo.keep_activations = false;
  constexpr size_t kChunk = 32;
  for (size_t start = 0; start < order.size(); start += kChunk) {
    const size_t end = std::min(order.size(), start + kChunk);
    std::vector<Tensor> xs;
    for (size_t k = start; k < end; ++k) xs.push_back(preprocess_image(photos.image(order[k]), normalise));
    const Tensor logits = forward(m.graph, cat0(xs), fo).out();
    const int64_t C = logits.dim(1);
    for (size_t k = start; k < end; ++k) {
      const float* row = logits.data() + (k - start) * C;
      const int64_t best = std::max_element(row, row + C) - row;
      double sum = 0.0;
      for (int64_t c = 0; c < C; ++c) sum += std::exp(double(row[c]) - double(row[best]));
      if (best == photos.labels[order[k]] && 1.0 / sum >= opt.min_confidence) eligible.emplace_back(order[k], 1.0 / sum);
    }
    pool.classified = static_cast<int64_t>(end);
    if (progress) progress(pool.classified, static_cast<int64_t>(order.size()));
  }
  pool.eligible = static_cast<int64_t>(eligible.size());
  std::vector<int64_t> classes;
  for (const auto& e : eligible) classes.push_back(photos.labels[e.first]);
  std::sort(classes.begin(), classes.end());
  if (std::unique(classes.begin(), classes.end()) - classes.begin() < cells)
    throw Error(photos.source + ": " + std::to_string(eligible.size()) + " photos are classified correctly with confidence >= " +
                std::to_string(opt.min_confidence) + ", fewer than " + std::to_string(cells) + " classes for a grid");

  std::deque<std::pair<int64_t, double>> waiting;  // eligible photos not placed yet
  for (int64_t pass = 0; static_cast<int64_t>(pool.grids.size()) < opt.count; ++pass) {
    for (int64_t e : train::epoch_order(static_cast<int64_t>(eligible.size()), opt.seed, pass + 1)) waiting.push_back(eligible[e]);
    while (static_cast<int64_t>(pool.grids.size()) < opt.count) {
      std::vector<size_t> pick;  // positions in `waiting`, distinct classes
      for (size_t w = 0; w < waiting.size() && static_cast<int64_t>(pick.size()) < cells; ++w) {
        const int64_t cls = photos.labels[waiting[w].first];
        if (std::none_of(pick.begin(), pick.end(), [&](size_t q) { return photos.labels[waiting[q].first] == cls; }))
          pick.push_back(w);
      }
      if (static_cast<int64_t>(pick.size()) < cells) break;  // the next pass brings more
      GridSample g;
      g.image.width = static_cast<int>(W);
      g.image.height = static_cast<int>(H);
      g.image.rgb.assign(size_t(H * W * 3), 0);
      for (size_t q = 0; q < pick.size(); ++q) {
        const int64_t idx = waiting[pick[q]].first;
        g.names.push_back(photos.names[idx]);
        g.indices.push_back(idx);
        g.classes.push_back(photos.labels[idx]);
        g.confidence.push_back(waiting[pick[q]].second);
        paste(g.image, resize_image(photos.image(idx), side, side), static_cast<int64_t>(q), opt.grid);
      }
      for (auto it = pick.rbegin(); it != pick.rend(); ++it) waiting.erase(waiting.begin() + static_cast<std::ptrdiff_t>(*it));
      g.x = preprocess_image(g.image, normalise);
      pool.grids.push_back(std::move(g));
    }
  }
  return pool;
}

}  // namespace spade::interp
