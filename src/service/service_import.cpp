// The bulk half of the façade (issue 18): NDJSON import with checkpoints,
// the NDJSON export that is its inverse, and the token list.
//
// An import commits its lines in chunks. Each chunk's transaction holds the
// lines' subjects, consents, orders and touchpoints, the errors of the
// chunk's failed lines, the import's checkpoint (the last line committed)
// and one audit entry naming the chunk's subjects: a kill at any moment
// leaves whole chunks, and the same import id resumes after the last one.
#include <sodium.h>

#include <algorithm>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "service_impl.h"

namespace custos::service {
namespace {

constexpr std::size_t kMaxItemsPerLine = 1000;  // consents, orders or touchpoints in one line
constexpr std::size_t kReadBlock = 64 * 1024;


bool valid_import_id(std::string_view id) {
  if (id.empty() || id.size() > 80) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' || c == '-';
  });
}

std::string random_import_id() {
  std::array<unsigned char, 12> raw{};
  randombytes_buf(raw.data(), raw.size());
  std::array<char, 25> hex{};
  sodium_bin2hex(hex.data(), hex.size(), raw.data(), raw.size());
  return std::string("imp_") + hex.data();
}

records::OnConflict on_conflict_of(const std::string& text) {
  if (text == "reject") return records::OnConflict::reject;
  if (text == "merge") return records::OnConflict::merge;
  if (text == "create") return records::OnConflict::create;
  bad_body("'on_conflict' must be one of reject, merge, create");
}

// A row id that is the same on every import of the same item (so a
// re-import inserts nothing): BLAKE2b-128 over the subject, the item's kind
// and place in its line, and its non-personal columns (never the notes).
records::Records::RowId row_id_for(const records::SubjectId& subject, std::string_view kind, std::size_t index,
                                   const std::string& columns) {
  records::Records::RowId id{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, id.size());
  crypto_generichash_update(&st, subject.data(), subject.size());
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(kind.data()), kind.size());
  const std::string at = std::to_string(index) + "|" + columns;
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(at.data()), at.size());
  crypto_generichash_final(&st, id.data(), id.size());
  return id;
}

// One line, parsed and checked as far as it can be without the store.
struct ImportLine {
  std::uint64_t number = 0;
  std::optional<std::pair<ErrorCode, std::string>> error;
  records::FieldMap fields;
  std::optional<records::OnConflict> on_conflict;
  std::vector<consent::EventInput> consents;
  std::vector<records::Order> orders;
  std::vector<records::Touchpoint> touchpoints;
};

const Json& array_or_empty(const Json& line, const char* key) {
  static const Json empty = Json::array();
  if (!line.contains(key)) return empty;
  const Json& v = line[key];
  if (!v.is_array()) throw Error(ErrorCode::invalid_field, std::string("property '") + key + "' must be an array");
  if (v.size() > kMaxItemsPerLine)
    throw Error(ErrorCode::invalid_field,
                std::string("property '") + key + "' holds more than " + std::to_string(kMaxItemsPerLine) + " items");
  return v;
}

// Each dated item of a line must say when: a re-import recognises an
// order, touchpoint or consent it already holds by it, and for a consent
// the time is part of its evidence.
void require_time(const Json& item) {
  if (!item.is_object() || !item.contains("at"))
    throw Error(ErrorCode::invalid_field, "field 'at': an import needs each item's time (RFC 3339)");
}

// Names the item of a line an error is about ("consents[2]: ...").
[[noreturn]] void rethrow_in(const char* key, std::size_t index, const Error& e) {
  throw Error(e.code(), std::string(key) + "[" + std::to_string(index) + "]: " + e.what());
}

