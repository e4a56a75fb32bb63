// custos/outbox/outbox.h — the transactional outbox of events for downstream
// systems, their delivery state, dead letters and confirmations.
//
// An event is inserted inside the transaction of the change it reports (a
// DSR's completion, a consent change: see dsr::Desk::transition's `in_tx`
// and consent::Ledger::set_change_hook), so it exists if and only if the
// change committed. A sender (custosd) claims due events, POSTs them, and
// records the outcome; a claim is a lease, so an event whose sender died
// (kill -9) is claimed again once the lease ends: delivery is at least once,
// and each event keeps one `webhook-id` for the receiver to de-duplicate.
//
// Bodies are sealed (XChaCha20-Poly1305, key "outbox:payload" wrapped by the
// master key, the event id bound as associated data) and cleared once
// delivered: a rectification's new values are personal data.
//
// Tables (migration 10): outbox_events, outbox_confirmations. This module
// alone reads and writes them. Safe for concurrent use (all state is in the
// store).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "custos/crypto/secret_key.h"
#include "custos/store/key_table.h"
#include "custos/store/store.h"

namespace custos::outbox {

struct NewEvent {
  std::string system;
  std::string type;        // of kEventTypes
  std::string request_id;  // the DSR, or "" (consent changes)
  std::string subject_id;  // pseudonymous id (hex)
  std::string body;        // the JSON document to deliver (exact bytes, signed)
  bool confirmation_required = false;
};

// Delivery states: pending (waiting or leased to a sender), delivered, dead.
struct EventInfo {
  std::string id;  // webhook-id: "msg_<hex>"
  std::string system, type, request_id, subject_id, status;
  std::int64_t created_us = 0, next_attempt_us = 0;
  std::optional<std::int64_t> delivered_us;
  int attempts = 0;
  std::optional<int> last_status;  // HTTP status of the last answer
  std::string last_error;          // "timeout", "connection failed", "HTTP 503", ...
  bool confirmation_required = false;
};

struct Confirmation {
  std::string request_id, system, principal, outcome, note;
  std::int64_t at_us = 0;
};

// One event claimed for delivery, with its body opened.
struct Claimed {
  EventInfo info;
  std::string body;
};

// When a failed delivery is tried again. The n-th retry waits
// min(base * 2^(n-1), max) scaled by a random factor in [0.5, 1] ("equal
// jitter": retries spread out, and each wait is at least the previous
// one's); an event still undelivered `horizon` after it was created is a
// dead letter.
struct RetryPolicy {
  std::int64_t base_ms = 1000;
  std::int64_t max_ms = 15 * 60 * 1000;
  std::int64_t horizon_ms = 3LL * 24 * 3600 * 1000;
  std::int64_t lease_ms = 30 * 1000;  // a claim's lease: request timeout + margin
};

struct ListFilter {
  std::string status;      // "" any
  std::string system;      // "" any
  std::string request_id;  // "" any
  std::size_t limit = 100;
};

class Outbox {
 public:
  // Makes sure the payload key exists (its own write transaction), so
  // enqueue() inside a caller's transaction never has to create it.
  Outbox(store::Store& store, store::KeyTable& keys);

  // Inside the caller's write transaction. Returns the event id.
  std::string enqueue(store::Transaction& tx, const NewEvent& event, std::int64_t now_us);

  // Claims up to `limit` pending events due at `now_us` (leasing each for
  // policy.lease_ms) and opens their bodies.
  std::vector<Claimed> claim(std::int64_t now_us, std::size_t limit, const RetryPolicy& policy);
  // The earliest next attempt of a pending event, if any.
  std::optional<std::int64_t> next_due();

  // Records an answer. `http_status` 0: no answer (`error` says why).
  // 2xx: delivered (the body is cleared). 4xx but 408/429: dead letter, no
  // retry. Otherwise a retry per `policy`, or a dead letter past its horizon.
  // Returns the event's new state, or nullopt if it is no longer pending
  // (another sender recorded it). Runs in the caller's transaction.
  std::optional<EventInfo> record_attempt(store::Transaction& tx, const std::string& id, int http_status,
                                          const std::string& error, std::int64_t now_us, const RetryPolicy& policy);

  std::vector<EventInfo> list(const ListFilter& filter);
  std::vector<EventInfo> list(store::Transaction& tx, const ListFilter& filter);
  std::optional<EventInfo> get(const std::string& id);
  // Puts a dead letter back in the queue, due now, with a fresh horizon.
  // Throws Error(not_found), or Error(conflict) if it is not dead.
  EventInfo retry(store::Transaction& tx, const std::string& id, std::int64_t now_us);
  // The subject `subject_id` (hex) is being erased (its key destroyed):
  // the bodies of its undelivered rectification events, the only ones that
  // carry field values, are destroyed with it inside that transaction. They
  // are sealed under the vault's payload key, which destroying the subject's
  // own key does not reach. Each becomes status "destroyed" with last_error
  // saying why: never claimed or retried. Notices without values (erasure,
  // consent, opt-out, restriction, objection) are still delivered. An event
  // already claimed and answered 2xx is recorded as delivered
  // (record_attempt). Returns how many.
  std::size_t forget_subject(store::Transaction& tx, const std::string& subject_id, std::int64_t now_us);
  // Events per status, for /metrics.
  std::int64_t count(const std::string& status);

  // Confirmations (inside the caller's transaction). Throws Error(conflict)
  // if the system already confirmed the request.
  void confirm(store::Transaction& tx, const Confirmation& c);
  std::vector<Confirmation> confirmations(const std::string& request_id);
  std::vector<Confirmation> confirmations(store::Transaction& tx, const std::string& request_id);

  // Signing secrets ("whsec_" + base64 of 32 random bytes, the Standard
  // Webhooks form), wrapped by the master key in wrapped_keys under
  // "webhook:<system>" (so key rotation re-wraps them). set_secret creates
  // or replaces it and returns it: the one time it is shown.
  std::string set_secret(const std::string& system);
  // Throws Error(not_found) if the system has no secret yet.
  crypto::SecretKey secret(const std::string& system);
  bool has_secret(const std::string& system);

 private:
  store::Store& store_;
  store::KeyTable& keys_;
};

// Standard Webhooks: "v1," + base64(HMAC-SHA256(key, id "." timestamp "." body)).
std::string sign(const crypto::SecretKey& key, const std::string& id, const std::string& timestamp,
                 const std::string& body);

}  // namespace custos::outbox
