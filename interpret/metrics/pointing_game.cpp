#include "interpret/metrics/pointing_game.h"

#include "engine/error.h"
#include "interpret/metrics/roc_auc.h"

namespace spade::interp {

PointingResult pointing_game(const Tensor& attribution, const std::vector<uint8_t>& mask) {
  const PixelMap map = channel_summed_map(attribution);
  if (static_cast<int64_t>(mask.size()) != map.height * map.width)
    throw Error("pointing_game: the mask has " + std::to_string(mask.size()) + " pixels but the map is " +
                std::to_string(map.height) + "x" + std::to_string(map.width));
  int64_t best = 0;
  for (int64_t p = 1; p < static_cast<int64_t>(map.values.size()); ++p)
    if (map.values[p] > map.values[best]) best = p;  // strict: the first maximum stays
  PointingResult r;
  r.hit = mask[best] != 0;
  r.row = best / map.width;
  r.col = best % map.width;
  return r;
}

}  // namespace spade::interp
