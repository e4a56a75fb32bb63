#include "custos/error.h"

namespace custos {

const char* code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::invalid_field: return "invalid_field";
    case ErrorCode::unauthenticated: return "unauthenticated";
    case ErrorCode::forbidden_role: return "forbidden_role";
    case ErrorCode::purpose_not_allowed: return "purpose_not_allowed";
    case ErrorCode::consent_missing: return "consent_missing";
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::conflict: return "conflict";
    case ErrorCode::payload_too_large: return "payload_too_large";
    case ErrorCode::audit_unavailable: return "audit_unavailable";
    case ErrorCode::integrity: return "integrity";
    case ErrorCode::key_error: return "key_error";
    case ErrorCode::storage: return "storage";
    case ErrorCode::internal: return "internal";
    case ErrorCode::consent_capture_not_allowed: return "consent_capture_not_allowed";
    case ErrorCode::subject_restricted: return "subject_restricted";
    case ErrorCode::duplicate_subject: return "duplicate_subject";
    case ErrorCode::second_approver_required: return "second_approver_required";
    case ErrorCode::store_unavailable: return "store_unavailable";
  }
  return "internal";
}

}  // namespace custos
