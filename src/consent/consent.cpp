#include "custos/consent/consent.h"

#include <openssl/sha.h>
#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "custos/error.h"
#include "custos/records/storage.h"
#include "custos/util/files.h"

namespace custos::consent {
namespace fs = std::filesystem;
namespace {

using store::Row;
using store::Transaction;
using store::TxMode;

// Tolerated "future" for client clocks on denials and withdrawals only: they
// can only stop processing, and refusing one over a skewed clock would make
// withdrawing harder than giving (Art. 7(3)). Grants get no tolerance.
constexpr std::int64_t kClockSkewUs = 5LL * 60 * 1000000;

bool one_of(const std::vector<std::string>& set, const std::string& v) {
  return std::find(set.begin(), set.end(), v) != set.end();
}

std::array<std::uint8_t, 32> hash_token(std::string_view token) {
  std::array<std::uint8_t, 32> h{};
  crypto_generichash(h.data(), h.size(), reinterpret_cast<const unsigned char*>(token.data()), token.size(), nullptr,
                     0);
  return h;
}

constexpr const char* kEventColumns =
    "id, subject_id, purpose, channel, event, status, at, recorded_at, source, lawful_basis, notice_version,"
    " expires_at, principal, proof";

Event event_from_row(const Row& r) {
  Event e;
  e.id = r.integer(0);
  records::SubjectId sid{};
  const auto b = r.blob(1);
  if (b.size() == sid.size()) std::copy(b.begin(), b.end(), sid.begin());
  e.subject_id = records::to_hex(sid);
  e.purpose = std::string(r.text(2));
  e.channel = std::string(r.text(3));
  e.event = std::string(r.text(4));
  e.status = std::string(r.text(5));
  e.at_us = r.integer(6);
  e.recorded_us = r.integer(7);
  e.source = std::string(r.text(8));
  e.lawful_basis = std::string(r.text(9));
  e.notice_version = std::string(r.text(10));
  if (!r.is_null(11)) e.expires_us = r.integer(11);
  e.principal = std::string(r.text(12));
  e.proof = std::string(r.text(13));
  return e;
}

void require_active_subject(Transaction& tx, const records::SubjectId& subject) {
  const std::optional<std::string> status = records::subject_status(tx, subject);
  if (!status || *status != "active")
    throw Error(ErrorCode::not_found, "subject " + records::to_hex(subject) + " not found");
}

// Applies a confirmed event to the materialised state. Record order decides,
// and withdrawal wins: a denial or withdrawal always replaces the state,
// whatever its `at`. A grant replaces it unless it is stale — dated before the
// state's event (and before now: a withdrawal dated a little ahead by a fast
// client clock does not block a grant given now) — so a backdated grant
// recorded after a withdrawal never undoes it. `since` never moves back: a
// withdrawal dated before the state's event takes effect from the state's
// time, else a caller could backdate a withdrawal to 2000 and so make every
// stale grant dated after that "newer" than the subject's real withdrawal.
void materialise(Transaction& tx, const records::SubjectId& subject, const Event& e) {
  std::optional<std::int64_t> since;
  tx.exec("SELECT since FROM consent_state WHERE subject_id = ? AND purpose = ? AND channel = ?",
          {subject, e.purpose, e.channel}, [&](const Row& r) { since = r.integer(0); });
  const store::Param expires = e.expires_us ? store::Param(*e.expires_us) : store::Param();
  if (!since) {
    tx.exec("INSERT INTO consent_state (subject_id, purpose, channel, state, since, expires_at, event_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            {subject, e.purpose, e.channel, e.event, e.at_us, expires, e.id});
  } else if (e.event != "granted") {
    tx.exec("UPDATE consent_state SET state = ?, since = ?, expires_at = ?, event_id = ?"
            " WHERE subject_id = ? AND purpose = ? AND channel = ?",
            {e.event, std::max(e.at_us, *since), expires, e.id, subject, e.purpose, e.channel});
  } else if (e.at_us >= std::min(*since, e.recorded_us)) {
    tx.exec("UPDATE consent_state SET state = ?, since = ?, expires_at = ?, event_id = ?"
            " WHERE subject_id = ? AND purpose = ? AND channel = ?",
            {e.event, e.at_us, expires, e.id, subject, e.purpose, e.channel});
  }
}

std::int64_t insert_event(Transaction& tx, const records::SubjectId& subject, Event& e,
                          const std::optional<std::array<std::uint8_t, 32>>& confirm_hash,
                          std::optional<std::int64_t> confirm_expires) {
  e.id = tx.scalar("SELECT coalesce(max(id), 0) + 1 FROM consent_events").value_or(1);
  tx.exec("INSERT INTO consent_events (id, subject_id, purpose, channel, event, status, at, recorded_at, source,"
          " lawful_basis, notice_version, expires_at, principal, proof, confirm_hash, confirm_expires)"
          " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
          {e.id, subject, e.purpose, e.channel, e.event, e.status, e.at_us, e.recorded_us, e.source, e.lawful_basis,
           e.notice_version, e.expires_us ? store::Param(*e.expires_us) : store::Param(), e.principal, e.proof,
           confirm_hash ? store::Param(*confirm_hash) : store::Param(),
           confirm_expires ? store::Param(*confirm_expires) : store::Param()});
  return e.id;
}

// Any event for a purpose and channel voids the tokens of grants still
// pending there: a confirmation may only ever follow its own grant directly.
void void_pending(Transaction& tx, const records::SubjectId& subject, const std::string& purpose,
                  const std::string& channel, std::int64_t except_id = 0) {
  tx.exec("UPDATE consent_events SET status = 'voided' WHERE subject_id = ? AND purpose = ? AND channel = ?"
          " AND status = 'pending' AND confirmed_by IS NULL AND id != ?",
          {subject, purpose, channel, except_id});
}

std::string sha256_hex(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  char hex[2 * SHA256_DIGEST_LENGTH + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return hex;
}

}  // namespace

Ledger::Ledger(store::Store& store, audit::AuditLog& audit, fs::path notices_dir, std::int64_t confirmation_ttl_us)
    : store_(store), audit_(audit), notices_dir_(std::move(notices_dir)), confirmation_ttl_us_(confirmation_ttl_us) {}

namespace {

// A purpose names its own notice file only if it is a plain name (what
// purposes.yaml uses): a caller's purpose is looked up here before it is
// validated, and a path, "..", or a NUL byte (which ends the name the
// kernel sees) must never reach the file system.
bool plain_name(const std::string& purpose) {
  return !purpose.empty() && purpose.size() <= 64 && purpose.front() != '.' &&
         std::all_of(purpose.begin(), purpose.end(), [](char ch) {
           return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.';
         });
}

// A notice is a page of text; anything larger is not one.
constexpr std::uintmax_t kMaxNoticeBytes = std::uintmax_t{1} << 20;

}  // namespace

std::string Ledger::notice_version(const std::string& purpose) const {
  std::vector<fs::path> candidates;
  if (plain_name(purpose)) candidates.push_back(notices_dir_ / (purpose + ".txt"));
  candidates.push_back(notices_dir_ / "default.txt");
  for (const fs::path& p : candidates) {
    std::error_code ec;
    if (!fs::exists(p, ec)) continue;
    if (!fs::is_regular_file(p, ec) || fs::file_size(p, ec) > kMaxNoticeBytes || ec)
      throw Error(ErrorCode::invalid_argument, "notice " + p.filename().string() + " is not a text file of at most 1 MiB");
    return "sha256:" + sha256_hex(util::read_text_file(p));
  }
  return "sha256:" + sha256_hex("");
}

namespace {

// Validates `in` against the policy and the clock (record's rules) and
// builds the event it records; throws Error(invalid_field), writing nothing.
Event validated_event(const access::Policy& policy, const records::SubjectId& subject, const EventInput& in,
                      const std::string& principal, const std::string& current_notice, std::int64_t now) {
  const access::Purpose* purpose = policy.purpose(in.purpose);
  if (purpose == nullptr) throw Error(ErrorCode::invalid_field, "field 'purpose': unknown purpose");
  if (!one_of(kChannels, in.channel)) throw Error(ErrorCode::invalid_field, "field 'channel': unknown channel");
  if (!purpose->channels.empty() && !one_of(purpose->channels, in.channel))
    throw Error(ErrorCode::invalid_field, "field 'channel': purpose '" + purpose->name + "' does not use this channel");
  if (in.event != "granted" && in.event != "denied" && in.event != "withdrawn")
    throw Error(ErrorCode::invalid_field, "field 'event': must be granted, denied or withdrawn");
  if (!one_of(kSources, in.source)) throw Error(ErrorCode::invalid_field, "field 'source': unknown source");
  const std::int64_t at = in.at_us == 0 ? now : in.at_us;
  if (in.event == "granted" && at > now)
    throw Error(ErrorCode::invalid_field, "field 'at': a grant may not be dated in the future (vault time " +
                                              audit::format_time_us(now) + ")");
  if (at > now + kClockSkewUs)
    throw Error(ErrorCode::invalid_field, "field 'at': more than 5 minutes in the future");
  if (in.expires_us && *in.expires_us <= at)
    throw Error(ErrorCode::invalid_field, "field 'expires_at': must be after the consent time");
  if (in.double_opt_in && in.event != "granted")
    throw Error(ErrorCode::invalid_field, "field 'double_opt_in': only a grant can await confirmation");
  if (!in.notice_version.empty() && in.notice_version != current_notice)
    throw Error(ErrorCode::invalid_field, "field 'notice_version': not the notice in force for this purpose");

  Event e;
  e.subject_id = records::to_hex(subject);
  e.purpose = in.purpose;
  e.channel = in.channel;
  e.event = in.event;
  e.status = in.double_opt_in ? "pending" : "confirmed";
  e.at_us = at;
  e.recorded_us = now;
  e.source = in.source;
  e.lawful_basis = in.lawful_basis.empty() ? (purpose->lawful_basis.empty() ? "consent" : purpose->lawful_basis)
                                           : in.lawful_basis;
  e.notice_version = current_notice;
  e.expires_us = in.expires_us;
  e.principal = principal;
  e.proof = in.proof.empty() ? "{}" : in.proof;
  return e;
}

}  // namespace

Recorded Ledger::record(const audit::Actor& actor, const access::Policy& policy, const records::SubjectId& subject,
                        const EventInput& in) {
  const std::int64_t now = audit_.now_us();
  Event e = validated_event(policy, subject, in, actor.principal, notice_version(in.purpose), now);

  Recorded out;
  std::optional<std::array<std::uint8_t, 32>> confirm_hash;
  if (in.double_opt_in) {
    std::array<std::uint8_t, 32> raw{};
    randombytes_buf(raw.data(), raw.size());
    char b64[64];
    sodium_bin2base64(b64, sizeof b64, raw.data(), raw.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    out.confirmation_token = std::string("cfm_") + b64;
    confirm_hash = hash_token(*out.confirmation_token);
    out.confirmation_expires_us = now + confirmation_ttl_us_;
  }
  auto tx = store_.begin(TxMode::write);
  require_active_subject(*tx, subject);
  void_pending(*tx, subject, e.purpose, e.channel);
  insert_event(*tx, subject, e, confirm_hash, out.confirmation_expires_us);
  if (e.status == "confirmed") materialise(*tx, subject, e);
  const bool objection_lifted =
      in.by_the_subject && e.event == "granted" && e.status == "confirmed" && records::clear_objected(*tx, subject);
  audit_.append(*tx, actor,
                {"consent.record", e.subject_id, {}, {}, true, "",
                 "purpose=" + e.purpose + " channel=" + e.channel + " event=" + e.event + " status=" + e.status +
                     (objection_lifted ? " objection_lifted=1" : "")});
  if (change_hook_ && e.status == "confirmed") change_hook_(*tx, {e});
  tx->commit();
  out.events.push_back(std::move(e));
  return out;
}

std::vector<Event> Ledger::withdraw_all(const audit::Actor& actor, const access::Policy& policy,
                                        const records::SubjectId& subject, bool sale_or_share_only,
                                        const std::string& source, const std::string& proof) {
  // Checked as record() checks it: the source is also written into the audit entry's detail.
  if (!one_of(kSources, source)) throw Error(ErrorCode::invalid_field, "field 'source': unknown source");
  const std::int64_t now = audit_.now_us();
  std::vector<Event> written;
  auto tx = store_.begin(TxMode::write);
  require_active_subject(*tx, subject);
  std::int64_t count = 0;
  for (const auto& [name, purpose] : policy.purposes()) {
    if (!purpose.marketing) continue;
    if (sale_or_share_only && !purpose.sale_or_share) continue;
    for (const auto& channel : purpose.channels) {
      Event e;
      e.subject_id = records::to_hex(subject);
      e.purpose = name;
      e.channel = channel;
      e.event = "withdrawn";
      e.status = "confirmed";
      e.at_us = now;
      e.recorded_us = now;
      e.source = source;
      e.lawful_basis = purpose.lawful_basis.empty() ? "consent" : purpose.lawful_basis;
      e.notice_version = notice_version(name);
      e.principal = actor.principal;
      e.proof = proof.empty() ? "{}" : proof;
      void_pending(*tx, subject, e.purpose, e.channel);
      insert_event(*tx, subject, e, std::nullopt, std::nullopt);
      materialise(*tx, subject, e);
      written.push_back(std::move(e));
      ++count;
    }
  }
  if (!sale_or_share_only) records::mark_objected(*tx, subject);
  audit_.append(*tx, actor,
                {sale_or_share_only ? "consent.opt_out_sale_share" : "consent.objection", records::to_hex(subject), {},
                 {}, true, "", "source=" + source + " withdrawn=" + std::to_string(count)});
  if (change_hook_ && !written.empty()) change_hook_(*tx, written);
  tx->commit();
  return written;
}

Event Ledger::confirm(const audit::Actor& actor, std::string_view token,
                      const std::function<bool(const Event& pending)>& may_capture) {
  const auto hash = hash_token(token);
  auto tx = store_.begin(TxMode::write);
  std::optional<Event> pending;
  std::optional<std::int64_t> expires, confirmed_by;
  records::SubjectId subject{};
  tx->exec(std::string("SELECT ") + kEventColumns +
               ", confirm_expires, confirmed_by, confirm_hash FROM consent_events WHERE confirm_hash = ?",
           {hash}, [&](const Row& r) {
             const auto stored = r.blob(16);
             if (stored.size() != hash.size() || sodium_memcmp(stored.data(), hash.data(), hash.size()) != 0) return;
             pending = event_from_row(r);
             const auto b = r.blob(1);
             std::copy(b.begin(), b.end(), subject.begin());
             if (!r.is_null(14)) expires = r.integer(14);
             if (!r.is_null(15)) confirmed_by = r.integer(15);
           });
  if (!pending) throw Error(ErrorCode::invalid_argument, "unknown confirmation token");
  if (confirmed_by) throw Error(ErrorCode::conflict, "confirmation token was already used");
  // Voided, or (for rows written before voiding existed) followed by any
  // other event for the purpose and channel: the subject has spoken since.
  if (pending->status != "pending" ||
      tx->scalar("SELECT count(*) FROM consent_events WHERE subject_id = ? AND purpose = ? AND channel = ? AND id > ?",
                 {subject, pending->purpose, pending->channel, pending->id})
              .value_or(0) > 0)
    throw Error(ErrorCode::conflict, "confirmation token was voided by a later consent event for " +
                                         pending->purpose + "/" + pending->channel);
  const std::int64_t now = audit_.now_us();
  if (expires && now > *expires) throw Error(ErrorCode::invalid_argument, "confirmation token has expired");
  if (may_capture && !may_capture(*pending))
    throw Error(ErrorCode::consent_capture_not_allowed,
                "this role may not capture consent for '" + pending->purpose + "': the confirmation must come"
                " through a role that lists it in capture_consent");
  require_active_subject(*tx, subject);
  Event e = *pending;
  e.status = "confirmed";
  e.at_us = now;
  e.recorded_us = now;
  e.principal = actor.principal;
  e.proof = nlohmann::json({{"double_opt_in", true}, {"confirms_event", pending->id}, {"capture", "double_opt_in"}})
                .dump();
  void_pending(*tx, subject, e.purpose, e.channel, pending->id);
  insert_event(*tx, subject, e, std::nullopt, std::nullopt);
  tx->exec("UPDATE consent_events SET confirmed_by = ? WHERE id = ?", {e.id, pending->id});
  materialise(*tx, subject, e);
  audit_.append(*tx, actor,
                {"consent.confirm", e.subject_id, {}, {}, true, "", "purpose=" + e.purpose + " channel=" + e.channel});
  if (change_hook_) change_hook_(*tx, {e});
  tx->commit();
  return e;
}

std::vector<Event> Ledger::history(const records::SubjectId& subject) {
  std::vector<Event> out;
  auto tx = store_.begin(TxMode::read);
  tx->exec(std::string("SELECT ") + kEventColumns + " FROM consent_events WHERE subject_id = ? ORDER BY id",
           {subject}, [&](const Row& r) { out.push_back(event_from_row(r)); });
  return out;
}

std::vector<State> Ledger::current(const records::SubjectId& subject) {
  std::vector<State> out;
  const std::int64_t now = audit_.now_us();
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT purpose, channel, state, since, expires_at, event_id FROM consent_state WHERE subject_id = ?"
           " ORDER BY purpose, channel",
           {subject}, [&](const Row& r) {
             State s{std::string(r.text(0)), std::string(r.text(1)), std::string(r.text(2)), r.integer(3),
                     std::nullopt, r.integer(5)};
             if (!r.is_null(4)) s.expires_us = r.integer(4);
             if (s.state == "granted" && s.expires_us && *s.expires_us <= now) s.state = "expired";
             out.push_back(std::move(s));
           });
  return out;
}

bool Ledger::has_active(const records::SubjectId& subject, const std::string& purpose, const std::string& channel) {
  auto tx = store_.begin(TxMode::read);
  return tx->scalar("SELECT count(*) FROM consent_state WHERE subject_id = ? AND purpose = ? AND channel = ?"
                    " AND state = 'granted' AND (expires_at IS NULL OR expires_at > ?)",
                    {subject, purpose, channel, audit_.now_us()})
             .value_or(0) > 0;
}

std::string Ledger::receipt_json(const Event& e, const access::Policy& policy, const std::string& controller) const {
  const access::Purpose* p = policy.purpose(e.purpose);
  nlohmann::json receipt = {
      {"version", "KI-CR-v1.1.0"},
      {"receipt_id", "cr-" + std::to_string(e.id) + "-" + e.subject_id.substr(0, 8)},
      {"jurisdiction", "EU"},
      {"consent_timestamp", audit::format_time_us(e.at_us)},
      {"collection_method", e.source + (e.proof.find("double_opt_in") != std::string::npos ? " (double opt-in)" : "")},
      {"pii_principal_id", e.subject_id},
      {"pii_controllers", {{{"pii_controller", controller}}}},
      {"services",
       {{{"service", e.purpose},
         {"purposes",
          {{{"purpose", p ? p->description : e.purpose},
            {"purpose_category", {e.purpose}},
            {"consent_type", "explicit"},
            {"channel", e.channel},
            {"lawful_basis", e.lawful_basis},
            {"termination", e.expires_us ? audit::format_time_us(*e.expires_us) : "until withdrawn"},
            {"third_party_disclosure", p && p->sale_or_share}}}}}}},
      {"notice_version", e.notice_version},
      {"policy_url", "policies/notices/" + e.purpose + ".txt"}};
  return receipt.dump();
}

namespace {

// The vault's own evidence in a proof (see erase_caller_proofs); `text`
// itself when there is nothing else in it.
std::string vault_evidence_only(const std::string& text) {
  const auto proof = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  nlohmann::json kept = nlohmann::json::object();
  if (proof.is_object()) {
    // Written whole by the vault, with no caller's words in it: a double
    // opt-in's confirmation (Ledger::confirm), a Global Privacy Control
    // signal, and what the privacy page records in the subject's session.
    // Callers cannot write `signal` or `link_id`, nor `capture` at all.
    const bool vault_only = proof.contains("signal") || proof.contains("link_id") ||
                            (proof.contains("capture") && proof["capture"] == "double_opt_in");
    if (vault_only) return text;
    for (const auto& key : kVaultProofKeys)
      if (proof.contains(key)) kept[key] = proof[key];
    if (kept.size() == proof.size()) return text;
  }
  kept["caller_details"] = "erased with the subject";
  return kept.dump();
}

}  // namespace

std::size_t Ledger::erase_caller_proofs(Transaction& tx, const records::SubjectId& subject) {
  std::vector<std::pair<std::int64_t, std::string>> proofs;
  tx.exec("SELECT id, proof FROM consent_events WHERE subject_id = ?", {subject},
          [&](const Row& r) { proofs.emplace_back(r.integer(0), std::string(r.text(1))); });
  std::size_t changed = 0;
  for (const auto& [id, text] : proofs) {
    const std::string kept = vault_evidence_only(text);
    if (kept == text) continue;
    tx.exec("UPDATE consent_events SET proof = ? WHERE id = ?", {kept, id});
    ++changed;
  }
  return changed;
}

void Ledger::merge_subject(Transaction& tx, const records::SubjectId& from, const records::SubjectId& into) {
  tx.exec("UPDATE consent_events SET subject_id = ? WHERE subject_id = ?", {into, from});
  tx.exec("DELETE FROM consent_state WHERE subject_id = ? OR subject_id = ?", {from, into});
  std::vector<Event> confirmed;
  tx.exec(std::string("SELECT ") + kEventColumns + " FROM consent_events WHERE subject_id = ? AND status = 'confirmed'"
          " ORDER BY id",
          {into}, [&](const Row& r) { confirmed.push_back(event_from_row(r)); });
  for (const Event& e : confirmed) materialise(tx, into, e);
}

bool Ledger::import_event(store::Transaction& tx, const std::string& principal, const access::Policy& policy,
                          const records::SubjectId& subject, const EventInput& in, const std::string& current_notice,
                          std::int64_t now, bool new_subject) {
  if (in.double_opt_in)
    throw Error(ErrorCode::invalid_field, "field 'double_opt_in': an import records captured consent only");
  Event e = validated_event(policy, subject, in, principal, current_notice, now);
  // A re-import of the same event (same time, source and outcome) adds nothing.
  if (!new_subject && tx.scalar("SELECT count(*) FROM consent_events WHERE subject_id = ? AND purpose = ? AND channel = ?"
                " AND event = ? AND at = ? AND source = ?",
                {subject, e.purpose, e.channel, e.event, e.at_us, e.source})
          .value_or(0) != 0)
    return false;
  if (!new_subject) void_pending(tx, subject, e.purpose, e.channel);
  insert_event(tx, subject, e, std::nullopt, std::nullopt);
  materialise(tx, subject, e);
  return true;
}

}  // namespace custos::consent
