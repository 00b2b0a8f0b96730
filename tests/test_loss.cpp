// Softmax cross-entropy on the CPU (kernels/cpu/loss.h) against PyTorch
// (tests/data/loss/cross_entropy.golden.safetensors, made by tests/data/make_loss_golden.py), a
// finite-difference check of its gradient and the error for a target out of range.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "kernels/cpu/loss.h"
#include "support/test_support.h"

using namespace spade;
using Catch::Matchers::Contains;

namespace {

struct LossCase {
  std::string key;
  int64_t N = 0, classes = 0;
  std::vector<float> logits;
  std::vector<int64_t> targets;
  double loss = 0;
  std::vector<float> grad, probs;  // probs empty where the file leaves them out
};

template <class T>
std::vector<T> raw_entry(const SafetensorsFile& f, const std::string& name, DType dtype) {
  const SafetensorsEntry& e = f.entry(name);
  REQUIRE(e.dtype == dtype);
  std::vector<T> out((e.end - e.begin) / sizeof(T));
  std::memcpy(out.data(), f.raw_data(e), out.size() * sizeof(T));
  return out;
}

std::vector<LossCase> load_cases() {
  SafetensorsFile f(test::data_path("loss/cross_entropy.golden.safetensors"));
  std::vector<LossCase> cases;
  std::stringstream keys(f.metadata().at("cases"));
  for (std::string key; std::getline(keys, key, ',');) {
    LossCase c;
    c.key = key;
    const Tensor logits = f.tensor(key + ".logits");
    REQUIRE(logits.ndim() == 2);
    c.N = logits.dim(0);
    c.classes = logits.dim(1);
    c.logits = logits.to_vector();
    c.targets = raw_entry<int64_t>(f, key + ".targets", DType::I64);
    const std::vector<double> loss = raw_entry<double>(f, key + ".loss", DType::F64);
    REQUIRE(loss.size() == 1);
    c.loss = loss[0];
    c.grad = f.tensor(key + ".grad").to_vector();
    if (f.contains(key + ".probs")) c.probs = f.tensor(key + ".probs").to_vector();
    REQUIRE(c.targets.size() == static_cast<size_t>(c.N));
    REQUIRE(c.grad.size() == c.logits.size());
    cases.push_back(std::move(c));
  }
  return cases;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}

}  // namespace

TEST_CASE("softmax cross-entropy matches PyTorch", "[loss][golden]") {
  const std::vector<LossCase> cases = load_cases();
  REQUIRE(cases.size() >= 5);
  for (const LossCase& c : cases) {
    INFO(c.key << ": " << c.N << " x " << c.classes);
    std::vector<float> probs(c.logits.size(), NAN), grad(c.logits.size(), NAN);
    const double loss = kernels::softmax_cross_entropy(c.N, c.classes, c.logits.data(), c.targets.data(),
                                                       probs.data());
    kernels::softmax_cross_entropy_backward(c.N, c.classes, c.logits.data(), c.targets.data(), grad.data());
    INFO("loss " << loss << ", PyTorch " << c.loss);
    // Both in double from the same float logits: only the order of the sums differs.
    CHECK(std::abs(loss - c.loss) <= 1e-12 * std::max(1.0, std::abs(c.loss)));
    // Float roundings of values that agree to ~1e-15: at most one ulp apart.
    CHECK(max_abs_diff(grad, c.grad) <= 1e-7);
    if (!c.probs.empty()) CHECK(max_abs_diff(probs, c.probs) <= 1e-7);
    // The gradient is the softmax minus the one-hot target, over N.
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t j = 0; j < c.classes; ++j) {
        const int64_t i = n * c.classes + j;
        const double want = (probs[i] - (j == c.targets[n] ? 1.0 : 0.0)) / c.N;
        REQUIRE(std::abs(grad[i] - want) <= 1e-7);
      }
  }
}

