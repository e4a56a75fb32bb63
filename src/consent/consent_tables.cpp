// The consent ledger's tables (custos/consent/storage.h).
#include <algorithm>
#include <limits>

#include "custos/consent/storage.h"

namespace custos::consent {

store::ModuleMigrations migrations() {
  // `legacy_global`: the global schema version (1..9) that applied each step.
  return {"consent",
          {
              {1,
               2,
               {
                   // The consent ledger: append-only events, and the derived current
                   // state per subject x purpose x channel (materialised).
                   "CREATE TABLE consent_events (id INTEGER PRIMARY KEY, subject_id BLOB NOT NULL,"
                   " purpose TEXT NOT NULL, channel TEXT NOT NULL, event TEXT NOT NULL, status TEXT NOT NULL,"
                   " at INTEGER NOT NULL, recorded_at INTEGER NOT NULL, source TEXT NOT NULL,"
                   " lawful_basis TEXT NOT NULL, notice_version TEXT NOT NULL, expires_at INTEGER,"
                   " principal TEXT NOT NULL, proof TEXT NOT NULL, confirm_hash BLOB, confirm_expires INTEGER,"
                   " confirmed_by INTEGER)",
                   "CREATE INDEX consent_events_by_subject ON consent_events (subject_id, id)",
                   "CREATE UNIQUE INDEX consent_events_by_confirm ON consent_events (confirm_hash)",
                   "CREATE TABLE consent_state (subject_id BLOB NOT NULL, purpose TEXT NOT NULL,"
                   " channel TEXT NOT NULL, state TEXT NOT NULL, since INTEGER NOT NULL, expires_at INTEGER,"
                   " event_id INTEGER NOT NULL, PRIMARY KEY (subject_id, purpose, channel))",
                   "CREATE INDEX consent_state_by_purpose ON consent_state (purpose, channel, state, subject_id)",
               }},
          }};
}

std::vector<records::SubjectId> granted_subjects(store::Transaction& tx, const std::string& purpose,
                                                 const std::string& channel, std::int64_t now_us,
                                                 const records::SubjectId& after, std::size_t limit) {
  std::vector<records::SubjectId> out;
  tx.exec("SELECT subject_id FROM consent_state WHERE purpose = ? AND channel = ? AND state = 'granted'"
          " AND (expires_at IS NULL OR expires_at > ?) AND subject_id > ? ORDER BY subject_id LIMIT ?",
          {purpose, channel, now_us, store::Blob(after), static_cast<std::int64_t>(limit)},
          [&](const store::Row& r) {
            records::SubjectId id{};
            if (r.blob(0).size() != id.size()) return;
            std::copy(r.blob(0).begin(), r.blob(0).end(), id.begin());
            out.push_back(id);
          });
  return out;
}

std::vector<GrantCounts> granted_over_time(store::Transaction& tx, const std::vector<std::int64_t>& ends) {
  std::vector<GrantCounts> out(ends.size());
  std::map<std::string, bool> granted;  // subject|purpose|channel -> granted now
  GrantCounts counts;
  std::size_t next = 0;
  auto snapshot_until = [&](std::int64_t at) {
    while (next < ends.size() && ends[next] < at) out[next++] = counts;
  };
  tx.exec("SELECT subject_id, purpose, channel, event, at FROM consent_events WHERE status = 'confirmed'"
          " ORDER BY at, id",
          {}, [&](const store::Row& r) {
            const std::int64_t at = r.integer(4);
            snapshot_until(at);
            const auto sid = r.blob(0);
            const std::string purpose(r.text(1)), channel(r.text(2));
            std::string key(reinterpret_cast<const char*>(sid.data()), sid.size());
            ((key += '|') += purpose) += '|' + channel;
            const bool now_granted = r.text(3) == "granted";
            bool& was = granted[key];
            if (was != now_granted) counts[{purpose, channel}] += now_granted ? 1 : -1;
            was = now_granted;
          });
  snapshot_until(std::numeric_limits<std::int64_t>::max());
  return out;
}

}  // namespace custos::consent
