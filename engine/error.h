#pragma once
// One exception type for every user-facing failure: the message is a single line naming the
// file or object and the problem; the command line prints it and exits non-zero.
#include <stdexcept>
#include <string>

namespace spade {

struct Error : std::runtime_error {
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

}  // namespace spade
