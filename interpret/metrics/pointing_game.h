#pragma once
// The pointing game (Zhang et al. 2016) in its strict form: does the single most salient pixel of
// the channel-summed map (roc_auc.h's channel_summed_map, signed) lie on the object mask? No
// tolerance radius around the mask.
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace spade::interp {

struct PointingResult {
  bool hit = false;
  int64_t row = 0, col = 0;  // the pixel pointed at
};

// `mask` is H * W, row-major, non-zero on the object. When several pixels share the maximum, the
// first in raster order (smallest row, then smallest column) is the one pointed at, so a tie never
// counts as a hit just because some tied pixel is on the mask.
PointingResult pointing_game(const Tensor& attribution, const std::vector<uint8_t>& mask);

}  // namespace spade::interp
