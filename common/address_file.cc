#include "common/address_file.h"

#include <cstdio>
#include <fstream>

namespace latentkv {

void WriteAddressFile(const std::string& path, const std::string& address) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << address << "\n";
  }
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace latentkv
