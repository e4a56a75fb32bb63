// custos/service/service.h — the one façade every transport calls.
//
// The service authenticates a caller, authorises the operation and the
// declared purpose against the role, calls the domain modules, masks what
// the role may only see masked, and audits — denials included. The HTTP
// server and the CLI are thin: they turn requests into these calls and
// JSON documents back into responses. Bodies are nlohmann::json so both
// transports share one validation path.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <ostream>
#include <string>

#include "custos/access/policy.h"
#include "custos/crypto/passphrase.h"
#include "custos/error.h"
#include "custos/audit/journal.h"
#include "custos/access/tokens.h"
#include "custos/outbox/outbox.h"
#include "custos/service/import.h"

namespace custos::service {

using Json = nlohmann::json;

struct InitOptions {
  std::filesystem::path data_dir;
  std::optional<crypto::Passphrase> passphrase;  // guarded memory, shared by copies
  bool fast_kdf = false;  // Argon2id "interactive" cost (tests, small machines)
  std::filesystem::path shipped_policies;  // copied into <data-dir>/policies
  // Where the vault's tables live: empty or "sqlcipher:" for <data-dir>/custos.db,
  // or a postgresql:// URL (the schema is created there; <data-dir> keeps the
  // master key and remembers the URL in <data-dir>/store.url, mode 0600).
  std::string store_url;
};

struct InitResult {
  std::string admin_token;
  std::filesystem::path admin_token_file;
  std::string audit_verifier_key;
};

// Creates the data directory: master key, wrapped database key, store,
// audit signing key, default policies, and an `admin` token. Throws
// Error(conflict) if the directory or the PostgreSQL database was already
// initialised, Error(store_unavailable) if the database cannot be reached.
InitResult init_data_dir(const InitOptions& options);

struct OpenOptions {
  std::filesystem::path data_dir;
  // Empty: the URL `init` remembered in <data-dir>/store.url, else SQLCipher
  // in <data-dir>. See InitOptions::store_url.
  std::string store_url;
  std::optional<crypto::Passphrase> passphrase;  // guarded memory, shared by copies
  std::filesystem::path policy_dir;  // empty: <data-dir>/policies
  std::string node_id = "node-1";
  std::uint64_t checkpoint_every_entries = 1000;
  std::int64_t checkpoint_every_ms = 1000;
  std::function<std::int64_t()> clock_us;  // injectable clock
  // Record the entries of reads through the audit journal (custosd: a few
  // µs per read instead of a store commit). Without it, each read commits
  // its entry, and open only folds a crashed process's leftover journal.
  bool audit_journal = false;
  audit::JournalOptions audit_journal_options;
  // Read regulations.yaml and calendars.yaml (~15 ms) when a call first needs
  // the rules, not at open: for a short-lived process (a `custos` command)
  // that may not. Open still refuses a file whose `version` line is not the
  // current one (dsr::declares_current_version; else the full load, now).
  // A long-lived one (custosd) leaves it false: a bad file is refused at start.
  bool defer_regulations = false;
};

// Who is calling and why; built by the transport.
struct Caller {
  access::Principal principal;
  std::string purpose;     // Custos-Purpose
  std::string request_id;
};

// A privacy link that was used or has expired (HTTP 410 link_used /
// link_expired; a transport that does not know it sees unauthenticated).
class PrivacyLinkRefused : public Error {
 public:
  explicit PrivacyLinkRefused(std::string reason)
      : Error(ErrorCode::unauthenticated, reason == "link_used" ? "this privacy link was already used"
                                                                : "this privacy link has expired"),
        reason_(std::move(reason)) {}
  const std::string& reason() const { return reason_; }  // "link_used" | "link_expired"

 private:
  std::string reason_;
};

class Service {
 public:
  static std::unique_ptr<Service> open(const OpenOptions& options);
  ~Service();

  // Throws Error(unauthenticated).
  access::Principal authenticate(std::string_view bearer_token);
  // The vault-wide counters (/metrics) are for roles with the `admin` or
  // `audit` operation: they show which routes every role called and how
  // often, which the audit log shows those roles anyway, and nobody else.
  // Throws Error(forbidden_role), audited as metrics.read.
  void authorize_metrics(const Caller& caller);
  // Until the returned object is destroyed (on this thread, before any
  // snapshot made after it), the reads this thread makes through the
  // service share one read transaction of the store: a transport opens one
  // around a quick request's authentication and handler (store::ReadSnapshot
  // says what that changes). Not for streaming or long-running requests.
  std::unique_ptr<store::ReadSnapshot> read_snapshot();
  // The CLI's operator (holds the key files): role admin, principal local:<user>.
  access::Principal local_operator() const;

