#pragma once
// The grids of the grid pointing game (metrics/grid_pointing.h): n x n photos of different
// classes, each one the model classifies correctly and confidently on its own, shrunk to one cell
// of an input of the model's size.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "formats/model.h"
#include "train/dataset.h"

namespace spade::interp {

struct GridSample {
  std::vector<std::string> names;  // the photo in each cell (row-major)
  std::vector<int64_t> indices;    // their indices in the photo set
  std::vector<int64_t> classes;    // their labels = the dense model's prediction = the class each cell's maps explain
  std::vector<double> confidence;  // the dense model's softmax probability of that class on the photo alone
  Image image;                     // the grid, at the model's input size
  Tensor x;                        // the same, normalised (1, 3, H, W)
};

struct GridPoolOptions {
  int64_t count = 100;  // grids
  int64_t grid = 2;     // cells per side
  uint64_t seed = 0;    // photo order
  double min_confidence = 0.5;
};

struct GridPool {
  std::vector<GridSample> grids;
  int64_t classified = 0, eligible = 0;  // photos, and those classified correctly and confidently
};

// `photos` are at the model's input size (train::eval_load_options), labelled with model class
// indices. A photo is eligible when the dense model predicts its label with at least
// `min_confidence`. Grids are filled from the eligible photos in a seeded random order, reshuffled
// on every pass, so a set of photos serves more grids than it has photos / cells; each grid takes
// the next photos whose classes it does not hold yet (one left out waits for the next grid), each
// resized (PIL bilinear) to side / grid. Throws spade::Error when fewer than grid^2 classes are
// eligible.
GridPool grid_pool(const Model& m, const train::PixelDataset& photos, const GridPoolOptions& opt,
                   const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace spade::interp