consent::EventInput parse_import_consent(const Json& c, std::int64_t now) {
  only_keys(c, {"purpose", "channel", "event", "source", "lawful_basis", "notice_version", "at", "expires_at",
                "evidence", "proof"});
  consent::EventInput in;
  in.purpose = required_string(c, "purpose", 64);
  in.channel = required_string(c, "channel", 16);
  in.event = required_string(c, "event", 32);
  in.source = c.contains("source") ? required_string(c, "source", 32) : "import";
  // The privacy page's evidence is written by the page alone, in the data
  // subject's session (record_consent refuses it likewise).
  if (in.source == "privacy_page")
    throw Error(ErrorCode::invalid_field,
                "field 'source': 'privacy_page' is recorded only by the privacy page, in the data subject's session");
  if (c.contains("lawful_basis")) in.lawful_basis = required_string(c, "lawful_basis", 64);
  if (c.contains("notice_version")) in.notice_version = required_string(c, "notice_version", 128);
  in.at_us = parse_time_or_now(c, "at", now);
  if (c.contains("expires_at")) in.expires_us = parse_time_or_now(c, "expires_at", now);
  if (c.contains("evidence") && c.contains("proof"))
    throw Error(ErrorCode::invalid_field, "give the consent's evidence once ('evidence')");
  const char* key = c.contains("proof") ? "proof" : "evidence";
  Json evidence = c.contains(key) ? c[key] : Json::object();
  if (!evidence.is_object()) throw Error(ErrorCode::invalid_field, "field 'evidence': expected an object");
  refuse_vault_proof_keys(evidence, key);
  in.proof = evidence.dump();
  if (in.proof.size() > 4096) throw Error(ErrorCode::invalid_field, "field 'evidence': larger than 4 KiB");
  return in;
}

ImportLine parse_line(std::uint64_t number, std::string_view text, const records::Schema& schema, std::int64_t now) {
  ImportLine out;
  out.number = number;
  try {
    Json line;
    try {
      line = Json::parse(text);
    } catch (const Json::parse_error& e) {
      // Never e.what(): nlohmann quotes the input near the error.
      throw Error(ErrorCode::invalid_argument, "not valid JSON (at byte " + std::to_string(e.byte) + ")");
    } catch (const Json::exception&) {
      throw Error(ErrorCode::invalid_argument, "holds a number out of range");
    }
    // `id` (and `masked_fields`) are what an export line carries: another
    // vault's ids mean nothing here, so they are ignored.
    only_keys(line, {"id", "fields", "on_conflict", "consents", "orders", "touchpoints"});
    if (line.contains("on_conflict")) {
      if (!line["on_conflict"].is_string()) bad_body("'on_conflict' must be one of reject, merge, create");
      out.on_conflict = on_conflict_of(line["on_conflict"].get<std::string>());
    }
    Json fields_only = Json::object();
    if (line.contains("fields")) fields_only["fields"] = line["fields"];
    FieldChanges in = parse_fields(fields_only, schema, false);
    // Values are validated (once) when the line is written: a refusal there
    // is still this line's error alone.
    if (in.set.empty()) throw Error(ErrorCode::invalid_field, "a customer needs at least one field");
    out.fields = std::move(in.set);
    const Json& consents = array_or_empty(line, "consents");
    for (std::size_t i = 0; i < consents.size(); ++i) try {
        require_time(consents[i]);
        out.consents.push_back(parse_import_consent(consents[i], now));
      } catch (const Error& e) {
        rethrow_in("consents", i, e);
      }
    const Json& orders = array_or_empty(line, "orders");
    for (std::size_t i = 0; i < orders.size(); ++i) try {
        require_time(orders[i]);
        out.orders.push_back(parse_order(orders[i], now));
        records::Records::check_order(out.orders.back());
      } catch (const Error& e) {
        rethrow_in("orders", i, e);
      }
    const Json& touchpoints = array_or_empty(line, "touchpoints");
    for (std::size_t i = 0; i < touchpoints.size(); ++i) try {
        require_time(touchpoints[i]);
        out.touchpoints.push_back(parse_touchpoint(touchpoints[i], now));
      } catch (const Error& e) {
        rethrow_in("touchpoints", i, e);
      }
  } catch (const Error& e) {
    out.error = {e.code(), e.what()};
  } catch (const Json::exception&) {
    out.error = {ErrorCode::invalid_argument, "a value has the wrong type or is out of range"};
  }
  return out;
}

// Errors that belong to one line; anything else (the store, the audit log,
// keys) fails the chunk: its transaction rolls back whole, and the import
// stops, resumable after its last committed chunk.
bool is_line_error(ErrorCode code) {
  switch (code) {
    case ErrorCode::audit_unavailable:
    case ErrorCode::integrity:
    case ErrorCode::key_error:
    case ErrorCode::storage:
    case ErrorCode::internal:
    case ErrorCode::store_unavailable: return false;
    default: return true;
  }
}

