// The CUDA backend's plumbing. The allocator bookkeeping and the error messages are tested on
// every machine (with malloc standing in for cudaMalloc); tests that need a GPU say so with a
// warning and return when there is none.
#include <catch2/catch.hpp>

#include "support/test_support.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"

using namespace spade;
using spade::test::error_of;

namespace {

constexpr size_t KiB = 1024, MiB = 1024 * 1024;

// A raw allocator over malloc that records what it was asked for and can be told to run out.
struct FakeDevice {
  std::map<void*, size_t> live;
  std::vector<size_t> alloc_sizes;
  std::vector<size_t> free_sizes;
  int fail_next = 0;        // the next N raw allocations report out-of-memory
  size_t capacity = SIZE_MAX;  // raw allocations beyond this total report out-of-memory
  size_t held = 0;
  int bad_frees = 0;  // frees of unknown pointers or with the wrong size
  // Raw calls must not use Catch2 assertions: the threaded test makes them from other threads
  // (the allocator serialises them under its mutex).

  CachingAllocator::RawAlloc alloc_fn() {
    return [this](size_t bytes) -> void* {
      if (fail_next > 0) {
        --fail_next;
        return nullptr;
      }
      if (bytes > capacity || held > capacity - bytes) return nullptr;
      void* p = std::malloc(bytes);
      if (p == nullptr) return nullptr;
      live[p] = bytes;
      alloc_sizes.push_back(bytes);
      held += bytes;
      return p;
    };
  }
  CachingAllocator::RawFree free_fn() {
    return [this](void* p, size_t bytes) {
      auto it = live.find(p);
      // The allocator must hand back exactly what it got, with the size it was given.
      if (it == live.end() || it->second != bytes) {
        ++bad_frees;
        return;
      }
      held -= bytes;
      free_sizes.push_back(bytes);
      live.erase(it);
      std::free(p);
    };
  }
  ~FakeDevice() {
    CHECK(bad_frees == 0);
    for (auto& kv : live) std::free(kv.first);
  }
};

CachingAllocator make_allocator(FakeDevice& dev) {
  return CachingAllocator("fake device", dev.alloc_fn(), dev.free_fn());
}

cudaStream_t fake_stream(uintptr_t id) { return reinterpret_cast<cudaStream_t>(id); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Host-only: the caching allocator's bookkeeping

TEST_CASE("caching allocator: sizes are rounded to 512 B below 1 MiB and to 2 MiB above",
          "[cuda][allocator]") {
  CHECK(CachingAllocator::round_size(0) == 0);
  CHECK(CachingAllocator::round_size(1) == 512);
  CHECK(CachingAllocator::round_size(512) == 512);
  CHECK(CachingAllocator::round_size(513) == 1024);
  CHECK(CachingAllocator::round_size(4000) == 4096);
  CHECK(CachingAllocator::round_size(MiB - 1) == MiB);
  CHECK(CachingAllocator::round_size(MiB) == 2 * MiB);
  CHECK(CachingAllocator::round_size(2 * MiB) == 2 * MiB);
  CHECK(CachingAllocator::round_size(2 * MiB + 1) == 4 * MiB);
  CHECK(CachingAllocator::round_size(100 * MiB + 3) == 102 * MiB);
  CHECK_THROWS_AS(CachingAllocator::round_size(SIZE_MAX - 5), Error);

  FakeDevice dev;
  auto alloc = make_allocator(dev);
  void* a = alloc.allocate(1, nullptr);
  void* b = alloc.allocate(3 * MiB, nullptr);
  CHECK(dev.alloc_sizes == std::vector<size_t>{512, 4 * MiB});
  CHECK(alloc.allocate(0, nullptr) == nullptr);
  CHECK(dev.alloc_sizes.size() == 2);
  alloc.release(a);
  alloc.release(b);
  alloc.release(nullptr);
}

TEST_CASE("caching allocator: a released block is reused without a raw allocation",
          "[cuda][allocator]") {
  FakeDevice dev;
  auto alloc = make_allocator(dev);
  void* a = alloc.allocate(1000, nullptr);
  alloc.release(a);
  CHECK(dev.free_sizes.empty());  // cached, not returned
  void* b = alloc.allocate(900, nullptr);  // same 1024-byte class
  CHECK(b == a);
  CHECK(dev.alloc_sizes.size() == 1);
  auto s = alloc.stats();
  CHECK(s.raw_allocs == 1);
  CHECK(s.cache_hits == 1);
  CHECK(s.bytes_in_use == 1024);
  CHECK(s.bytes_requested == 900);
  alloc.release(b);
}

TEST_CASE("caching allocator: best fit among cached blocks, capped at twice the request",
          "[cuda][allocator]") {
  FakeDevice dev;
  auto alloc = make_allocator(dev);
  void* p4k = alloc.allocate(4 * KiB, nullptr);
  void* p1k = alloc.allocate(1 * KiB, nullptr);
  void* p2k = alloc.allocate(2 * KiB, nullptr);
  void* p8m = alloc.allocate(8 * MiB, nullptr);
  alloc.release(p4k);
  alloc.release(p1k);
  alloc.release(p2k);
  alloc.release(p8m);
  REQUIRE(dev.alloc_sizes.size() == 4);

  SECTION("the smallest block that is large enough wins") {
    CHECK(alloc.allocate(1000, nullptr) == p1k);
    CHECK(alloc.allocate(1500, nullptr) == p2k);  // 1 KiB block too small, 2 KiB fits
    CHECK(alloc.allocate(3 * KiB, nullptr) == p4k);
    CHECK(dev.alloc_sizes.size() == 4);
    CHECK(alloc.stats().cache_hits == 3);
    for (void* p : {p1k, p2k, p4k}) alloc.release(p);
  }
  SECTION("a block more than twice the rounded request is left alone") {
    void* small = alloc.allocate(100, nullptr);  // 512 B: 1 KiB would fit, and is allowed
    CHECK(small == p1k);
    void* tiny = alloc.allocate(100, nullptr);  // only 2 KiB+ left: too wasteful
    CHECK(tiny != p2k);
    CHECK(tiny != p4k);
    CHECK(dev.alloc_sizes.back() == 512);
    void* big = alloc.allocate(3 * MiB, nullptr);  // 4 MiB request: 8 MiB block is exactly 2x
    CHECK(big == p8m);
    void* mid = alloc.allocate(1 * MiB, nullptr);  // 2 MiB request: nothing cached serves it
    CHECK(dev.alloc_sizes.back() == 2 * MiB);
    // A block handed out again keeps its real size in the accounting.
    CHECK(alloc.stats().bytes_in_use == 1 * KiB + 512 + 8 * MiB + 2 * MiB);
    for (void* p : {small, tiny, big, mid}) alloc.release(p);
  }
  alloc.empty_cache();
  CHECK(dev.live.empty());
}

TEST_CASE("caching allocator: blocks are cached per stream", "[cuda][allocator]") {
  FakeDevice dev;
  auto alloc = make_allocator(dev);
  const auto s1 = fake_stream(0x10), s2 = fake_stream(0x20);
  void* a = alloc.allocate(4096, s1);
  alloc.release(a);
  void* b = alloc.allocate(4096, s2);
  CHECK(b != a);
  CHECK(dev.alloc_sizes.size() == 2);
  void* c = alloc.allocate(4096, s1);
  CHECK(c == a);
  alloc.release(b);
  alloc.release(c);
}

TEST_CASE("caching allocator: statistics, peaks and empty_cache", "[cuda][allocator]") {
  FakeDevice dev;
  auto alloc = make_allocator(dev);
  void* a = alloc.allocate(3000, nullptr);   // 3072
  void* b = alloc.allocate(5 * MiB, nullptr);  // 6 MiB
  auto s = alloc.stats();
  CHECK(s.bytes_in_use == 3072 + 6 * MiB);
  CHECK(s.bytes_requested == 3000 + 5 * MiB);
  CHECK(s.bytes_reserved == 3072 + 6 * MiB);
  CHECK(s.blocks_in_use == 2);
  CHECK(s.raw_allocs == 2);

  alloc.release(b);
  s = alloc.stats();
  CHECK(s.bytes_in_use == 3072);
  CHECK(s.bytes_reserved == 3072 + 6 * MiB);
  CHECK(s.bytes_cached == 6 * MiB);
  CHECK(s.blocks_cached == 1);
  CHECK(s.peak_bytes_in_use == 3072 + 6 * MiB);

  alloc.empty_cache();
  s = alloc.stats();
  CHECK(dev.free_sizes == std::vector<size_t>{6 * MiB});
  CHECK(dev.live.count(a) == 1);  // blocks in use are not touched
  CHECK(s.bytes_reserved == 3072);
  CHECK(s.bytes_cached == 0);
  CHECK(s.raw_frees == 1);
  CHECK(s.peak_bytes_reserved == 3072 + 6 * MiB);

  alloc.reset_peak_stats();
  CHECK(alloc.stats().peak_bytes_in_use == 3072);
  alloc.release(a);
  CHECK(alloc.stats().bytes_in_use == 0);
  CHECK(alloc.stats().bytes_requested == 0);
}

TEST_CASE("caching allocator: releasing a foreign pointer or twice is an error",
          "[cuda][allocator]") {
  FakeDevice dev;
  auto alloc = make_allocator(dev);
  int local = 0;
  CHECK_THROWS_AS(alloc.release(&local), Error);
  void* a = alloc.allocate(10, nullptr);
  alloc.release(a);
  const std::string msg = error_of([&] { alloc.release(a); });
  CHECK(msg.find("fake device") != std::string::npos);
  CHECK(alloc.stats().blocks_cached == 1);  // the failed release changed nothing
}

TEST_CASE("caching allocator: out of memory empties the cache and retries once",
          "[cuda][allocator]") {
  FakeDevice dev;
  auto alloc = make_allocator(dev);
  // A cached block that cannot serve the next request (other stream) holds memory.
  void* cached = alloc.allocate(8 * KiB, fake_stream(1));
  alloc.release(cached);

  SECTION("the retry succeeds") {
    dev.fail_next = 1;
    void* p = alloc.allocate(4 * KiB, fake_stream(2));
    CHECK(p != nullptr);
    auto s = alloc.stats();
    CHECK(s.oom_retries == 1);
    CHECK(dev.free_sizes == std::vector<size_t>{8 * KiB});  // the cache went first
    CHECK(s.bytes_cached == 0);
    CHECK(s.bytes_reserved == 4 * KiB);
    CHECK(s.raw_allocs == 2);
    alloc.release(p);
  }
  SECTION("capacity is freed by emptying the cache") {
    dev.capacity = 10 * KiB;  // 8 KiB cached + 4 KiB new does not fit, 4 KiB alone does
    void* p = alloc.allocate(4 * KiB, fake_stream(2));
    CHECK(alloc.stats().oom_retries == 1);
    CHECK(dev.held == 4 * KiB);
    alloc.release(p);
  }
  SECTION("a second failure throws a clear error and changes nothing") {
    void* kept = alloc.allocate(3 * MiB, nullptr);
    dev.fail_next = 2;
    const std::string msg = error_of([&] { alloc.allocate(5 * MiB, nullptr); });
    INFO(msg);
    CHECK(msg.find("fake device") == 0);
    CHECK(msg.find("out of memory") != std::string::npos);
    CHECK(msg.find(std::to_string(5 * MiB) + " bytes requested") != std::string::npos);
    CHECK(msg.find("6.00 MiB") != std::string::npos);  // the rounded size
    CHECK(msg.find("4.00 MiB reserved") != std::string::npos);  // what is still held
    CHECK(msg.find('\n') == std::string::npos);
    auto s = alloc.stats();
    CHECK(s.bytes_in_use == 4 * MiB);
    CHECK(s.blocks_in_use == 1);
    alloc.release(kept);
    // The allocator keeps working afterwards.
    void* p = alloc.allocate(5 * MiB, nullptr);
    CHECK(p != nullptr);
    alloc.release(p);
  }
}

TEST_CASE("caching allocator: the out-of-memory context is appended", "[cuda][allocator]") {
  FakeDevice dev;
  dev.capacity = 0;
  CachingAllocator alloc("fake device", dev.alloc_fn(), dev.free_fn(),
                         [] { return std::string("the device has 0 B free"); });
  const std::string msg = error_of([&] { alloc.allocate(1, nullptr); });
  CHECK(msg.find("; the device has 0 B free") != std::string::npos);
}

TEST_CASE("caching allocator: the destructor returns cached blocks", "[cuda][allocator]") {
  FakeDevice dev;
  {
    auto alloc = make_allocator(dev);
    alloc.release(alloc.allocate(100, nullptr));
    alloc.release(alloc.allocate(3 * MiB, nullptr));
    REQUIRE(dev.live.size() == 2);
  }
  CHECK(dev.live.empty());
}

TEST_CASE("caching allocator: concurrent allocation keeps the books straight",
          "[cuda][allocator]") {
  FakeDevice dev;
  auto alloc = make_allocator(dev);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<void*> mine;
      for (int i = 0; i < 2000; ++i) {
        if (mine.empty() || rng() % 3 != 0) {
          const size_t bytes = 1 + rng() % (4 * KiB);
          auto* p = static_cast<unsigned char*>(alloc.allocate(bytes, fake_stream(1 + t % 2)));
          // Another thread holding the same block would overwrite this tag.
          p[0] = static_cast<unsigned char>(t);
          mine.push_back(p);
        } else {
          auto* p = static_cast<unsigned char*>(mine.back());
          if (p[0] != static_cast<unsigned char>(t)) ++failures;
          mine.pop_back();
          alloc.release(p);
        }
      }
      for (void* p : mine) alloc.release(p);
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == 0);
  auto s = alloc.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.blocks_in_use == 0);
  size_t held = 0;
  for (auto& kv : dev.live) held += kv.second;
  CHECK(s.bytes_reserved == held);
  CHECK(s.bytes_cached == held);
  CHECK(s.blocks_cached == dev.live.size());
}

