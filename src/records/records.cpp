#include "custos/records/records.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <deque>
#include <limits>
#include <set>

#include "custos/crypto/aead.h"
#include "custos/crypto/blind_index.h"
#include "custos/error.h"
#include "custos/records/storage.h"
#include "field_blob.h"

namespace custos::records {
namespace {

using store::Row;
using store::Transaction;
using store::TxMode;

constexpr std::size_t kSubjectIdSize = std::tuple_size_v<SubjectId>;
constexpr std::uint32_t kDekVersion = 1;  // DEKs are never rotated in place: erasure replaces them
constexpr std::string_view kTouchpointNotes = "touchpoint.notes";

std::string hex(std::span<const std::uint8_t> bytes) {
  std::string out(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), bytes.data(), bytes.size());
  out.pop_back();
  return out;
}

std::string index_slot(const std::string& field) { return "index:" + field; }

[[noreturn]] void no_subject(const SubjectId& id) {
  throw Error(ErrorCode::not_found, "subject " + to_hex(id) + " not found");
}

std::string plaintext(const crypto::Bytes& b) { return std::string(b.begin(), b.end()); }

void wipe(std::string& s) {
  if (!s.empty()) sodium_memzero(s.data(), s.size());
}

}  // namespace

std::string to_hex(const SubjectId& id) { return hex(id); }

SubjectId parse_subject_id(std::string_view text) {
  SubjectId id{};
  std::size_t len = 0;
  if (text.size() != 32 ||
      sodium_hex2bin(id.data(), id.size(), text.data(), text.size(), nullptr, &len, nullptr) != 0 || len != 16)
    throw Error(ErrorCode::invalid_argument, "subject id must be 32 hex digits");
  return id;
}

// Values validated and normalised, ready to seal; blind-index inputs computed.
struct Records::Prepared {
  FieldMap values;                                       // stored form
  std::vector<std::pair<std::string, std::string>> indexed;  // field, normalised
};

Records::Records(store::Store& store, store::KeyTable& keys, const Schema& schema, audit::AuditLog& audit)
    : store_(store), keys_(keys), schema_(schema), audit_(audit) {}

Records::Prepared Records::prepare(const FieldMap& fields) const {
  Prepared p;
  for (const auto& [name, value] : fields) {
    const FieldSpec& spec = schema_.require(name);
    std::string stored = schema_.validate(spec, value);
    if (spec.searchable) p.indexed.emplace_back(name, schema_.normalise_for_index(spec, stored));
    p.values.emplace(name, std::move(stored));
  }
  return p;
}

namespace {

void insert_indexes(Transaction& tx, store::KeyTable& keys, const SubjectId& id,
                    const std::vector<std::pair<std::string, std::string>>& indexed) {
  for (const auto& [field, normalised] : indexed) {
    const crypto::BlindIndex digest = crypto::blind_index(keys.named_key(index_slot(field)), normalised);
    tx.exec("INSERT INTO blind_index (field, digest, subject_id) VALUES (?, ?, ?)", {field, digest, id});
  }
}

}  // namespace

namespace {

struct SubjectRow {
  Subject subject;
  std::vector<std::uint8_t> wrapped_dek;
  std::vector<std::uint8_t> fields;
};

std::optional<SubjectRow> load_row(Transaction& tx, const SubjectId& id, bool with_keys) {
  std::optional<SubjectRow> out;
  tx.exec(with_keys ? "SELECT status, created_at, updated_at, legal_hold, restricted, objected, wrapped_dek, fields"
                      " FROM subjects WHERE id = ?"
                    : "SELECT status, created_at, updated_at, legal_hold, restricted, objected FROM subjects WHERE id = ?",
          {id}, [&](const Row& r) {
            SubjectRow row;
            row.subject.id = id;
            row.subject.status = std::string(r.text(0));
            row.subject.created_us = r.integer(1);
            row.subject.updated_us = r.integer(2);
            row.subject.legal_hold = r.integer(3) != 0;
            row.subject.restricted = r.integer(4) != 0;
            row.subject.objected = r.integer(5) != 0;
            if (with_keys) {
              if (!r.is_null(6)) row.wrapped_dek = r.blob_copy(6);
              if (!r.is_null(7)) row.fields = r.blob_copy(7);
            }
            out = std::move(row);
          });
  return out;
}

std::vector<std::string> present_fields(const std::vector<std::string>& wanted, const FieldMap& got) {
  std::vector<std::string> out;
  for (const auto& f : wanted)
    if (got.count(f)) out.push_back(f);
  return out;
}

std::vector<std::string> intersect(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<std::string> out;
  for (const auto& x : a)
    if (std::find(b.begin(), b.end(), x) != b.end()) out.push_back(x);
  return out;
}

}  // namespace

std::vector<SubjectId> Records::create(const audit::Actor& actor, const std::vector<FieldMap>& batch,
                                       std::int64_t* created_us) {
  const auto outcomes = create_resolved(actor, batch, OnConflict::create, created_us);
  std::vector<SubjectId> ids;
  ids.reserve(outcomes.size());
  for (const auto& o : outcomes) ids.push_back(o.id);
  return ids;
}

