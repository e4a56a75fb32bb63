// custos/records/records.h — data subjects, their personal fields,
// touchpoints and orders.
//
// Every personal value is sealed under its subject's own data key (DEK),
// which is stored only wrapped by the KEK. Searchable fields also get a
// blind index. Every operation appends its audit entry in the same
// transaction; a read commits that entry before any plaintext is returned.
// Values are validated against the schema before anything is written, and a
// batch is all-or-nothing.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "custos/audit/audit_log.h"
#include "custos/crypto/secret_key.h"
#include "custos/error.h"
#include "custos/records/schema.h"
#include "custos/store/key_table.h"
#include "custos/store/store.h"

namespace custos::records {

using SubjectId = std::array<std::uint8_t, 16>;
using FieldMap = std::map<std::string, std::string>;  // field name -> plaintext value

std::string to_hex(const SubjectId& id);
// Throws Error(invalid_argument) unless `hex` is 32 hex digits.
SubjectId parse_subject_id(std::string_view hex);

struct Subject {
  SubjectId id{};
  std::string status;  // active | erased
  std::int64_t created_us = 0;
  std::int64_t updated_us = 0;
  bool legal_hold = false;
  bool restricted = false;
  bool objected = false;  // objected to direct marketing
  FieldMap fields;  // only the fields that were asked for and are present
};

struct Touchpoint {
  std::string id;  // hex
  std::string channel;
  std::string type;
  std::int64_t at_us = 0;
  std::optional<std::string> notes;  // personal: sealed
};

struct Order {
  std::string id;  // hex
  std::int64_t amount_minor = 0;
  std::string currency;
  std::int64_t at_us = 0;
};

struct ErasureReport {
  std::string subject_id;
  std::vector<std::string> fields_erased;
  std::int64_t index_entries_removed = 0;
  // Touchpoint types (free text) replaced by "erased"; notes become
  // unreadable with the DEK; channel and time stay. Orders are not personal
  // and stay for accounting (the DSR report counts both).
  std::int64_t touchpoint_types_erased = 0;
};

// What creating a subject does when one of its searchable identifiers
// (email, phone, external_id: equal blind indexes, so after normalisation)
// already names an active subject.
//   reject  refuse the item (duplicate_subject), naming the matching ids;
//   merge   apply the item to the one matching subject instead (below);
//   create  create a second subject anyway: a deliberate duplicate.
enum class OnConflict { reject, merge, create };

// The outcome of one item of Records::create_resolved.
//
// Merge rule (on_conflict merge): the existing subject's values win. A field
// it has keeps its value (listed in `fields_kept`, the incoming value is
// dropped); a field it lacks is set from the item (`fields_added`). So a
// re-import can fill gaps but never overwrite what the vault holds — nor can
// anyone who knows a subject's phone replace its email through a create.
struct CreateOutcome {
  enum class Kind {
    created,     // a new subject: `id`
    merged,      // applied to the existing subject `id`
    duplicate,   // refused: `matches` (duplicate_subject); also when a merge is ambiguous
    restricted,  // refused: the one match is restricted (GDPR Art. 18; subject_restricted)
  };
  Kind kind = Kind::created;
  SubjectId id{};                        // created / merged: the subject; refused: the first match
  std::vector<SubjectId> matches;        // every active subject an identifier names, in id order
  std::vector<std::string> matched_on;   // the identifier fields that matched (names, never values)
  std::vector<std::string> fields_added; // merged
  std::vector<std::string> fields_kept;  // merged
};

// A create refused because an identifier already names a subject (409
// duplicate_subject). what() names the matching subject ids, never a value;
// with no ids (a caller that may not learn them) it names none.
class DuplicateSubject : public Error {
 public:
  DuplicateSubject(std::vector<std::string> subject_ids, std::vector<std::string> matched_on);
  const std::vector<std::string>& subject_ids() const { return subject_ids_; }
  const std::vector<std::string>& matched_on() const { return matched_on_; }

