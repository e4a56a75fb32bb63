// Marketing analytics and the consented campaign fetch.
#include <chrono>
#include <nlohmann/json.hpp>

#include "custos/consent/storage.h"
#include "custos/records/storage.h"
#include "service_impl.h"

namespace custos::service {
namespace {

// Subjects per page: one read transaction, one audit entry naming them all
// (about 17 KiB of hex ids) and one commit. 2,000 measured no faster in CPU
// time at 1 M subjects; memory stays bounded by the page either way.
constexpr std::size_t kCampaignPage = 500;

Json distribution(const std::map<int, std::int64_t>& d) {
  Json out = Json::object();
  for (int q = 1; q <= 5; ++q) out[std::to_string(q)] = d.count(q) ? d.at(q) : 0;
  return out;
}

// The purpose, channel and segment of a campaign fetch or preview, checked:
// the purpose is the one declared in the header and a marketing purpose, the
// channel one of its channels, the segment a defined one.
records::Records::CampaignQuery campaign_query(const Json& body, const std::string& declared_purpose,
                                               const access::Policy& pol, const auto& segments) {
  records::Records::CampaignQuery q;
  q.purpose = body.contains("purpose") ? required_string(body, "purpose", 64) : declared_purpose;
  if (q.purpose != declared_purpose)
    throw Error(ErrorCode::invalid_argument, "body 'purpose' must match the Custos-Purpose header");
  const access::Purpose* purpose = pol.purpose(q.purpose);
  if (purpose == nullptr || !purpose->marketing)
    throw Error(ErrorCode::invalid_field, "field 'purpose': a campaign needs a marketing purpose");
  q.channel = required_string(body, "channel", 16);
  if (std::find(purpose->channels.begin(), purpose->channels.end(), q.channel) == purpose->channels.end())
    throw Error(ErrorCode::invalid_field, "field 'channel': not a channel of purpose '" + q.purpose + "'");
  if (body.contains("segment")) {
    q.segment = required_string(body, "segment", 64);
    if (!segments.has_segment(q.segment)) throw Error(ErrorCode::invalid_field, "field 'segment': unknown segment");
  }
  return q;
}

}  // namespace

Json Service::analytics_rfm(const Caller& caller) {
  impl_->authorize(caller, *impl_->current_policy(), "analytics", "analytics.rfm", false);
  const auto snapshot = impl_->current_segments();
  const records::RfmPolicy& policy = *snapshot;
  const auto s = records::refresh_rfm(*impl_->store, policy, impl_->audit->now_us());
  impl_->audit->append_now(impl_->actor(caller), {"analytics.rfm", "", {}, {}, true, "",
                                                  "subjects=" + std::to_string(s.subjects_scored)});
  Json segments = Json::object();
  for (const auto& [name, size] : s.segment_sizes) segments[name] = size;
  Json by_currency = Json::array();
  {
    auto tx = impl_->store->begin(store::TxMode::read);
    for (const auto& c : records::clv_by_currency(*tx, policy, impl_->audit->now_us()))
      by_currency.push_back({{"currency", c.currency}, {"customers", c.customers}, {"orders", c.orders},
                             {"revenue_minor", c.revenue_minor}, {"average_clv_minor", c.average_clv_minor}});
  }
  return {{"clv_by_currency", by_currency},
          {"computed_at", audit::format_time_us(s.computed_us)},
          {"window_days", policy.window_days},
          {"subjects_scored", s.subjects_scored},
          {"orders_considered", s.orders_considered},
          {"distribution", {{"recency", distribution(s.r_distribution)},
                            {"frequency", distribution(s.f_distribution)},
                            {"monetary", distribution(s.m_distribution)}}},
          {"segments", segments},
          {"clv", {{"average_minor", s.average_clv_minor},
                   {"expected_lifespan_years", policy.expected_lifespan_years},
                   {"customer_equity_minor", s.total_equity_minor}}}};
}

Json Service::campaign_fetch(const Caller& caller, const Json& body,
                             const std::function<bool(const std::string&)>& emit) {
  const auto pol = impl_->current_policy();
  const auto& role = impl_->authorize(caller, *pol, "records.read", "campaign.fetch", true);
  only_keys(body, {"purpose", "channel", "segment", "fields"});
  records::Records::CampaignQuery q = campaign_query(body, caller.purpose, *pol, *impl_->current_segments());
  if (!body.contains("fields") || !body["fields"].is_array() || body["fields"].empty())
    throw Error(ErrorCode::invalid_field, "field 'fields': a non-empty array of field names is required");
  // The role's fields, less those bound to other channels than the
  // campaign's (consent to e-mail is not consent to be phoned).
  const records::ReadSpec visible = impl_->for_channels(impl_->read_spec(*pol, role), {q.channel});
  records::ReadSpec spec;
  spec.operation = "campaign.fetch";
  Json withheld = Json::array();
  for (const auto& f : body["fields"]) {
    if (!f.is_string()) throw Error(ErrorCode::invalid_field, "field 'fields': names must be strings");
    const std::string name = impl_->schema.require(f.get<std::string>()).name;
    if (std::find(visible.fields.begin(), visible.fields.end(), name) == visible.fields.end()) {
      withheld.push_back(name);
      continue;
    }
    spec.fields.push_back(name);
    if (std::find(visible.masked.begin(), visible.masked.end(), name) != visible.masked.end())
      spec.masked.push_back(name);
  }
  q.now_us = impl_->audit->now_us();
  q.candidates = [&q](store::Transaction& tx, const records::SubjectId& after, std::size_t limit) {
    return consent::granted_subjects(tx, q.purpose, q.channel, q.now_us, after, limit);
  };
  std::optional<records::SubjectId> after;
  std::int64_t count = 0;
  bool open = true;
  // One line per subject, written straight into a reused buffer: the bytes
  // Json{{"id", ...}, {"fields", {...}}}.dump() gives (keys in order, each
  // string escaped by the JSON library), without a JSON tree per subject.
  std::string line;
  while (open) {
    const auto page = impl_->records->read_campaign_page(impl_->actor(caller), q, after, kCampaignPage, spec);
    for (const auto& s : page) {
      line.assign("{\"fields\":{");
      bool first = true;
      for (const auto& [name, value] : s.fields) {
        const bool masked = std::find(spec.masked.begin(), spec.masked.end(), name) != spec.masked.end();
        if (!first) line += ',';
        first = false;
        line += Json(name).dump();
        line += ':';
        line += Json(masked ? access::mask_value(impl_->schema.require(name), value) : value).dump();
      }
      line += "},\"id\":\"";
      line += records::to_hex(s.id);
      line += "\"}\n";
      counters_.decryptions += s.fields.size();
      ++count;
      if (!emit(line)) {
        open = false;
        break;
      }
    }
    if (page.size() < kCampaignPage) break;
    after = page.back().id;
  }
  Json summary = {{"done", open}, {"count", count}, {"purpose", q.purpose}, {"channel", q.channel},
                  {"fields", spec.fields}, {"fields_withheld", withheld}};
  if (!q.segment.empty()) summary["segment"] = q.segment;
  if (open) emit(summary.dump() + "\n");
  return summary;
}

Json Service::campaign_preview(const Caller& caller, const Json& body) {
  const auto pol = impl_->current_policy();
  impl_->authorize(caller, *pol, "records.read", "campaign.preview", true);
  only_keys(body, {"purpose", "channel", "segment"});
  records::Records::CampaignQuery q = campaign_query(body, caller.purpose, *pol, *impl_->current_segments());
  q.now_us = impl_->audit->now_us();
  q.candidates = [&q](store::Transaction& tx, const records::SubjectId& after, std::size_t limit) {
    return consent::granted_subjects(tx, q.purpose, q.channel, q.now_us, after, limit);
  };
  records::ReadSpec spec;  // no field: nothing is decrypted
  spec.operation = "campaign.preview";
  std::optional<records::SubjectId> after;
  std::int64_t count = 0;
  for (;;) {
    const auto page = impl_->records->read_campaign_page(impl_->actor(caller), q, after, kCampaignPage, spec);
    count += static_cast<std::int64_t>(page.size());
    if (page.size() < kCampaignPage) break;
    after = page.back().id;
  }
  Json out = {{"count", count}, {"purpose", q.purpose}, {"channel", q.channel}};
  if (!q.segment.empty()) out["segment"] = q.segment;
  return out;
}

Json Service::analytics_consents(const Caller& caller, const std::map<std::string, std::string>& query) {
  impl_->authorize(caller, *impl_->current_policy(), "analytics", "analytics.consents", false);
  int months = 12;
  for (const auto& [key, value] : query) {
    if (key != "months") throw Error(ErrorCode::invalid_argument, "unknown parameter '" + util::printable_prefix(key) + "'");
    if (value.empty() || value.size() > 2 || value.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(value) < 1 || std::stoi(value) > 36)
      throw Error(ErrorCode::invalid_argument, "parameter 'months' must be 1-36");
    months = std::stoi(value);
  }
  using namespace std::chrono;
  const std::int64_t now = impl_->audit->now_us();
  const year_month_day today(floor<days>(sys_time<microseconds>(microseconds(now))));
  const year_month this_month = today.year() / today.month();
  // The ends of the previous months-1 months (UTC), then now.
  std::vector<std::int64_t> ends;
  std::vector<std::string> labels;
  for (int back = months - 1; back >= 1; --back) {
    const year_month m = this_month - std::chrono::months(back);
    const sys_days next = sys_days(year_month_day((m + std::chrono::months(1)) / 1));
    ends.push_back(duration_cast<microseconds>(next.time_since_epoch()).count() - 1);
    const unsigned month = static_cast<unsigned>(m.month());
    labels.push_back(std::to_string(static_cast<int>(m.year())) + (month < 10 ? "-0" : "-") + std::to_string(month));
  }
  ends.push_back(now);
  labels.push_back("now");
  std::vector<consent::GrantCounts> granted;
  std::vector<std::int64_t> subjects;
  {
    auto tx = impl_->store->begin(store::TxMode::read);
    granted = consent::granted_over_time(*tx, ends);
    subjects = records::active_subjects_created_by(*tx, ends);
  }
  // Every marketing purpose x channel of the policy, in its order.
  Json series = Json::array();
  for (const auto& [name, p] : impl_->current_policy()->purposes()) {
    if (!p.marketing) continue;
    for (const auto& ch : p.channels) {
      Json points = Json::array();
      for (std::size_t i = 0; i < ends.size(); ++i) {
        const auto it = granted[i].find({name, ch});
        const std::int64_t n = it == granted[i].end() ? 0 : std::max<std::int64_t>(0, it->second);
        points.push_back({{"month", labels[i]}, {"granted", n}, {"subjects", subjects[i]},
                          {"rate", subjects[i] ? static_cast<double>(n) / static_cast<double>(subjects[i]) : 0.0}});
      }
      series.push_back({{"purpose", name}, {"channel", ch}, {"points", std::move(points)}});
    }
  }
  impl_->audit->append_now(impl_->actor(caller), {"analytics.consents", "", {}, {}, true, "",
                                                  "months=" + std::to_string(months)});
  return {{"months", labels}, {"series", series}};
}

}  // namespace custos::service
