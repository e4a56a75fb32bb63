// custos/records/storage.h — the tables records owns (subjects, blind_index,
// touchpoints, orders, rfm_scores): their migrations, and the calls modules
// above records use instead of naming those tables. Each call runs inside
// the caller's transaction, so it sees and changes what that transaction
// does (consent's objection commits with its events, a breach scan reads one
// snapshot).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "custos/records/records.h"
#include "custos/store/key_table.h"
#include "custos/store/migrations.h"
#include "custos/store/store.h"

namespace custos::records {

store::ModuleMigrations migrations();

// "active", "erased" or "merged"; nullopt for an unknown id.
std::optional<std::string> subject_status(store::Transaction& tx, const SubjectId& id);

// Marks the subject as having objected to direct marketing (GDPR Art. 21(3)):
// campaigns skip it from this transaction's commit on.
void mark_objected(store::Transaction& tx, const SubjectId& id);
// Ends that objection (the subject has said yes again, themselves: see
// consent::EventInput::by_the_subject). True if one stood.
bool clear_objected(store::Transaction& tx, const SubjectId& id);

// Every subject row, whatever its status (backups check the count).
std::int64_t count_subjects(store::Transaction& tx);

// For each of `ends` (Unix µs), how many of today's active subjects had been
// created by then (the console's consent rates use it as the denominator).
std::vector<std::int64_t> active_subjects_created_by(store::Transaction& tx, const std::vector<std::int64_t>& ends);

// Each active subject, in id order, with the names of the personal fields it
// holds: read from the field record's framing, nothing is decrypted.
void for_each_active_field_names(store::Transaction& tx,
                                 const std::function<void(const SubjectId&, const std::vector<std::string>&)>& each);

// Active subjects whose last activity (update, touchpoint or order) is before
// `cutoff_us`, in id order (retention).
struct Inactive {
  SubjectId id{};
  bool legal_hold = false;
  std::int64_t last_activity_us = 0;
};
void for_each_inactive_subject(store::Transaction& tx, std::int64_t cutoff_us,
                               const std::function<void(const Inactive&)>& each);

// Touchpoints and orders dated before `before_us` (retention): counted, or
// deleted (returns how many).
std::int64_t count_touchpoints_before(store::Transaction& tx, std::int64_t before_us);
std::int64_t delete_touchpoints_before(store::Transaction& tx, std::int64_t before_us);
std::int64_t count_orders_before(store::Transaction& tx, std::int64_t before_us);
std::int64_t delete_orders_before(store::Transaction& tx, std::int64_t before_us);

// The subjects' data keys, for KEK rotation and retirement (store/key_table.h).
store::WrappedKeySet subject_data_keys();

}  // namespace custos::records