TEST_CASE("DeviceBuffer returns its block and moves ownership", "[cuda][allocator]") {
  FakeDevice dev;
  auto alloc = make_allocator(dev);
  const auto stream = fake_stream(7);
  {
    DeviceBuffer a(alloc, 1000, stream);
    CHECK(a.size() == 1000);
    CHECK(a.stream() == stream);
    CHECK(!a.empty());
    CHECK(alloc.stats().blocks_in_use == 1);

    DeviceBuffer b(std::move(a));
    CHECK(a.empty());
    CHECK(a.size() == 0);
    CHECK(b.size() == 1000);
    CHECK(alloc.stats().blocks_in_use == 1);

    DeviceBuffer c(alloc, 5000, stream);
    void* c_ptr = c.data();
    c = std::move(b);  // c's old block goes back to the cache
    CHECK(alloc.stats().blocks_in_use == 1);
    CHECK(alloc.stats().blocks_cached == 1);
    CHECK(c.size() == 1000);
    DeviceBuffer d(alloc, 4500, stream);
    CHECK(d.data() == c_ptr);
  }
  CHECK(alloc.stats().blocks_in_use == 0);
  CHECK(alloc.stats().blocks_cached == 2);
  DeviceBuffer empty;
  CHECK(empty.empty());
  DeviceBuffer zero(alloc, 0, stream);
  CHECK(zero.empty());
}

