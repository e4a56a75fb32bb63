// Batch routes for consents, orders and touchpoints (issue 18): up to
// 1,000 items per call, each applied as its single route applies it (same
// checks, same audit entries, same refusals) and answered per item, as
// batch_create answers. A failure of the store or the audit log is not an
// item's: it ends the batch with the error (items before it stay applied,
// each one being whole).
#include <nlohmann/json.hpp>

#include "service_impl.h"

namespace custos::service {
namespace {

constexpr std::size_t kMaxBatchItems = 1000;

// The HTTP status an item's error would have had on its single route.
int item_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument: return 400;
    case ErrorCode::invalid_field: return 422;
    case ErrorCode::not_found: return 404;
    case ErrorCode::conflict:
    case ErrorCode::duplicate_subject: return 409;
    case ErrorCode::payload_too_large: return 413;
    default: return 403;
  }
}

bool is_item_error(ErrorCode code) {
  switch (code) {
    case ErrorCode::audit_unavailable:
    case ErrorCode::integrity:
    case ErrorCode::key_error:
    case ErrorCode::storage:
    case ErrorCode::internal:
    case ErrorCode::store_unavailable:
    case ErrorCode::unauthenticated: return false;
    default: return true;
  }
}

// Runs `apply(subject_id, item body)` for each item of body[key].
Json run_batch(const Json& body, const char* key, int ok_status,
               const std::function<Json(const std::string& subject_id, const Json& item)>& apply) {
  only_keys(body, {key});
  if (!body.contains(key) || !body[key].is_array()) bad_body(std::string("property '") + key + "' must be an array");
  const Json& items = body[key];
  if (items.size() > kMaxBatchItems)
    throw Error(ErrorCode::payload_too_large, "a batch holds at most " + std::to_string(kMaxBatchItems) + " items");
  Json results = Json::array();
  std::size_t succeeded = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    try {
      const Json& item = items[i];
      if (!item.is_object() || !item.contains("subject_id") || !item["subject_id"].is_string())
        bad_body("each item needs a 'subject_id'");
      Json single = item;
      single.erase("subject_id");
      Json out = apply(item["subject_id"].get<std::string>(), single);
      results.push_back({{"index", i}, {"status", ok_status}, {"result", std::move(out)}});
      ++succeeded;
    } catch (const Error& e) {
      if (!is_item_error(e.code())) throw;
      results.push_back({{"index", i},
                         {"status", item_status(e.code())},
                         {"error", {{"code", code_name(e.code())}, {"detail", e.what()}}}});
    } catch (const Json::exception&) {
      results.push_back({{"index", i},
                         {"status", 400},
                         {"error", {{"code", "invalid_argument"}, {"detail", "a value has the wrong type or is out of range"}}}});
    }
  }
  return {{"results", results}, {"succeeded", succeeded}, {"failed", items.size() - succeeded}};
}

}  // namespace

Json Service::batch_record_consents(const Caller& caller, const Json& body) {
  // The role is checked once up front (refused and audited like one call).
  impl_->authorize(caller, *impl_->current_policy(), "consent", "consent.record", false);
  return run_batch(body, "consents", 201, [&](const std::string& id, const Json& item) {
    return record_consent(caller, id, item, false);
  });
}

Json Service::batch_add_orders(const Caller& caller, const Json& body) {
  impl_->authorize(caller, *impl_->current_policy(), "records.write", "order.create", false);
  return run_batch(body, "orders", 201,
                   [&](const std::string& id, const Json& item) { return add_order(caller, id, item); });
}

Json Service::batch_add_touchpoints(const Caller& caller, const Json& body) {
  impl_->authorize(caller, *impl_->current_policy(), "records.write", "touchpoint.create", false);
  return run_batch(body, "touchpoints", 201,
                   [&](const std::string& id, const Json& item) { return add_touchpoint(caller, id, item); });
}

}  // namespace custos::service
