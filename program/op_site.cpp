// Site names (op_site.h).
#include "program/op_site.h"

namespace tandem {

const char* to_string(Site site) {
  switch (site) {
    case Site::None: return "";
#define TANDEM_SITE_NAME(name, text) \
  case Site::name: return text;
    TANDEM_OP_SITES(TANDEM_SITE_NAME)
#undef TANDEM_SITE_NAME
  }
  return "?";
}

}  // namespace tandem
