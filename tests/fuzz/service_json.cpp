// Fuzz target: every JSON request body through the service façade, as
// custosd hands it over: the body parsed by the HTTP layer's own parse
// (http::parse_request_body, the one every JSON route applies), then the
// route's Service call, on a real SQLCipher vault initialised once per
// process (fast KDF, the shipped policies, on tmpfs).
//
// Input: byte 0 picks the route (kRoutes), byte 1 the caller (a role and
// the purpose it declares, kCallers), byte 2 the path id (a live subject,
// another subject, a DSR, a breach, an unknown or a malformed id), byte 3
// bit 0 Sec-GPC; the rest is the request body.
// Invariant: a refused body or call throws custos::Error, never of code
// internal or of a server-side code (integrity, storage, key_error,
// audit_unavailable, store_unavailable): a body can only be the client's
// mistake. Any other exception (a nlohmann type_error from a value of the
// wrong type, std::out_of_range, ...) escapes and is a finding.
#include <array>
#include <functional>

#include "custos/error.h"
#include "custos/service/service.h"
#include "edge_check.h"
#include "fuzz_support.h"

namespace fs = std::filesystem;
using namespace custos;
using service::Json;

namespace {

struct CallerSpec {
  const char* role;
  const char* purpose;
};
constexpr std::array<CallerSpec, 10> kCallers = {{{"admin", "administration"},
                                                  {"admin", "customer_service"},
                                                  {"marketing", "email_marketing"},
                                                  {"compliance_officer", "dsr_fulfilment"},
                                                  {"compliance_officer", "breach_notification"},
                                                  {"sales", "sales"},
                                                  {"service", "customer_service"},
                                                  {"analyst", "analytics"},
                                                  {"downstream_system", ""},
                                                  {"admin", "no_such_purpose"}}};

struct Vault {
  std::unique_ptr<service::Service> svc;
  std::vector<std::string> ids;  // path ids byte 2 picks from
  std::string session;           // a privacy-page session token

  static service::Caller caller(const CallerSpec& c) {
    return service::Caller{access::Principal{std::string("fuzz-") + c.role, c.role, std::string("tok-") + c.role},
                           c.purpose, "req-fuzz"};
  }

  Vault() {
    const fs::path data = fuzz::scratch_dir() / "vault";
    service::InitOptions init;
    init.data_dir = data;
    init.fast_kdf = true;
    init.shipped_policies = fs::path(CUSTOS_SOURCE_DIR) / "policies";
    service::init_data_dir(init);
    service::OpenOptions open;
    open.data_dir = data;
    svc = service::Service::open(open);
    const auto admin = caller(kCallers[0]);
    const std::string ada = svc->create_subject(
        admin, {{"fields", {{"given_name", "Ada"}, {"email", "ada@example.com"}, {"external_id", "crm-1"}}}})["id"];
    const std::string bob =
        svc->create_subject(admin, {{"fields", {{"given_name", "Bob"}, {"email", "bob@example.com"}}}})["id"];
    ids = {ada, bob};
    const auto officer = caller(kCallers[3]);
    ids.push_back(string_or_empty([&] {
      return svc->dsr_create(officer, {{"type", "access"}, {"regime", "eu-gdpr"}, {"identifier", {{"email", "ada@example.com"}}}});
    }));
    ids.push_back(string_or_empty([&] {
      return svc->breach_create(caller(kCallers[4]),
                                {{"discovered_at", "2026-11-30T08:00:00Z"}, {"description", "fuzz"},
                                 {"categories", {"contact"}}, {"regimes", {"eu-gdpr"}}, {"severity", "low"}});
    }));
    ids.push_back("00000000000000000000000000000000");
    ids.push_back("not-an-id");
    ids.push_back("");
    try {
      const Json link = svc->privacy_link_create(caller(kCallers[1]), bob, Json::object());
      session = svc->privacy_session_open(link.at("token").get<std::string>(), "req-fuzz").at("session");
    } catch (const Error&) {
    }
  }