namespace {

using Digests = std::vector<std::pair<std::string, crypto::BlindIndex>>;  // field, blind index

void insert_digests(Transaction& tx, const SubjectId& id, const Digests& digests,
                    const std::set<std::string>* only = nullptr) {
  for (const auto& [field, digest] : digests)
    if (only == nullptr || only->count(field))
      tx.exec("INSERT INTO blind_index (field, digest, subject_id) VALUES (?, ?, ?)", {field, digest, id});
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

// Orders (field, digest) pairs by value (a span has no operator<).
struct PendingDigestLess {
  bool operator()(const std::pair<std::string_view, store::Blob>& a,
                  const std::pair<std::string_view, store::Blob>& b) const {
    if (a.first != b.first) return a.first < b.first;
    return std::lexicographical_compare(a.second.begin(), a.second.end(), b.second.begin(), b.second.end());
  }
};

SubjectId subject_id_of(store::Blob b) {
  SubjectId id{};
  if (b.size() == id.size()) std::copy(b.begin(), b.end(), id.begin());
  return id;
}

}  // namespace

DuplicateSubject::DuplicateSubject(std::vector<std::string> subject_ids, std::vector<std::string> matched_on)
    : Error(ErrorCode::duplicate_subject,
            [&] {
              // Without ids: the caller may not look subjects up by what matched.
              if (subject_ids.empty())
                return "an active subject already has this " + join(matched_on) +
                       " (a role that sees it in plain may look that subject up, or merge into it)";
              std::string ids;
              for (const auto& id : subject_ids) ids += (ids.empty() ? "" : ", ") + id;
              return "an active subject already has this " + join(matched_on) + ": " + ids +
                     " (send on_conflict merge to apply the fields to it, or create for a deliberate duplicate)";
            }()),
      subject_ids_(std::move(subject_ids)),
      matched_on_(std::move(matched_on)) {}

std::vector<CreateOutcome> Records::create_resolved(const audit::Actor& actor, const std::vector<FieldMap>& batch,
                                                    OnConflict on_conflict, std::int64_t* created_us) {
  std::vector<Prepared> prepared;
  prepared.reserve(batch.size());
  for (const FieldMap& fields : batch) {
    if (fields.empty()) throw Error(ErrorCode::invalid_argument, "a subject needs at least one field");
    prepared.push_back(prepare(fields));
  }
  // Index keys are created outside the write transaction below. Each digest
  // is computed once: it is both the duplicate probe and the index row.
  for (const FieldSpec& f : schema_.fields())
    if (f.searchable) keys_.named_key(index_slot(f.name));
  std::vector<Digests> digests(prepared.size());
  for (std::size_t i = 0; i < prepared.size(); ++i)
    for (const auto& [field, normalised] : prepared[i].indexed)
      digests[i].emplace_back(field, crypto::blind_index(keys_.named_key(index_slot(field)), normalised));

  std::vector<CreateOutcome> out(batch.size());
  std::vector<SubjectId> created;
  std::set<std::string> created_fields;
  const std::int64_t now = audit_.now_us();
  if (created_us) *created_us = now;
  // The batch's randomness from ONE CSPRNG call, in guarded memory: each new
  // subject's id, data key, field nonces and key-wrap nonce (a call per value
  // was a syscall per value). Items that merge or are refused leave theirs
  // unused; the batch is wiped when it goes.
  std::size_t random_bytes = 0;
  for (const auto& p : prepared)
    random_bytes += kSubjectIdSize + crypto::SecretKey::kSize + crypto::kSealNonceSize * (p.values.size() + 1);
  crypto::RandomBatch random(random_bytes);
  auto tx = store_.begin(TxMode::write);
  const std::uint32_t kek_version = keys_.kek_version(*tx);
  const crypto::SecretKey& kek = keys_.keyring().kek(kek_version);
  // New subjects and their index rows go to the store in bulk (binary COPY
  // on PostgreSQL) when the batch ends, or before a probe that could match
  // one of them. The params are views: `owned` keeps their bytes alive.
  static constexpr std::array<std::string_view, 8> kSubjectColumns = {
      "id", "status", "created_at", "updated_at", "kek_version", "dek_version", "wrapped_dek", "fields"};
  static constexpr std::array<std::string_view, 3> kIndexColumns = {"field", "digest", "subject_id"};
  std::vector<store::Param> pending_subjects, pending_index;
  std::deque<std::vector<std::uint8_t>> owned;
  std::set<std::pair<std::string_view, store::Blob>, PendingDigestLess> pending_digests;
  auto flush_pending = [&] {
    if (!pending_subjects.empty()) tx->bulk_insert("subjects", kSubjectColumns, pending_subjects);
    if (!pending_index.empty()) tx->bulk_insert("blind_index", kIndexColumns, pending_index);
    pending_subjects.clear();
    pending_index.clear();
    pending_digests.clear();
  };
  for (std::size_t i = 0; i < prepared.size(); ++i) {
    CreateOutcome& o = out[i];
    if (on_conflict != OnConflict::create) {
      for (const auto& entry : digests[i])
        if (pending_digests.count({entry.first, store::Blob(entry.second)})) {
          flush_pending();
          break;
        }
      // Only active subjects have index rows (erasure and merge delete
      // them); rows this transaction inserted for earlier items count too.
      std::map<SubjectId, int> matched;
      std::set<std::string> on;
      for (const auto& entry : digests[i]) {
        const auto& field = entry.first;  // named, not a structured binding: clang 14 cannot capture those
        tx->exec("SELECT subject_id FROM blind_index WHERE field = ? AND digest = ?", {field, entry.second},
                 [&](const Row& r) {
                   matched[subject_id_of(r.blob(0))] = 1;
                   on.insert(field);
                 });
      }
      if (!matched.empty()) {
        for (const auto& [id, unused] : matched) o.matches.push_back(id);
        o.matched_on.assign(on.begin(), on.end());
        o.id = o.matches.front();
        o.kind = CreateOutcome::Kind::duplicate;
        std::optional<SubjectRow> row;
        if (on_conflict == OnConflict::merge && o.matches.size() == 1) {
          row = load_row(*tx, o.id, true);
          if (row && row->subject.restricted) o.kind = CreateOutcome::Kind::restricted;
          else if (row && row->subject.status == "active") o.kind = CreateOutcome::Kind::merged;
        }
        if (o.kind != CreateOutcome::Kind::merged) {
          audit::Event denial{"subject.create", o.matches.size() == 1 ? to_hex(o.id) : "", {}, {}, false,
                              code_name(o.kind == CreateOutcome::Kind::restricted ? ErrorCode::subject_restricted
                                                                                  : ErrorCode::duplicate_subject),
                              "matched_on=" + join(o.matched_on), {}};
          if (o.matches.size() > 1)
            for (const auto& id : o.matches) denial.subject_ids.push_back(to_hex(id));
          audit_.append(*tx, actor, denial);
          continue;
        }
        // The existing subject's values win; the item fills its gaps.
        const crypto::SecretKey dek = unwrap_dek(o.id, row->wrapped_dek);
        SealedFields sealed = decode_fields(row->fields);
        for (auto& [name, value] : prepared[i].values) {
          if (sealed.count(name)) {
            o.fields_kept.push_back(name);
            continue;
          }
          sealed.emplace(name, crypto::seal(dek, {crypto::kSealFormat, kDekVersion, schema_.version()},
                                            crypto::field_ad(o.id, name, schema_.version()), crypto::as_bytes(value)));
          o.fields_added.push_back(name);
        }
        if (!o.fields_added.empty()) {
          tx->exec("UPDATE subjects SET fields = ?, updated_at = ? WHERE id = ?", {encode_fields(sealed), now, o.id});
          const std::set<std::string> added(o.fields_added.begin(), o.fields_added.end());
          insert_digests(*tx, o.id, digests[i], &added);
        }
        audit_.append(*tx, actor,
                      {"subject.update", to_hex(o.id), o.fields_added, {}, true, "",
                       "on_conflict=merge kept=" + join(o.fields_kept)});
        continue;
      }
    }
    SubjectId& id = o.id;
    const auto id_bytes = random.take<kSubjectIdSize>();
    std::copy(id_bytes.begin(), id_bytes.end(), id.begin());
    const auto dek = random.take<crypto::SecretKey::kSize>();
    SealedFields sealed;
    for (auto& [name, value] : prepared[i].values) {
      sealed.emplace(name, crypto::seal_with_nonce(dek, {crypto::kSealFormat, kDekVersion, schema_.version()},
                                                   random.take<crypto::kSealNonceSize>(),
                                                   crypto::field_ad(id, name, schema_.version()),
                                                   crypto::as_bytes(value)));
      created_fields.insert(name);
    }
    const auto& wrapped = owned.emplace_back(
        crypto::wrap_key_with_nonce(kek, kek_version, store::dek_slot(id), dek, random.take<crypto::kSealNonceSize>()));
    const auto& blob = owned.emplace_back(encode_fields(sealed));
    for (store::Param p : {store::Param(store::Blob(id)), store::Param("active"), store::Param(now), store::Param(now),
                           store::Param(kek_version), store::Param(kDekVersion), store::Param(wrapped),
                           store::Param(blob)})
      pending_subjects.push_back(p);
    for (const auto& [field, digest] : digests[i]) {
      for (store::Param p : {store::Param(field), store::Param(store::Blob(digest)), store::Param(store::Blob(id))})
        pending_index.push_back(p);
      pending_digests.insert({field, store::Blob(digest)});
    }
    created.push_back(id);
  }
  flush_pending();
  // One entry for the whole batch: it names every subject (indexed, so each
  // is findable by id) and the union of the fields written.
  if (!created.empty()) {
    audit::Event event{"subject.create", created.size() == 1 ? to_hex(created[0]) : "",
                       {created_fields.begin(), created_fields.end()}, {}, true, "",
                       "subjects=" + std::to_string(created.size()), {}};
    if (created.size() > 1)
      for (const auto& id : created) event.subject_ids.push_back(to_hex(id));
    audit_.append(*tx, actor, event);
  }
  tx->commit();
  for (auto& p : prepared)
    for (auto& [name, value] : p.values) wipe(value);
  return out;
}

crypto::SecretKey Records::unwrap_dek(const SubjectId& id, store::Blob wrapped) {
  return keys_.keyring().unwrap(store::dek_slot(id), wrapped);
}

FieldMap Records::open_fields(const SubjectId& id, const crypto::SecretKey& dek, store::Blob blob,
                              const std::vector<std::string>& wanted) {
  // Views into the row, no copy of the other fields' ciphertext; the error's
  // context (subject hex) is built only when a field fails to open.
  FieldMap out;
  visit_fields(blob, [&](std::string_view name, std::span<const std::uint8_t> sealed) {
    if (std::find(wanted.begin(), wanted.end(), name) == wanted.end()) return;
    // The first of a repeated name wins, as in decode_fields.
    if (std::any_of(out.begin(), out.end(), [&](const auto& kv) { return kv.first == name; })) return;
    const crypto::SealHeader h = crypto::peek_header(sealed);
    crypto::Bytes opened;
    try {
      opened = crypto::open(dek, crypto::field_ad(id, name, h.schema_version), sealed, "");
    } catch (const Error& e) {
      throw Error(e.code(), "field '" + std::string(name) + "' of subject " + to_hex(id) + e.what());
    }
    out.emplace(std::string(name), plaintext(opened));
    sodium_memzero(opened.data(), opened.size());
  });
  return out;
}


Subject Records::read(const audit::Actor& actor, const SubjectId& id, const ReadSpec& spec) {
  auto result = read_many(actor, {id}, spec);
  if (!result[0]) no_subject(id);
  return std::move(*result[0]);
}

std::vector<std::optional<Subject>> Records::read_many(const audit::Actor& actor, const std::vector<SubjectId>& ids,
                                                        const ReadSpec& spec) {
  for (const auto& f : spec.fields) schema_.require(f);
  std::vector<std::optional<Subject>> out(ids.size());
  std::vector<audit::Event> events;
  {
    auto tx = store_.begin(TxMode::read);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      auto row = load_row(*tx, ids[i], true);
      if (!row || row->subject.status != "active") continue;
      const crypto::SecretKey dek = unwrap_dek(ids[i], row->wrapped_dek);
      row->subject.fields = open_fields(ids[i], dek, row->fields, spec.fields);
      const auto served = present_fields(spec.fields, row->subject.fields);
      events.push_back({spec.operation, to_hex(ids[i]), served, intersect(served, spec.masked), true, "", ""});
      out[i] = std::move(row->subject);
    }
  }
  // Plaintext leaves only once the entries are durable (group commit with
  // concurrent readers); if they cannot be written, it is wiped instead.
  try {
    audit_.append_durable(actor, events);
  } catch (...) {
    for (auto& s : out)
      if (s)
        for (auto& [k, v] : s->fields) wipe(v);
    throw;
  }
  return out;
}