// What one import run keeps between chunks.
struct ImportRun {
  std::string id;
  std::uint64_t committed_line = 0;  // the checkpoint
  ImportProgress progress;
  std::uint64_t created = 0, updated = 0;
};

}  // namespace

Json Service::import_ndjson(const Caller& caller, const ImportOptions& options, const ImportReader& read,
                            const ImportObserver& observer) {
  const auto pol = impl_->current_policy();
  const access::Role& role = impl_->authorize(caller, *pol, "records.write", "subject.import", false);
  const records::OnConflict default_conflict = on_conflict_of(options.on_conflict);
  if (options.chunk_lines == 0 || options.chunk_lines > 1000)
    throw Error(ErrorCode::invalid_argument, "an import commits 1-1000 lines at a time");
  if (!options.import_id.empty() && !valid_import_id(options.import_id))
    throw Error(ErrorCode::invalid_argument, "an import id is 1-80 characters of A-Z a-z 0-9 . _ : -");
  const bool may_consent = role.operations.count("consent") > 0;
  const audit::Actor actor = impl_->actor(caller);

  ImportRun run;
  run.id = options.import_id.empty() ? random_import_id() : options.import_id;
  std::optional<std::string> owner;
  {
    auto tx = impl_->store->begin(store::TxMode::write);
    tx->exec("SELECT principal, committed_line, succeeded, failed, created, updated FROM import_runs"
             " WHERE import_id = ?",
             {run.id}, [&](const store::Row& r) {
               owner = std::string(r.text(0));
               run.committed_line = static_cast<std::uint64_t>(r.integer(1));
               run.progress.succeeded = static_cast<std::uint64_t>(r.integer(2));
               run.progress.failed = static_cast<std::uint64_t>(r.integer(3));
               run.created = static_cast<std::uint64_t>(r.integer(4));
               run.updated = static_cast<std::uint64_t>(r.integer(5));
             });
    tx->commit();
  }
  // Outside the transaction: the denial's entry takes a write transaction of its own.
  if (owner && *owner != caller.principal.name)
    impl_->deny(caller, "subject.import", ErrorCode::forbidden_role,
                "import '" + run.id + "' belongs to another principal");
  run.progress.resumed_after = run.committed_line;
  impl_->records->prepare_import();
  // Notices in force, looked up once per purpose (a file hash each).
  std::map<std::string, std::string> notices;

  std::vector<ImportLine> chunk;
  std::size_t chunk_bytes = 0;  // the text of the chunk's lines (kImportChunkBytes)

  // What one pass over a chunk wrote and refused.
  struct Tally {
    std::vector<std::string> subjects;
    std::set<std::string> fields_written;
    std::vector<std::string> refused_subjects;
    std::map<std::string, int> refusals;  // denial code -> lines
    std::uint64_t ok = 0, failed = 0, created = 0, updated = 0;
  };

  // Records a line's error (a resumed import may fail a line again: its
  // latest error stands).
  auto fail_line = [&](store::Transaction& tx, Tally& tally, const ImportLine& line, ErrorCode code,
                       const std::string& detail) {
    ++tally.failed;
    tx.exec("DELETE FROM import_errors WHERE import_id = ? AND line = ?",
            {run.id, static_cast<std::int64_t>(line.number)});
    tx.exec("INSERT INTO import_errors (import_id, line, code, detail) VALUES (?, ?, ?, ?)",
            {run.id, static_cast<std::int64_t>(line.number), std::string(code_name(code)), detail});
  };

  // Writes one parsed line: its subject, then its consents, orders and
  // touchpoints. Throws the line's error, having possibly written part of it.
  auto write_line = [&](store::Transaction& tx, Tally& tally, const ImportLine& line, std::int64_t now) {
    // Checked before anything is written, as record_consent checks it.
    if (!line.consents.empty() && !may_consent)
      throw Error(ErrorCode::forbidden_role, "role '" + caller.principal.role + "' may not record consent");
    for (std::size_t i = 0; i < line.consents.size(); ++i)
      if (line.consents[i].event == "granted" && !role.capture_consent.count(line.consents[i].purpose) &&
          pol->purpose(line.consents[i].purpose) != nullptr)
        throw Error(ErrorCode::consent_capture_not_allowed,
                    "consents[" + std::to_string(i) + "]: role '" + caller.principal.role +
                        "' may not capture consent for '" + line.consents[i].purpose + "'");
    const records::OnConflict on_conflict = line.on_conflict.value_or(default_conflict);
    // A line's external_id naming a subject always applies the line to it
    // (a merge whatever on_conflict says), so it needs the same visibility.
    if (on_conflict == records::OnConflict::merge || line.fields.count("external_id"))
      if (const auto why = impl_->merge_refusal(*pol, role,
                                                on_conflict == records::OnConflict::merge
                                                    ? line.fields
                                                    : records::FieldMap{{"external_id", line.fields.at("external_id")}}))
        throw Error(ErrorCode::forbidden_role, *why);
    auto imported = impl_->records->import_subject(tx, line.fields, on_conflict, now);
    const auto& o = imported.outcome;
    using Kind = records::CreateOutcome::Kind;
    if (o.kind == Kind::duplicate) {
      std::vector<std::string> ids;
      for (const auto& id : o.matches) ids.push_back(records::to_hex(id));
      tally.refused_subjects.insert(tally.refused_subjects.end(), ids.begin(), ids.end());
      throw impl_->duplicate_for(*pol, role, caller.purpose, std::move(ids), o.matched_on);
    }
    if (o.kind == Kind::restricted) {
      tally.refused_subjects.push_back(records::to_hex(o.id));
      throw Error(ErrorCode::subject_restricted, "the matching subject is restricted (GDPR Art. 18): it changes"
                                                 " only through a rectification request");
    }
    const bool fresh = o.kind == Kind::created;  // nothing of it exists to de-duplicate against
    for (std::size_t i = 0; i < line.consents.size(); ++i) try {
        consent::EventInput in = line.consents[i];
        Json proof = Json::parse(in.proof);
        proof["capture"] = "import";
        proof["captured_by_role"] = role.name;
        proof["import_id"] = run.id;
        proof["import_line"] = line.number;
        in.proof = proof.dump();
        impl_->consent->import_event(tx, actor.principal, *pol, o.id, in, notices[in.purpose], now, fresh);
      } catch (const Error& e) {
        rethrow_in("consents", i, e);
      }
    for (std::size_t i = 0; i < line.orders.size(); ++i) {
      const auto& order = line.orders[i];
      impl_->records->import_order(
          tx, o.id,
          row_id_for(o.id, "order", i,
                     std::to_string(order.amount_minor) + "|" + order.currency + "|" + std::to_string(order.at_us)),
          order, fresh);
    }
    for (std::size_t i = 0; i < line.touchpoints.size(); ++i) try {
        const auto& tp = line.touchpoints[i];
        impl_->records->import_touchpoint(
            tx, o.id, *imported.dek,
            row_id_for(o.id, "touchpoint", i, tp.channel + "|" + tp.type + "|" + std::to_string(tp.at_us)), tp, fresh);
      } catch (const Error& e) {
        rethrow_in("touchpoints", i, e);
      }
    ++tally.ok;
    (o.kind == Kind::created ? tally.created : tally.updated) += 1;
    tally.subjects.push_back(records::to_hex(o.id));
    tally.fields_written.insert(o.fields_added.begin(), o.fields_added.end());
  };

  // One pass over the chunk in `tx`. Lines from `careful_from` on are
  // written each inside a savepoint, so a failing line is undone alone.
  // Lines before it go without one: under SQLCipher a savepoint re-encrypts
  // every page the line touches into its sub-journal, which more than
  // doubles a line's cost. Returns the first of those that failed (the pass
  // is then void: the caller rolls it back); nullopt when every line was
  // written or failed on its own.
  auto write_pass = [&](store::Transaction& tx, Tally& tally, std::size_t careful_from,
                        std::int64_t now) -> std::optional<std::size_t> {
    for (std::size_t at = 0; at < chunk.size(); ++at) {
      const ImportLine& line = chunk[at];
      if (line.error) {
        fail_line(tx, tally, line, line.error->first, line.error->second);
        continue;
      }
      const bool careful = at >= careful_from;
      if (careful) tx.exec("SAVEPOINT import_line");
      try {
        write_line(tx, tally, line, now);
        if (careful) tx.exec("RELEASE import_line");
      } catch (const Error& e) {
        // The store or the log failing is the chunk's failure, not the line's.
        if (!is_line_error(e.code())) throw;
        if (!careful) return at;
        tx.exec("ROLLBACK TO import_line");
        tx.exec("RELEASE import_line");
        switch (e.code()) {
          case ErrorCode::duplicate_subject:
          case ErrorCode::subject_restricted:
          case ErrorCode::forbidden_role:
          case ErrorCode::consent_capture_not_allowed: ++tally.refusals[code_name(e.code())]; break;
          default: break;
        }
        fail_line(tx, tally, line, e.code(), e.what());
      }
    }
    return std::nullopt;
  };

  // The chunk's checkpoint (import_runs) and audit entries, in `tx`.
  auto record_chunk = [&](store::Transaction& tx, Tally& tally, std::int64_t now) {
    const std::uint64_t last = chunk.back().number;
    run.progress.succeeded += tally.ok;
    run.progress.failed += tally.failed;
    run.created += tally.created;
    run.updated += tally.updated;
    // Insert-or-update in two statements (SQLCipher's SQLite predates UPSERT).
    tx.exec("INSERT OR IGNORE INTO import_runs (import_id, principal, committed_line, succeeded, failed, created,"
            " updated, started_at, updated_at) VALUES (?, ?, 0, 0, 0, 0, 0, ?, ?)",
            {run.id, caller.principal.name, now, now});
    tx.exec("UPDATE import_runs SET committed_line = ?, succeeded = ?, failed = ?, created = ?, updated = ?,"
            " updated_at = ? WHERE import_id = ?",
            {static_cast<std::int64_t>(last), static_cast<std::int64_t>(run.progress.succeeded),
             static_cast<std::int64_t>(run.progress.failed), static_cast<std::int64_t>(run.created),
             static_cast<std::int64_t>(run.updated), now, run.id});
    // One entry for the chunk, committing to every subject it wrote (names
    // them only through the vault's openings, as batch creates do).
    const std::string range =
        "import=" + run.id + " lines=" + std::to_string(chunk.front().number) + "-" + std::to_string(last);
    audit::Event event{"subject.import", tally.subjects.size() == 1 ? tally.subjects[0] : "",
                       {tally.fields_written.begin(), tally.fields_written.end()}, {}, true, "",
                       range + " written=" + std::to_string(tally.ok) + " created=" + std::to_string(tally.created) +
                           " updated=" + std::to_string(tally.updated) + " failed=" + std::to_string(tally.failed),
                       {}};
    if (tally.subjects.size() > 1) event.subject_ids = tally.subjects;
    impl_->audit->append(tx, actor, event);
    if (!tally.refusals.empty()) {
      // Refused lines named existing subjects to the caller: recorded too.
      std::string counts;
      for (const auto& [code, n] : tally.refusals) counts += " " + code + "=" + std::to_string(n);
      auto& refused = tally.refused_subjects;
      std::sort(refused.begin(), refused.end());
      refused.erase(std::unique(refused.begin(), refused.end()), refused.end());
      audit::Event denial{"subject.import", refused.size() == 1 ? refused[0] : "", {}, {}, false,
                          tally.refusals.begin()->first, range + " refused" + counts, {}};
      if (refused.size() > 1) denial.subject_ids = refused;
      impl_->audit->append(tx, actor, denial);
    }
  };

  // A chunk without failures is written once, at full speed; one with
  // failures twice: when a line written without a savepoint fails, the pass
  // is rolled back and the chunk written again with savepoints from that
  // line on (the lines before it succeed again: same input, same state).
  // careful_from only decreases, so this ends.
  // Chunks follow each other on one connection that keeps its page cache
  // (store::BulkLoad): each chunk rewrites mostly the index pages the last one did.
  const auto bulk = impl_->store->begin_bulk_load();
  auto commit_chunk = [&] {
    if (chunk.empty()) return;
    const std::int64_t now = impl_->audit->now_us();
    for (const auto& line : chunk)
      for (const auto& c : line.consents)
        if (!notices.count(c.purpose)) notices[c.purpose] = impl_->consent->notice_version(c.purpose);
    std::size_t careful_from = chunk.size();
    for (;;) {
      Tally tally;
      auto tx = bulk->begin();
      if (const auto failed_fast = write_pass(*tx, tally, careful_from, now)) {
        tx.reset();  // rolls the pass back
        careful_from = *failed_fast;
        continue;
      }
      record_chunk(*tx, tally, now);
      tx->commit();
      run.committed_line = chunk.back().number;
      break;
    }
    chunk.clear();
    chunk_bytes = 0;
    if (observer.on_chunk) observer.on_chunk(run.progress);
  };

  // Reads lines as they arrive: never more than one line (and one read
  // block) held, whatever the size of the import.
  std::string pending;
  std::vector<char> block(kReadBlock);
  std::uint64_t line_no = 0;
  bool overlong = false;      // inside a line past max_line_bytes: dropped up to its newline
  auto take_line = [&](std::string_view text) {
    ++line_no;
    run.progress.lines = line_no;
    if (line_no <= run.committed_line) return;  // an earlier run committed it
    if (overlong) {
      ImportLine l;
      l.number = line_no;
      l.error = {ErrorCode::payload_too_large,
                 "line longer than " + std::to_string(options.max_line_bytes) + " bytes"};
      chunk.push_back(std::move(l));
    } else {
      if (text.find_first_not_of(" \t\r") == std::string_view::npos) return;  // blank: nothing to import
      chunk.push_back(parse_line(line_no, text, impl_->schema, impl_->audit->now_us()));
      chunk_bytes += text.size();
    }
    if (chunk.size() >= options.chunk_lines || chunk_bytes >= kImportChunkBytes) commit_chunk();
  };
  for (;;) {
    std::size_t n = 0;
    try {
      n = read(block.data(), block.size());
    } catch (...) {
      // The body stopped (a vanished client, a transport limit): the whole
      // lines already read are committed, so a resume starts after them.
      commit_chunk();
      throw;
    }
    if (n == 0) break;
    run.progress.bytes += n;
    if (run.progress.bytes > options.max_bytes) {
      commit_chunk();
      throw Error(ErrorCode::payload_too_large,
                  "import larger than " + std::to_string(options.max_bytes) + " bytes: stopped; lines up to " +
                      std::to_string(run.committed_line) + " are committed (import id " + run.id +
                      " resumes after them)");
    }
    std::string_view data(block.data(), n);
    while (!data.empty()) {
      const auto nl = data.find('\n');
      const std::string_view part = data.substr(0, nl);
      if (!overlong) {
        if (pending.size() + part.size() > options.max_line_bytes) {
          overlong = true;
          sodium_memzero(pending.data(), pending.size());
          pending.clear();
        } else {
          pending.append(part);
        }
      }
      if (nl == std::string_view::npos) break;
      take_line(pending);
      sodium_memzero(pending.data(), pending.size());
      pending.clear();
      overlong = false;
      data.remove_prefix(nl + 1);
    }
  }
  if (!pending.empty() || overlong) take_line(pending);
  sodium_memzero(pending.data(), pending.size());
  sodium_memzero(block.data(), block.size());
  commit_chunk();

  // The report, and every error of the import (earlier runs included).
  Json errors = Json::array();
  {
    auto tx = impl_->store->begin(store::TxMode::read);
    tx->exec("SELECT line, code, detail FROM import_errors WHERE import_id = ? ORDER BY line", {run.id},
             [&](const store::Row& r) {
               const auto line = static_cast<std::uint64_t>(r.integer(0));
               const std::string code(r.text(1)), detail(r.text(2));
               if (errors.size() < options.max_listed_errors)
                 errors.push_back({{"line", line}, {"code", code}, {"detail", detail}});
               if (observer.on_error) observer.on_error(line, code, detail);
             });
  }
  Json report = {{"import_id", run.id},
                 {"lines", run.progress.lines},
                 {"succeeded", run.progress.succeeded},
                 {"failed", run.progress.failed},
                 {"created", run.created},
                 {"updated", run.updated},
                 {"resumed_after", run.progress.resumed_after},
                 {"errors", errors}};
  if (errors.size() < run.progress.failed) report["errors_truncated"] = true;
  return report;
}