  static std::string string_or_empty(const std::function<Json()>& make) {
    try {
      const Json out = make();
      return out.contains("id") && out["id"].is_string() ? out["id"].get<std::string>() : std::string();
    } catch (const Error&) {
      return {};
    }
  }
};

struct Call {
  const service::Caller& caller;
  const std::string& id;
  const Json& body;
  bool gpc;
};

using Route = std::function<void(service::Service&, const Vault&, const Call&)>;

// The JSON-body routes of src/http/handlers.cpp (make_routes), each as its
// handler calls the façade.
const std::vector<std::pair<const char*, Route>>& routes() {
  static const std::vector<std::pair<const char*, Route>> table = {
      {"POST /v1/subjects", [](auto& s, auto&, const Call& c) { s.create_subject(c.caller, c.body); }},
      {"POST /v1/subjects:batchCreate", [](auto& s, auto&, const Call& c) { s.batch_create(c.caller, c.body); }},
      {"POST /v1/subjects:batchGet", [](auto& s, auto&, const Call& c) { s.batch_get(c.caller, c.body); }},
      {"POST /v1/subjects/{id}:merge", [](auto& s, auto&, const Call& c) { s.merge_subjects(c.caller, c.id, c.body); }},
      {"PATCH /v1/subjects/{id}", [](auto& s, auto&, const Call& c) { s.patch_subject(c.caller, c.id, c.body); }},
      {"POST /v1/subjects/{id}/touchpoints",
       [](auto& s, auto&, const Call& c) { s.add_touchpoint(c.caller, c.id, c.body); }},
      {"POST /v1/subjects/{id}/orders", [](auto& s, auto&, const Call& c) { s.add_order(c.caller, c.id, c.body); }},
      {"POST /v1/subjects/{id}/consents",
       [](auto& s, auto&, const Call& c) { s.record_consent(c.caller, c.id, c.body, c.gpc); }},
      {"POST /v1/consents:confirm", [](auto& s, auto&, const Call& c) { s.confirm_consent(c.caller, c.body); }},
      {"POST /v1/subjects/{id}:legalHold", [](auto& s, auto&, const Call& c) { s.set_legal_hold(c.caller, c.id, c.body); }},
      {"POST /v1/campaigns:fetch",
       [](auto& s, auto&, const Call& c) { s.campaign_fetch(c.caller, c.body, [](const std::string&) { return true; }); }},
      {"POST /v1/dsr", [](auto& s, auto&, const Call& c) { s.dsr_create(c.caller, c.body); }},
      {"POST /v1/dsr/{id}:transition", [](auto& s, auto&, const Call& c) { s.dsr_transition(c.caller, c.id, c.body); }},
      {"POST /v1/dsr/{id}/confirmations", [](auto& s, auto&, const Call& c) { s.dsr_confirm(c.caller, c.id, c.body); }},
      {"POST /v1/breaches", [](auto& s, auto&, const Call& c) { s.breach_create(c.caller, c.body); }},
      {"POST /v1/breaches/{id}/events", [](auto& s, auto&, const Call& c) { s.breach_add_event(c.caller, c.id, c.body); }},
      {"POST /v1/breaches/{id}:computeAffected",
       [](auto& s, auto&, const Call& c) { s.breach_compute_affected(c.caller, c.id, c.body); }},
      {"POST /v1/retention:run", [](auto& s, auto&, const Call& c) { s.retention_run(c.caller, c.body); }},
      {"POST /v1/consents:batchRecord", [](auto& s, auto&, const Call& c) { s.batch_record_consents(c.caller, c.body); }},
      {"POST /v1/orders:batchCreate", [](auto& s, auto&, const Call& c) { s.batch_add_orders(c.caller, c.body); }},
      {"POST /v1/touchpoints:batchCreate", [](auto& s, auto&, const Call& c) { s.batch_add_touchpoints(c.caller, c.body); }},
      {"POST /v1/subjects/{id}:privacyLink",
       [](auto& s, auto&, const Call& c) { s.privacy_link_create(c.caller, c.id, c.body); }},
      {"POST /v1/privacy/consents",
       [](auto& s, const Vault& v, const Call& c) { s.privacy_record_consent(v.session, c.body, c.gpc, "req-fuzz"); }},
      {"POST /v1/privacy/requests",
       [](auto& s, const Vault& v, const Call& c) { s.privacy_request(v.session, c.body, c.gpc, "req-fuzz"); }},
      {"POST /v1/campaigns:preview", [](auto& s, auto&, const Call& c) { s.campaign_preview(c.caller, c.body); }},
  };
  return table;
}

bool server_side(ErrorCode code) {
  switch (code) {
    case ErrorCode::internal:
    case ErrorCode::integrity:
    case ErrorCode::storage:
    case ErrorCode::key_error:
    case ErrorCode::audit_unavailable:
    case ErrorCode::store_unavailable:
      return true;
    default:
      return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Vault vault;
  fuzz::InputReader in(data, size);
  const auto& [name, route] = routes()[in.byte() % routes().size()];
  const service::Caller caller = Vault::caller(kCallers[in.byte() % kCallers.size()]);
  const std::string& id = vault.ids[in.byte() % vault.ids.size()];
  const bool gpc = in.byte() & 1;
  const std::string text(in.rest());
  try {
    const Json body = http::parse_request_body(text);
    route(*vault.svc, vault, Call{caller, id, body, gpc});
  } catch (const Error& e) {
    FUZZ_CHECK(!server_side(e.code()), std::string(name) + ": " + code_name(e.code()) + ": " + e.what());
  }
  return 0;
}