namespace {
// The blind index digest of `value` in `spec` (invalid_argument unless searchable).
crypto::BlindIndex index_digest(const Schema& schema, store::KeyTable& keys, const FieldSpec& spec,
                                std::string_view value) {
  if (!spec.searchable) throw Error(ErrorCode::invalid_argument, "field '" + spec.name + "' is not searchable");
  const std::string normalised = schema.normalise_for_index(spec, value);
  return crypto::blind_index(keys.named_key(index_slot(spec.name)), normalised);
}
}  // namespace

std::vector<Subject> Records::find_metadata(std::string_view field, std::string_view value) {
  const FieldSpec& spec = schema_.require(field);
  const crypto::BlindIndex digest = index_digest(schema_, keys_, spec, value);
  std::vector<Subject> out;
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT b.subject_id, s.status, s.created_at, s.updated_at, s.legal_hold, s.restricted, s.objected"
           " FROM blind_index b JOIN subjects s ON s.id = b.subject_id"
           " WHERE b.field = ? AND b.digest = ? ORDER BY b.subject_id",
           {spec.name, digest}, [&](const Row& r) {
             Subject s;
             const auto b = r.blob(0);
             if (b.size() != s.id.size()) return;
             std::copy(b.begin(), b.end(), s.id.begin());
             s.status = std::string(r.text(1));
             s.created_us = r.integer(2);
             s.updated_us = r.integer(3);
             s.legal_hold = r.integer(4) != 0;
             s.restricted = r.integer(5) != 0;
             s.objected = r.integer(6) != 0;
             out.push_back(std::move(s));
           });
  return out;
}

std::vector<SubjectId> Records::find(std::string_view field, std::string_view value) {
  const FieldSpec& spec = schema_.require(field);
  const crypto::BlindIndex digest = index_digest(schema_, keys_, spec, value);
  std::vector<SubjectId> out;
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT subject_id FROM blind_index WHERE field = ? AND digest = ? ORDER BY subject_id",
           {spec.name, digest}, [&](const Row& r) {
             SubjectId id{};
             const auto b = r.blob(0);
             if (b.size() == id.size()) std::copy(b.begin(), b.end(), id.begin());
             out.push_back(id);
           });
  return out;
}

std::vector<SubjectId> Records::sharing_identifiers(const SubjectId& id) {
  std::set<SubjectId> out = {id};
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT other.subject_id FROM blind_index own JOIN blind_index other"
           " ON other.field = own.field AND other.digest = own.digest"
           " WHERE own.subject_id = ? AND own.field IN ('email', 'phone', 'external_id')",
           {store::Blob(id)}, [&](const Row& r) {
             SubjectId other{};
             const auto b = r.blob(0);
             if (b.size() == other.size()) std::copy(b.begin(), b.end(), other.begin());
             out.insert(other);
           });
  return {out.begin(), out.end()};
}