// ---------------------------------------------------------------------------------------------
// Host-only: error reporting

TEST_CASE("SPADE_CUDA_CHECK names the operation, the call site and the library error",
          "[cuda][check]") {
  auto fails = [] { return cudaErrorInvalidValue; };
  const int line = __LINE__ + 1;
  const std::string msg = error_of([&] { SPADE_CUDA_CHECK(fails(), "copying the weights"); });
  INFO(msg);
  CHECK(msg.find("CUDA error while copying the weights") == 0);
  CHECK(msg.find("fails()") != std::string::npos);
  CHECK(msg.find("tests/cuda_test_device.cpp:" + std::to_string(line)) != std::string::npos);
  CHECK(msg.find("cudaErrorInvalidValue") != std::string::npos);
  CHECK(msg.find('\n') == std::string::npos);
  // Without a driver every runtime call, this one included, reports the missing driver.
  if (cuda_available()) CHECK(cudaGetLastError() == cudaSuccess);

  SPADE_CUDA_CHECK(cudaSuccess, "never fails");  // success is silent

  const std::string blas = error_of([] {
    SPADE_CUDA_CHECK(CUBLAS_STATUS_NOT_INITIALIZED, std::string("running a GEMM"));
  });
  CHECK(blas.find("cuBLAS error while running a GEMM") == 0);
  CHECK(blas.find("CUBLAS_STATUS_NOT_INITIALIZED") != std::string::npos);

  const std::string solver = error_of([] {
    SPADE_CUDA_CHECK(CUSOLVER_STATUS_INVALID_VALUE, "factorising");
  });
  CHECK(solver.find("cuSOLVER error while factorising") == 0);
  CHECK(solver.find("CUSOLVER_STATUS_INVALID_VALUE") != std::string::npos);
  const std::string unknown = error_of([] {
    SPADE_CUDA_CHECK(static_cast<cusolverStatus_t>(999), "factorising");
  });
  CHECK(unknown.find("999") != std::string::npos);
}

