// custos/consent/storage.h — the tables the consent ledger owns
// (consent_events, consent_state): their migrations, and the reads other
// modules' queries need, inside the caller's transaction.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <string>
#include <vector>

#include "custos/records/records.h"
#include "custos/store/migrations.h"
#include "custos/store/store.h"

namespace custos::consent {

store::ModuleMigrations migrations();

// Up to `limit` subjects whose current state for purpose x channel is an
// unexpired grant at `now_us`, ids greater than `after`, in id order
// (campaign candidates: records::Records::CampaignQuery::candidates).
std::vector<records::SubjectId> granted_subjects(store::Transaction& tx, const std::string& purpose,
                                                 const std::string& channel, std::int64_t now_us,
                                                 const records::SubjectId& after, std::size_t limit);

// Consent over time (the console's analytics, issue 19): replays every
// confirmed event in event-time order and, at each of `ends` (ascending Unix
// µs), counts the subjects granted per (purpose, channel). A grant counts
// until a later event for the same subject, purpose and channel replaces it
// (withdrawn, denied, objection, opt-out, or another grant), or until its
// expiry is reached — the rule campaigns apply (granted_subjects).
using GrantCounts = std::map<std::pair<std::string, std::string>, std::int64_t>;
std::vector<GrantCounts> granted_over_time(store::Transaction& tx, const std::vector<std::int64_t>& ends);

}  // namespace custos::consent
