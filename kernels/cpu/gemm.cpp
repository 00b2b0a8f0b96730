#include "kernels/cpu/gemm.h"

#include <Eigen/Core>

namespace spade::kernels {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using CMap = Eigen::Map<const RowMat, Eigen::Aligned16>;
using CMapU = Eigen::Map<const RowMat>;
using MMap = Eigen::Map<RowMat>;

namespace {
template <class MA, class MB>
void product(const MA& a, const MB& b, MMap& c, bool accumulate) {
  if (accumulate)
    c.noalias() += a * b;
  else
    c.noalias() = a * b;
}
}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, const float* B,
          float* C, bool accumulate) {
  MMap c(C, M, N);
  if (K == 0) {
    if (!accumulate) c.setZero();
    return;
  }
  CMapU a(A, trans_a ? K : M, trans_a ? M : K);
  CMapU b(B, trans_b ? N : K, trans_b ? K : N);
  if (!trans_a && !trans_b) product(a, b, c, accumulate);
  else if (trans_a && !trans_b) product(a.transpose(), b, c, accumulate);
  else if (!trans_a && trans_b) product(a, b.transpose(), c, accumulate);
  else product(a.transpose(), b.transpose(), c, accumulate);
}

}  // namespace spade::kernels
