#pragma once
// One output transaction per command (docs/reliability.md, Outputs): while one is active, every
// file write_file_atomic is asked for is staged beside its destination under a hidden name
// (`.NAME.spade-PID.staged`) and only published, by renames, when the run commits. A run that
// fails, runs out of disk or is interrupted (SIGINT, SIGTERM) removes what it staged and the
// directories it made: nothing of it remains and what was there before is untouched. Two runs
// writing into one directory are serialised by a lock on the directory, never mixed. Files a
// killed run (SIGKILL) staged are recognised by their dead PID and removed by the next run that
// writes there.
#include <string>
#include <utility>
#include <vector>

#include "engine/interrupt.h"  // throw_if_interrupted, interrupted_signal

namespace spade {

class OutputTransaction {
 public:
  OutputTransaction();  // becomes the process's active transaction (one at a time)
  ~OutputTransaction();  // without commit(): removes everything staged and the directories made
  OutputTransaction(const OutputTransaction&) = delete;
  OutputTransaction& operator=(const OutputTransaction&) = delete;
  // Publishes every staged file (renames, in the order they were written) and releases the locks.
  void commit();
};

// Writes inside this scope are published at once rather than staged: checkpoints that a later
// --resume reads, and reports a stopped run must keep (tune's per-method files).
class PublishNow {
 public:
  PublishNow();
  ~PublishNow();
  PublishNow(const PublishNow&) = delete;
  PublishNow& operator=(const PublishNow&) = delete;
};

// SIGINT and SIGTERM: before anything is staged the process ends at once, as the signal would end
// it; afterwards the run stops at its next pass node, progress update or write (engine/interrupt.h), the
// transaction cleans up, and the command exits with 128 + the signal's number. A second signal
// ends it at once.
void install_interrupt_handlers();

namespace detail {
// Called by write_file_atomic: stages the bytes when a transaction is active and no PublishNow
// scope is; returns false when the caller should write the file itself.
bool stage_write(const std::string& path, const void* data, size_t size);
// Marks a write in progress for the signal handler (a temporary file may exist).
void begin_write();
void end_write();
}  // namespace detail

}  // namespace spade
