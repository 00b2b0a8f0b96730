#pragma once
// A caught SIGINT or SIGTERM (formats/output_transaction.h installs the handler and records the
// signal here). Long computations check it at safe points, so that a run told to stop does so
// within a fraction of a second and its output transaction can clean up: every node of a forward
// or backward pass, every progress update and every write.
namespace spade {

// Async-signal-safe: records `sig` (the first one wins).
void note_interrupt(int sig);
// The signal recorded (0 = none).
int interrupted_signal();
// Throws spade::Error("interrupted by SIGTERM") once a signal has been recorded; inside an OpenMP
// parallel region it does nothing (an exception leaving one aborts the process: the OBC solver's
// progress is reported from such a region), and the next check outside throws.
void throw_if_interrupted();

}  // namespace spade