void Records::update(const audit::Actor& actor, const SubjectId& id, const FieldMap& set,
                     const std::vector<std::string>& remove, const std::vector<SubjectId>& may_share) {
  Prepared p = prepare(set);
  for (const auto& name : remove) schema_.require(name);
  for (const FieldSpec& f : schema_.fields())
    if (f.searchable) keys_.named_key(index_slot(f.name));
  auto tx = store_.begin(TxMode::write);
  auto row = load_row(*tx, id, true);
  if (!row || row->subject.status != "active") no_subject(id);
  // Create's duplicate probe, in the same transaction as the write: a new
  // identifier that already names another active subject is refused, so an
  // update cannot make the duplicates a create would have refused.
  {
    std::set<SubjectId> matched;
    std::set<std::string> on;
    for (const auto& entry : p.indexed) {
      const std::string& field = entry.first;  // named, not a structured binding: clang 14 cannot capture those
      const auto digest = crypto::blind_index(keys_.named_key(index_slot(field)), entry.second);
      tx->exec("SELECT subject_id FROM blind_index WHERE field = ? AND digest = ?", {field, digest}, [&](const Row& r) {
        const SubjectId other = subject_id_of(r.blob(0));
        if (other == id || std::find(may_share.begin(), may_share.end(), other) != may_share.end()) return;
        matched.insert(other);
        on.insert(field);
      });
    }
    if (!matched.empty()) {
      std::vector<std::string> ids;
      for (const auto& other : matched) ids.push_back(to_hex(other));
      for (auto& [name, value] : p.values) wipe(value);
      for (auto& [name, normalised] : p.indexed) wipe(normalised);
      throw DuplicateSubject(std::move(ids), {on.begin(), on.end()});
    }
  }
  const crypto::SecretKey dek = unwrap_dek(id, row->wrapped_dek);
  SealedFields sealed = decode_fields(row->fields);
  std::vector<std::string> changed;
  for (const auto& name : remove)
    if (sealed.erase(name) > 0) changed.push_back(name);
  for (auto& [name, value] : p.values) {
    sealed[name] = crypto::seal(dek, {crypto::kSealFormat, kDekVersion, schema_.version()},
                                crypto::field_ad(id, name, schema_.version()), crypto::as_bytes(value));
    changed.push_back(name);
  }
  if (sealed.empty()) throw Error(ErrorCode::invalid_argument, "a subject needs at least one field");
  const std::int64_t now = audit_.now_us();
  tx->exec("UPDATE subjects SET fields = ?, updated_at = ? WHERE id = ?", {encode_fields(sealed), now, id});
  // Re-index every searchable field that changed or was removed.
  for (const auto& name : changed) {
    const FieldSpec& spec = schema_.require(name);
    if (spec.searchable) tx->exec("DELETE FROM blind_index WHERE subject_id = ? AND field = ?", {id, name});
  }
  insert_indexes(*tx, keys_, id, p.indexed);
  std::sort(changed.begin(), changed.end());
  audit_.append(*tx, actor, {"subject.update", to_hex(id), changed, {}, true, "", ""});
  tx->commit();
  for (auto& [name, value] : p.values) wipe(value);
}

ErasureReport Records::erase(const audit::Actor& actor, const SubjectId& id, bool checkpoint_wal,
                             const std::string& detail) {
  ErasureReport report;
  report.subject_id = to_hex(id);
  {
    auto tx = store_.begin(TxMode::write);
    auto row = load_row(*tx, id, true);
    if (!row || row->subject.status != "active") no_subject(id);
    if (row->subject.legal_hold)
      throw Error(ErrorCode::conflict, "subject " + report.subject_id + " is under legal hold");
    for (const auto& [name, sealed] : decode_fields(row->fields)) report.fields_erased.push_back(name);
    // secure_delete zeroes the freed bytes of the old row version.
    tx->exec(
        "UPDATE subjects SET status = 'erased', wrapped_dek = NULL, kek_version = NULL, fields = NULL,"
        " updated_at = ? WHERE id = ?",
        {audit_.now_us(), id});
    report.index_entries_removed = tx->exec("DELETE FROM blind_index WHERE subject_id = ?", {id});
    if (key_destroyed_hook_) key_destroyed_hook_(*tx, id);
    // Touchpoint notes are not touched: without the DEK they are noise. Their
    // type is the caller's free text in the clear ("call with <name> about
    // ..."), so it goes (secure_delete zeroes the old bytes); channel and time
    // stay for recency analytics. This is the one step that grows with the
    // subject's touchpoints (an indexed update, ~µs each).
    report.touchpoint_types_erased =
        tx->exec("UPDATE touchpoints SET type = 'erased' WHERE subject_id = ? AND type <> 'erased'", {id});
    audit_.append(*tx, actor, {"subject.erase", report.subject_id, report.fields_erased, {}, true, "", detail});
    tx->commit();
  }
  // Move the WAL's pages (which hold pre-images) into the zeroed main file.
  if (checkpoint_wal) store_.checkpoint();
  return report;
}

void Records::set_flags(const audit::Actor& actor, const SubjectId& id, std::optional<bool> legal_hold,
                        std::optional<bool> restricted) {
  auto tx = store_.begin(TxMode::write);
  auto row = load_row(*tx, id, false);
  if (!row || row->subject.status != "active") no_subject(id);
  std::string detail;
  if (legal_hold) {
    tx->exec("UPDATE subjects SET legal_hold = ? WHERE id = ?", {*legal_hold ? 1 : 0, id});
    detail += std::string("legal_hold=") + (*legal_hold ? "1" : "0");
  }
  if (restricted) {
    tx->exec("UPDATE subjects SET restricted = ? WHERE id = ?", {*restricted ? 1 : 0, id});
    detail += std::string(detail.empty() ? "" : " ") + "restricted=" + (*restricted ? "1" : "0");
  }
  audit_.append(*tx, actor, {"subject.flags", to_hex(id), {}, {}, true, "", detail});
  tx->commit();
}

Subject Records::metadata(const SubjectId& id) {
  auto tx = store_.begin(TxMode::read);
  auto row = load_row(*tx, id, false);
  if (!row) no_subject(id);
  return row->subject;
}

std::string Records::add_touchpoint(const audit::Actor& actor, const SubjectId& id, const Touchpoint& tp) {
  std::array<std::uint8_t, 16> tp_id{};
  randombytes_buf(tp_id.data(), tp_id.size());
  if (tp.notes && tp.notes->size() > schema_.max_value_bytes())
    throw Error(ErrorCode::invalid_field, "field 'notes': value is larger than the limit");
  auto tx = store_.begin(TxMode::write);
  auto row = load_row(*tx, id, true);
  if (!row || row->subject.status != "active") no_subject(id);
  std::optional<crypto::Bytes> notes;
  if (tp.notes) {
    const crypto::SecretKey dek = unwrap_dek(id, row->wrapped_dek);
    crypto::Bytes ad = crypto::field_ad(id, kTouchpointNotes, schema_.version());
    ad.insert(ad.end(), tp_id.begin(), tp_id.end());
    notes = crypto::seal(dek, {crypto::kSealFormat, kDekVersion, schema_.version()}, ad, crypto::as_bytes(*tp.notes));
  }
  tx->exec("INSERT INTO touchpoints (id, subject_id, channel, type, at, notes) VALUES (?, ?, ?, ?, ?, ?)",
           {tp_id, id, tp.channel, tp.type, tp.at_us, notes ? store::Param(*notes) : store::Param()});
  audit_.append(*tx, actor,
                {"touchpoint.create", to_hex(id), notes ? std::vector<std::string>{"notes"} : std::vector<std::string>{},
                 {}, true, "", "channel=" + tp.channel});
  tx->commit();
  return hex(tp_id);
}

namespace {

// A touchpoints row (id, channel, type, at, notes); notes opened when `dek` is given.
Touchpoint touchpoint_from_row(const Row& r, const SubjectId& id, const crypto::SecretKey* dek) {
  Touchpoint tp;
  const auto tp_id = r.blob(0);
  tp.id = hex(tp_id);
  tp.channel = std::string(r.text(1));
  tp.type = std::string(r.text(2));
  tp.at_us = r.integer(3);
  if (dek != nullptr && !r.is_null(4)) {
    crypto::Bytes ad = crypto::field_ad(id, kTouchpointNotes, crypto::peek_header(r.blob(4)).schema_version);
    ad.insert(ad.end(), tp_id.begin(), tp_id.end());
    tp.notes = plaintext(crypto::open(*dek, ad, r.blob(4), "touchpoint notes"));
  }
  return tp;
}

void commit_audited(Transaction& tx) {
  try {
    tx.commit();
  } catch (const Error& e) {
    throw Error(ErrorCode::audit_unavailable, std::string("audit log cannot be written: ") + e.what());
  }
}

}  // namespace

