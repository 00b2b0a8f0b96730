#pragma once
// Thread control for every CPU kernel. Work is split statically, so results are bit-identical
// for a given thread count.
namespace spade::kernels {

void set_num_threads(int n);  // n <= 0: all hardware threads
int num_threads();

}  // namespace spade::kernels