  // Re-reads roles, purposes and segments; on error keeps the old ones and returns false.
  bool reload_policies(std::string* error);
  std::shared_ptr<const access::Policy> policy() const;

  // Subjects. Inputs are request bodies; outputs are response documents.
  //
  // Create and batch create resolve identity over the blind indexes (email,
  // phone, external_id) per the body's `on_conflict` (records::OnConflict):
  // "reject" (default) refuses a subject an identifier already names —
  // create throws records::DuplicateSubject (409 duplicate_subject, naming
  // the matching ids), batch create reports it per item; "merge" fills the
  // one matching subject's missing fields and returns its id with
  // "merged": true (its existing values win; a restricted match is refused,
  // subject_restricted); "create" makes a deliberate duplicate.
  Json create_subject(const Caller& caller, const Json& body);
  Json batch_create(const Caller& caller, const Json& body);
  // Clusters of subjects sharing an identifier (ids and the identifier's
  // field name only). Needs `dsr` and a purpose that lists subject.duplicates
  // in required_for; query: after= (the previous page's next_after), limit= (1-1000).
  Json subject_duplicates(const Caller& caller, const std::map<std::string, std::string>& query);
  // Merges the subjects named in body {"subjects": [ids], "reason": "..."}
  // into `id` (records::Records::merge; consent history re-derived). Needs
  // `records.erase` (the merged-away keys are shredded), a purpose listing
  // subject.merge in required_for and a reason as for erase_subject. Refused,
  // audited, writing nothing: subject_restricted, conflict (legal hold), not_found.
  Json merge_subjects(const Caller& caller, std::string_view id, const Json& body);
  Json get_subject(const Caller& caller, std::string_view id);
  Json batch_get(const Caller& caller, const Json& body);
  Json find_subjects(const Caller& caller, std::string_view field, std::string_view value);
  Json patch_subject(const Caller& caller, std::string_view id, const Json& body);
  // Crypto-shredding outside a data-subject request: the role needs
  // records.erase, a purpose that justifies erasure (purposes.yaml
  // `required_for: [subject.erase]`) and a reason of 1-128 bytes without
  // control characters (a ticket reference, not personal data), which the
  // audit entry records. A completed erasure request erases without these.
  Json erase_subject(const Caller& caller, std::string_view id, std::string_view reason);
  Json add_touchpoint(const Caller& caller, std::string_view id, const Json& body);
  Json add_order(const Caller& caller, std::string_view id, const Json& body);

  // Consent (role needs `consent`). `gpc` is the Sec-GPC: 1 signal of the
  // capturing request: it also opts the subject out of every sale/share purpose.
  Json record_consent(const Caller& caller, std::string_view id, const Json& body, bool gpc);
  Json get_consents(const Caller& caller, std::string_view id);
  Json confirm_consent(const Caller& caller, const Json& body);

  // Campaign fetch: every subject with active consent for purpose x channel
  // (optionally in an RFM segment), with the requested fields the role may
  // see, as NDJSON lines handed to `emit` page by page (bounded memory).
  // `emit` returns false when the client is gone. Validation errors throw
  // before the first line. Returns the summary (also the last line).
  Json campaign_fetch(const Caller& caller, const Json& body, const std::function<bool(const std::string&)>& emit);
  // RFM distribution and segment sizes (no personal data); recomputed on call.
  Json analytics_rfm(const Caller& caller);

  // Data-subject requests (role needs `dsr`).
  Json dsr_create(const Caller& caller, const Json& body);
  Json dsr_list(const Caller& caller, const std::map<std::string, std::string>& query);
  Json dsr_get(const Caller& caller, std::string_view id);
  // Moving to `completed` fulfils the request (export, rectification,
  // erasure, restriction, objection, opt-out) for every matched subject, or
  // for those named in `subjects` (the others become exceptions, with the
  // `reason`), and stores its report. Under the policy's four eyes on
  // erasure the first principal's `completed` moves the request to
  // awaiting_approval; the same principal again gets second_approver_required.
  Json dsr_transition(const Caller& caller, std::string_view id, const Json& body);

