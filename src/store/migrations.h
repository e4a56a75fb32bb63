// Versioned schema migrations, in portable SQL (see store.h). Each step runs
// in its own transaction together with the bump of the schema version, so a
// crash leaves the database at one version or the next, never between.
#pragma once

#include <string_view>
#include <vector>

namespace custos::store {

struct Migration {
  int version;
  std::vector<std::string_view> statements;
};

const std::vector<Migration>& migrations();

}  // namespace custos::store