Json Service::export_subjects(const Caller& caller, const std::map<std::string, std::string>& query,
                              const std::function<bool(const std::string&)>& emit) {
  const auto pol = impl_->current_policy();
  const access::Role& role = impl_->authorize(caller, *pol, "records.read", "subject.export", true);
  const access::Purpose* purpose = pol->purpose(caller.purpose);
  if (purpose != nullptr && purpose->marketing)
    impl_->deny(caller, "subject.export", ErrorCode::purpose_not_allowed,
                "an export is not a campaign: use POST /v1/campaigns:fetch for marketing purposes");
  std::optional<records::SubjectId> after;
  std::uint64_t limit = std::numeric_limits<std::uint64_t>::max();
  for (const auto& [key, value] : query) {
    if (key == "after") {
      after = records::parse_subject_id(value);
    } else if (key == "limit") {
      if (value.empty() || value.size() > 9 || value.find_first_not_of("0123456789") != std::string::npos ||
          std::stoull(value) == 0)
        throw Error(ErrorCode::invalid_argument, "parameter 'limit' must be a positive integer");
      limit = std::stoull(value);
    } else {
      throw Error(ErrorCode::invalid_argument, "unknown parameter '" + util::printable_prefix(key) + "'");
    }
  }
  // Only what the role sees in plain: a masked value would import as data.
  records::ReadSpec spec;
  spec.operation = "subject.export";
  for (const auto& f : impl_->schema.fields())
    if (pol->visibility(role, f) == access::Visibility::plain) spec.fields.push_back(f.name);
  const bool with_restricted = purpose != nullptr && purpose->allowed_when_restricted;
  constexpr std::size_t kPage = 200;
  std::uint64_t written = 0;
  bool reader_gone = false;
  while (!reader_gone && written < limit) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kPage, limit - written));
    auto page = impl_->records->read_export_page(impl_->actor(caller), after, want, spec, with_restricted);
    if (page.empty()) break;
    after = page.back().subject.id;
    for (auto& e : page) {
      if (reader_gone) {
        for (auto& [k, v] : e.subject.fields) sodium_memzero(v.data(), v.size());
        continue;
      }
      Json fields = Json::object();
      for (const auto& [name, value] : e.subject.fields) fields[name] = value;
      impl_->counters->decryptions += e.subject.fields.size();
      Json consents = Json::array();
      for (const auto& st : impl_->consent->current(e.subject.id)) {
        if (st.state == "expired") continue;
        Json c = {{"purpose", st.purpose}, {"channel", st.channel}, {"event", st.state},
                  {"at", audit::format_time_us(st.since_us)}};
        if (st.expires_us) c["expires_at"] = audit::format_time_us(*st.expires_us);
        consents.push_back(std::move(c));
      }
      Json orders = Json::array();
      for (const auto& o : e.orders)
        orders.push_back({{"amount_minor", o.amount_minor}, {"currency", o.currency}, {"at", audit::format_time_us(o.at_us)}});
      Json touchpoints = Json::array();
      for (const auto& t : e.touchpoints)
        touchpoints.push_back({{"channel", t.channel}, {"type", t.type}, {"at", audit::format_time_us(t.at_us)}});
      Json line = {{"id", records::to_hex(e.subject.id)}, {"fields", std::move(fields)}, {"consents", std::move(consents)},
                   {"orders", std::move(orders)}, {"touchpoints", std::move(touchpoints)}};
      std::string text = line.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
      for (auto& [k, v] : e.subject.fields) sodium_memzero(v.data(), v.size());
      reader_gone = !emit(text);
      sodium_memzero(text.data(), text.size());
      if (!reader_gone) ++written;
    }
  }
  // No summary line: every line of an export is a customer, so the file
  // imports as it is. A cut stream shows as an incomplete body instead.
  return {{"done", !reader_gone}, {"subjects", written}};
}

Json Service::list_tokens(const Caller& caller) {
  impl_->authorize(caller, *impl_->current_policy(), "admin", "token.list", false);
  Json list = Json::array();
  for (const auto& t : impl_->tokens->list()) {
    Json j = {{"name", t.name}, {"role", t.role}, {"token_id", t.token_id},
              {"created_at", audit::format_time_us(t.created_us)}};
    j["revoked_at"] = t.revoked_us ? Json(audit::format_time_us(*t.revoked_us)) : Json(nullptr);
    list.push_back(std::move(j));
  }
  impl_->audit->append_now(impl_->actor(caller), {"token.list", "", {}, {}, true, "", "returned=" + std::to_string(list.size())});
  return {{"tokens", list}};
}

}  // namespace custos::service
