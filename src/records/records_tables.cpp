// Records' tables: their migrations, and the transaction-scoped calls other
// modules make instead of naming them (custos/records/storage.h).
#include <algorithm>

#include "custos/records/storage.h"
#include "field_blob.h"

namespace custos::records {
namespace {

using store::Row;
using store::Transaction;

bool copy_id(store::Blob b, SubjectId& id) {
  if (b.size() != id.size()) return false;
  std::copy(b.begin(), b.end(), id.begin());
  return true;
}

}  // namespace

store::ModuleMigrations migrations() {
  // `legacy_global`: the global schema version (1..9) that applied each step.
  return {"records",
          {
              {1,
               1,
               {
                   // One row per data subject. `fields` holds each personal field sealed
                   // separately under the subject's DEK (see records/field_blob.h).
                   "CREATE TABLE subjects (id BLOB PRIMARY KEY, status TEXT NOT NULL, created_at INTEGER NOT NULL,"
                   " updated_at INTEGER NOT NULL, kek_version INTEGER, dek_version INTEGER, wrapped_dek BLOB,"
                   " fields BLOB, legal_hold INTEGER NOT NULL DEFAULT 0, restricted INTEGER NOT NULL DEFAULT 0)",
                   "CREATE INDEX subjects_by_kek ON subjects (kek_version)",
                   "CREATE TABLE blind_index (field TEXT NOT NULL, digest BLOB NOT NULL, subject_id BLOB NOT NULL,"
                   " PRIMARY KEY (field, digest, subject_id))",
                   "CREATE INDEX blind_index_by_subject ON blind_index (subject_id)",
                   "CREATE TABLE touchpoints (id BLOB PRIMARY KEY, subject_id BLOB NOT NULL, channel TEXT NOT NULL,"
                   " type TEXT NOT NULL, at INTEGER NOT NULL, notes BLOB)",
                   "CREATE INDEX touchpoints_by_subject ON touchpoints (subject_id, at)",
                   "CREATE TABLE orders (id BLOB PRIMARY KEY, subject_id BLOB NOT NULL, amount_minor INTEGER NOT NULL,"
                   " currency TEXT NOT NULL, at INTEGER NOT NULL)",
                   "CREATE INDEX orders_by_subject ON orders (subject_id, at)",
               }},
              {2,
               2,
               {
                   // Objection to direct marketing (set through mark_objected by consent).
                   "ALTER TABLE subjects ADD COLUMN objected INTEGER NOT NULL DEFAULT 0",
                   // RFM scores and segments, materialised for campaign filters.
                   "CREATE TABLE rfm_scores (subject_id BLOB PRIMARY KEY, r INTEGER NOT NULL, f INTEGER NOT NULL,"
                   " m INTEGER NOT NULL, segment TEXT NOT NULL, clv_minor INTEGER NOT NULL,"
                   " computed_at INTEGER NOT NULL)",
                   "CREATE INDEX rfm_by_segment ON rfm_scores (segment, subject_id)",
               }},
              {3,
               5,
               {
                   // RFM reads (subject, time, amount) of every order: a covering
                   // index turns 1 M random row lookups into one index scan. It
                   // supersedes orders_by_subject (same leading columns).
                   "CREATE INDEX orders_by_subject_at_amount ON orders (subject_id, at, amount_minor)",
                   "DROP INDEX orders_by_subject",
               }},
          }};
}

std::optional<std::string> subject_status(Transaction& tx, const SubjectId& id) {
  std::optional<std::string> status;
  tx.exec("SELECT status FROM subjects WHERE id = ?", {id}, [&](const Row& r) { status = std::string(r.text(0)); });
  return status;
}

void mark_objected(Transaction& tx, const SubjectId& id) {
  tx.exec("UPDATE subjects SET objected = 1 WHERE id = ?", {id});
}

bool clear_objected(Transaction& tx, const SubjectId& id) {
  return tx.exec("UPDATE subjects SET objected = 0 WHERE id = ? AND objected = 1", {id}) > 0;
}

std::int64_t count_subjects(Transaction& tx) { return tx.scalar("SELECT count(*) FROM subjects").value_or(0); }

std::vector<std::int64_t> active_subjects_created_by(Transaction& tx, const std::vector<std::int64_t>& ends) {
  std::vector<std::int64_t> counts(ends.size(), 0);
  tx.exec("SELECT created_at FROM subjects WHERE status = 'active'", {}, [&](const Row& r) {
    const std::int64_t at = r.integer(0);
    for (std::size_t i = 0; i < ends.size(); ++i)
      if (at <= ends[i]) ++counts[i];
  });
  return counts;
}

void for_each_active_field_names(Transaction& tx,
                                 const std::function<void(const SubjectId&, const std::vector<std::string>&)>& each) {
  tx.exec("SELECT id, fields FROM subjects WHERE status = 'active' ORDER BY id", {}, [&](const Row& r) {
    SubjectId id{};
    if (!copy_id(r.blob(0), id)) return;
    each(id, field_names(r.blob(1)));
  });
}

void for_each_inactive_subject(Transaction& tx, std::int64_t cutoff_us, const std::function<void(const Inactive&)>& each) {
  tx.exec("SELECT s.id, s.legal_hold, max(s.updated_at,"
          " coalesce((SELECT max(t.at) FROM touchpoints t WHERE t.subject_id = s.id), 0),"
          " coalesce((SELECT max(o.at) FROM orders o WHERE o.subject_id = s.id), 0)) AS last"
          " FROM subjects s WHERE s.status = 'active' AND s.updated_at < ? ORDER BY s.id",
          {cutoff_us}, [&](const Row& r) {
            Inactive s;
            if (r.integer(2) >= cutoff_us || !copy_id(r.blob(0), s.id)) return;
            s.legal_hold = r.integer(1) != 0;
            s.last_activity_us = r.integer(2);
            each(s);
          });
}

std::int64_t count_touchpoints_before(Transaction& tx, std::int64_t before_us) {
  return tx.scalar("SELECT count(*) FROM touchpoints WHERE at < ?", {before_us}).value_or(0);
}

std::int64_t delete_touchpoints_before(Transaction& tx, std::int64_t before_us) {
  return tx.exec("DELETE FROM touchpoints WHERE at < ?", {before_us});
}

std::int64_t count_orders_before(Transaction& tx, std::int64_t before_us) {
  return tx.scalar("SELECT count(*) FROM orders WHERE at < ?", {before_us}).value_or(0);
}

std::int64_t delete_orders_before(Transaction& tx, std::int64_t before_us) {
  return tx.exec("DELETE FROM orders WHERE at < ?", {before_us});
}

store::WrappedKeySet subject_data_keys() {
  store::WrappedKeySet set;
  set.name = "subject data keys";
  set.rewrap = [](Transaction& tx, crypto::Keyring& keyring, std::uint32_t version, int limit) -> std::int64_t {
    std::vector<std::pair<std::vector<std::uint8_t>, std::vector<std::uint8_t>>> rows;
    tx.exec("SELECT id, wrapped_dek FROM subjects WHERE wrapped_dek IS NOT NULL AND kek_version <> ? LIMIT ?",
            {version, limit}, [&](const Row& r) { rows.emplace_back(r.blob_copy(0), r.blob_copy(1)); });
    for (const auto& [id, wrapped] : rows) {
      const std::string slot = store::dek_slot(id);
      const crypto::SecretKey dek = keyring.unwrap(slot, wrapped);
      tx.exec("UPDATE subjects SET kek_version = ?, wrapped_dek = ? WHERE id = ?",
              {version, keyring.wrap(version, slot, dek), id});
    }
    return static_cast<std::int64_t>(rows.size());
  };
  set.count_stale = [](Transaction& tx, std::uint32_t version) -> std::int64_t {
    return tx.scalar("SELECT count(*) FROM subjects WHERE wrapped_dek IS NOT NULL AND kek_version <> ?", {version})
        .value_or(0);
  };
  set.count_per_version = [](Transaction& tx) {
    std::map<std::uint32_t, std::int64_t> per_version;
    tx.exec("SELECT kek_version, count(*) FROM subjects WHERE wrapped_dek IS NOT NULL GROUP BY kek_version", {},
            [&](const Row& r) { per_version[static_cast<std::uint32_t>(r.integer(0))] = r.integer(1); });
    return per_version;
  };
  return set;
}

}  // namespace custos::records