  // Access / portability package of every matched subject: every field,
  // touchpoints, orders, consent history, disclosures, and each subject's
  // access log with inclusion proofs. Needs the purpose dsr_fulfilment. The
  // package is the subject's own, so it is whole whatever the caller's role
  // sees elsewhere.
  struct ExportFormat {
    std::string format = "json";  // json: the whole package | csv: one table
    std::string table;            // csv: fields, touchpoints, orders, consent_history, access_log
  };
  // Streams it as it is read, in flat memory (no part of it is held whole).
  // Every check is made, and refused with an Error, before the first byte;
  // `write` returns false when the reader is gone, which ends it quietly.
  void dsr_export(const Caller& caller, std::string_view id, const ExportFormat& format,
                  const std::function<bool(std::string_view)>& write);
  // The JSON package as one document (small packages, tests).
  Json dsr_export(const Caller& caller, std::string_view id);

  // Breaches (role needs `breach`). Listing takes status=, at_risk=true,
  // overdue=true and margin_hours= (default 24).
  Json breach_create(const Caller& caller, const Json& body);
  Json breach_list(const Caller& caller, const std::map<std::string, std::string>& query);
  Json breach_get(const Caller& caller, std::string_view id);
  Json breach_add_event(const Caller& caller, std::string_view id, const Json& body);
  Json breach_compute_affected(const Caller& caller, std::string_view id, const Json& body);
  // Affected subjects with their contact fields, for notification (purpose
  // breach_notification; masked or withheld per the role's visibility).
  Json breach_affected(const Caller& caller, std::string_view id, const std::map<std::string, std::string>& query);

  // Legal hold on a subject (role needs `dsr`): erasure and retention skip it.
  Json set_legal_hold(const Caller& caller, std::string_view id, bool hold);
  // The same from a request body {"hold": true|false}.
  Json set_legal_hold(const Caller& caller, std::string_view id, const Json& body);

  // Retention (role needs `admin`): purge what has expired; dry run changes nothing.
  Json retention_run(const Caller& caller, bool dry_run);
  // The same from a request body {"dry_run": bool} (optional, default false).
  Json retention_run(const Caller& caller, const Json& body);

  // Audit (role needs the `audit` operation).
  Json audit_entries(const Caller& caller, const std::map<std::string, std::string>& query);
  Json audit_checkpoint(const Caller& caller);
  Json audit_inclusion_proof(const Caller& caller, std::string_view index, std::string_view size);
  Json audit_consistency_proof(const Caller& caller, std::string_view first, std::string_view second);
  void audit_export(const Caller& caller, std::ostream& out);
  std::string audit_verifier_key() const;
  // Offline verification of an export through the shared verifier code.
  Json verify_export_file(const std::filesystem::path& file) const;
  void checkpoint_if_due();

  // Several custosd nodes on one store (docs/postgresql.md; one node works
  // the same way). Role needs `admin`.
  //
  // Asks every custosd on the store to re-read its policy files, as SIGHUP
  // does for one: records a new policy generation (audited,
  // policy.reload_request) and returns {"generation": G}. Each node follows
  // within about a second (follow_cluster) and records what it did.
  Json request_policy_reload(const Caller& caller);
  // The latest policy generation, every node that has reported and every
  // lease: {"generation": G, "nodes": [{"node_id", "seen_at", "live",
  // "policy_generation", "policy_applied_at", "policy_ok", "policy_detail"}],
  // "leases": [{"name", "holder", "since", "expires_at", "held"}],
  // "checkpoint": {"size", "time"} of the latest signed one, or null}. A node
  // is live if it reported within the last 15 seconds; a lease is held until
  // expires_at.
  Json cluster_status(const Caller& caller);
  // Called by each custosd about once a second: records that this node
  // (OpenOptions::node_id) is alive and, when a newer generation was
  // requested, reloads its policy files and records the outcome (audited,
  // policy.reload, principal system:<node>). Returns the outcome when it
  // reloaded: true (applied) or false (refused, the old policy stays; the
  // reason in *error); nullopt when there was nothing to do.
  std::optional<bool> follow_cluster(std::string* error);
  // Whether this node runs the schedule `name` now: of several nodes that
  // ask, exactly one gets true per `interval` (the claim is one write
  // transaction on the shared store). The first claim of a schedule starts
  // its clock and returns false.
  bool claim_schedule(const std::string& name, std::chrono::milliseconds interval);
  // Whether this node holds the lease `name` now: taken when nobody holds
  // it or its holder's term has ended, renewed by the holder for another
  // `term` once less than half of it is left (a write transaction; between
  // renewals the answer costs nothing). Of several nodes that ask, one
  // holds it at a time, as far as their clocks agree (keep them in sync,
  // NTP); a holder that dies (kill -9) loses it when its term ends.
  // custosd signs audit checkpoints only while it holds "audit-checkpoints".
  bool hold_lease(const std::string& name, std::chrono::milliseconds term);
  // Gives the lease up if this node holds it (a clean shutdown: another node
  // takes over at its next look, not after the term).
  void release_lease(const std::string& name);