std::vector<Touchpoint> Records::touchpoints(const audit::Actor& actor, const SubjectId& id, bool with_notes) {
  std::vector<Touchpoint> out;
  auto tx = store_.begin(TxMode::write);
  auto row = load_row(*tx, id, true);
  if (!row) no_subject(id);
  std::optional<crypto::SecretKey> dek;
  if (with_notes && !row->wrapped_dek.empty()) dek = unwrap_dek(id, row->wrapped_dek);
  tx->exec("SELECT id, channel, type, at, notes FROM touchpoints WHERE subject_id = ? ORDER BY at, id", {id},
           [&](const Row& r) { out.push_back(touchpoint_from_row(r, id, dek ? &*dek : nullptr)); });
  audit_.append(*tx, actor,
                {"touchpoint.read", to_hex(id), with_notes ? std::vector<std::string>{"notes"} : std::vector<std::string>{},
                 {}, true, "", "count=" + std::to_string(out.size())});
  commit_audited(*tx);
  return out;
}

void Records::for_each_touchpoint(const audit::Actor& actor, const SubjectId& id, bool with_notes,
                                  const std::function<bool(const Touchpoint&)>& each) {
  std::optional<crypto::SecretKey> dek;
  {
    // The read is in the log before any note leaves.
    auto tx = store_.begin(TxMode::write);
    auto row = load_row(*tx, id, true);
    if (!row) no_subject(id);
    if (with_notes && !row->wrapped_dek.empty()) dek = unwrap_dek(id, row->wrapped_dek);
    const std::int64_t count = tx->scalar("SELECT count(*) FROM touchpoints WHERE subject_id = ?", {id}).value_or(0);
    audit_.append(*tx, actor,
                  {"touchpoint.read", to_hex(id),
                   with_notes ? std::vector<std::string>{"notes"} : std::vector<std::string>{}, {}, true, "",
                   "count=" + std::to_string(count)});
    commit_audited(*tx);
  }
  constexpr std::int64_t kPage = 512;
  std::int64_t after_at = std::numeric_limits<std::int64_t>::min();
  std::vector<std::uint8_t> after_id;
  std::vector<Touchpoint> page;
  for (;;) {
    page.clear();
    {
      auto tx = store_.begin(TxMode::read);
      tx->exec("SELECT id, channel, type, at, notes FROM touchpoints WHERE subject_id = ? AND (at > ? OR (at = ? AND id > ?))"
               " ORDER BY at, id LIMIT ?",
               {id, after_at, after_at, store::Blob(after_id), kPage}, [&](const Row& r) {
                 page.push_back(touchpoint_from_row(r, id, dek ? &*dek : nullptr));
                 after_id.assign(r.blob(0).begin(), r.blob(0).end());
               });
    }
    for (const auto& tp : page)
      if (!each(tp)) return;
    if (static_cast<std::int64_t>(page.size()) < kPage) return;
    after_at = page.back().at_us;
  }
}

void Records::check_order(const Order& order) {
  if (order.amount_minor < 0) throw Error(ErrorCode::invalid_field, "field 'amount_minor': must not be negative");
  if (order.currency.size() != 3 || !std::all_of(order.currency.begin(), order.currency.end(),
                                                  [](char c) { return c >= 'A' && c <= 'Z'; }))
    throw Error(ErrorCode::invalid_field, "field 'currency': expected an ISO 4217 code like EUR");
}

std::string Records::add_order(const audit::Actor& actor, const SubjectId& id, const Order& order) {
  check_order(order);
  std::array<std::uint8_t, 16> order_id{};
  randombytes_buf(order_id.data(), order_id.size());
  auto tx = store_.begin(TxMode::write);
  auto row = load_row(*tx, id, false);
  if (!row || row->subject.status != "active") no_subject(id);
  tx->exec("INSERT INTO orders (id, subject_id, amount_minor, currency, at) VALUES (?, ?, ?, ?, ?)",
           {order_id, id, order.amount_minor, order.currency, order.at_us});
  audit_.append(*tx, actor, {"order.create", to_hex(id), {}, {}, true, "", ""});
  tx->commit();
  return hex(order_id);
}

std::vector<Order> Records::orders(const SubjectId& id) {
  std::vector<Order> out;
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT id, amount_minor, currency, at FROM orders WHERE subject_id = ? ORDER BY at, id", {id},
           [&](const Row& r) { out.push_back({hex(r.blob(0)), r.integer(1), std::string(r.text(2)), r.integer(3)}); });
  return out;
}

std::vector<Subject> Records::read_campaign_page(const audit::Actor& actor, const CampaignQuery& q,
                                                 const std::optional<SubjectId>& after, std::size_t limit,
                                                 const ReadSpec& spec) {
  if (!q.candidates) throw Error(ErrorCode::internal, "a campaign page needs its candidates");
  // Candidates come in batches of at least this many, so a page of a few
  // eligible subjects among many objected ones takes few round trips.
  const std::size_t batch = std::max<std::size_t>(limit, 256);
  // The batch is bound as one IN list: SQLite (3.15) allows 999 variables.
  if (limit > 900) throw Error(ErrorCode::internal, "a campaign page holds at most 900 subjects");
  // One statement per batch of candidates, set-based: the batch's ids are
  // bound as one IN list (padded to `batch` with its first id, so the
  // statement text, and its prepared form, is always the same), and the
  // store applies status, restriction, objection and the segment by the
  // primary key, returning eligible rows in id order.
  std::string sql = "SELECT s.id, s.created_at, s.updated_at, s.wrapped_dek, s.fields FROM subjects s";
  if (!q.segment.empty()) sql += " JOIN rfm_scores r ON r.subject_id = s.id AND r.segment = ?";
  sql += " WHERE s.status = 'active' AND s.restricted = 0 AND s.objected = 0 AND s.id IN (?";
  for (std::size_t i = 1; i < batch; ++i) sql += ",?";
  sql += ") ORDER BY s.id";
  std::vector<Subject> out;
  std::vector<store::Param> params;
  params.reserve(batch + 1);
  auto tx = store_.begin(TxMode::write);
  SubjectId cursor = after.value_or(SubjectId{});
  for (bool more = true; more && out.size() < limit;) {
    const std::vector<SubjectId> ids = q.candidates(*tx, cursor, batch);
    if (ids.empty()) break;
    more = ids.size() == batch;
    cursor = ids.back();
    params.clear();
    if (!q.segment.empty()) params.emplace_back(q.segment);
    for (std::size_t i = 0; i < batch; ++i) params.emplace_back(store::Blob(ids[i < ids.size() ? i : 0]));
    tx->exec_v(sql, params, [&](const Row& r) {
      // A full page ends here; the next page starts after its last subject,
      // so eligible rows left in this batch are read then, never skipped.
      if (out.size() == limit) return;
      Subject s;
      s.id = subject_id_of(r.blob(0));
      s.status = "active";
      s.created_us = r.integer(1);
      s.updated_us = r.integer(2);
      const crypto::SecretKey dek = unwrap_dek(s.id, r.blob(3));
      s.fields = open_fields(s.id, dek, r.blob(4), spec.fields);
      out.push_back(std::move(s));
    });
  }
  if (out.empty()) return out;
  audit::Event event{spec.operation, "", spec.fields, spec.masked, true, "",
                     "purpose=" + q.purpose + " channel=" + q.channel + (q.segment.empty() ? "" : " segment=" + q.segment) +
                         " subjects=" + std::to_string(out.size()),
                     {}};
  for (const auto& s : out) event.subject_ids.push_back(to_hex(s.id));
  audit_.append(*tx, actor, event);
  try {
    tx->commit();
  } catch (const Error& e) {
    for (auto& s : out)
      for (auto& [k, v] : s.fields) wipe(v);
    throw Error(ErrorCode::audit_unavailable, std::string("audit log cannot be written: ") + e.what());
  }
  return out;
}