 private:
  std::vector<std::string> subject_ids_;
  std::vector<std::string> matched_on_;
};

// What Records::merge did.
struct MergeReport {
  std::string survivor;
  std::vector<std::string> merged;        // the merged-away ids: DEKs destroyed, rows tombstoned
  std::vector<std::string> fields_added;  // filled in on the survivor from a merged-away subject
  std::vector<std::string> fields_kept;   // present on both: the survivor's value won
  std::int64_t touchpoints_moved = 0;
  std::int64_t orders_moved = 0;
};

// Groups of active subjects that share one identifier (no values).
struct DuplicateCluster {
  std::string matched_on;          // email | phone | external_id
  std::vector<SubjectId> subjects; // in id order; the first is the cluster's cursor
};

// Which fields a read decrypts, and which of them leave masked (recorded in the audit entry).
struct ReadSpec {
  std::vector<std::string> fields;
  std::vector<std::string> masked;
  std::string operation = "subject.read";
};

class Records {
 public:
  Records(store::Store& store, store::KeyTable& keys, const Schema& schema, audit::AuditLog& audit);

  const Schema& schema() const { return schema_; }

  // Validates every value of every subject first; then one transaction.
  // `created_us`, if given, receives the creation time stored for the batch.
  std::vector<SubjectId> create(const audit::Actor& actor, const std::vector<FieldMap>& batch,
                                std::int64_t* created_us = nullptr);

  // Throws Error(not_found) for unknown or erased subjects.
  Subject read(const audit::Actor& actor, const SubjectId& id, const ReadSpec& spec);
  // One transaction, one audit entry per subject returned; missing ids are
  // reported as nullopt in their slot.
  std::vector<std::optional<Subject>> read_many(const audit::Actor& actor, const std::vector<SubjectId>& ids,
                                                const ReadSpec& spec);

  // Exact match through the blind index of a searchable field (no decryption).
  std::vector<SubjectId> find(std::string_view field, std::string_view value);
  // `id` and every subject that shares an identifier with it (email, phone or
  // external_id: the blind-index rows compared, no value decrypted), in id
  // order: the subjects a request made as `id` covers, as an intake by any
  // of its identifiers would match them.
  std::vector<SubjectId> sharing_identifiers(const SubjectId& id);
  // find(), with each match's metadata (status, holds, restriction, objection;
  // no fields), in one read transaction: what a lookup checks before it reads.
  std::vector<Subject> find_metadata(std::string_view field, std::string_view value);

  // Sets and removes fields (validated); records the changed field names.
  // A new email, phone or external id follows create's default rule
  // (on_conflict reject): if it names another active subject, throws
  // DuplicateSubject (409 duplicate_subject) and writes nothing, unless that
  // subject is in `may_share` (a rectification of subjects already matched as
  // duplicates sets them all alike). Throws Error(not_found) for a subject
  // that is not active.
  void update(const audit::Actor& actor, const SubjectId& id, const FieldMap& set,
              const std::vector<std::string>& remove, const std::vector<SubjectId>& may_share = {});

  // Create with identity resolution: items are checked in order against the
  // blind indexes of active subjects, earlier items of the batch included,
  // and created, merged or refused per `on_conflict` (see CreateOutcome), all
  // in one transaction. Audited: one subject.create entry for the created
  // subjects (as create), one subject.update entry per merged item
  // (detail on_conflict=merge, the names of the fields kept), and one denied
  // subject.create entry per refused item naming the matching subjects.
  // Throws (writing nothing) only for what create throws.
  std::vector<CreateOutcome> create_resolved(const audit::Actor& actor, const std::vector<FieldMap>& batch,
                                             OnConflict on_conflict, std::int64_t* created_us = nullptr);

  // Clusters of active subjects sharing an email, phone or external id, by
  // field then first subject id, after `after` = (field, first id) if given.
  // Not audited here (the caller records who asked).
  std::vector<DuplicateCluster> duplicate_clusters(const std::optional<std::pair<std::string, SubjectId>>& after,
                                                   std::size_t limit);