TEST_CASE("the description is only built when the call fails", "[cuda][check]") {
  int built = 0;
  auto describe_op = [&] {
    ++built;
    return std::string("x");
  };
  SPADE_CUDA_CHECK(cudaSuccess, describe_op());
  CHECK(built == 0);
  CHECK(error_of([&] { SPADE_CUDA_CHECK(cudaErrorInvalidValue, describe_op()); }) != "<no spade::Error thrown>");
  CHECK(built == 1);
}

// ---------------------------------------------------------------------------------------------
// Device discovery: consistent on every machine

TEST_CASE("device discovery never throws, and missing devices are clear errors", "[cuda]") {
  int count = -1;
  REQUIRE_NOTHROW(count = cuda_device_count());
  CHECK(count >= 0);
  CHECK(cuda_available() == (count > 0));

  const std::string msg = error_of([&] { cuda_device_info(count); });
  INFO(msg);
  CHECK(msg.find("CUDA device " + std::to_string(count)) == 0);
  CHECK_THROWS_AS(cuda_device_info(-1), Error);
  if (count == 0) {
    CHECK(msg.find("no CUDA device") != std::string::npos);
    CHECK_THROWS_AS(CudaContext(0), Error);
    CHECK_THROWS_AS(cuda_allocator(0), Error);
  } else {
    CHECK(msg.find("does not exist") != std::string::npos);
    CHECK(cudaGetLastError() == cudaSuccess);  // the failed lookup left no error behind
  }
}