crypto::SecretKey Records::active_subject_dek(const SubjectId& id) {
  std::vector<std::uint8_t> wrapped;
  {
    auto tx = store_.begin(TxMode::read);
    auto row = load_row(*tx, id, true);
    if (!row || row->subject.status != "active") no_subject(id);
    wrapped = row->wrapped_dek;
  }
  return unwrap_dek(id, wrapped);
}

std::string Records::seal_note(const SubjectId& id, const std::string& what, const std::string& plaintext) {
  const crypto::SecretKey dek = active_subject_dek(id);
  const auto sealed = crypto::seal(dek, {crypto::kSealFormat, kDekVersion, schema_.version()},
                                   crypto::field_ad(id, what, schema_.version()), crypto::as_bytes(plaintext));
  return auditfmt::base64_encode(sealed);
}

std::string Records::open_note(const SubjectId& id, const std::string& what, const std::string& sealed_b64) {
  const auto sealed = auditfmt::base64_decode(sealed_b64);
  if (!sealed) throw Error(ErrorCode::integrity, "sealed note '" + what + "' is malformed");
  const crypto::SecretKey dek = active_subject_dek(id);
  return plaintext(crypto::open(dek, crypto::field_ad(id, what, crypto::peek_header(*sealed).schema_version), *sealed,
                                "note '" + what + "'"));
}

void Records::scan(const audit::Actor& actor, const ReadSpec& spec,
                   const std::function<void(const Subject&)>& on_subject) {
  for (const auto& f : spec.fields) schema_.require(f);
  // The entry goes first: if it cannot be written, nothing is decrypted.
  audit_.append_now(actor, {spec.operation, "", spec.fields, spec.masked, true, "", "scan"});
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT id, created_at, updated_at, legal_hold, restricted, wrapped_dek, fields FROM subjects"
           " WHERE status = 'active' ORDER BY id",
           {}, [&](const Row& r) {
             Subject s;
             const auto idb = r.blob(0);
             if (idb.size() != s.id.size()) return;
             std::copy(idb.begin(), idb.end(), s.id.begin());
             s.status = "active";
             s.created_us = r.integer(1);
             s.updated_us = r.integer(2);
             s.legal_hold = r.integer(3) != 0;
             s.restricted = r.integer(4) != 0;
             const crypto::SecretKey dek = unwrap_dek(s.id, r.blob(5));
             s.fields = open_fields(s.id, dek, r.blob(6), spec.fields);
             on_subject(s);
             for (auto& [k, v] : s.fields) wipe(v);
           });
}

std::vector<DuplicateCluster> Records::duplicate_clusters(
    const std::optional<std::pair<std::string, SubjectId>>& after, std::size_t limit) {
  // A subject has one value per field, so within a field a cluster's
  // smallest subject id names it: the cursor, with no digest leaving here.
  const std::string after_field = after ? after->first : std::string();
  const SubjectId after_id = after ? after->second : SubjectId{};
  struct Found {
    std::string field;
    std::vector<std::uint8_t> digest;
  };
  std::vector<Found> found;
  std::vector<DuplicateCluster> out;
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT field, digest, min(subject_id) FROM blind_index WHERE field >= ? GROUP BY field, digest"
           " HAVING count(*) > 1 AND (field > ? OR min(subject_id) > ?) ORDER BY field, min(subject_id) LIMIT ?",
           {after_field, after_field, after_id, static_cast<std::int64_t>(limit)},
           [&](const Row& r) { found.push_back({std::string(r.text(0)), r.blob_copy(1)}); });
  for (const auto& f : found) {
    DuplicateCluster c;
    c.matched_on = f.field;
    tx->exec("SELECT subject_id FROM blind_index WHERE field = ? AND digest = ? ORDER BY subject_id",
             {f.field, f.digest}, [&](const Row& r) { c.subjects.push_back(subject_id_of(r.blob(0))); });
    out.push_back(std::move(c));
  }
  return out;
}