TEST_CASE("softmax cross-entropy gradient matches finite differences", "[loss]") {
  const std::vector<LossCase> cases = load_cases();
  for (const LossCase& c : cases) {
    std::vector<float> grad(c.logits.size());
    kernels::softmax_cross_entropy_backward(c.N, c.classes, c.logits.data(), c.targets.data(), grad.data());
    std::vector<float> x = c.logits;
    auto loss_at = [&](int64_t i, float v) {
      x[i] = v;
      return kernels::softmax_cross_entropy(c.N, c.classes, x.data(), c.targets.data(), nullptr);
    };
    const int64_t stride = c.logits.size() > 200 ? 7 : 1;  // every 7th logit of the wide case
    int checked = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(c.logits.size()); i += stride) {
      const float x0 = c.logits[i];
      // Step relative to the logit (the large case sits near 500), and the step actually taken
      // after rounding to float as the denominator.
      const float h = 1e-3f * std::max(1.f, std::abs(x0));
      const float xp = x0 + h, xm = x0 - h;
      const double fd = (loss_at(i, xp) - loss_at(i, xm)) / (double(xp) - double(xm));
      x[i] = x0;
      INFO(c.key << " logit " << i << ": analytic " << grad[i] << ", finite difference " << fd);
      // Central differences are exact to O(h^2 f''') ~ 1e-8 here; the float gradient to ~1e-8.
      CHECK(std::abs(fd - grad[i]) <= 1e-6 + 1e-5 * std::abs(grad[i]));
      ++checked;
    }
    CHECK(checked > 0);
  }
}

TEST_CASE("softmax cross-entropy: large logits do not overflow", "[loss]") {
  // exp(1000) overflows a double; with the row maximum subtracted the loss is exact.
  const std::vector<float> logits = {1000.f, 1000.f, -1000.f, 2000.f, 1990.f, 0.f};
  const std::vector<int64_t> targets = {0, 1};
  std::vector<float> probs(6), grad(6);
  const double loss = kernels::softmax_cross_entropy(2, 3, logits.data(), targets.data(), probs.data());
  const double want = (std::log(2.0) + (10.0 + std::log1p(std::exp(-10.0)))) / 2;
  CHECK(std::abs(loss - want) <= 1e-12);
  CHECK(probs[0] == 0.5f);
  CHECK(probs[2] == 0.f);
  kernels::softmax_cross_entropy_backward(2, 3, logits.data(), targets.data(), grad.data());
  for (float g : grad) CHECK(std::isfinite(g));
}

TEST_CASE("softmax cross-entropy: a target out of range names the row and the value", "[loss]") {
  const int64_t N = 3, classes = 10;
  const std::vector<float> logits = test::random_tensor({N, classes}, 5).to_vector();
  for (int64_t bad : {int64_t{-1}, classes, int64_t{1000}}) {
    const std::vector<int64_t> targets = {2, 9, bad};
    std::vector<float> out(N * classes, 7.f);
    const std::string msg = test::error_of(
        [&] { kernels::softmax_cross_entropy(N, classes, logits.data(), targets.data(), out.data()); });
    INFO(msg);
    CHECK_THAT(msg, Contains("row 2") && Contains("target " + std::to_string(bad)) && Contains("[0, 10)"));
    CHECK(out == std::vector<float>(N * classes, 7.f));  // nothing written
    const std::string bmsg = test::error_of(
        [&] { kernels::softmax_cross_entropy_backward(N, classes, logits.data(), targets.data(), out.data()); });
    CHECK(bmsg == msg);
    CHECK(out == std::vector<float>(N * classes, 7.f));
  }
}

// ---------------------------------------------------------------------------------------------
// The distillation loss of `spade train --distill`

