// Waiting for SIGINT/SIGTERM in server mains.
#ifndef LATENTKV_COMMON_SIGNALS_H_
#define LATENTKV_COMMON_SIGNALS_H_

namespace latentkv {

// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts
// afterwards. Call first thing in main().
void BlockTerminationSignals();
// Waits until SIGINT or SIGTERM arrives; returns its number.
int WaitForTerminationSignal();

}  // namespace latentkv

#endif  // LATENTKV_COMMON_SIGNALS_H_
