#include "problem.h"

#include <map>
#include <nlohmann/json.hpp>

namespace custos::http {
namespace {

constexpr const char* kProblemBase = "https://custos.dev/problems/";

std::string title_for(const std::string& code) {
  static const std::map<std::string, std::string> titles = {
      {"invalid_argument", "Invalid request"},
      {"invalid_field", "Invalid field"},
      {"unauthenticated", "Authentication required"},
      {"forbidden_role", "Operation not permitted for this role"},
      {"purpose_not_allowed", "Purpose not allowed"},
      {"consent_missing", "Consent missing"},
      {"not_found", "Not found"},
      {"method_not_allowed", "Method not allowed"},
      {"conflict", "Conflict"},
      {"payload_too_large", "Payload too large"},
      {"header_too_large", "Request header fields too large"},
      {"rate_limited", "Too many requests"},
      {"audit_unavailable", "Audit log unavailable"},
      {"storage", "Storage unavailable"},
      {"integrity", "Integrity check failed"},
      {"key_error", "Key material unavailable"},
      {"internal", "Internal error"},
      {"consent_capture_not_allowed", "Consent capture not allowed for this role"},
      {"subject_restricted", "Subject restricted"},
      {"duplicate_subject", "Duplicate subject"},
      {"second_approver_required", "Second approver required"},
      {"store_unavailable", "Store unavailable"},
      {"unavailable", "Service unavailable"},
  };
  const auto it = titles.find(code);
  return it == titles.end() ? "Error" : it->second;
}

}  // namespace

int status_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument: return 400;
    case ErrorCode::invalid_field: return 422;
    case ErrorCode::unauthenticated: return 401;
    case ErrorCode::forbidden_role:
    case ErrorCode::purpose_not_allowed:
    case ErrorCode::consent_missing:
    case ErrorCode::consent_capture_not_allowed:
    case ErrorCode::subject_restricted:
    case ErrorCode::second_approver_required: return 403;
    case ErrorCode::duplicate_subject: return 409;
    case ErrorCode::store_unavailable: return 503;
    case ErrorCode::not_found: return 404;
    case ErrorCode::conflict: return 409;
    case ErrorCode::payload_too_large: return 413;
    case ErrorCode::audit_unavailable:
    case ErrorCode::storage: return 503;
    case ErrorCode::integrity:
    case ErrorCode::key_error:
    case ErrorCode::internal: return 500;
  }
  return 500;
}

std::string generic_detail(ErrorCode code) {
  switch (code) {
    case ErrorCode::audit_unavailable:
      return "the audit log cannot be written, so the operation was refused (fail closed)";
    case ErrorCode::storage: return "the vault store is unavailable";
    case ErrorCode::integrity: return "stored data failed its integrity check";
    case ErrorCode::key_error: return "key material is unavailable";
    default: return "internal error";
  }
}

std::string problem_body(int status, const std::string& code, const std::string& detail,
                         const std::string& request_id) {
  const nlohmann::json doc = {{"type", kProblemBase + code}, {"title", title_for(code)}, {"status", status},
                              {"detail", detail},            {"code", code},             {"request_id", request_id}};
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace custos::http