// ---------------------------------------------------------------------------------------------
// GPU tests

#define SPADE_REQUIRE_GPU()                         \
  do {                                              \
    if (!cuda_available()) {                        \
      WARN("no CUDA device: GPU test skipped");     \
      return;                                       \
    }                                               \
  } while (0)

TEST_CASE("GPU: device information", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  for (int i = 0; i < cuda_device_count(); ++i) {
    const CudaDeviceInfo info = cuda_device_info(i);
    INFO(describe(info));
    CHECK(info.index == i);
    CHECK(!info.name.empty());
    CHECK(info.total_memory > 0);
    CHECK(info.free_memory > 0);
    CHECK(info.free_memory <= info.total_memory);
    CHECK(info.cc_major >= 5);
    CHECK(info.sm_count > 0);
  }
}

TEST_CASE("GPU: copy round trip through cached device memory", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-10.f, 10.f);
  for (size_t n : {size_t{1}, size_t{1000}, size_t{300000}, size_t{3} << 20}) {
    std::vector<float> host(n);
    for (float& v : host) v = dist(rng);
    DeviceBuffer dev = copy_to_device(host.data(), n);
    CHECK(dev.size() == n * sizeof(float));
    // Through a second device buffer, so the data really travels on the device.
    DeviceBuffer other = device_alloc(n * sizeof(float));
    SPADE_CUDA_CHECK(cudaMemcpy(other.data(), dev.data(), n * sizeof(float),
                                cudaMemcpyDeviceToDevice),
                     "device copy");
    CHECK(copy_to_host(other) == host);
  }
  std::vector<float> small(4);
  DeviceBuffer tiny = copy_to_device(small.data(), 4);
  std::vector<float> out(8);
  CHECK_THROWS_AS(copy_to_host(tiny, out.data(), 8), Error);
  CHECK_THROWS_AS(copy_to_device(out.data(), 8, tiny), Error);
}

