#pragma once
// Saliency maps as pictures: colour-mapped heat maps, overlays on the input image and labelled
// comparison panels (image | dense map | SPADE map, one row per method), written with save_png
// (formats/image.h), which already writes atomically (temporary file + rename).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "formats/image.h"

namespace spade {

// How a map's values become colours.
//   Signed:   v = map / s, clamped to [-1, 1], through diverging_colour (blue - white - red);
//             0 is white whatever the map's range, so the sign of every pixel stays readable.
//   Absolute: v = |map| / s, clamped to [0, 1], through jet_colour (0 is dark blue). Meant for
//             non-negative maps; a negative value is drawn by its magnitude (Captum's
//             "absolute_value" sign mode).
// In both, s is the clip_percentile-th percentile of |map| over all pixels (linear
// interpolation between order statistics, as numpy.percentile's default); where that is 0 (a
// map that is more than clip_percentile % zeros) s = max |map|, and an all-zero map is drawn
// entirely in the colour of 0. The scale is symmetric (one s for both signs) so that equal
// magnitudes get equal intensities.
enum class MapScale { Signed, Absolute };

// Gradient-type maps often have a handful of pixels far above the rest; scaling by the maximum
// would leave everything else near the colour of 0. Clipping the top 0.5 % keeps them readable
// while barely touching smooth maps (Grad-CAM, occlusion). Pass 100 to scale by the maximum.
constexpr double kDefaultClipPercentile = 99.5;

// A (H, W) map (leading dimensions of size 1 are accepted, e.g. (1, 1, H, W)) as an H x W image.
// Throws spade::Error for NaN/Inf values, an empty or multi-plane map, or a percentile outside
// (0, 100].
Image heatmap(const Tensor& map, MapScale scale, double clip_percentile = kDefaultClipPercentile);

// The colour maps, exposed for tests and legends; channels are rounded half away from zero.
// v outside the range is clamped; NaN throws spade::Error.
// diverging_colour, v in [-1, 1] (matplotlib's "bwr", continuous rather than a 256-entry table):
//   v <= 0: (255 (1 + v), 255 (1 + v), 255)      -1 = pure blue, 0 = white
//   v >= 0: (255, 255 (1 - v), 255 (1 - v))       1 = pure red
std::array<uint8_t, 3> diverging_colour(double v);
// jet_colour, v in [0, 1] (MATLAB/OpenCV jet):
//   (r, g, b) = 255 * clamp(1.5 - |4 v - k|, 0, 1) with k = 3, 2, 1 respectively,
//   so 0 = (0, 0, 128), 0.5 = (128, 255, 128), 1 = (128, 0, 0). OpenCV's COLORMAP_JET table is
//   this curve sampled at v = i / 255; pytorch-grad-cam first truncates v to those 256 levels
//   (np.uint8(255 * v)), so its pixels can differ from ours by a few levels.
std::array<uint8_t, 3> jet_colour(double v);

// pytorch-grad-cam's show_cam_on_image blend: round(alpha * heat + (1 - alpha) * image) per
// byte (without its final division by the maximum). Sizes must match; alpha in [0, 1].
Image overlay(const Image& image, const Image& heat, float alpha = 0.5f);

// A labelled grid on a white background: rows[r][c] is the cell in row r, column c. Every row
// has the same number of cells and every non-empty cell the same size (w x h); an empty Image
// (0 x 0) leaves its cell blank. Cells are enlarged by the integer factor f = max(1, 128 / h)
// (nearest neighbour) so that 32 x 32 CIFAR images are visible. row_labels (left of each row)
// and column_labels (above each column) are either empty or one per row / column. Layout, with
// W = w f, H = h f, g = gap, text height T = 7 t where t = text_scale(H):
//   left  = row_labels present    ? max text_width(label, t) + g : 0
//   top   = column_labels present ? T + g : 0
//   cell (r, c) at x = g + left + c (W + g), y = g + top + r (H + g)
//   size  = (g + left + cols (W + g)) x (g + top + rows (H + g))
// Row labels are drawn at x = g, centred vertically on the row (y = cell y + (H - T) / 2); column
// labels at y = g, centred over the column (x = cell x + (W - width) / 2), cut to the characters
// that fit in W when wider. Throws spade::Error for inconsistent sizes or a panel larger than
// kMaxImageSide.
Image panel(const std::vector<std::vector<Image>>& rows, const std::vector<std::string>& row_labels,
            const std::vector<std::string>& column_labels, int gap = 4);

// ---- the built-in 5x7 bitmap font used for the labels ----
// Letters are drawn as capitals (either case is accepted), plus digits and " _.-:/%?()+=,";
// any other byte is drawn as '?'. Each glyph advances 6 columns (one blank column between
// glyphs), each pixel drawn as a t x t square.
constexpr int kGlyphWidth = 5, kGlyphHeight = 7, kGlyphAdvance = 6;
// t = max(1, cell_height / 128): labels grow with the cells they annotate.
int text_scale(int cell_height);
// Width in pixels of text at scale t: (6 n - 1) t for n > 0 characters, 0 for none.
int text_width(const std::string& text, int t);
// Draws text with its top-left corner at (x, y); pixels outside the image are skipped, never an
// error.
void draw_text(Image& im, int x, int y, const std::string& text, int t, std::array<uint8_t, 3> colour);

}  // namespace spade
