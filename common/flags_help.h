// --help for the project's binaries. Abseil's default --help lists only flags
// defined in a file named after the program (latentkv.cc, ...), so ours,
// defined in main.cc and in library flag files, printed "No flags matched".
#ifndef LATENTKV_COMMON_FLAGS_HELP_H_
#define LATENTKV_COMMON_FLAGS_HELP_H_

namespace latentkv {

// Call before absl::ParseCommandLine: --help and --helpshort then list every
// flag defined in this project's sources (not Abseil's or gRPC's own), each
// with its default; --helpfull still lists all.
void ConfigureFlagsHelp();

}  // namespace latentkv

#endif  // LATENTKV_COMMON_FLAGS_HELP_H_
