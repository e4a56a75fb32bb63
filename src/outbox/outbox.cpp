#include "custos/outbox/outbox.h"

#include <sodium.h>

#include <array>

#include "custos/crypto/aead.h"
#include "custos/error.h"

namespace custos::outbox {
namespace {

using store::Row;
using store::TxMode;

constexpr const char* kPayloadSlot = "outbox:payload";
constexpr const char* kColumns =
    "id, system, type, request_id, subject_id, status, created_at, next_attempt_at, delivered_at, attempts,"
    " last_status, last_error, confirmation_required";

EventInfo from_row(const Row& r) {
  EventInfo e;
  e.id = std::string(r.text(0));
  e.system = std::string(r.text(1));
  e.type = std::string(r.text(2));
  e.request_id = std::string(r.text(3));
  e.subject_id = std::string(r.text(4));
  e.status = std::string(r.text(5));
  e.created_us = r.integer(6);
  e.next_attempt_us = r.integer(7);
  if (!r.is_null(8)) e.delivered_us = r.integer(8);
  e.attempts = static_cast<int>(r.integer(9));
  if (!r.is_null(10)) e.last_status = static_cast<int>(r.integer(10));
  if (!r.is_null(11)) e.last_error = std::string(r.text(11));
  e.confirmation_required = r.integer(12) != 0;
  return e;
}

std::optional<EventInfo> load(store::Transaction& tx, const std::string& id) {
  std::optional<EventInfo> out;
  tx.exec(std::string("SELECT ") + kColumns + " FROM outbox_events WHERE id = ?", {id},
          [&](const Row& r) { out = from_row(r); });
  return out;
}

std::string new_id() {
  std::array<std::uint8_t, 16> raw{};
  randombytes_buf(raw.data(), raw.size());
  char hex[33];
  sodium_bin2hex(hex, sizeof hex, raw.data(), raw.size());
  return std::string("msg_") + hex;
}

std::string secret_slot(const std::string& system) { return "webhook:" + system; }

}  // namespace

std::string sign(const crypto::SecretKey& key, const std::string& id, const std::string& timestamp,
                 const std::string& body) {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key.data(), crypto::SecretKey::kSize);
  const auto update = [&](std::string_view s) {
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(s.data()), s.size());
  };
  update(id);
  update(".");
  update(timestamp);
  update(".");
  update(body);
  std::array<unsigned char, crypto_auth_hmacsha256_BYTES> mac{};
  crypto_auth_hmacsha256_final(&st, mac.data());
  sodium_memzero(&st, sizeof st);
  char b64[64];
  sodium_bin2base64(b64, sizeof b64, mac.data(), mac.size(), sodium_base64_VARIANT_ORIGINAL);
  return std::string("v1,") + b64;
}

Outbox::Outbox(store::Store& store, store::KeyTable& keys) : store_(store), keys_(keys) {
  keys_.named_key(kPayloadSlot);
}

std::string Outbox::enqueue(store::Transaction& tx, const NewEvent& e, std::int64_t now_us) {
  const std::string id = new_id();
  const crypto::Bytes sealed =
      crypto::seal(keys_.named_key(kPayloadSlot), {}, crypto::as_bytes(id), crypto::as_bytes(e.body));
  tx.exec("INSERT INTO outbox_events (id, system, type, request_id, subject_id, status, created_at, next_attempt_at,"
          " attempts, confirmation_required, payload) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, 0, ?, ?)",
          {id, e.system, e.type, e.request_id, e.subject_id, now_us, now_us, e.confirmation_required ? 1 : 0, sealed});
  return id;
}

std::vector<Claimed> Outbox::claim(std::int64_t now_us, std::size_t limit, const RetryPolicy& policy) {
  std::vector<std::pair<EventInfo, std::vector<std::uint8_t>>> rows;
  {
    auto tx = store_.begin(TxMode::write);
    tx->exec(std::string("SELECT ") + kColumns +
                 ", payload FROM outbox_events WHERE status = 'pending' AND next_attempt_at <= ?"
                 " ORDER BY next_attempt_at, id LIMIT ?",
             {now_us, static_cast<std::int64_t>(limit)},
             [&](const Row& r) { rows.emplace_back(from_row(r), r.is_null(13) ? std::vector<std::uint8_t>{} : r.blob_copy(13)); });
    for (const auto& [info, payload] : rows)
      tx->exec("UPDATE outbox_events SET next_attempt_at = ? WHERE id = ?", {now_us + policy.lease_ms * 1000, info.id});
    tx->commit();
  }
  std::vector<Claimed> out;
  const crypto::SecretKey& key = keys_.named_key(kPayloadSlot);
  for (auto& [info, payload] : rows) {
    const crypto::Bytes body = crypto::open(key, crypto::as_bytes(info.id), payload, "outbox payload");
    out.push_back({std::move(info), std::string(body.begin(), body.end())});
  }
  return out;
}

