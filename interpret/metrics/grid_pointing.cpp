#include "interpret/metrics/grid_pointing.h"

#include <string>

#include "engine/error.h"
#include "interpret/metrics/pointing_game.h"
#include "interpret/metrics/roc_auc.h"

namespace spade::interp {

std::vector<uint8_t> grid_cell_mask(int64_t height, int64_t width, int64_t grid, int64_t cell) {
  if (grid < 1 || grid > height || grid > width)
    throw Error("grid_pointing: a " + std::to_string(grid) + "x" + std::to_string(grid) + " grid does not fit a " +
                std::to_string(height) + "x" + std::to_string(width) + " map");
  if (cell < 0 || cell >= grid * grid)
    throw Error("grid_pointing: cell " + std::to_string(cell) + " is not one of the " + std::to_string(grid * grid));
  const int64_t r = cell / grid, c = cell % grid;
  std::vector<uint8_t> mask(static_cast<size_t>(height * width), 0);
  for (int64_t y = r * height / grid; y < (r + 1) * height / grid; ++y)
    for (int64_t x = c * width / grid; x < (c + 1) * width / grid; ++x) mask[static_cast<size_t>(y * width + x)] = 1;
  return mask;
}

GridScore grid_pointing(const Tensor& attribution, int64_t grid, int64_t cell) {
  const PixelMap map = channel_summed_map(attribution);
  const std::vector<uint8_t> mask = grid_cell_mask(map.height, map.width, grid, cell);
  double inside = 0.0, total = 0.0;
  for (size_t p = 0; p < map.values.size(); ++p) {
    const double v = map.values[p] > 0 ? map.values[p] : 0.0;
    total += v;
    if (mask[p]) inside += v;
  }
  GridScore s;
  s.localisation = total > 0.0 ? inside / total : 0.0;
  s.hit = pointing_game(attribution, mask).hit;
  return s;
}

}  // namespace spade::interp
