#include "kernels/cpu/parallel.h"

#include <omp.h>

#include <Eigen/Core>
#include <thread>

namespace spade::kernels {

namespace {
int g_threads = 0;
}

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  g_threads = n;
  omp_set_num_threads(n);
  // Eigen runs single-threaded inside our own parallel blocks (see gemm.cpp).
  Eigen::setNbThreads(1);
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

}  // namespace spade::kernels