std::optional<std::int64_t> Outbox::next_due() {
  auto tx = store_.begin(TxMode::read);
  return tx->scalar("SELECT min(next_attempt_at) FROM outbox_events WHERE status = 'pending'");
}

std::optional<EventInfo> Outbox::record_attempt(store::Transaction& tx, const std::string& id, int http_status,
                                                const std::string& error, std::int64_t now_us,
                                                const RetryPolicy& policy) {
  auto e = load(tx, id);
  const bool answered_2xx = http_status >= 200 && http_status < 300;
  // A 2xx: delivered, its body no longer kept. `note` says why a destroyed
  // event was delivered after all (else last_error is cleared).
  const auto mark_delivered = [&](const char* note) {
    e->attempts += 1;
    e->last_status = http_status;
    e->last_error = "";
    e->status = "delivered";
    e->delivered_us = now_us;
    tx.exec("UPDATE outbox_events SET status = 'delivered', delivered_at = ?, attempts = ?, last_status = ?,"
            " last_error = ?, payload = NULL WHERE id = ?",
            {now_us, e->attempts, http_status, note ? store::Param(note) : store::Param(nullptr), id});
    return e;
  };
  // Claimed before its subject was erased (forget_subject), and answered
  // 2xx: the body left before it was destroyed, so the disclosure is
  // recorded as what it was.
  if (e && e->status == "destroyed" && answered_2xx) return mark_delivered("delivered while its subject was being erased");
  if (!e || e->status != "pending") return std::nullopt;
  if (answered_2xx) return mark_delivered(nullptr);
  e->attempts += 1;
  if (http_status > 0) e->last_status = http_status;
  e->last_error = error;
  const bool client_error = http_status >= 400 && http_status < 500 && http_status != 408 && http_status != 429;
  if (client_error) {
    // The receiver refused this event itself: sending it again will not help.
    e->status = "dead";
  } else {
    std::int64_t delay_ms = policy.max_ms;
    if (e->attempts - 1 < 40) delay_ms = std::min(policy.max_ms, policy.base_ms << std::min(e->attempts - 1, 40));
    delay_ms = std::max<std::int64_t>(1, delay_ms);
    const std::int64_t half = delay_ms / 2;
    delay_ms = delay_ms - half + static_cast<std::int64_t>(randombytes_uniform(static_cast<std::uint32_t>(
                                          std::min<std::int64_t>(half, 0xffffffffLL) + 1)));
    e->next_attempt_us = now_us + delay_ms * 1000;
    if (e->next_attempt_us > e->created_us + policy.horizon_ms * 1000) {
      e->status = "dead";
      e->last_error = "retry horizon passed; last: " + error;
    }
  }
  const std::optional<std::int64_t> status = e->last_status ? std::optional<std::int64_t>(*e->last_status) : std::nullopt;
  tx.exec("UPDATE outbox_events SET status = ?, next_attempt_at = ?, attempts = ?, last_status = ?, last_error = ?"
          " WHERE id = ?",
          {e->status, e->next_attempt_us, e->attempts, status ? store::Param(*status) : store::Param(nullptr),
           e->last_error, id});
  return e;
}

std::vector<EventInfo> Outbox::list(const ListFilter& f) {
  auto tx = store_.begin(TxMode::read);
  return list(*tx, f);
}

