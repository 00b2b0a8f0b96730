#pragma once
// A small line plot as an image (the objective curves of `spade visualize`): white background, a
// frame, the y range written at the left (built-in font), one polyline per series.
#include <array>
#include <cstdint>
#include <vector>

#include "formats/image.h"

namespace spade {

struct PlotSeries {
  std::vector<double> y;  // at x = 0, 1, ...
  std::array<uint8_t, 3> colour{31, 119, 180};
};

// A width x height image of the series over a shared y range (their min and max; non-finite
// values are skipped). Throws spade::Error for a size below 64 x 48.
Image line_plot(const std::vector<PlotSeries>& series, int width = 480, int height = 240);

// Distinct colours for series k = 0, 1, ... (matplotlib's tab10, cycled).
std::array<uint8_t, 3> series_colour(size_t k);

}  // namespace spade
