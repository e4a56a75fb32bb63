// The privacy page's half of the façade (issue 19): a data subject's
// single-use, expiring link, the short session it is exchanged for, and
// what that session may do — read and change the subject's own marketing
// consents and file requests. Also the console's administration reads
// (policy files in force, master-key versions).
//
// Tokens: a link token is base64url(link_id 12 bytes || secret 32 bytes);
// a session token has the same shape with a session secret. The table keeps
// the link id, the subject, SHA-256 of each secret and the times, never a
// secret. Secrets are compared in constant time (sodium_memcmp).
#include <sodium.h>

#include <algorithm>
#include <cstring>

#include "custos/records/storage.h"
#include "custos/service/schema.h"
#include "custos/util/files.h"
#include "service_impl.h"

namespace custos::service {
namespace {

constexpr std::size_t kIdBytes = 12;
constexpr std::size_t kSecretBytes = 32;
constexpr std::int64_t kHourUs = 3'600'000'000LL;
constexpr std::int64_t kSessionUs = 30 * 60 * 1'000'000LL;

std::string to_hex(const std::uint8_t* data, std::size_t n) {
  std::string out(n * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), data, n);
  out.pop_back();
  return out;
}

std::string base64url(const std::vector<std::uint8_t>& bytes) {
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::array<std::uint8_t, crypto_hash_sha256_BYTES> sha256(const std::uint8_t* data, std::size_t n) {
  std::array<std::uint8_t, crypto_hash_sha256_BYTES> h{};
  crypto_hash_sha256(h.data(), data, n);
  return h;
}

// A link or session token split into its id (hex) and secret; nullopt if
// it is not one (wrong alphabet or length).
struct TokenParts {
  std::string link_id;
  std::array<std::uint8_t, kSecretBytes> secret{};
  ~TokenParts() { sodium_memzero(secret.data(), secret.size()); }
};

std::optional<TokenParts> split_token(std::string_view token) {
  if (token.empty() || token.size() > 128) return std::nullopt;
  std::array<std::uint8_t, kIdBytes + kSecretBytes + 1> raw{};
  std::size_t len = 0;
  const std::string text(token);
  if (sodium_base642bin(raw.data(), raw.size(), text.c_str(), text.size(), nullptr, &len, nullptr,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
      len != kIdBytes + kSecretBytes) {
    sodium_memzero(raw.data(), raw.size());
    return std::nullopt;
  }
  std::optional<TokenParts> out(std::in_place);
  out->link_id = to_hex(raw.data(), kIdBytes);
  std::copy(raw.begin() + kIdBytes, raw.begin() + kIdBytes + kSecretBytes, out->secret.begin());
  sodium_memzero(raw.data(), raw.size());
  return out;
}

// A fresh token for `link_id_bytes`: returns it and stores SHA-256 of its secret in `hash`.
std::string new_token(const std::array<std::uint8_t, kIdBytes>& id,
                      std::array<std::uint8_t, crypto_hash_sha256_BYTES>& hash) {
  std::vector<std::uint8_t> raw(kIdBytes + kSecretBytes);
  std::copy(id.begin(), id.end(), raw.begin());
  randombytes_buf(raw.data() + kIdBytes, kSecretBytes);
  hash = sha256(raw.data() + kIdBytes, kSecretBytes);
  std::string token = base64url(raw);
  sodium_memzero(raw.data(), raw.size());
  return token;
}

bool hash_matches(const std::vector<std::uint8_t>& stored, const std::array<std::uint8_t, kSecretBytes>& secret) {
  const auto h = sha256(secret.data(), secret.size());
  return stored.size() == h.size() && sodium_memcmp(stored.data(), h.data(), h.size()) == 0;
}

struct LinkRow {
  std::string link_id, regime;
  std::string issued_by;       // the principal that issued it
  std::string issued_by_role;  // empty: a link from before migration 2 (it confers nothing beyond withdrawing)
  records::SubjectId subject{};
  std::vector<std::uint8_t> secret_hash, session_hash;
  std::int64_t expires_us = 0;
  std::optional<std::int64_t> used_us, session_expires_us;
};

std::optional<LinkRow> load_link(store::Store& st, const std::string& link_id) {
  std::optional<LinkRow> out;
  auto tx = st.begin(store::TxMode::read);
  tx->exec("SELECT link_id, subject_id, secret_hash, regime, expires_at, used_at, session_hash, session_expires,"
           " created_role, created_by FROM privacy_links WHERE link_id = ?",
           {link_id}, [&](const store::Row& r) {
             LinkRow l;
             l.link_id = std::string(r.text(0));
             const auto sid = r.blob(1);
             if (sid.size() != l.subject.size()) return;
             std::copy(sid.begin(), sid.end(), l.subject.begin());
             l.secret_hash = r.blob_copy(2);
             l.regime = std::string(r.text(3));
             l.expires_us = r.integer(4);
             if (!r.is_null(5)) l.used_us = r.integer(5);
             if (!r.is_null(6)) l.session_hash = r.blob_copy(6);
             if (!r.is_null(7)) l.session_expires_us = r.integer(7);
             if (!r.is_null(8)) l.issued_by_role = std::string(r.text(8));
             l.issued_by = std::string(r.text(9));
             out = std::move(l);
           });
  return out;
}

// Whether the subject is still an active one (an erased or merged subject's
// link opens nothing).
bool subject_active(records::Records& recs, const records::SubjectId& id) {
  try {
    return recs.metadata(id).status == "active";
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) return false;
    throw;
  }
}

const char* const kBadSession = "privacy session unknown or expired: open the link from your e-mail again";

}  // namespace

store::ModuleMigrations privacy_migrations() {
  return {"privacy",
          {
              {1,
               0,
               {
                   // Privacy links (issue 19): hashes of the link's and the
                   // session's secrets, never a secret.
                   "CREATE TABLE privacy_links (link_id TEXT PRIMARY KEY, subject_id BLOB NOT NULL,"
                   " secret_hash BLOB NOT NULL, regime TEXT NOT NULL, created_by TEXT NOT NULL,"
                   " created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER,"
                   " session_hash BLOB, session_expires INTEGER)",
               }},
              {2,
               0,
               {
                   // The role that issued the link: a link confers no more
                   // than that role may do (Service::privacy_record_consent,
                   // privacy_request). Older links have none.
                   "ALTER TABLE privacy_links ADD COLUMN created_role TEXT",
               }},
              {3,
               0,
               {
                   // The issuing token's public id: revoking it ends the
                   // links it minted and their sessions (expire_links_of),
                   // so a stolen CRM token's links die with it. Empty for a
                   // local (CLI) principal, NULL for older links.
                   "ALTER TABLE privacy_links ADD COLUMN created_token TEXT",
               }},
          }};
}

std::string expire_privacy_links_of(store::Transaction& tx, const std::string& token_id, std::int64_t now) {
  const std::int64_t links = tx.exec("UPDATE privacy_links SET expires_at = ? WHERE created_token = ? AND expires_at > ?",
                                     {now, token_id, now});
  tx.exec("UPDATE privacy_links SET session_expires = ? WHERE created_token = ? AND session_expires > ?",
          {now, token_id, now});
  return links > 0 ? "privacy_links_ended=" + std::to_string(links) : "";
}

// ---- Administration reads

Json Service::admin_policies(const Caller& caller) {
  impl_->authorize(caller, *impl_->current_policy(), "admin", "admin.policies", false);
  std::vector<std::filesystem::path> files;
  const auto dir = impl_->policy_dir();
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file() && (e.path().extension() == ".yaml" || e.path().extension() == ".yml"))
      files.push_back(e.path());
  std::sort(files.begin(), files.end());
  Json list = Json::array();
  for (const auto& f : files) {
    const std::string text = util::read_text_file(f);
    const auto h = sha256(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    Json j = {{"name", f.filename().string()}, {"bytes", text.size()}, {"sha256", to_hex(h.data(), h.size())}};
    j["text"] = text.size() <= 256 * 1024 ? Json(text) : Json(nullptr);
    list.push_back(std::move(j));
  }
  impl_->audit->append_now(impl_->actor(caller),
                           {"admin.policies", "", {}, {}, true, "", "files=" + std::to_string(list.size())});
  return {{"directory", dir.filename().string()}, {"files", list}};
}

Json Service::admin_keys(const Caller& caller) {
  const auto pol = impl_->current_policy();
  const access::Role* role = pol->role(caller.principal.role);
  // Either class may look: an operator who rotates keys, or an administrator.
  impl_->authorize(caller, *pol, role && role->operations.count("keys") ? "keys" : "admin", "key.versions", false);
  std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>> per_version;  // version -> (named, subject)
  std::int64_t current = 0;
  {
    auto tx = impl_->store->begin(store::TxMode::read);
    current = impl_->keys->kek_version(*tx);
    for (const auto& [v, n] : store::named_keys_per_version(*tx)) per_version[v].first = n;
    for (const auto& [v, n] : records::subject_data_keys().count_per_version(*tx)) per_version[v].second = n;
  }
  const std::uint32_t newest = impl_->keyring->newest_version();
  // Every version still wrapping a key, and the current and newest ones
  // (older versions are retired once nothing refers to them).
  per_version[current];
  per_version[newest];
  Json versions = Json::array();
  for (const auto& [v, counts] : per_version)
    versions.push_back({{"version", v}, {"current", v == current}, {"named_keys", counts.first},
                        {"subject_keys", counts.second}});
  impl_->audit->append_now(impl_->actor(caller), {"key.versions", "", {}, {}, true, "", ""});
  return {{"current_version", current}, {"newest_version", newest}, {"versions", versions}};
}

// ---- Privacy links

Json Service::privacy_link_create(const Caller& caller, std::string_view id_text, const Json& body) {
  const auto pol = impl_->current_policy();
  const records::SubjectId id = records::parse_subject_id(id_text);
  const std::string subject_hex = records::to_hex(id);
  impl_->authorize(caller, *pol, "consent", "subject.privacy_link", false, subject_hex);
  if (!body.is_object()) bad_body("expected a JSON object");
  only_keys(body, {"ttl_hours", "regime"});
  std::int64_t ttl_hours = 72;
  if (body.contains("ttl_hours")) {
    if (!body["ttl_hours"].is_number_integer() || body["ttl_hours"].get<std::int64_t>() < 1 ||
        body["ttl_hours"].get<std::int64_t>() > 168)
      throw Error(ErrorCode::invalid_field, "field 'ttl_hours': expected a whole number of hours, 1-168");
    ttl_hours = body["ttl_hours"].get<std::int64_t>();
  }
  const std::string regime_name = body.contains("regime") ? required_string(body, "regime", 32) : "eu-gdpr";
  const std::string regime = impl_->current_regulations()->require_dsr(regime_name).key;  // lists valid names
  if (!subject_active(*impl_->records, id)) impl_->deny(caller, "subject.privacy_link", ErrorCode::not_found,
                                           "subject " + subject_hex + " not found", subject_hex);
  std::array<std::uint8_t, kIdBytes> link_raw{};
  randombytes_buf(link_raw.data(), link_raw.size());
  const std::string link_id = to_hex(link_raw.data(), link_raw.size());
  std::array<std::uint8_t, crypto_hash_sha256_BYTES> hash{};
  std::string token = new_token(link_raw, hash);
  const std::int64_t now = impl_->audit->now_us();
  const std::int64_t expires = now + ttl_hours * kHourUs;
  const auto actor = impl_->actor(caller);
  auto tx = impl_->store->begin(store::TxMode::write);
  tx->exec("INSERT INTO privacy_links (link_id, subject_id, secret_hash, regime, created_by, created_role,"
           " created_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
           {link_id, store::Blob(id), hash, regime, actor.principal, caller.principal.role, caller.principal.token_id,
            now, expires});
  impl_->audit->append(*tx, actor,
                       {"subject.privacy_link", subject_hex, {}, {}, true, "",
                        "link_id=" + link_id + " ttl_hours=" + std::to_string(ttl_hours)});
  tx->commit();
  Json out = {{"link_id", link_id},
              {"subject_id", subject_hex},
              {"token", token},
              {"url", "/privacy/#t=" + token},
              {"regime", regime},
              {"expires_at", audit::format_time_us(expires)}};
  sodium_memzero(token.data(), token.size());
  return out;
}

namespace {

// The data subject as the audit log records them: the link, never a name.
Caller link_caller(const std::string& link_id, const std::string& request_id) {
  Caller c;
  c.principal = {"privacy_link:" + link_id, "data_subject", link_id};
  c.request_id = request_id;
  return c;
}

}  // namespace

Json Service::privacy_session_open(std::string_view link_token, const std::string& request_id) {
  const auto parts = split_token(link_token);
  if (!parts) throw Error(ErrorCode::unauthenticated, "not a privacy link");
  const auto link = load_link(*impl_->store, parts->link_id);
  if (!link || !hash_matches(link->secret_hash, parts->secret))
    throw Error(ErrorCode::unauthenticated, "unknown privacy link");
  const auto actor = impl_->actor(link_caller(link->link_id, request_id));
  const std::string subject_hex = records::to_hex(link->subject);
  const std::int64_t now = impl_->audit->now_us();
  auto refuse = [&](const std::string& reason) {
    impl_->audit->append_now(actor, {"privacy.session_open", subject_hex, {}, {}, false, reason, ""});
    throw PrivacyLinkRefused(reason);
  };
  if (link->used_us) refuse("link_used");
  if (now >= link->expires_us || !subject_active(*impl_->records, link->subject)) refuse("link_expired");
  std::array<std::uint8_t, kIdBytes> link_raw{};
  sodium_hex2bin(link_raw.data(), link_raw.size(), link->link_id.c_str(), link->link_id.size(), nullptr, nullptr,
                 nullptr);
  std::array<std::uint8_t, crypto_hash_sha256_BYTES> session_hash{};
  std::string session = new_token(link_raw, session_hash);
  const std::int64_t session_expires = std::min(now + kSessionUs, link->expires_us);
  auto tx = impl_->store->begin(store::TxMode::write);
  // Spent exactly once: of two racing openings only one changes the row.
  const auto changed = tx->exec(
      "UPDATE privacy_links SET used_at = ?, session_hash = ?, session_expires = ? WHERE link_id = ? AND used_at IS NULL",
      {now, session_hash, session_expires, link->link_id});
  if (changed != 1) {
    tx.reset();
    refuse("link_used");
  }
  impl_->audit->append(*tx, actor, {"privacy.session_open", subject_hex, {}, {}, true, "", "link_id=" + link->link_id});
  tx->commit();
  Json out = {{"session", session}, {"link_id", link->link_id}, {"expires_at", audit::format_time_us(session_expires)}};
  sodium_memzero(session.data(), session.size());
  return out;
}

namespace {

struct Session {
  std::string link_id, regime, issued_by, issued_by_role;
  records::SubjectId subject{};
};

}  // namespace

// Checks a session token; throws Error(unauthenticated) for anything but a live session.
static Session open_session(store::Store& st, records::Records& recs, std::int64_t now, std::string_view token) {
  const auto parts = split_token(token);
  if (!parts) throw Error(ErrorCode::unauthenticated, kBadSession);
  const auto link = load_link(st, parts->link_id);
  if (!link || link->session_hash.empty() || !hash_matches(link->session_hash, parts->secret) ||
      !link->session_expires_us || now >= *link->session_expires_us)
    throw Error(ErrorCode::unauthenticated, kBadSession);
  if (!subject_active(recs, link->subject)) throw Error(ErrorCode::unauthenticated, kBadSession);
  return {link->link_id, link->regime, link->issued_by, link->issued_by_role, link->subject};
}

namespace {

// The marketing purposes (purposes.yaml) with each channel's current state,
// and whether the subject's objection to direct marketing stands (then no
// marketing reaches them whatever the states say, until they agree again here).
Json consent_view(const access::Policy& pol, const std::vector<consent::State>& states, bool gpc, bool objected) {
  Json purposes = Json::array();
  for (const auto& [name, p] : pol.purposes()) {
    if (!p.marketing) continue;
    Json channels = Json::array();
    for (const auto& ch : p.channels) {
      Json c = {{"channel", ch}, {"state", "none"}, {"since", nullptr}};
      for (const auto& s : states)
        if (s.purpose == name && s.channel == ch) {
          c["state"] = s.state;
          c["since"] = audit::format_time_us(s.since_us);
        }
      channels.push_back(std::move(c));
    }
    purposes.push_back({{"purpose", name}, {"description", p.description}, {"sale_or_share", p.sale_or_share},
                        {"channels", std::move(channels)}});
  }
  return {{"purposes", purposes}, {"gpc", gpc}, {"objected", objected}};
}

}  // namespace

Json Service::privacy_consents(std::string_view token, bool gpc, const std::string& request_id) {
  const auto pol = impl_->current_policy();
  const std::int64_t now = impl_->audit->now_us();
  const Session s = open_session(*impl_->store, *impl_->records, now, token);
  const auto actor = impl_->actor(link_caller(s.link_id, request_id));
  const std::string subject_hex = records::to_hex(s.subject);
  if (gpc) {
    const Json proof = {{"signal", "Sec-GPC: 1"}, {"received_at", audit::format_time_us(now)},
                        {"source", "privacy_page"}, {"link_id", s.link_id}};
    impl_->consent->withdraw_all(actor, *pol, s.subject, true, "gpc", proof.dump());
  }
  impl_->audit->append_now(actor, {"privacy.consents_read", subject_hex, {}, {}, true, "", ""});
  Json out = consent_view(*pol, impl_->consent->current(s.subject), gpc, impl_->records->metadata(s.subject).objected);
  out["link_id"] = s.link_id;
  return out;
}

Json Service::privacy_record_consent(std::string_view token, const Json& body, bool gpc,
                                     const std::string& request_id) {
  const auto pol = impl_->current_policy();
  const std::int64_t now = impl_->audit->now_us();
  const Session s = open_session(*impl_->store, *impl_->records, now, token);
  if (!body.is_object()) bad_body("expected a JSON object");
  only_keys(body, {"purpose", "channel", "event"});
  consent::EventInput in;
  in.purpose = required_string(body, "purpose", 64);
  in.channel = required_string(body, "channel", 16);
  in.event = required_string(body, "event", 16);
  if (in.event != "granted" && in.event != "withdrawn")
    throw Error(ErrorCode::invalid_field, "field 'event': expected granted or withdrawn");
  // Only what the page offers: the marketing purposes on their channels.
  const access::Purpose* purpose = pol->purpose(in.purpose);
  if (purpose == nullptr || !purpose->marketing ||
      std::find(purpose->channels.begin(), purpose->channels.end(), in.channel) == purpose->channels.end())
    throw Error(ErrorCode::invalid_field, "field 'purpose'/'channel': not a choice this page offers");
  // Whoever holds a link acts as the subject, and the role that issued it
  // held the link first: a grant through it needs that role's capture right,
  // so a role that reads for a purpose cannot create the consent it needs
  // through a link of its own (roles.yaml, capture_consent). Withdrawing
  // needs nothing: it is as easy as giving (Art. 7(3)).
  const auto actor = impl_->actor(link_caller(s.link_id, request_id));
  if (in.event == "granted") {
    const access::Role* issuer = pol->role(s.issued_by_role);
    if (issuer == nullptr || !issuer->capture_consent.count(in.purpose)) {
      impl_->audit->append_now(actor, {"consent.record", records::to_hex(s.subject), {}, {}, false,
                                       code_name(ErrorCode::consent_capture_not_allowed),
                                       "privacy_page issued_by_role=" + audit::recorded_label("issued_by_role", s.issued_by_role)});
      throw Error(ErrorCode::consent_capture_not_allowed,
                  "this link lets you withdraw consent but not give it; to agree to " +
                      util::printable_prefix(purpose->description.empty() ? in.purpose : purpose->description, 80) +
                      ", ask us for a new link or use our sign-up form");
    }
  }
  in.source = "privacy_page";
  in.by_the_subject = true;  // the page's session is the subject's own
  in.lawful_basis = "consent";
  in.at_us = now;
  // The page is the evidence: the subject acted through their own link.
  in.proof = Json({{"capture", "privacy_page"}, {"link_id", s.link_id}, {"at", audit::format_time_us(now)},
                   {"request_id", request_id}})
                 .dump();
  impl_->consent->record(actor, *pol, s.subject, in);
  if (gpc) {
    const Json proof = {{"signal", "Sec-GPC: 1"}, {"received_at", audit::format_time_us(now)},
                        {"source", "privacy_page"}, {"link_id", s.link_id}};
    impl_->consent->withdraw_all(actor, *pol, s.subject, true, "gpc", proof.dump());
  }
  Json out = consent_view(*pol, impl_->consent->current(s.subject), gpc, impl_->records->metadata(s.subject).objected);
  out["link_id"] = s.link_id;
  return out;
}

Json Service::privacy_request(std::string_view token, const Json& body, bool gpc, const std::string& request_id) {
  const auto pol = impl_->current_policy();
  const std::int64_t now = impl_->audit->now_us();
  const Session s = open_session(*impl_->store, *impl_->records, now, token);
  if (!body.is_object()) bad_body("expected a JSON object");
  only_keys(body, {"type", "changes", "note"});
  dsr::Intake in;
  in.type = required_string(body, "type", 32);
  static const std::array<const char*, 4> kTypes = {"access", "erasure", "rectification", "opt_out_sale_share"};
  if (std::none_of(kTypes.begin(), kTypes.end(), [&](const char* t) { return in.type == t; }))
    throw Error(ErrorCode::invalid_field, "field 'type': expected access, erasure, rectification or opt_out_sale_share");
  in.regime = s.regime;
  in.channel = "privacy_page";
  in.identified_by = "privacy_link";
  in.received_us = now;
  // As an intake by the subject's identifiers would: every subject sharing
  // one (duplicates included), so none is left out of an access or erasure.
  in.subjects = impl_->records->sharing_identifiers(s.subject);
  // Who issued the link is on the request itself, not only in the audit log:
  // the officer sees a request filed through a CRM module's link as such.
  in.note = "request received via the privacy page (link " + s.link_id + ", issued by " + s.issued_by +
            (s.issued_by_role.empty() ? "" : " as " + s.issued_by_role) + ")";
  // The subject's own words may hold personal data: sealed under the
  // request's first subject's key, so an erasure shreds them too.
  if (body.contains("note"))
    in.sealed_note = impl_->seal_for_subject(in.subjects.front(), "dsr.note", required_string(body, "note", 1000));
  if (in.type == "rectification") {
    if (!body.contains("changes")) throw Error(ErrorCode::invalid_field, "field 'changes': a correction needs the new values");
    const FieldChanges changes = parse_fields(body["changes"], impl_->schema, false);
    if (changes.set.empty()) throw Error(ErrorCode::invalid_field, "field 'changes': name at least one field");
    for (const auto& [name, v] : changes.set) impl_->schema.validate(impl_->schema.require(name), v);
    // Sealed under the request's first subject's key, as the desk expects
    // (dsr::Request::subject; fulfilment opens them there).
    in.changes = impl_->seal_for_subject(in.subjects.front(), "dsr.changes", body["changes"].dump());
  } else if (body.contains("changes")) {
    throw Error(ErrorCode::invalid_argument, "property 'changes' is only for rectification");
  }
  const auto actor = impl_->actor(link_caller(s.link_id, request_id));
  const auto regs = impl_->current_regulations();
  const auto q = impl_->dsr->intake(actor, *regs, in);
  // The link proved who asks, if the role that issued it verifies
  // identities itself (the dsr operation): the request starts verified.
  // A link from any other role (a CRM module's) proves no more than that
  // role may; the compliance team verifies the request as any other.
  const access::Role* issuer = pol->role(s.issued_by_role);
  const dsr::Request verified =
      issuer != nullptr && issuer->operations.count("dsr")
          ? impl_->dsr->transition(actor, *regs, q.id, "identity_verified",
                                   "identity verified through privacy link " + s.link_id, "")
          : q;
  if (gpc) {
    const Json proof = {{"signal", "Sec-GPC: 1"}, {"received_at", audit::format_time_us(now)},
                        {"source", "privacy_page"}, {"link_id", s.link_id}};
    impl_->consent->withdraw_all(actor, *pol, s.subject, true, "gpc", proof.dump());
  }
  return {{"request_id", verified.id},
          {"type", verified.type},
          {"status", verified.status},
          {"regime", verified.regime},
          {"due_at", audit::format_time_us(verified.due_us)}};
}

}  // namespace custos::service