  // Merges `merged_away` into `survivor` in ONE transaction: the survivor's
  // field values win, fields it lacks are filled from the merged-away
  // subjects in the order given (re-sealed under the survivor's key, and
  // indexed); touchpoints (notes re-sealed) and orders are re-pointed;
  // `move_dependants(tx, from, to, reseal)` moves what other modules hold (consent, open requests);
  // an objection to marketing on any of them stays in force on the survivor;
  // then each merged-away subject is crypto-shredded (DEK destroyed, fields
  // and index rows gone) and left as a tombstone with status 'merged'. One
  // subject.merge entry names the survivor and every merged-away id; the WAL
  // is checkpointed after the commit, as for an erasure.
  // Throws, writing nothing: Error(not_found) for an id that is not an
  // active subject, Error(invalid_argument) for a repeated id or the survivor
  // in `merged_away`, Error(subject_restricted) if any of them is restricted,
  // Error(conflict) if any is under legal hold.
  // `reseal(what, sealed)` (valid only during that call) turns a note
  // sealed for `from` (seal_note) into one sealed for `to`, since `from`'s
  // key is about to be destroyed.
  using NoteResealer = std::function<std::string(const std::string& what, const std::string& sealed_b64)>;
  using MergeDependants =
      std::function<void(store::Transaction&, const SubjectId& from, const SubjectId& to, const NoteResealer& reseal)>;
  MergeReport merge(const audit::Actor& actor, const SubjectId& survivor, const std::vector<SubjectId>& merged_away,
                    const std::string& detail, const MergeDependants& move_dependants);

  // Crypto-shreds the subject: destroys its DEK, overwrites its field
  // ciphertexts and blind-index rows, then checkpoints the WAL. Constant
  // time in the amount of touchpoints. Throws Error(conflict) under legal hold.
  // `checkpoint_wal` false defers the WAL checkpoint to the caller (bulk purges).
  // `detail` is the audit entry's detail (short, non-personal).
  ErasureReport erase(const audit::Actor& actor, const SubjectId& id, bool checkpoint_wal = true,
                      const std::string& detail = "crypto-shred");
  // Runs inside the transaction that destroys a subject's key, before it
  // commits: every erase() (DELETE, a data-subject request, a retention
  // purge) and each merged-away subject of merge(). What holds the subject's
  // values under a key other than its own goes with it (the service's
  // undelivered outbox bodies). Set once, before the records are used.
  using KeyDestroyedHook = std::function<void(store::Transaction&, const SubjectId&)>;
  void set_key_destroyed_hook(KeyDestroyedHook hook) { key_destroyed_hook_ = std::move(hook); }
  void checkpoint_wal() { store_.checkpoint(); }

  void set_flags(const audit::Actor& actor, const SubjectId& id, std::optional<bool> legal_hold,
                 std::optional<bool> restricted);
  Subject metadata(const SubjectId& id);  // no fields, not audited (non-personal)

  std::string add_touchpoint(const audit::Actor& actor, const SubjectId& id, const Touchpoint& tp);
  std::vector<Touchpoint> touchpoints(const audit::Actor& actor, const SubjectId& id, bool with_notes);
  // The same, streamed for exports: appends the audit entry and commits
  // first, then hands the touchpoints to `each` in (at, id) order, page by
  // page, holding no transaction while `each` runs (a slow reader blocks
  // nothing). `each` returns false to stop.
  void for_each_touchpoint(const audit::Actor& actor, const SubjectId& id, bool with_notes,
                           const std::function<bool(const Touchpoint&)>& each);
  std::string add_order(const audit::Actor& actor, const SubjectId& id, const Order& order);
  std::vector<Order> orders(const SubjectId& id);

  // One page of a campaign: active subjects that are neither restricted nor
  // objected, among the `candidates` (the consent ledger's subjects with an
  // unexpired grant for purpose x channel), in `segment` when given, ids
  // greater than `after`, in id order. Decrypts `spec.fields`, appends ONE
  // audit entry naming every subject of the page, commits, and only then
  // returns. Fewer than `limit` subjects: the candidates are exhausted.
  struct CampaignQuery {
    std::string purpose, channel, segment;
    std::int64_t now_us = 0;
    // Up to `limit` candidate ids greater than `after`, in id order, read in
    // the page's transaction `tx` (records never reads consent's tables).
    std::function<std::vector<SubjectId>(store::Transaction& tx, const SubjectId& after, std::size_t limit)>
        candidates;
  };
  std::vector<Subject> read_campaign_page(const audit::Actor& actor, const CampaignQuery& q,
                                          const std::optional<SubjectId>& after, std::size_t limit,
                                          const ReadSpec& spec);

