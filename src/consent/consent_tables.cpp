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
  // subject|purpose|channel -> the grant in force (its number), 0 if none.
  std::map<std::string, std::uint64_t> in_force;
  // Grant expiries still ahead: expires_at -> (key, grant number). A grant
  // stops counting when its expiry is reached (granted_subjects' rule:
  // granted while expires_at > now), unless a later event replaced it.
  std::multimap<std::int64_t, std::pair<std::string, std::uint64_t>> expiries;
  std::uint64_t grants = 0;
  GrantCounts counts;
  std::size_t next = 0;
  std::map<std::string, std::pair<std::string, std::string>> purpose_channel;  // key -> (purpose, channel)
  auto lapse = [&](std::int64_t at) {
    while (!expiries.empty() && expiries.begin()->first <= at) {
      const auto node = expiries.extract(expiries.begin());
      const auto& [key, grant] = node.mapped();
      auto it = in_force.find(key);
      if (it != in_force.end() && it->second == grant) {
        it->second = 0;
        --counts[purpose_channel.at(key)];
      }
    }
  };
  auto snapshot_until = [&](std::int64_t at) {  // the ends before `at`
    while (next < ends.size() && ends[next] < at) {
      lapse(ends[next]);
      out[next++] = counts;
    }
  };
  tx.exec("SELECT subject_id, purpose, channel, event, at, expires_at FROM consent_events WHERE status = 'confirmed'"
          " ORDER BY at, id",
          {}, [&](const store::Row& r) {
            const std::int64_t at = r.integer(4);
            snapshot_until(at);
            lapse(at);
            const auto sid = r.blob(0);
            std::pair<std::string, std::string> pc{std::string(r.text(1)), std::string(r.text(2))};
            std::string key(reinterpret_cast<const char*>(sid.data()), sid.size());
            ((key += '|') += pc.first) += '|' + pc.second;
            std::uint64_t& current = in_force[key];
            if (current != 0) --counts[pc];
            current = 0;
            const bool granted = r.text(3) == "granted";
            const bool expires = !r.is_null(5);
            if (granted && (!expires || r.integer(5) > at)) {
              current = ++grants;
              ++counts[pc];
              if (expires) expiries.emplace(r.integer(5), std::make_pair(key, current));
            }
            purpose_channel.emplace(std::move(key), std::move(pc));
          });
  snapshot_until(std::numeric_limits<std::int64_t>::max());
  return out;
}

}  // namespace custos::consent
