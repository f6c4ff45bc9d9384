// Publishing a server's bound address to a file, for launchers and tests
// that start servers on ephemeral ports.
#ifndef LATENTKV_COMMON_ADDRESS_FILE_H_
#define LATENTKV_COMMON_ADDRESS_FILE_H_

#include <string>

namespace latentkv {

// Writes "address\n" to `path` atomically (a temporary file renamed into
// place), so a reader never sees a partial line. No-op when path is empty.
void WriteAddressFile(const std::string& path, const std::string& address);

}  // namespace latentkv

#endif  // LATENTKV_COMMON_ADDRESS_FILE_H_
