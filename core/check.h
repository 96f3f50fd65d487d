#pragma once
// Two error channels (see DESIGN.md):
//  - programmer errors: TANDEM_CHECK(expr) aborts with expression, file and line;
//  - user input errors: throw tandem::UserError whose message names the field and the value.
// Library code never calls exit().
#include <sstream>
#include <stdexcept>
#include <string>

namespace tandem {

// A mistake in what the user gave us (flag, JSON field, layout). Message names field and value.
class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A UserError that every rank of a run raises at the same point (the ranks agreed on it), so no
// rank is left waiting in a collective and the run may end normally instead of aborting the
// world. report() is true on the one rank that prints it (the lowest rank that met the error).
class AgreedUserError : public UserError {
 public:
  AgreedUserError(const std::string& what, bool report) : UserError(what), report_(report) {}
  bool report() const { return report_; }

 private:
  bool report_;
};

[[noreturn]] void check_failed(const char* expr, const char* file, int line, const std::string& msg);

// Builds "field 'name' = value: reason" consistently everywhere.
template <typename T>
std::string field_message(const std::string& field, const T& value, const std::string& reason) {
  std::ostringstream os;
  os << field << " = " << value << ": " << reason;
  return os.str();
}

template <typename T>
[[noreturn]] void throw_field_error(const std::string& field, const T& value, const std::string& reason) {
  throw UserError(field_message(field, value, reason));
}

}  // namespace tandem

#define TANDEM_CHECK(expr)                                                  \
  do {                                                                      \
    if (!(expr)) ::tandem::check_failed(#expr, __FILE__, __LINE__, "");     \
  } while (0)

#define TANDEM_CHECK_MSG(expr, msg)                                         \
  do {                                                                      \
    if (!(expr)) {                                                          \
      std::ostringstream tandem_check_os_;                                  \
      tandem_check_os_ << msg;                                              \
      ::tandem::check_failed(#expr, __FILE__, __LINE__, tandem_check_os_.str()); \
    }                                                                       \
  } while (0)