MergeReport Records::merge(const audit::Actor& actor, const SubjectId& survivor,
                           const std::vector<SubjectId>& merged_away, const std::string& detail,
                           const MergeDependants& move_dependants) {
  if (merged_away.empty()) throw Error(ErrorCode::invalid_argument, "name at least one subject to merge");
  std::set<SubjectId> seen{survivor};
  for (const auto& id : merged_away)
    if (!seen.insert(id).second)
      throw Error(ErrorCode::invalid_argument,
                  "subject " + to_hex(id) + " is named twice (or is the subject merged into)");
  for (const FieldSpec& f : schema_.fields())
    if (f.searchable) keys_.named_key(index_slot(f.name));

  MergeReport report;
  report.survivor = to_hex(survivor);
  {
    auto tx = store_.begin(TxMode::write);
    // Every check before the first write; the transaction is the rest.
    auto mergeable = [&](const SubjectId& id) {
      auto row = load_row(*tx, id, true);
      if (!row || row->subject.status != "active") no_subject(id);
      if (row->subject.restricted)
        throw Error(ErrorCode::subject_restricted,
                    "subject " + to_hex(id) + " is restricted (GDPR Art. 18): it cannot be merged");
      if (row->subject.legal_hold)
        throw Error(ErrorCode::conflict, "subject " + to_hex(id) + " is under legal hold: it cannot be merged");
      return std::move(*row);
    };
    SubjectRow into = mergeable(survivor);
    std::vector<SubjectRow> from;
    for (const auto& id : merged_away) from.push_back(mergeable(id));

    const std::int64_t now = audit_.now_us();
    const crypto::SecretKey into_dek = unwrap_dek(survivor, into.wrapped_dek);
    SealedFields sealed = decode_fields(into.fields);
    std::set<std::string> kept;
    std::vector<std::pair<std::string, std::string>> indexed;  // field, normalised (added fields)
    for (std::size_t k = 0; k < from.size(); ++k) {
      const SubjectId& id = merged_away[k];
      const crypto::SecretKey dek = unwrap_dek(id, from[k].wrapped_dek);
      for (const auto& [name, ct] : decode_fields(from[k].fields)) {
        if (sealed.count(name)) {
          kept.insert(name);
          continue;
        }
        std::string value = plaintext(crypto::open(dek, crypto::field_ad(id, name, crypto::peek_header(ct).schema_version),
                                                   ct, "field '" + name + "' of subject " + to_hex(id)));
        sealed.emplace(name, crypto::seal(into_dek, {crypto::kSealFormat, kDekVersion, schema_.version()},
                                          crypto::field_ad(survivor, name, schema_.version()),
                                          crypto::as_bytes(value)));
        if (const FieldSpec* spec = schema_.find(name); spec != nullptr && spec->searchable)
          indexed.emplace_back(name, schema_.normalise_for_index(*spec, value));
        report.fields_added.push_back(name);
        wipe(value);
      }
    }
    report.fields_kept.assign(kept.begin(), kept.end());
    tx->exec("UPDATE subjects SET fields = ?, updated_at = ? WHERE id = ?", {encode_fields(sealed), now, survivor});
    insert_indexes(*tx, keys_, survivor, indexed);
    for (auto& [field, normalised] : indexed) wipe(normalised);

    for (std::size_t k = 0; k < from.size(); ++k) {
      const SubjectId& id = merged_away[k];
      report.merged.push_back(to_hex(id));
      // Touchpoint notes are bound to their subject: re-sealed for the survivor.
      const crypto::SecretKey dek = unwrap_dek(id, from[k].wrapped_dek);
      std::vector<std::pair<std::vector<std::uint8_t>, std::vector<std::uint8_t>>> notes;  // tp id, sealed
      tx->exec("SELECT id, notes FROM touchpoints WHERE subject_id = ? AND notes IS NOT NULL", {id},
               [&](const Row& r) { notes.emplace_back(r.blob_copy(0), r.blob_copy(1)); });
      for (const auto& [tp_id, ct] : notes) {
        crypto::Bytes ad = crypto::field_ad(id, kTouchpointNotes, crypto::peek_header(ct).schema_version);
        ad.insert(ad.end(), tp_id.begin(), tp_id.end());
        crypto::Bytes text = crypto::open(dek, ad, ct, "touchpoint notes");
        crypto::Bytes new_ad = crypto::field_ad(survivor, kTouchpointNotes, schema_.version());
        new_ad.insert(new_ad.end(), tp_id.begin(), tp_id.end());
        const auto resealed =
            crypto::seal(into_dek, {crypto::kSealFormat, kDekVersion, schema_.version()}, new_ad, text);
        if (!text.empty()) sodium_memzero(text.data(), text.size());
        tx->exec("UPDATE touchpoints SET notes = ? WHERE id = ?", {resealed, tp_id});
      }
      report.touchpoints_moved +=
          tx->exec("UPDATE touchpoints SET subject_id = ? WHERE subject_id = ?", {survivor, id});
      report.orders_moved += tx->exec("UPDATE orders SET subject_id = ? WHERE subject_id = ?", {survivor, id});
      tx->exec("DELETE FROM rfm_scores WHERE subject_id = ?", {id});  // recomputed with the survivor's orders
      if (move_dependants) {
        const NoteResealer reseal = [&](const std::string& what, const std::string& sealed_b64) {
          const auto sealed = auditfmt::base64_decode(sealed_b64);
          if (!sealed) throw Error(ErrorCode::integrity, "sealed note '" + what + "' is malformed");
          crypto::Bytes text = crypto::open(dek, crypto::field_ad(id, what, crypto::peek_header(*sealed).schema_version),
                                            *sealed, "note '" + what + "'");
          const auto resealed = crypto::seal(into_dek, {crypto::kSealFormat, kDekVersion, schema_.version()},
                                             crypto::field_ad(survivor, what, schema_.version()), text);
          if (!text.empty()) sodium_memzero(text.data(), text.size());
          return auditfmt::base64_encode(resealed);
        };
        move_dependants(*tx, id, survivor, reseal);
      }
      // Crypto-shred, as erase does: the DEK goes, secure_delete zeroes the old row.
      tx->exec(
          "UPDATE subjects SET status = 'merged', wrapped_dek = NULL, kek_version = NULL, fields = NULL,"
          " updated_at = ? WHERE id = ?",
          {now, id});
      tx->exec("DELETE FROM blind_index WHERE subject_id = ?", {id});
      if (key_destroyed_hook_) key_destroyed_hook_(*tx, id);
    }
    // Art. 21(3): an objection made through either record binds the person.
    if (std::any_of(from.begin(), from.end(), [](const SubjectRow& r) { return r.subject.objected; }))
      mark_objected(*tx, survivor);
    audit::Event event{"subject.merge", report.survivor, report.fields_added, {}, true, "",
                       detail + " merged=" + std::to_string(report.merged.size()) +
                           " kept=" + join(report.fields_kept) +
                           " touchpoints=" + std::to_string(report.touchpoints_moved) +
                           " orders=" + std::to_string(report.orders_moved),
                       report.merged};
    audit_.append(*tx, actor, event);
    tx->commit();
  }
  // As after an erasure: no pre-image of the shredded rows stays in the WAL.
  store_.checkpoint();
  return report;
}

// ---- Bulk import

void Records::prepare_import() {
  for (const FieldSpec& f : schema_.fields())
    if (f.searchable) keys_.named_key(index_slot(f.name));
}