namespace {

struct DistillCase {
  std::string key;
  int64_t N = 0, classes = 0;
  double temperature = 0, weight = 0, loss = 0;
  std::vector<float> student, teacher, grad;
  std::vector<int64_t> targets;
};

std::vector<DistillCase> load_distill_cases() {
  SafetensorsFile f(test::data_path("loss/distillation.golden.safetensors"));
  std::vector<DistillCase> cases;
  std::stringstream keys(f.metadata().at("cases"));
  for (std::string key; std::getline(keys, key, ',');) {
    DistillCase c;
    c.key = key;
    const Tensor s = f.tensor(key + ".student");
    REQUIRE(s.ndim() == 2);
    c.N = s.dim(0);
    c.classes = s.dim(1);
    c.student = s.to_vector();
    c.teacher = f.tensor(key + ".teacher").to_vector();
    c.grad = f.tensor(key + ".grad").to_vector();
    c.targets = raw_entry<int64_t>(f, key + ".targets", DType::I64);
    c.loss = raw_entry<double>(f, key + ".loss", DType::F64).at(0);
    c.temperature = std::stod(f.metadata().at(key + ".temperature"));
    c.weight = std::stod(f.metadata().at(key + ".weight"));
    REQUIRE(c.teacher.size() == c.student.size());
    REQUIRE(c.targets.size() == static_cast<size_t>(c.N));
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace

TEST_CASE("distillation loss matches PyTorch's KL + cross-entropy", "[loss][golden]") {
  const std::vector<DistillCase> cases = load_distill_cases();
  REQUIRE(cases.size() >= 5);
  for (const DistillCase& c : cases) {
    INFO(c.key << ": " << c.N << " x " << c.classes << ", T " << c.temperature << ", weight " << c.weight);
    std::vector<float> grad(c.student.size(), NAN);
    const double loss = kernels::distillation_loss(c.N, c.classes, c.student.data(), c.teacher.data(),
                                                   c.targets.data(), c.temperature, c.weight, grad.data());
    INFO("loss " << loss << ", PyTorch " << c.loss);
    // Both in double from the same floats; only the order of sums differs.
    CHECK(std::abs(loss - c.loss) <= 1e-10 * std::max(1.0, std::abs(c.loss)));
    CHECK(max_abs_diff(grad, c.grad) <= 1e-7);
    CHECK(kernels::distillation_loss(c.N, c.classes, c.student.data(), c.teacher.data(), c.targets.data(),
                                     c.temperature, c.weight, nullptr) == loss);
  }
}

TEST_CASE("distillation loss: gradient by finite differences, zero at the teacher, errors", "[loss]") {
  const std::vector<DistillCase> cases = load_distill_cases();
  for (const DistillCase& c : cases) {
    if (c.classes > 100) continue;  // the wide case is covered by the golden check
    std::vector<float> grad(c.student.size());
    kernels::distillation_loss(c.N, c.classes, c.student.data(), c.teacher.data(), c.targets.data(), c.temperature,
                               c.weight, grad.data());
    std::vector<float> x = c.student;
    for (size_t i = 0; i < x.size(); ++i) {
      const float x0 = x[i], h = 1e-3f * std::max(1.f, std::abs(x0));
      x[i] = x0 + h;
      const double up = kernels::distillation_loss(c.N, c.classes, x.data(), c.teacher.data(), c.targets.data(),
                                                   c.temperature, c.weight, nullptr);
      x[i] = x0 - h;
      const double down = kernels::distillation_loss(c.N, c.classes, x.data(), c.teacher.data(), c.targets.data(),
                                                     c.temperature, c.weight, nullptr);
      x[i] = x0;
      const double fd = (up - down) / (double(x0 + h) - double(x0 - h));
      INFO(c.key << " logit " << i << ": analytic " << grad[i] << ", finite difference " << fd);
      CHECK(std::abs(fd - grad[i]) <= 1e-6 + 1e-4 * std::abs(grad[i]));
    }
  }
  // A student equal to its teacher on clean rows costs nothing and gets no gradient.
  const std::vector<float> same = {0.5f, -1.f, 2.f, 3.f, 0.f, -2.f};
  const std::vector<int64_t> clean = {-1, -1};
  std::vector<float> grad(6, 1.f);
  CHECK(std::abs(kernels::distillation_loss(2, 3, same.data(), same.data(), clean.data(), 3.0, 2.0, grad.data())) <
        1e-15);
  for (float g : grad) CHECK(std::abs(g) < 1e-8);
  const std::vector<int64_t> bad = {-1, 3};
  CHECK_THROWS_WITH(kernels::distillation_loss(2, 3, same.data(), same.data(), bad.data(), 1.0, 1.0, nullptr),
                    Contains("target 3 of row 1"));
  CHECK_THROWS_WITH(kernels::distillation_loss(2, 3, same.data(), same.data(), clean.data(), 0.0, 1.0, nullptr),
                    Contains("temperature > 0"));
  CHECK_THROWS_WITH(kernels::distillation_loss(2, 3, same.data(), same.data(), clean.data(), 1.0, -1.0, nullptr),
                    Contains("weight >= 0"));
}
