// The route handlers: each turns one routed request into one Service call
// and its JSON document into a Result. Authentication, quotas, body
// parsing and error mapping happen before and after, in server.cpp.
#include <array>
#include <functional>
#include <limits>
#include <sstream>

#include <boost/beast/core/string.hpp>
#include <sodium.h>

#include "custos/error.h"
#include "custos/records/records.h"
#include "router.h"

namespace custos::http {
namespace {

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return "";
  const auto e = s.find_last_not_of(" \t");
  return std::string(s.substr(b, e - b + 1));
}

// 503 while the audit journal cannot be folded: reads will soon fail closed,
// so a load balancer should send them elsewhere.
Result h_healthz(HandlerContext& c) {
  if (!c.svc.audit_journal_status().fold_error.empty())
    return json_result(503, {{"status", "degraded"}, {"code", "audit_unavailable"}});
  return json_result(200, {{"status", "ok"}});
}

// GET /v1/whoami: the caller's own principal, role and what the role may
// do, so a client (the web console) shows only the screens that apply. The
// server still decides every call; this reveals nothing about anyone else.
Result h_whoami(HandlerContext& c) {
  const auto policy = c.svc.policy();
  const access::Role* role = policy->role(c.caller.principal.role);
  Json out = {{"principal", c.caller.principal.name}, {"role", c.caller.principal.role}};
  out["operations"] = role ? Json(role->operations) : Json::array();
  out["purposes"] = role ? Json(role->purposes) : Json::array();
  return json_result(200, out);
}

Result h_metrics(HandlerContext& c) {
  c.svc.authorize_metrics(c.caller);
  Result r;
  r.body = c.metrics_text();
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return r;
}

// 201 with a Location header naming the new resource.
Result created(const Json& out, const std::string& collection) {
  Result r = json_result(201, out);
  if (out.contains("id") && out["id"].is_string())
    r.headers.emplace_back("Location", collection + "/" + out["id"].get<std::string>());
  return r;
}

// A duplicate names the matching subjects as members of the problem (ids
// only, never a value). A merge into an existing subject is 200, not 201.
Result duplicate_problem(const records::DuplicateSubject& e, const std::string& request_id) {
  Json doc = Json::parse(problem_body(409, code_name(e.code()), e.what(), request_id));
  doc["subject_ids"] = e.subject_ids();
  if (!e.subject_ids().empty()) doc["subject_id"] = e.subject_ids().front();
  doc["matched_on"] = e.matched_on();
  Result r;
  r.status = 409;
  r.content_type = kProblemJson;
  r.body = doc.dump(-1, ' ', false, Json::error_handler_t::replace);
  return r;
}

Result h_create_subject(HandlerContext& c) {
  try {
    const Json out = c.svc.create_subject(c.caller, c.body);
    if (out.value("merged", false)) return json_result(200, out);
    return created(out, "/v1/subjects");
  } catch (const records::DuplicateSubject& e) {
    return duplicate_problem(e, c.caller.request_id);
  }
}
Result h_subject_duplicates(HandlerContext& c) { return json_result(200, c.svc.subject_duplicates(c.caller, c.query)); }
Result h_merge_subjects(HandlerContext& c) {
  return json_result(200, c.svc.merge_subjects(c.caller, c.param(0), c.body));
}

Result h_find_subjects(HandlerContext& c) {
  static const std::array<const char*, 3> keys = {"email", "phone", "external_id"};
  const char* field = nullptr;
  for (const char* k : keys) {
    if (!c.query.count(k)) continue;
    if (field != nullptr)
      throw Error(ErrorCode::invalid_argument, "give exactly one of the query parameters email, phone, external_id");
    field = k;
  }
  if (field == nullptr)
    throw Error(ErrorCode::invalid_argument, "give exactly one of the query parameters email, phone, external_id");
  return json_result(200, c.svc.find_subjects(c.caller, field, c.query.at(field)));
}

Result h_get_subject(HandlerContext& c) { return json_result(200, c.svc.get_subject(c.caller, c.param(0))); }
Result h_patch_subject(HandlerContext& c) {
  try {
    return json_result(200, c.svc.patch_subject(c.caller, c.param(0), c.body));
  } catch (const records::DuplicateSubject& e) {
    return duplicate_problem(e, c.caller.request_id);
  }
}
Result h_erase_subject(HandlerContext& c) {
  return json_result(200, c.svc.erase_subject(c.caller, c.param(0), c.query_or_empty("reason")));
}
Result h_batch_create(HandlerContext& c) { return json_result(200, c.svc.batch_create(c.caller, c.body)); }
Result h_batch_get(HandlerContext& c) { return json_result(200, c.svc.batch_get(c.caller, c.body)); }
Result h_touchpoint(HandlerContext& c) {
  return json_result(201, c.svc.add_touchpoint(c.caller, c.param(0), c.body));
}
Result h_order(HandlerContext& c) { return json_result(201, c.svc.add_order(c.caller, c.param(0), c.body)); }
Result h_get_consents(HandlerContext& c) { return json_result(200, c.svc.get_consents(c.caller, c.param(0))); }
Result h_record_consent(HandlerContext& c) {
  const auto value = c.req["Sec-GPC"];
  const bool gpc = trim(std::string_view(value.data(), value.size())) == "1";
  return json_result(201, c.svc.record_consent(c.caller, c.param(0), c.body, gpc));
}
Result h_confirm_consent(HandlerContext& c) { return json_result(200, c.svc.confirm_consent(c.caller, c.body)); }
Result h_audit_entries(HandlerContext& c) { return json_result(200, c.svc.audit_entries(c.caller, c.query)); }
Result h_audit_checkpoint(HandlerContext& c) { return json_result(200, c.svc.audit_checkpoint(c.caller)); }
Result h_inclusion(HandlerContext& c) {
  return json_result(200, c.svc.audit_inclusion_proof(c.caller, c.query_or_empty("index"), c.query_or_empty("size")));
}
Result h_consistency(HandlerContext& c) {
  return json_result(200,
                     c.svc.audit_consistency_proof(c.caller, c.query_or_empty("first"), c.query_or_empty("second")));
}
Result h_audit_export(HandlerContext& c) {
  std::stringstream out;
  c.svc.audit_export(c.caller, out);
  Result r;
  r.body = std::move(out).str();
  r.content_type = "application/octet-stream";
  r.headers.emplace_back("Content-Disposition", "attachment; filename=\"custos-audit-export.bin\"");
  return r;
}

Result h_analytics_rfm(HandlerContext& c) { return json_result(200, c.svc.analytics_rfm(c.caller)); }

// POST /v1/campaigns:fetch streams NDJSON: one line per subject, then a
// summary line. Validation errors arrive before the first line as a normal
// problem+json response. The stream blocks this worker while the client is
// slower than the vault (back-pressure, bounded memory), so slots are
// claimed per principal and globally before anything is read.
// An NDJSON response streamed from `produce(emit)`, under a stream slot.
// Headers go with the first line, so a failure before it is an ordinary
// error response; a failure after it is `late(error)`'s to end (the
// exception is nullptr when it was not a custos::Error).
Result stream_ndjson(HandlerContext& c, const std::function<void(const std::function<bool(const std::string&)>&)>& produce,
                     const std::function<void(const Error*)>& late) {
  const std::shared_ptr<void> slot = c.claim_stream();
  bool started = false;
  auto emit = [&](const std::string& line) -> bool {
    if (!started) {
      c.stream->begin(200, "application/x-ndjson", {});
      started = true;
    }
    return c.stream->write(line);
  };
  bool ended = false;
  try {
    produce(emit);
  } catch (const Error& e) {
    if (!started) throw;
    late(&e);
    ended = true;
  } catch (...) {
    if (!started) throw;
    late(nullptr);
    ended = true;
  }
  if (!ended) {
    if (!started) c.stream->begin(200, "application/x-ndjson", {});
    c.stream->end();
  }
  Result r;
  r.streamed = true;
  return r;
}

Result h_campaign_fetch(HandlerContext& c) {
  return stream_ndjson(
      c, [&](const auto& emit) { c.svc.campaign_fetch(c.caller, c.body, emit); },
      [&](const Error* e) {
        // Headers are gone: end the stream with an error line the client can see.
        if (e) c.stream->write(Json({{"error", code_name(e->code())}, {"done", false}}).dump() + "\n");
        c.stream->end();
      });
}

Result h_dsr_create(HandlerContext& c) { return created(c.svc.dsr_create(c.caller, c.body), "/v1/dsr"); }
Result h_dsr_list(HandlerContext& c) { return json_result(200, c.svc.dsr_list(c.caller, c.query)); }
Result h_dsr_get(HandlerContext& c) { return json_result(200, c.svc.dsr_get(c.caller, c.param(0))); }
Result h_dsr_transition(HandlerContext& c) {
  return json_result(200, c.svc.dsr_transition(c.caller, c.param(0), c.body));
}
// GET /v1/dsr/{id}/export[?format=json|csv&table=...] streams the package as
// it is read (flat memory, back-pressure). Refusals come before the first
// byte as problem+json; a failure after it cuts the stream short (the JSON
// does not parse, the CSV lacks its last line), never a partial "success".
Result h_dsr_export(HandlerContext& c) {
  service::Service::ExportFormat format;  // the router refuses other parameters
  if (c.query.count("format")) format.format = c.query.at("format");
  format.table = c.query_or_empty("table");
  const std::shared_ptr<void> slot = c.claim_stream();
  const bool csv = format.format == "csv";
  const std::string filename = csv ? "custos-dsr-export-" + format.table + ".csv" : "custos-dsr-export.json";
  bool started = false;
  auto write = [&](std::string_view chunk) -> bool {
    if (!started) {
      c.stream->begin(200, csv ? "text/csv; charset=utf-8" : "application/json",
                      {{"Content-Disposition", "attachment; filename=\"" + filename + "\""}});
      started = true;
    }
    return c.stream->write(std::string(chunk));
  };
  try {
    c.svc.dsr_export(c.caller, c.param(0), format, write);
  } catch (...) {
    if (!started) throw;
    c.stream->abort();
    Result r;
    r.streamed = true;
    return r;
  }
  if (!started) write("");
  c.stream->end();
  Result r;
  r.streamed = true;
  return r;
}
Result h_breach_create(HandlerContext& c) { return created(c.svc.breach_create(c.caller, c.body), "/v1/breaches"); }
Result h_breach_list(HandlerContext& c) { return json_result(200, c.svc.breach_list(c.caller, c.query)); }
Result h_breach_get(HandlerContext& c) { return json_result(200, c.svc.breach_get(c.caller, c.param(0))); }
Result h_breach_event(HandlerContext& c) {
  return json_result(201, c.svc.breach_add_event(c.caller, c.param(0), c.body));
}
Result h_breach_compute(HandlerContext& c) {
  return json_result(200, c.svc.breach_compute_affected(c.caller, c.param(0), c.body));
}
Result h_breach_affected(HandlerContext& c) {
  return json_result(200, c.svc.breach_affected(c.caller, c.param(0), c.query));
}
Result h_legal_hold(HandlerContext& c) {
  return json_result(200, c.svc.set_legal_hold(c.caller, c.param(0), c.body));
}
Result h_retention_run(HandlerContext& c) { return json_result(200, c.svc.retention_run(c.caller, c.body)); }
// POST /v1/dsr/{id}/confirmations: a downstream system says it acted.
Result h_dsr_confirm(HandlerContext& c) { return json_result(201, c.svc.dsr_confirm(c.caller, c.param(0), c.body)); }

// ---- Bulk integration (issue 18)

// POST /v1/import[?import_id=&on_conflict=&chunk=]: NDJSON, one customer per
// line, read as it arrives (the body is never held whole; its limit is
// --max-import-bytes). The report lists each failed line's error. It holds
// a worker for its duration, so it takes a stream slot as a campaign does.
Result h_import(HandlerContext& c) {
  const std::shared_ptr<void> slot = c.claim_stream();
  service::ImportOptions options;
  options.import_id = c.query_or_empty("import_id");
  if (c.query.count("on_conflict")) options.on_conflict = c.query.at("on_conflict");
  if (c.query.count("chunk")) {
    const std::string& v = c.query.at("chunk");
    if (v.empty() || v.size() > 4 || v.find_first_not_of("0123456789") != std::string::npos)
      throw Error(ErrorCode::invalid_argument, "parameter 'chunk' must be 1-1000");
    options.chunk_lines = std::stoul(v);
  }
  options.max_bytes = std::numeric_limits<std::uint64_t>::max();  // the edge enforces --max-import-bytes
  const Json report = c.svc.import_ndjson(c.caller, options, [&](char* buffer, std::size_t capacity) {
    return c.body_stream->read(buffer, capacity);
  });
  return json_result(200, report);
}

// GET /v1/subjects:export: every subject as an NDJSON line in the import's
// format, streamed page by page. Refusals come before the first line; a
// failure after it cuts the stream short (no last chunk), never a partial
// body that looks whole.
Result h_export_subjects(HandlerContext& c) {
  return stream_ndjson(
      c, [&](const auto& emit) { c.svc.export_subjects(c.caller, c.query, emit); },
      [&](const Error*) { c.stream->abort(); });
}

Result h_batch_consents(HandlerContext& c) { return json_result(200, c.svc.batch_record_consents(c.caller, c.body)); }
Result h_batch_orders(HandlerContext& c) { return json_result(200, c.svc.batch_add_orders(c.caller, c.body)); }
Result h_batch_touchpoints(HandlerContext& c) {
  return json_result(200, c.svc.batch_add_touchpoints(c.caller, c.body));
}
Result h_list_tokens(HandlerContext& c) { return json_result(200, c.svc.list_tokens(c.caller)); }


// ---- The console's administration screen and the privacy page (issue 19)

Result h_create_token(HandlerContext& c) {
  if (!c.body.is_object()) throw Error(ErrorCode::invalid_argument, "expected a JSON object {name, role}");
  for (const auto& [k, v] : c.body.items())
    if (k != "name" && k != "role") throw Error(ErrorCode::invalid_argument, "unknown property in the body: give only name and role");
  for (const char* k : {"name", "role"})
    if (!c.body.contains(k) || !c.body[k].is_string() || c.body[k].get<std::string>().empty() ||
        c.body[k].get<std::string>().size() > 64)
      throw Error(ErrorCode::invalid_field, std::string("field '") + k + "': expected a string of 1-64 bytes");
  Json out = c.svc.create_token(c.caller, c.body["name"].get<std::string>(), c.body["role"].get<std::string>());
  Result r = json_result(201, out);
  if (out.contains("token") && out["token"].is_string()) {
    auto& t = out["token"].get_ref<std::string&>();
    sodium_memzero(t.data(), t.size());
  }
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}
Result h_revoke_token(HandlerContext& c) { return json_result(200, c.svc.revoke_token(c.caller, c.param(0))); }
Result h_admin_policies(HandlerContext& c) { return json_result(200, c.svc.admin_policies(c.caller)); }
Result h_admin_keys(HandlerContext& c) { return json_result(200, c.svc.admin_keys(c.caller)); }
Result h_campaign_preview(HandlerContext& c) { return json_result(200, c.svc.campaign_preview(c.caller, c.body)); }
Result h_analytics_consents(HandlerContext& c) { return json_result(200, c.svc.analytics_consents(c.caller, c.query)); }
Result h_privacy_link(HandlerContext& c) {
  Result r = json_result(201, c.svc.privacy_link_create(c.caller, c.param(0), c.body));
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

// The privacy page's own credentials, in a scheme no principal route
// accepts: "Authorization: PrivacyLink <token>" (spent once) and
// "Authorization: PrivacySession <token>".
std::string privacy_credential(HandlerContext& c, std::string_view scheme) {
  if (c.req.count(boost::beast::http::field::authorization) != 1)
    throw Error(ErrorCode::unauthenticated, "send 'Authorization: " + std::string(scheme) + " <token>'");
  const auto v = c.req[boost::beast::http::field::authorization];
  const std::string value = trim(std::string_view(v.data(), v.size()));
  if (value.size() <= scheme.size() + 1 || !boost::beast::iequals(boost::beast::string_view(value.data(), scheme.size()),
                              boost::beast::string_view(scheme.data(), scheme.size())) ||
      value[scheme.size()] != ' ')
    throw Error(ErrorCode::unauthenticated, "send 'Authorization: " + std::string(scheme) + " <token>'");
  return trim(std::string_view(value).substr(scheme.size() + 1));
}
bool gpc_signal(HandlerContext& c) {
  const auto value = c.req["Sec-GPC"];
  return trim(std::string_view(value.data(), value.size())) == "1";
}
Result privacy_result(Json out) {
  Result r = json_result(200, out);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}
Result h_privacy_session(HandlerContext& c) {
  std::string token = privacy_credential(c, "PrivacyLink");
  try {
    Json out = c.svc.privacy_session_open(token, c.caller.request_id);
    sodium_memzero(token.data(), token.size());
    Result r = privacy_result(out);
    r.status = 201;
    return r;
  } catch (const service::PrivacyLinkRefused& e) {
    sodium_memzero(token.data(), token.size());
    throw HttpProblem(410, e.reason(), e.what());
  }
}
Result h_privacy_consents(HandlerContext& c) {
  return privacy_result(c.svc.privacy_consents(privacy_credential(c, "PrivacySession"), gpc_signal(c), c.caller.request_id));
}
Result h_privacy_record_consent(HandlerContext& c) {
  return privacy_result(
      c.svc.privacy_record_consent(privacy_credential(c, "PrivacySession"), c.body, gpc_signal(c), c.caller.request_id));
}
Result h_privacy_request(HandlerContext& c) {
  Result r = privacy_result(
      c.svc.privacy_request(privacy_credential(c, "PrivacySession"), c.body, gpc_signal(c), c.caller.request_id));
  r.status = 201;
  return r;
}

}  // namespace

std::vector<Route> make_routes() {
  std::vector<Route> r;
  auto add = [&](const char* method, const char* path, bool auth, BodyMode body, std::vector<std::string> query,
                 Handler h) {
    r.push_back({method, path, split_route_template(path), auth, body, std::move(query), std::move(h)});
  };
  const auto none = BodyMode::none;
  const auto json = BodyMode::json;
  add("GET", "/healthz", false, none, {}, h_healthz);
  add("GET", "/metrics", true, none, {}, h_metrics);
  add("POST", "/v1/subjects", true, json, {}, h_create_subject);
  add("GET", "/v1/subjects", true, none, {"email", "phone", "external_id"}, h_find_subjects);
  add("POST", "/v1/subjects:batchCreate", true, json, {}, h_batch_create);
  add("POST", "/v1/subjects:batchGet", true, json, {}, h_batch_get);
  add("GET", "/v1/subjects:duplicates", true, none, {"after", "limit"}, h_subject_duplicates);
  add("POST", "/v1/subjects/{id}:merge", true, json, {}, h_merge_subjects);
  add("GET", "/v1/subjects/{id}", true, none, {}, h_get_subject);
  add("PATCH", "/v1/subjects/{id}", true, json, {}, h_patch_subject);
  add("DELETE", "/v1/subjects/{id}", true, none, {"reason"}, h_erase_subject);
  add("POST", "/v1/subjects/{id}/touchpoints", true, json, {}, h_touchpoint);
  add("POST", "/v1/subjects/{id}/orders", true, json, {}, h_order);
  add("GET", "/v1/subjects/{id}/consents", true, none, {}, h_get_consents);
  add("POST", "/v1/subjects/{id}/consents", true, json, {}, h_record_consent);
  add("POST", "/v1/consents:confirm", true, json, {}, h_confirm_consent);
  add("POST", "/v1/subjects/{id}:legalHold", true, json, {}, h_legal_hold);
  add("POST", "/v1/campaigns:fetch", true, json, {}, h_campaign_fetch);
  add("GET", "/v1/analytics/rfm", true, none, {}, h_analytics_rfm);
  add("POST", "/v1/dsr", true, json, {}, h_dsr_create);
  add("GET", "/v1/dsr", true, none, {"status", "type", "overdue", "due_within_days", "limit", "after"}, h_dsr_list);
  add("GET", "/v1/dsr/{id}", true, none, {}, h_dsr_get);
  add("POST", "/v1/dsr/{id}:transition", true, json, {}, h_dsr_transition);
  add("GET", "/v1/dsr/{id}/export", true, none, {"format", "table"}, h_dsr_export);
  add("POST", "/v1/dsr/{id}/confirmations", true, json, {}, h_dsr_confirm);
  add("POST", "/v1/breaches", true, json, {}, h_breach_create);
  add("GET", "/v1/breaches", true, none, {"status", "at_risk", "overdue", "margin_hours"}, h_breach_list);
  add("GET", "/v1/breaches/{id}", true, none, {}, h_breach_get);
  add("POST", "/v1/breaches/{id}/events", true, json, {}, h_breach_event);
  add("POST", "/v1/breaches/{id}:computeAffected", true, json, {}, h_breach_compute);
  add("GET", "/v1/breaches/{id}/affected", true, none, {"after", "limit"}, h_breach_affected);
  add("POST", "/v1/retention:run", true, json, {}, h_retention_run);
  add("GET", "/v1/audit/entries", true, none,
      {"subject", "principal", "purpose", "operation", "from", "to", "after", "limit"}, h_audit_entries);
  add("GET", "/v1/audit/checkpoint", true, none, {}, h_audit_checkpoint);
  add("GET", "/v1/audit/proof/inclusion", true, none, {"index", "size"}, h_inclusion);
  add("GET", "/v1/audit/proof/consistency", true, none, {"first", "second"}, h_consistency);
  add("GET", "/v1/audit/export", true, none, {}, h_audit_export);
  add("GET", "/v1/whoami", true, none, {}, h_whoami);
  // Bulk integration (issue 18).
  add("POST", "/v1/import", true, BodyMode::stream, {"import_id", "on_conflict", "chunk"}, h_import);
  add("GET", "/v1/subjects:export", true, none, {"after", "limit"}, h_export_subjects);
  add("POST", "/v1/consents:batchRecord", true, json, {}, h_batch_consents);
  add("POST", "/v1/orders:batchCreate", true, json, {}, h_batch_orders);
  add("POST", "/v1/touchpoints:batchCreate", true, json, {}, h_batch_touchpoints);
  add("GET", "/v1/tokens", true, none, {}, h_list_tokens);
  // Web console administration and the privacy page (issue 19).
  add("POST", "/v1/tokens", true, json, {}, h_create_token);
  add("DELETE", "/v1/tokens/{name}", true, none, {}, h_revoke_token);
  add("GET", "/v1/admin/policies", true, none, {}, h_admin_policies);
  add("GET", "/v1/admin/keys", true, none, {}, h_admin_keys);
  add("POST", "/v1/subjects/{id}:privacyLink", true, json, {}, h_privacy_link);
  add("POST", "/v1/privacy/session", false, none, {}, h_privacy_session);
  add("GET", "/v1/privacy/consents", false, none, {}, h_privacy_consents);
  add("POST", "/v1/privacy/consents", false, json, {}, h_privacy_record_consent);
  add("POST", "/v1/privacy/requests", false, json, {}, h_privacy_request);
  add("POST", "/v1/campaigns:preview", true, json, {}, h_campaign_preview);
  add("GET", "/v1/analytics/consents", true, none, {"months"}, h_analytics_consents);
  // The handlers that claim a stream slot (stream_ndjson, h_dsr_export,
  // h_import): each holds its thread while its client reads or sends.
  for (auto& route : r)
    route.streams = route.body == BodyMode::stream || route.path == "/v1/campaigns:fetch" ||
                    route.path == "/v1/subjects:export" || route.path == "/v1/dsr/{id}/export";
  return r;
}

}  // namespace custos::http