std::vector<EventInfo> Outbox::list(store::Transaction& tx, const ListFilter& f) {
  std::string sql = std::string("SELECT ") + kColumns + " FROM outbox_events WHERE 1 = 1";
  std::vector<store::Param> params;
  if (!f.status.empty()) sql += " AND status = ?", params.emplace_back(f.status);
  if (!f.system.empty()) sql += " AND system = ?", params.emplace_back(f.system);
  if (!f.request_id.empty()) sql += " AND request_id = ?", params.emplace_back(f.request_id);
  sql += " ORDER BY created_at, id LIMIT ?";
  params.emplace_back(static_cast<std::int64_t>(f.limit));
  std::vector<EventInfo> out;
  tx.exec_v(sql, params, [&](const Row& r) { out.push_back(from_row(r)); });
  return out;
}

std::optional<EventInfo> Outbox::get(const std::string& id) {
  auto tx = store_.begin(TxMode::read);
  return load(*tx, id);
}

EventInfo Outbox::retry(store::Transaction& tx, const std::string& id, std::int64_t now_us) {
  auto e = load(tx, id);
  if (!e) throw Error(ErrorCode::not_found, "outbox event " + id.substr(0, 40) + " not found");
  if (e->status != "dead") throw Error(ErrorCode::conflict, "outbox event is " + e->status + ", not a dead letter");
  // A fresh horizon from now: created_at moves, the event id stays.
  tx.exec("UPDATE outbox_events SET status = 'pending', next_attempt_at = ?, created_at = ? WHERE id = ?",
          {now_us, now_us, id});
  e->status = "pending";
  e->next_attempt_us = now_us;
  e->created_us = now_us;
  return *e;
}

std::size_t Outbox::forget_subject(store::Transaction& tx, const std::string& subject_id, std::int64_t now_us) {
  return static_cast<std::size_t>(
      tx.exec("UPDATE outbox_events SET status = 'destroyed', payload = NULL, next_attempt_at = ?,"
              " last_error = 'subject erased: the body was destroyed with it'"
              " WHERE subject_id = ? AND type = 'rectification' AND status IN ('pending', 'dead')",
              {now_us, subject_id}));
}

std::int64_t Outbox::count(const std::string& status) {
  auto tx = store_.begin(TxMode::read);
  return tx->scalar("SELECT count(*) FROM outbox_events WHERE status = ?", {status}).value_or(0);
}

void Outbox::confirm(store::Transaction& tx, const Confirmation& c) {
  if (tx.scalar("SELECT count(*) FROM outbox_confirmations WHERE request_id = ? AND system = ?",
                {c.request_id, c.system})
          .value_or(0) > 0)
    throw Error(ErrorCode::conflict, "system '" + c.system + "' has already confirmed this request");
  tx.exec("INSERT INTO outbox_confirmations (request_id, system, at, principal, outcome, note) VALUES (?, ?, ?, ?, ?, ?)",
          {c.request_id, c.system, c.at_us, c.principal, c.outcome, c.note});
}

std::vector<Confirmation> Outbox::confirmations(store::Transaction& tx, const std::string& request_id) {
  std::vector<Confirmation> out;
  tx.exec("SELECT request_id, system, at, principal, outcome, note FROM outbox_confirmations WHERE request_id = ?"
          " ORDER BY at, system",
          {request_id}, [&](const Row& r) {
            out.push_back({std::string(r.text(0)), std::string(r.text(1)), std::string(r.text(3)),
                           std::string(r.text(4)), r.is_null(5) ? "" : std::string(r.text(5)), r.integer(2)});
          });
  return out;
}

std::vector<Confirmation> Outbox::confirmations(const std::string& request_id) {
  auto tx = store_.begin(TxMode::read);
  return confirmations(*tx, request_id);
}

std::string Outbox::set_secret(const std::string& system) {
  const crypto::SecretKey key = keys_.replace_named_key(secret_slot(system));
  char b64[64];
  sodium_bin2base64(b64, sizeof b64, key.data(), crypto::SecretKey::kSize, sodium_base64_VARIANT_ORIGINAL);
  std::string out = std::string("whsec_") + b64;
  sodium_memzero(b64, sizeof b64);
  return out;
}

crypto::SecretKey Outbox::secret(const std::string& system) {
  auto key = keys_.find_named_key(secret_slot(system));
  if (!key)
    throw Error(ErrorCode::not_found, "system '" + system + "' has no signing secret (run `custos system secret " + system + "`)");
  return std::move(*key);
}

bool Outbox::has_secret(const std::string& system) { return keys_.find_named_key(secret_slot(system)).has_value(); }

}  // namespace custos::outbox
