// Waiting for SIGINT/SIGTERM in server mains.
#ifndef LATENTKV_COMMON_SIGNALS_H_
#define LATENTKV_COMMON_SIGNALS_H_

namespace latentkv {

// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts
// afterwards. Call first thing in main().
void BlockTerminationSignals();
// Waits until SIGINT or SIGTERM arrives; returns its number.
int WaitForTerminationSignal();
// The same for at most `timeout_ms`; 0 when none arrived.
int WaitForTerminationSignalFor(int timeout_ms);

// Makes the kernel send this process SIGTERM when its parent (`parent_pid`,
// the process that started it) exits, even by SIGKILL (PR_SET_PDEATHSIG).
// False when the parent is already gone (the caller should exit).
bool ExitWithParent(int parent_pid);

}  // namespace latentkv

#endif  // LATENTKV_COMMON_SIGNALS_H_
