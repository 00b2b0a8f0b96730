#include "engine/interrupt.h"

#include <omp.h>

#include <csignal>
#include <string>

#include "engine/error.h"

namespace spade {

namespace {
volatile std::sig_atomic_t g_signal = 0;
}  // namespace

void note_interrupt(int sig) {
  if (!g_signal) g_signal = sig;
}

int interrupted_signal() { return g_signal; }

void throw_if_interrupted() {
  if (omp_in_parallel()) return;  // an exception leaving a parallel region aborts the process
  const int sig = g_signal;
  if (sig) throw Error(std::string("interrupted by ") + (sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal"));
}

}  // namespace spade
