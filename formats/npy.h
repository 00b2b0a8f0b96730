#pragma once
// NumPy's .npy array format: a magic string, a version, a Python-dict header giving dtype,
// memory order and shape, then the raw array data. Used to exchange attribution maps and test
// fixtures with Python. Only little-endian float arrays in C order are read; float64 is
// converted to float32.
#include <string>

#include "engine/tensor.h"

namespace spade {

// Reads '<f4' (and '|f4') or '<f8' arrays in C order, format versions 1.0, 2.0 and 3.0, any
// rank including 0. Throws spade::Error naming the file for anything else or any malformation.
Tensor load_npy(const std::string& path);

// Writes version 1.0, '<f4', C order, the header padded so that the data starts at a multiple
// of 64 bytes (as NumPy does), via write_file_atomic.
void save_npy(const std::string& path, const Tensor& t);

}  // namespace spade
