#pragma once
// One exception type for every user-facing failure: the message is a single line naming the
// file or object and the problem; the command line prints it and exits non-zero.
#include <stdexcept>
#include <string>

namespace spade {

struct Error : std::runtime_error {
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Text taken from an untrusted file, made safe for a one-line message: control bytes (and, with
// escape_high, bytes >= 0x80, e.g. invalid UTF-8) are shown as \xNN.
std::string printable(const std::string& s, bool escape_high = false);

}  // namespace spade
