// custos/error.h — the one error type every layer throws.
//
// Contract: `what()` never contains a personal value, a token or key
// material. It may name a field, a file or an id. Transports map `code()`
// to an HTTP status / exit code; the code names are part of the public API.
#pragma once

#include <stdexcept>
#include <string>

namespace custos {

enum class ErrorCode {
  invalid_argument,    // malformed input (400)
  invalid_field,       // a field value fails the schema (422)
  unauthenticated,     // no or bad token (401)
  forbidden_role,      // the role may not do this (403)
  purpose_not_allowed, // the role may not declare this purpose (403)
  consent_missing,     // the subject has not consented (403)
  not_found,           // (404)
  conflict,            // state does not allow it (409)
  payload_too_large,   // (413)
  audit_unavailable,   // the audit log cannot be written: fail closed (503)
  integrity,           // authentication of stored data failed (tamper)
  key_error,           // missing / unreadable / insecure key material
  storage,             // the store failed (I/O, corruption)
  internal,
  // Privacy promises (403 / 409 / 503).
  consent_capture_not_allowed,  // the role may not record a grant for this purpose (403)
  subject_restricted,           // the subject is restricted or objected for this purpose (403)
  duplicate_subject,            // an identifier already names a subject (409)
  second_approver_required,     // four eyes: another principal must approve (403)
  store_unavailable,            // the database cannot be reached (503)
};

// Stable wire name, e.g. "purpose_not_allowed".
const char* code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace custos
