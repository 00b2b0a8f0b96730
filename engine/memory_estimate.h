#pragma once
// How much memory a batch will take, known before anything is allocated: the commands refuse a
// --batch whose estimate exceeds --max-memory instead of running into swap or the OOM killer
// halfway through. The estimate follows the executor's own rules (executor.cpp): a forward pass
// frees each activation after its last consumer, a forward + backward pass keeps every
// activation and frees each gradient once its node has passed it on.
#include <cstdint>
#include <string>

#include "engine/graph.h"

namespace spade {

enum class PassKind {
  Forward,          // inference: activations freed as they die
  ForwardBackward,  // gradients: every activation kept, plus the live gradients
};

struct MemoryEstimate {
  int64_t per_image = 0;  // bytes that grow with the batch (activations, gradients)
  int64_t fixed = 0;      // bytes that do not (weights, their gradients, per-thread convolution scratch)
  int64_t bytes(int64_t batch) const { return fixed + batch * per_image; }
};

// The peak of one pass of `g` at its input size (g.input_chw) with `threads` CPU threads.
MemoryEstimate estimate_pass_memory(const Graph& g, PassKind kind, int threads);

// "8G", "512M", "1.5GiB", "2000000" (bytes) -> bytes; throws Error naming `what` for anything else.
int64_t parse_size(const std::string& text, const std::string& what);

// The host memory a run may use: --max-memory when given (set_host_memory_limit, with the words that
// name it in errors), else 80% of the machine's RAM. Work whose size follows from an input file rather
// than from --batch (decoding an image, resizing and cropping it) checks its need against it before
// allocating, so a small file cannot make a run take gigabytes.
void set_host_memory_limit(int64_t bytes, const std::string& source);
// Throws Error "<what> needs about N, more than <source>" when `bytes` exceeds the limit; nothing
// when the limit is unknown (no --max-memory and the RAM size unreadable).
void check_host_memory(double bytes, const std::string& what);

}  // namespace spade
