#pragma once
// The grid pointing game (GridPG; Böhle et al., "Convolutional Dynamic Alignment Networks",
// CVPR 2021): an input made of n x n images of different classes, a map explaining the class of
// one cell. The localisation score is the share of the positive attribution (channel-summed map)
// that lies inside that cell: 1 when all of it does, 1/n^2 for a map spread evenly. Also the
// pointing game on the cell (pointing_game.h: the most salient pixel inside it).
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace spade::interp {

// The mask (H * W, row-major) of cell `cell` (row-major among the grid x grid cells) of an
// H x W input; cells split the sides as evenly as integers allow (cell r spans rows
// [r * H / grid, (r + 1) * H / grid)).
std::vector<uint8_t> grid_cell_mask(int64_t height, int64_t width, int64_t grid, int64_t cell);

struct GridScore {
  double localisation = 0.0;  // positive attribution inside the cell / all positive attribution; 0 without any
  bool hit = false;           // the most salient pixel is inside the cell
};

// `attribution` as pointing_game takes it. Throws spade::Error for a bad grid or cell, or a
// non-finite map.
GridScore grid_pointing(const Tensor& attribution, int64_t grid, int64_t cell);

}  // namespace spade::interp