TEST_CASE("GPU: the device allocator reuses blocks and reports out of memory", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CachingAllocator& alloc = cuda_allocator();
  void* first = nullptr;
  {
    DeviceBuffer a = device_alloc(12345);
    first = a.data();
  }
  const auto before = alloc.stats();
  {
    DeviceBuffer b = device_alloc(12000);
    CHECK(b.data() == first);
  }
  const auto after = alloc.stats();
  CHECK(after.cache_hits == before.cache_hits + 1);
  CHECK(after.raw_allocs == before.raw_allocs);

  alloc.empty_cache();
  CHECK(alloc.stats().bytes_cached == 0);

  const size_t absurd = size_t{1} << 50;  // 1 PiB
  const std::string msg = error_of([&] { device_alloc(absurd); });
  INFO(msg);
  CHECK(msg.find("out of memory") != std::string::npos);
  CHECK(msg.find("free of") != std::string::npos);
  CHECK(cudaGetLastError() == cudaSuccess);
  DeviceBuffer still_works = device_alloc(1024);
  CHECK(!still_works.empty());
}

TEST_CASE("GPU: streams and the context's library handles", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext ctx(0);
  CHECK(ctx.stream() != nullptr);

  const size_t n = 5000;
  std::vector<float> x(n), y(n);
  for (size_t i = 0; i < n; ++i) {
    x[i] = 0.5f * static_cast<float>(i % 97);
    y[i] = static_cast<float>(i % 13) - 6.f;
  }
  DeviceBuffer dx = ctx.allocate(n * sizeof(float));
  DeviceBuffer dy = ctx.allocate(n * sizeof(float));
  CHECK(dx.stream() == ctx.stream());
  copy_to_device(x.data(), n, dx);
  copy_to_device(y.data(), n, dy);

  cublasHandle_t blas = ctx.cublas();
  CHECK(ctx.cublas() == blas);  // created once
  cudaStream_t bound = nullptr;
  SPADE_CUDA_CHECK(cublasGetStream(blas, &bound), "reading the cuBLAS stream");
  CHECK(bound == ctx.stream());
  const float alpha = 2.f;
  SPADE_CUDA_CHECK(cublasSaxpy(blas, static_cast<int>(n), &alpha, dx.data_as<float>(), 1,
                               dy.data_as<float>(), 1),
                   "saxpy");
  const std::vector<float> got = copy_to_host(dy);
  for (size_t i = 0; i < n; ++i) {
    INFO(i);
    REQUIRE(got[i] == alpha * x[i] + y[i]);  // exact: small integers and halves
  }

  cusolverDnHandle_t solver = ctx.cusolver();
  SPADE_CUDA_CHECK(cusolverDnGetStream(solver, &bound), "reading the cuSOLVER stream");
  CHECK(bound == ctx.stream());

  // A separate stream: an asynchronous memset is visible after synchronising.
  CudaStream stream;
  DeviceBuffer z(cuda_allocator(), n * sizeof(float), stream.get());
  copy_to_device(x.data(), n, z);
  SPADE_CUDA_CHECK(cudaMemsetAsync(z.data(), 0, n * sizeof(float), stream.get()), "memset");
  stream.synchronize();
  CHECK(copy_to_host(z) == std::vector<float>(n, 0.f));

  CudaContext moved = std::move(ctx);
  CHECK(moved.cublas() == blas);
}
