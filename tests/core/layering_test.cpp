// The layering also covers tables: each module's SQL names only the tables
// it owns (issue 16). Ownership comes from the modules' own migrations
// (service::schema()), so a new table is covered the day it is created; the
// sources are read from the tree, so a new file is covered too. A module
// that needs another's data calls that module's API (records/storage.h,
// consent/storage.h, access/storage.h, audit/storage.h).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "custos/service/schema.h"

namespace custos {
namespace {

namespace fs = std::filesystem;

// Source directory (src/<dir>) of each schema module.
const std::map<std::string, std::string> kModuleDir = {
    {"keys", "store"}, {"audit", "audit"}, {"access", "access"}, {"records", "records"},
    {"consent", "consent"}, {"dsr", "dsr"}, {"breach", "breach"}, {"outbox", "outbox"}, {"import", "service"}, {"privacy", "service"}, {"cluster", "service"},
};

// Known exceptions, each with its reason and its way out. None today; keep
// it that way.
const std::set<std::pair<std::string, std::string>> kAllowed = {};

// Table -> owning source directory, from the migrations' DDL.
std::map<std::string, std::string> table_owners() {
  std::map<std::string, std::string> owner = {{"schema_versions", "store"}};  // the runner's own
  const std::regex created(R"((?:CREATE TABLE(?: IF NOT EXISTS)?|RENAME TO)\s+(\w+))");
  for (const auto& m : service::schema()) {
    for (const auto& step : m.steps)
      for (auto sql : step.statements) {
        const std::string text(sql);
        for (std::sregex_iterator it(text.begin(), text.end(), created), end; it != end; ++it)
          owner[(*it)[1]] = kModuleDir.at(std::string(m.module));
      }
  }
  return owner;
}

// The text of a source's string literals, adjacent literals joined (SQL is
// often split over several), comment lines left out.
std::string literals_of(const std::string& source) {
  std::string code;
  std::istringstream lines(source);
  for (std::string line; std::getline(lines, line);) {
    const auto first = line.find_first_not_of(" \t");
    if (first != std::string::npos && line.compare(first, 2, "//") == 0) continue;
    code += line + "\n";
  }
  std::string out;
  const std::regex literal(R"re("((?:[^"\\\n]|\\.)*)")re");
  for (std::sregex_iterator it(code.begin(), code.end(), literal), end; it != end; ++it) out += (*it)[1].str();
  out += ' ';
  return out;
}

// Tables that SQL in `source` names after FROM / JOIN / INTO / UPDATE / TABLE / ON
// (comma-separated FROM lists included).
std::set<std::string> tables_named(const std::string& source) {
  const std::string sql = literals_of(source);
  std::set<std::string> out;
  const std::regex ref(R"(\b(?:FROM|JOIN|INTO|UPDATE|TABLE|ON|EXISTS)\s+(\w+)((?:\s+\w+)?(?:\s*,\s*\w+(?:\s+\w+)?)*))");
  const std::regex more(R"(,\s*(\w+))");
  for (std::sregex_iterator it(sql.begin(), sql.end(), ref), end; it != end; ++it) {
    out.insert((*it)[1]);
    const std::string tail = (*it)[2];
    for (std::sregex_iterator m(tail.begin(), tail.end(), more); m != end; ++m) out.insert((*m)[1]);
  }
  return out;
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every violation in the tree: "<dir>/<file>: names <table> (owned by <dir>)".
std::vector<std::string> violations(const fs::path& src, const std::map<std::string, std::string>& owner) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(src)) {
    const auto ext = e.path().extension();
    if (!e.is_regular_file() || (ext != ".cpp" && ext != ".h")) continue;
    const std::string rel = fs::relative(e.path(), src).generic_string();
    const std::string dir = rel.substr(0, rel.find('/'));
    for (const auto& table : tables_named(read(e.path()))) {
      const auto it = owner.find(table);
      if (it == owner.end() || it->second == dir || kAllowed.count({rel, table})) continue;
      out.push_back(rel + ": names " + table + " (owned by src/" + it->second + ")");
    }
  }
  return out;
}

TEST(Layering, EachModulesSqlNamesOnlyItsOwnTables) {
  const auto owner = table_owners();
  // The ownership the issue lists, as the migrations declare it.
  EXPECT_EQ(owner.at("subjects"), "records");
  EXPECT_EQ(owner.at("consent_state"), "consent");
  EXPECT_EQ(owner.at("tokens"), "access");
  EXPECT_EQ(owner.at("audit_entries"), "audit");
  EXPECT_EQ(owner.at("dsr_subjects"), "dsr");
  EXPECT_EQ(owner.at("breach_affected"), "breach");
  EXPECT_EQ(owner.at("wrapped_keys"), "store");
  const auto found = violations(fs::path(CUSTOS_SOURCE_DIR) / "src", owner);
  EXPECT_TRUE(found.empty()) << [&] {
    std::string all;
    for (const auto& v : found) all += "\n  " + v;
    return "SQL naming another module's table:" + all;
  }();
}

// The check itself: the couplings issue 16 found are caught.
TEST(Layering, TheCheckCatchesCrossModuleSql) {
  EXPECT_EQ(tables_named(R"(tx->scalar("SELECT count(*) FROM tokens WHERE name = ?", {p});)"),
            std::set<std::string>{"tokens"});
  const auto split = tables_named("  std::string sql =\n      \"SELECT s.id FROM consent_state c\"\n"
                                  "      \" JOIN subjects s ON s.id = c.subject_id\";\n");
  EXPECT_TRUE(split.count("consent_state") && split.count("subjects"));
  EXPECT_EQ(tables_named(R"(tx->exec("UPDATE subjects SET objected = 1 WHERE id = ?", {subject});)"),
            std::set<std::string>{"subjects"});
  EXPECT_EQ(tables_named(R"(tx.exec("SELECT a.x FROM audit_entries a, tokens t WHERE 1");)"),
            (std::set<std::string>{"audit_entries", "tokens"}));
  // Comments and non-SQL text are not SQL.
  EXPECT_TRUE(tables_named("// reads FROM subjects\nout[\"subjects\"] = n; msg(\"orders from tokens\");").empty());
}

}  // namespace
}  // namespace custos