Records::ImportedSubject Records::import_subject(Transaction& tx, const FieldMap& fields, OnConflict on_conflict,
                                                 std::int64_t now) {
  if (fields.empty()) throw Error(ErrorCode::invalid_field, "a subject needs at least one field");
  Prepared prepared = prepare(fields);
  Digests digests;
  for (const auto& [field, normalised] : prepared.indexed)
    digests.emplace_back(field, crypto::blind_index(keys_.named_key(index_slot(field)), normalised));
  ImportedSubject result;
  CreateOutcome& o = result.outcome;
  // Active subjects named by the external id (`by_external_id`) or by the other identifiers.
  auto matches_of = [&](bool by_external_id) {
    std::map<SubjectId, int> matched;
    std::set<std::string> on;
    for (const auto& entry : digests) {
      const auto& field = entry.first;
      if ((field == "external_id") != by_external_id) continue;
      tx.exec("SELECT subject_id FROM blind_index WHERE field = ? AND digest = ?", {field, entry.second},
              [&](const Row& r) {
                matched[subject_id_of(r.blob(0))] = 1;
                on.insert(field);
              });
    }
    o.matches.clear();
    for (const auto& [id, unused] : matched) o.matches.push_back(id);
    o.matched_on.assign(on.begin(), on.end());
  };
  // The external id first: the same customer again is the same subject.
  matches_of(true);
  bool resolved = !o.matches.empty();
  if (!resolved && on_conflict != OnConflict::create) {
    matches_of(false);
    resolved = !o.matches.empty();
    if (resolved && on_conflict == OnConflict::reject) {
      o.id = o.matches.front();
      o.kind = CreateOutcome::Kind::duplicate;
      return result;
    }
  }
  if (resolved) {
    o.id = o.matches.front();
    o.kind = CreateOutcome::Kind::duplicate;
    if (o.matches.size() != 1) return result;
    auto row = load_row(tx, o.id, true);
    if (!row || row->subject.status != "active") return result;
    if (row->subject.restricted) {
      o.kind = CreateOutcome::Kind::restricted;
      return result;
    }
    o.kind = CreateOutcome::Kind::merged;
    result.dek.emplace(unwrap_dek(o.id, row->wrapped_dek));
    SealedFields sealed = decode_fields(row->fields);
    for (auto& [name, value] : prepared.values) {
      if (sealed.count(name)) {
        o.fields_kept.push_back(name);
        continue;
      }
      sealed.emplace(name, crypto::seal(*result.dek, {crypto::kSealFormat, kDekVersion, schema_.version()},
                                        crypto::field_ad(o.id, name, schema_.version()), crypto::as_bytes(value)));
      o.fields_added.push_back(name);
    }
    if (!o.fields_added.empty()) {
      tx.exec("UPDATE subjects SET fields = ?, updated_at = ? WHERE id = ?", {encode_fields(sealed), now, o.id});
      const std::set<std::string> added(o.fields_added.begin(), o.fields_added.end());
      insert_digests(tx, o.id, digests, &added);
    }
  } else {
    o.matches.clear();
    o.matched_on.clear();
    // The id and every nonce (public values) from one CSPRNG call, the data
    // key from its own into guarded memory: a call per value was a syscall
    // per value, ~6 % of an import's CPU.
    std::vector<std::uint8_t> random(o.id.size() + crypto::kSealNonceSize * (prepared.values.size() + 1));
    randombytes_buf(random.data(), random.size());
    std::size_t used = o.id.size();
    const auto next_nonce = [&] {
      const std::span<const std::uint8_t, crypto::kSealNonceSize> nonce(random.data() + used, crypto::kSealNonceSize);
      used += crypto::kSealNonceSize;
      return nonce;
    };
    std::copy(random.begin(), random.begin() + static_cast<std::ptrdiff_t>(o.id.size()), o.id.begin());
    result.dek.emplace(crypto::SecretKey::random());
    SealedFields sealed;
    for (auto& [name, value] : prepared.values) {
      sealed.emplace(name, crypto::seal_with_nonce(result.dek->span(), {crypto::kSealFormat, kDekVersion, schema_.version()},
                                                   next_nonce(), crypto::field_ad(o.id, name, schema_.version()),
                                                   crypto::as_bytes(value)));
      o.fields_added.push_back(name);
    }
    const std::uint32_t kek_version = keys_.kek_version(tx);
    const crypto::Bytes wrapped = crypto::wrap_key_with_nonce(keys_.keyring().kek(kek_version), kek_version,
                                                              store::dek_slot(o.id), result.dek->span(), next_nonce());
    tx.exec(
        "INSERT INTO subjects (id, status, created_at, updated_at, kek_version, dek_version, wrapped_dek, fields)"
        " VALUES (?, 'active', ?, ?, ?, ?, ?, ?)",
        {o.id, now, now, kek_version, kDekVersion, wrapped, encode_fields(sealed)});
    insert_digests(tx, o.id, digests);
    o.kind = CreateOutcome::Kind::created;
  }
  for (auto& [name, value] : prepared.values) wipe(value);
  return result;
}

bool Records::import_touchpoint(Transaction& tx, const SubjectId& id, const crypto::SecretKey& dek,
                                const RowId& row_id, const Touchpoint& tp, bool new_subject) {
  if (tp.notes && tp.notes->size() > schema_.max_value_bytes())
    throw Error(ErrorCode::invalid_field, "field 'notes': value is larger than the limit");
  if (!new_subject && tx.scalar("SELECT count(*) FROM touchpoints WHERE id = ?", {row_id}).value_or(0) != 0) return false;
  std::optional<crypto::Bytes> notes;
  if (tp.notes) {
    crypto::Bytes ad = crypto::field_ad(id, kTouchpointNotes, schema_.version());
    ad.insert(ad.end(), row_id.begin(), row_id.end());
    notes = crypto::seal(dek, {crypto::kSealFormat, kDekVersion, schema_.version()}, ad, crypto::as_bytes(*tp.notes));
  }
  tx.exec("INSERT INTO touchpoints (id, subject_id, channel, type, at, notes) VALUES (?, ?, ?, ?, ?, ?)",
          {row_id, id, tp.channel, tp.type, tp.at_us, notes ? store::Param(*notes) : store::Param()});
  return true;
}

bool Records::import_order(Transaction& tx, const SubjectId& id, const RowId& row_id, const Order& order,
                           bool new_subject) {
  check_order(order);
  if (!new_subject && tx.scalar("SELECT count(*) FROM orders WHERE id = ?", {row_id}).value_or(0) != 0) return false;
  tx.exec("INSERT INTO orders (id, subject_id, amount_minor, currency, at) VALUES (?, ?, ?, ?, ?)",
          {row_id, id, order.amount_minor, order.currency, order.at_us});
  return true;
}

std::vector<Records::ExportedSubject> Records::read_export_page(const audit::Actor& actor,
                                                               const std::optional<SubjectId>& after,
                                                               std::size_t limit, const ReadSpec& spec,
                                                               bool with_restricted) {
  for (const auto& f : spec.fields) schema_.require(f);
  const SubjectId zero{};
  std::vector<ExportedSubject> out;
  auto tx = store_.begin(TxMode::write);
  tx->exec(with_restricted ? "SELECT id, created_at, updated_at, wrapped_dek, fields, restricted FROM subjects"
                             " WHERE status = 'active' AND id > ? ORDER BY id LIMIT ?"
                           : "SELECT id, created_at, updated_at, wrapped_dek, fields, restricted FROM subjects"
                             " WHERE status = 'active' AND restricted = 0 AND id > ? ORDER BY id LIMIT ?",
           {store::Blob(after ? *after : zero), static_cast<std::int64_t>(limit)}, [&](const Row& r) {
             ExportedSubject e;
             Subject& s = e.subject;
             const auto idb = r.blob(0);
             if (idb.size() != s.id.size()) return;
             std::copy(idb.begin(), idb.end(), s.id.begin());
             s.status = "active";
             s.created_us = r.integer(1);
             s.updated_us = r.integer(2);
             s.restricted = r.integer(5) != 0;
             const crypto::SecretKey dek = unwrap_dek(s.id, r.blob(3));
             s.fields = open_fields(s.id, dek, r.blob(4), spec.fields);
             out.push_back(std::move(e));
           });
  if (out.empty()) return out;
  for (auto& e : out) {
    tx->exec("SELECT id, amount_minor, currency, at FROM orders WHERE subject_id = ? ORDER BY at, id", {e.subject.id},
             [&](const Row& r) {
               e.orders.push_back({hex(r.blob(0)), r.integer(1), std::string(r.text(2)), r.integer(3)});
             });
    tx->exec("SELECT id, channel, type, at, notes FROM touchpoints WHERE subject_id = ? ORDER BY at, id",
             {e.subject.id}, [&](const Row& r) { e.touchpoints.push_back(touchpoint_from_row(r, e.subject.id, nullptr)); });
  }
  audit::Event event{spec.operation, out.size() == 1 ? to_hex(out[0].subject.id) : "", spec.fields, spec.masked,
                     true, "", "subjects=" + std::to_string(out.size()), {}};
  if (out.size() > 1)
    for (const auto& e : out) event.subject_ids.push_back(to_hex(e.subject.id));
  audit_.append(*tx, actor, event);
  try {
    tx->commit();
  } catch (const Error& err) {
    for (auto& e : out)
      for (auto& [k, v] : e.subject.fields) wipe(v);
    throw Error(ErrorCode::audit_unavailable, std::string("audit log cannot be written: ") + err.what());
  }
  return out;
}

}  // namespace custos::records