  // Seals / opens a small value under the subject's DEK (base64 text), bound
  // to `what` — for data held on the subject's behalf, e.g. a pending
  // rectification. Erasing the subject shreds these too.
  std::string seal_note(const SubjectId& id, const std::string& what, const std::string& plaintext);
  std::string open_note(const SubjectId& id, const std::string& what, const std::string& sealed_b64);

  // Streams every active subject with the requested fields decrypted, in
  // id order, in bounded memory; one audit entry for the whole scan.
  void scan(const audit::Actor& actor, const ReadSpec& spec, const std::function<void(const Subject&)>& on_subject);

  // ---- Bulk import (service::Service::import_ndjson). These work inside the
  // caller's write transaction, so a chunk of lines, everything they carry
  // and the import's checkpoint commit together, and append no audit entry:
  // the caller appends one per chunk naming every subject it wrote.

  // Creates the blind-index keys outside any transaction (named_key may
  // write); call before the first import transaction.
  void prepare_import();
  struct ImportedSubject {
    CreateOutcome outcome;  // created | merged (an existing subject) | duplicate | restricted
    std::optional<crypto::SecretKey> dek;  // created / merged: the subject's data key
  };
  // Identity: an `external_id` naming exactly one active subject IS that
  // subject, whatever `on_conflict` says (a re-import applies to it; its
  // values win, gaps are filled: idempotent); several, or a restricted one,
  // refuse the item. Without such a match, email and phone follow
  // `on_conflict` as in create_resolved. Throws Error(invalid_field) for a
  // value the schema refuses, writing nothing.
  ImportedSubject import_subject(store::Transaction& tx, const FieldMap& fields, OnConflict on_conflict,
                                 std::int64_t now);
  // Inserts unless the row `row_id` exists (a re-import); true if inserted.
  // `new_subject`: the subject was created in this transaction, so no row
  // of it can exist yet and the check is skipped.
  using RowId = std::array<std::uint8_t, 16>;
  bool import_touchpoint(store::Transaction& tx, const SubjectId& id, const crypto::SecretKey& dek, const RowId& row_id,
                         const Touchpoint& tp, bool new_subject);
  bool import_order(store::Transaction& tx, const SubjectId& id, const RowId& row_id, const Order& order,
                    bool new_subject);
  // Validation shared by add_order and import (throws Error(invalid_field)).
  static void check_order(const Order& order);

  // One page of the NDJSON export: active subjects after `after` in id order
  // (restricted ones only if `with_restricted`), `spec.fields` decrypted,
  // with their orders and touchpoints (without notes). Appends ONE audit
  // entry naming every subject of the page and commits it before returning.
  struct ExportedSubject {
    Subject subject;
    std::vector<Order> orders;
    std::vector<Touchpoint> touchpoints;
  };
  std::vector<ExportedSubject> read_export_page(const audit::Actor& actor, const std::optional<SubjectId>& after,
                                                std::size_t limit, const ReadSpec& spec, bool with_restricted);

 private:
  struct Prepared;
  Prepared prepare(const FieldMap& fields) const;
  crypto::SecretKey unwrap_dek(const SubjectId& id, store::Blob wrapped);
  // The data key of an active subject (not_found otherwise), read in its own transaction.
  crypto::SecretKey active_subject_dek(const SubjectId& id);
  FieldMap open_fields(const SubjectId& id, const crypto::SecretKey& dek, store::Blob blob,
                       const std::vector<std::string>& wanted);

  store::Store& store_;
  store::KeyTable& keys_;
  const Schema& schema_;
  audit::AuditLog& audit_;
  KeyDestroyedHook key_destroyed_hook_;
};

}  // namespace custos::records
