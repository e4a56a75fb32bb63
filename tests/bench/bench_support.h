// Shared fixtures of the benchmark binaries: synthetic people and the
// vault's components opened directly (no service façade).
#pragma once

#include <sodium.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "custos/audit/audit_log.h"
#include "custos/crypto/keyring.h"
#include "custos/crypto/signer.h"
#include "custos/records/records.h"
#include "custos/service/service.h"
#include "custos/store/key_table.h"
#include "custos/store/sqlcipher_store.h"
#include "test_support.h"

namespace custos::bench {

using testing::TempDir;
using testing::TestVault;

constexpr int kBatch = 1000;

inline std::string padded(const std::string& s) {  // ~48 bytes per value
  std::string out = s;
  while (out.size() < 44) out += "-pad";
  return out;
}

inline records::FieldMap person(int i) {
  const std::string n = std::to_string(i);
  return {{"given_name", padded("Given" + n)},
          {"family_name", padded("Family" + n)},
          {"email", "user" + n + ".benchmark.address@example-mail.com"},
          {"external_id", padded("EXT-" + n)},
          {"postal_address", padded(n + " Benchmark Street, Springfield")},
          {"occupation", padded("Occupation " + n)}};
}

// The vault's components without the service façade, as an embedding would use them.
struct Core {
  TestVault vault;
  std::unique_ptr<crypto::Keyring> keyring;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<store::KeyTable> keys;
  records::Schema schema;
  std::unique_ptr<crypto::Signer> signer;
  std::unique_ptr<audit::AuditLog> audit;
  std::unique_ptr<records::Records> records;
  audit::Actor actor{"bench", "admin", "", "administration", "bench"};

  explicit Core(audit::Options audit_options = {}) {
    vault.service.reset();
    const auto dir = vault.data_dir();
    keyring = crypto::Keyring::open(dir / "keys", std::nullopt);
    store = store::open_sqlcipher(dir / "custos.db", store::read_db_key(*keyring, dir / "keys"));
    keys = std::make_unique<store::KeyTable>(*store, *keyring);
    schema = records::Schema::load(dir / "policies" / "schema.yaml");
    signer = std::make_unique<crypto::Signer>(keys->named_key("audit:signing"));
    audit = std::make_unique<audit::AuditLog>(*store, *signer, audit_options);
    records = std::make_unique<records::Records>(*store, *keys, schema, *audit);
  }

  // Reads record their entries through the audit journal, as in custosd.
  void enable_journal(audit::JournalOptions options = {}) {
    if (!audit->enable_journal(vault.data_dir() / "audit-journal", keys->named_key("audit:journal"), options))
      throw std::runtime_error("the audit journal is held by another process");
  }
};


// Creates `count` benchmark people (person(0) ...) in batches of kBatch.
inline std::vector<records::SubjectId> populate(Core& core, int count) {
  std::vector<records::SubjectId> ids;
  for (int base = 0; base < count; base += kBatch) {
    std::vector<records::FieldMap> people;
    for (int i = base; i < std::min(count, base + kBatch); ++i) people.push_back(person(i));
    const auto got = core.records->create(core.actor, people);
    ids.insert(ids.end(), got.begin(), got.end());
  }
  return ids;
}

// Closes the components of `core` and opens the service façade on the same
// data directory (benchmarks populate directly, then measure the service).
inline std::unique_ptr<service::Service> reopen_as_service(Core& core) {
  core.records.reset();
  core.audit.reset();
  core.signer.reset();
  core.keys.reset();
  core.store.reset();
  core.keyring.reset();
  service::OpenOptions o;
  o.data_dir = core.vault.data_dir();
  return service::Service::open(o);
}

// Peak resident set since the last reset_peak_rss(), in MiB (Linux VmHWM).
inline void reset_peak_rss() {
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}
inline double status_mib(const char* key) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  double kb = 0;
  const std::size_t n = std::strlen(key);
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, key, n) == 0) kb = std::atof(line + n + 1);
  std::fclose(f);
  return kb / 1024.0;
}
inline double peak_rss_mib() { return status_mib("VmHWM"); }
inline double rss_mib() { return status_mib("VmRSS"); }

}  // namespace custos::bench
