#include "custos/util/process.h"

#include <sys/prctl.h>
#include <sys/resource.h>

namespace custos::util {

bool harden_process() {
  bool ok = true;
  const rlimit none{0, 0};
  ok &= ::setrlimit(RLIMIT_CORE, &none) == 0;
  ok &= ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0;
  return ok;
}

}  // namespace custos::util