  // Administration.
  Json create_token(const Caller& caller, const std::string& name, const std::string& role);
  Json revoke_token(const Caller& caller, const std::string& name);
  Json rotate_keys(const Caller& caller);
  Json retire_keys(const Caller& caller);

  // Downstream systems (policies/systems.yaml; the outbox module).
  //
  // A system confirms it acted on a request it was sent, with a token whose
  // name policies/systems.yaml gives it (`token`, default its name) and role
  // `downstream_system`: body {"outcome": "done" | "no_data", "note": "..."}.
  // The last required confirmation of an erasure in awaiting_confirmation
  // completes it. Throws forbidden_role (not a system's token), conflict
  // (nothing was sent to it for the request, or it confirmed already).
  Json dsr_confirm(const Caller& caller, std::string_view id, const Json& body);
  // Outbox events (role needs `admin`): query status=, system=, request=, limit=.
  Json outbox_list(const Caller& caller, const std::map<std::string, std::string>& query);
  // Puts a dead letter back in the queue (role needs `admin`).
  Json outbox_retry(const Caller& caller, std::string_view event_id);
  // Creates or replaces a system's signing secret and returns it, the one
  // time it is shown (role needs `admin`). {"system", "secret"}.
  Json system_secret(const Caller& caller, std::string_view system);

  // For the sender in custosd (not a transport call). One claimed event,
  // signed now (Standard Webhooks headers), to POST to `url`.
  struct OutboxDelivery {
    std::string id, system, url, body;
    std::vector<std::pair<std::string, std::string>> headers;
  };
  // Claims due events (leased for policy.lease_ms). An event whose system is
  // gone from systems.yaml or has no secret is recorded as a failed attempt.
  std::vector<OutboxDelivery> outbox_claim(std::size_t limit, const outbox::RetryPolicy& policy);
  // Records a delivery attempt's outcome (http_status 0: no answer), with
  // the request's timeline note and the disclosure's audit entry.
  void outbox_record(const std::string& id, int http_status, const std::string& error,
                     const outbox::RetryPolicy& policy);
  std::optional<std::int64_t> outbox_next_due_us();
  std::int64_t now_us() const;
  // Called after events commit (the sender wakes up); set once at start.
  void set_outbox_listener(std::function<void()> listener);
  struct OutboxCounts {
    std::int64_t pending = 0, delivered = 0, dead = 0;
  };
  OutboxCounts outbox_counts();
  // ---- Bulk integration (issue 18): NDJSON import and export, batch routes, token list.

  // Imports customers from NDJSON pulled through `read` (custos/service/import.h):
  // the role needs records.write (and consent, for lines with consents; a
  // grant needs capture_consent for its purpose). Returns the report:
  // import_id, lines, succeeded, failed, created, updated, resumed_after,
  // errors [{line, code, detail}] (at most max_listed_errors). Throws before
  // reading for a bad option; Error(payload_too_large) past max_bytes (what
  // was committed stays, and the same import_id resumes after it).
  Json import_ndjson(const Caller& caller, const ImportOptions& options, const ImportReader& read,
                     const ImportObserver& observer = {});
  // Every active subject as one NDJSON line in import's format (so an export
  // imports elsewhere): id, fields (as the role sees them), consents (current
  // state), orders and touchpoints (without notes). Needs records.read and a
  // purpose; restricted subjects only under allowed_when_restricted purposes.
  // One audit entry per page of subjects, committed before the page leaves.
  // Only fields the role sees in plain; marketing purposes are refused (that
  // is a campaign fetch). Query: after= (a subject id), limit= (lines,
  // default all). `emit` returns false when the reader is gone. Every
  // emitted line is a customer (no summary line, so the file imports as it
  // is); returns {"done", "subjects"}.
  Json export_subjects(const Caller& caller, const std::map<std::string, std::string>& query,
                       const std::function<bool(const std::string&)>& emit);
  // Batches of up to 1,000 items with per-item results, as batch_create:
  // {"consents"|"orders"|"touchpoints": [{"subject_id", ...the single
  // route's body}]} -> {"results": [{index, status, result | error}],
  // "succeeded", "failed"}. Each item is applied, checked and audited as
  // its single route does; a store or audit failure ends the batch.
  Json batch_record_consents(const Caller& caller, const Json& body);
  Json batch_add_orders(const Caller& caller, const Json& body);
  Json batch_add_touchpoints(const Caller& caller, const Json& body);
  // Tokens (names, roles, ids, times; never a secret). Needs admin.
  Json list_tokens(const Caller& caller);

