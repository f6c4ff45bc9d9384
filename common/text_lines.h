// Reading text files line by line the same way everywhere (eval, calibration,
// the load tester's datasets): LF or CRLF line ends.
#ifndef LATENTKV_COMMON_TEXT_LINES_H_
#define LATENTKV_COMMON_TEXT_LINES_H_

#include <istream>
#include <string>

namespace latentkv {

// std::getline that also drops the '\r' of a CRLF line end, so a Windows
// file gives the same lines (and tokens) as its Unix copy. A lone '\r'
// inside a line is kept.
bool GetTextLine(std::istream& in, std::string* line);

}  // namespace latentkv

#endif  // LATENTKV_COMMON_TEXT_LINES_H_