  // ---- The web console's administration screen and the privacy page (issue 19).

  // The policy files in force (the policy directory's *.yaml): name, bytes,
  // SHA-256 and text (policy files hold no personal data). Needs admin;
  // audited as admin.policies.
  Json admin_policies(const Caller& caller);
  // Master-key versions: the current one (meta), the versions on disk, and
  // how many wrapped keys each version wraps (database-level and subject
  // data keys). Never key material. Needs keys or admin; audited as key.versions.
  Json admin_keys(const Caller& caller);

  // A subject's privacy link (POST /v1/subjects/{id}:privacyLink): one
  // subject, expiring (body ttl_hours 1-168, default 72), single use. Body
  // `regime` (default eu-gdpr) is the regime its requests are taken in
  // under. The vault keeps the link id, the subject, SHA-256 of the secret,
  // the expiry and when it was used; never the secret. Needs `consent`;
  // audited as subject.privacy_link. Returns {link_id, token, url, expires_at}.
  Json privacy_link_create(const Caller& caller, std::string_view subject_id, const Json& body);
  // Spends a link token for a session of 30 minutes bound to its subject
  // (never past the link's expiry). Throws PrivacyLinkRefused for a used
  // or expired link, Error(unauthenticated) for an unknown or malformed one.
  Json privacy_session_open(std::string_view link_token, const std::string& request_id);
  // With a session token (Error(unauthenticated) otherwise): the subject's
  // consents per marketing purpose and channel (no other personal field);
  // a consent change {purpose, channel, event: granted|withdrawn}, recorded
  // with proof.capture "privacy_page", the link id and the time; a request
  // {type: access|erasure|rectification|opt_out_sale_share, changes?, note?}
  // taken in as a DSR identified by the link and moved to identity_verified.
  // `gpc` (Sec-GPC: 1 on the call) is recorded as an opt-out of sale and sharing.
  Json privacy_consents(std::string_view session_token, bool gpc, const std::string& request_id);
  Json privacy_record_consent(std::string_view session_token, const Json& body, bool gpc,
                              const std::string& request_id);
  Json privacy_request(std::string_view session_token, const Json& body, bool gpc, const std::string& request_id);

  // Campaign preview (counts only): how many subjects a campaign fetch with
  // this body {purpose, channel, segment?} would reach, decrypting nothing.
  // Authorised as the fetch (records.read and the marketing purpose declared);
  // audited as campaign.preview per page of candidates.
  Json campaign_preview(const Caller& caller, const Json& body);
  // Consent rates per purpose and channel at each month's end (query
  // months=1-36, default 12; the last point is now): subjects granted, and
  // the rate over the active subjects created by then. Needs analytics.
  Json analytics_consents(const Caller& caller, const std::map<std::string, std::string>& query);

  // Counters for /metrics.
  struct Counters {
    std::atomic<std::uint64_t> decryptions{0};
    std::atomic<std::uint64_t> audit_entries{0};
  };
  const Counters& counters() const { return counters_; }
  // Whether reads go through the audit journal (false if it was not asked
  // for, or another process holds it).
  bool audit_journal_active() const;
  // When the journal was asked for but another process held it at open:
  // tries again; true if reads go through it from now on.
  bool retry_audit_journal();
  audit::JournalStatus audit_journal_status();
  std::uint64_t audit_size();
  // Tree size of the latest signed checkpoint (0 if none yet).
  std::uint64_t audit_checkpoint_size();

  const std::filesystem::path& data_dir() const;

 private:
  struct Impl;
  explicit Service(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  Counters counters_;
};

}  // namespace custos::service
