#include "custos/breach/breach.h"

#include <sodium.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "custos/access/storage.h"
#include "custos/audit/blocks.h"
#include "custos/audit/storage.h"
#include "custos/error.h"
#include "custos/records/storage.h"
#include "custos/util/text.h"
#include "custos_audit/entry.h"

namespace custos::breach {
namespace {

using nlohmann::json;
using store::Row;
using store::TxMode;

constexpr const char* kColumns =
    "id, status, discovered_at, occurred_from, occurred_to, description, categories, regimes, severity, high_risk,"
    " affected_count, residents, computation, created_by, updated_at";

Incident from_row(const Row& r) {
  Incident i;
  i.id = std::string(r.text(0));
  i.status = std::string(r.text(1));
  i.discovered_us = r.integer(2);
  if (!r.is_null(3)) i.occurred_from_us = r.integer(3);
  if (!r.is_null(4)) i.occurred_to_us = r.integer(4);
  i.description = std::string(r.text(5));
  i.categories = json::parse(r.text(6)).get<std::vector<std::string>>();
  i.regimes = json::parse(r.text(7)).get<std::vector<std::string>>();
  i.severity = std::string(r.text(8));
  i.high_risk = r.integer(9) != 0;
  if (!r.is_null(10)) i.affected_count = r.integer(10);
  i.residents = std::string(r.text(11));
  i.computation = std::string(r.text(12));
  i.created_by = std::string(r.text(13));
  i.updated_us = r.integer(14);
  return i;
}

std::optional<Incident> load(store::Transaction& tx, const std::string& id) {
  std::optional<Incident> out;
  tx.exec(std::string("SELECT ") + kColumns + " FROM breaches WHERE id = ?", {id}, [&](const Row& r) { out = from_row(r); });
  return out;
}

bool one_of(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

// Notification events are stored with their recipient in the type column,
// "notified:<regime>:<recipient>", so that the events table needs no new
// columns; timeline() splits them again.
constexpr std::string_view kNotifiedPrefix = "notified:";

Event event_from_row(const Row& r) {
  Event e{r.integer(0), r.integer(1), std::string(r.text(2)), std::string(r.text(3)), std::string(r.text(4)), "", ""};
  if (e.type.rfind(kNotifiedPrefix, 0) == 0) {
    const std::string rest = e.type.substr(kNotifiedPrefix.size());
    const auto colon = rest.find(':');
    e.regime = rest.substr(0, colon);
    e.recipient = colon == std::string::npos ? "" : rest.substr(colon + 1);
    e.type = "notified";
  }
  return e;
}

// Does `e` tell `recipient` of `regime`? Legacy events told the authority
// (or the subjects) of every regime at once.
bool satisfies(const Event& e, const std::string& regime, const std::string& recipient) {
  if (e.type == "notified") return e.regime == regime && e.recipient == recipient;
  if (e.type == "authority_notified") return recipient == "authority";
  if (e.type == "subjects_notified") return recipient == "individuals";
  return false;
}

bool is_legacy_notified_status(const std::string& status) {
  return status == "authority_notified" || status == "subjects_notified";
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : ", ") + x;
  return out;
}

}  // namespace

Incident Book::open(const audit::Actor& actor, const dsr::Regulations& regs,
                    const std::vector<std::string>& known_categories, const NewIncident& in) {
  const std::int64_t now = audit_.now_us();
  if (in.discovered_us > now + 5LL * 60 * 1000000)
    throw Error(ErrorCode::invalid_field, "field 'discovered_at': in the future");
  if (in.occurred_from_us && in.occurred_to_us && *in.occurred_to_us < *in.occurred_from_us)
    throw Error(ErrorCode::invalid_field, "field 'occurred_to': the window ends before it starts");
  if (in.occurred_from_us && *in.occurred_from_us > in.discovered_us)
    throw Error(ErrorCode::invalid_field, "field 'occurred_from': after the discovery");
  if (in.description.empty()) throw Error(ErrorCode::invalid_field, "field 'description': required");
  if (!one_of(kSeverities, in.severity)) throw Error(ErrorCode::invalid_field, "field 'severity': low, medium, high or critical");
  for (const auto& c : in.categories)
    if (!one_of(known_categories, c)) throw Error(ErrorCode::invalid_field, "field 'categories': unknown category '" + util::printable_prefix(c, 32) + "'");
  if (in.regimes.empty()) throw Error(ErrorCode::invalid_field, "field 'regimes': at least one regime");
  regs.calendar().check_in_range(in.discovered_us, "discovered_at");
  std::vector<std::string> regimes;  // canonical names, each once
  for (const auto& r : in.regimes) {
    const std::string& key = regs.require_breach(r, "regimes").key;  // lists the valid names
    if (!one_of(regimes, key)) regimes.push_back(key);
  }
  Incident i;
  std::array<std::uint8_t, 12> raw{};
  randombytes_buf(raw.data(), raw.size());
  char hex[25];
  sodium_bin2hex(hex, sizeof hex, raw.data(), raw.size());
  i.id = std::string("brc_") + hex;
  i.status = "open";
  i.discovered_us = in.discovered_us;
  i.occurred_from_us = in.occurred_from_us;
  i.occurred_to_us = in.occurred_to_us;
  i.description = in.description;
  i.severity = in.severity;
  i.categories = in.categories;
  i.regimes = regimes;
  i.high_risk = in.high_risk;
  i.residents = in.residents;
  i.created_by = actor.principal;
  i.updated_us = now;
  auto tx = store_.begin(TxMode::write);
  tx->exec("INSERT INTO breaches (id, status, discovered_at, occurred_from, occurred_to, description, categories,"
           " regimes, severity, high_risk, affected_count, residents, computation, created_by, updated_at)"
           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, '', ?, ?)",
           {i.id, i.status, i.discovered_us, i.occurred_from_us ? store::Param(*i.occurred_from_us) : store::Param(),
            i.occurred_to_us ? store::Param(*i.occurred_to_us) : store::Param(), i.description,
            json(i.categories).dump(), json(i.regimes).dump(), i.severity, i.high_risk ? 1 : 0, i.residents,
            i.created_by, now});
  tx->exec("INSERT INTO breach_events (breach_id, seq, at, recorded_at, actor, type, note) VALUES (?, 1, ?, ?, ?, 'open', ?)",
           {i.id, i.discovered_us, now, actor.principal, "incident recorded"});
  audit_.append(*tx, actor, {"breach.open", "", i.categories, {}, true, "", "breach=" + i.id + " severity=" + i.severity});
  tx->commit();
  return i;
}

Incident Book::add_event(const audit::Actor& actor, const dsr::Regulations& regs, const std::string& id,
                         const Event& in) {
  static const std::vector<std::string> kTypes = {"note",     "investigation",      "reassessed",       "contained",
                                                  "notified", "authority_notified", "subjects_notified", "closed"};
  if (!one_of(kTypes, in.type))
    throw Error(ErrorCode::invalid_field, "field 'type': unknown event type; valid: " + join(kTypes));
  Event e = in;
  // The older event names are notices to the authority / the individuals.
  if (e.type == "authority_notified" || e.type == "subjects_notified") {
    if (e.recipient.empty()) e.recipient = e.type == "authority_notified" ? "authority" : "individuals";
    e.type = "notified";
  }
  if (e.type != "notified" && (!e.regime.empty() || !e.recipient.empty()))
    throw Error(ErrorCode::invalid_field, "field 'recipient': only a 'notified' event names a recipient");
  const std::int64_t now = audit_.now_us();
  if (e.at_us > now + 5LL * 60 * 1000000) throw Error(ErrorCode::invalid_field, "field 'at': in the future");
  auto tx = store_.begin(TxMode::write);
  auto i = load(*tx, id);
  if (!i) throw Error(ErrorCode::not_found, "breach " + id.substr(0, 40) + " not found");
  if (i->status == "closed") throw Error(ErrorCode::conflict, "the breach is closed");
  if (e.at_us < i->discovered_us) throw Error(ErrorCode::invalid_field, "field 'at': before the breach was discovered");
  const auto last = tx->scalar("SELECT max(at) FROM breach_events WHERE breach_id = ?", {id}).value_or(0);
  if (e.at_us < last) throw Error(ErrorCode::invalid_field, "field 'at': earlier than the previous event (out of order)");
  std::string stored_type = e.type;
  if (e.type == "notified") {
    if (e.recipient.empty()) throw Error(ErrorCode::invalid_field, "field 'recipient': whom was notified is required");
    // Which regimes of this incident have that recipient?
    std::vector<std::string> candidates, recipients, incident_regimes;
    for (const auto& key : i->regimes)
      if (const auto* rules = regs.breach(key)) incident_regimes.push_back(rules->key);
    if (!e.regime.empty()) {
      const dsr::BreachRules* named = regs.breach(e.regime);
      if (named == nullptr || !one_of(incident_regimes, named->key))
        throw Error(ErrorCode::invalid_field, "field 'regime': not a regime of this incident; valid: " + join(incident_regimes));
      e.regime = named->key;
    }
    for (const auto& key : incident_regimes) {
      const dsr::BreachRules* rules = regs.breach(key);
      if (!e.regime.empty() && rules->key != e.regime) continue;
      for (const auto& r : rules->recipients) {
        if (!one_of(recipients, r.key)) recipients.push_back(r.key);
        if (r.key == e.recipient) candidates.push_back(rules->key);
      }
    }
    if (candidates.empty())
      throw Error(ErrorCode::invalid_field, "field 'recipient': unknown recipient '" + util::printable_prefix(e.recipient, 32) +
                                                "'; valid: " + join(recipients));
    if (candidates.size() > 1)
      throw Error(ErrorCode::invalid_field, "field 'regime': " + e.recipient + " of which regime? one of " + join(candidates));
    e.regime = candidates.front();
    stored_type = std::string(kNotifiedPrefix) + e.regime + ":" + e.recipient;
  }
  std::optional<std::string> next_status;
  if (e.type == "contained") {
    if (i->status != "open" && !is_legacy_notified_status(i->status))
      throw Error(ErrorCode::conflict, "a breach in status '" + i->status + "' cannot move to 'contained'");
    if (tx->scalar("SELECT count(*) FROM breach_events WHERE breach_id = ? AND type = 'contained'", {id}).value_or(0) > 0)
      throw Error(ErrorCode::conflict, "the breach is already contained");
    next_status = "contained";
  }
  const std::int64_t seq = tx->scalar("SELECT coalesce(max(seq), 0) + 1 FROM breach_events WHERE breach_id = ?", {id}).value_or(1);
  tx->exec("INSERT INTO breach_events (breach_id, seq, at, recorded_at, actor, type, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
           {id, seq, e.at_us, now, actor.principal, stored_type, e.note});
  if (e.type == "closed") {
    // Every required notice must have gone out (deadlines() reads this
    // transaction's events through timeline_in()).
    std::vector<std::string> outstanding;
    for (const auto& d : deadlines_in(*tx, *i, regs))
      if (d.required && !d.met) outstanding.push_back(d.regime + "/" + d.who);
    if (!outstanding.empty())
      throw Error(ErrorCode::conflict, "cannot close: required notices outstanding: " + join(outstanding));
    next_status = "closed";
  }
  if (next_status) {
    i->status = *next_status;
    tx->exec("UPDATE breaches SET status = ?, updated_at = ? WHERE id = ?", {i->status, now, id});
  }
  audit_.append(*tx, actor, {"breach.event", "", {}, {}, true, "", "breach=" + id + " type=" + stored_type});
  tx->commit();
  i->updated_us = now;
  return *i;
}

Incident Book::get(const std::string& id) {
  auto tx = store_.begin(TxMode::read);
  auto i = load(*tx, id);
  if (!i) throw Error(ErrorCode::not_found, "breach " + id.substr(0, 40) + " not found");
  return *i;
}

std::vector<Event> Book::timeline(const std::string& id) {
  auto tx = store_.begin(TxMode::read);
  return timeline_in(*tx, id);
}

std::vector<Event> Book::timeline_in(store::Transaction& tx, const std::string& id) {
  std::vector<Event> out;
  tx.exec("SELECT at, recorded_at, actor, type, note FROM breach_events WHERE breach_id = ? ORDER BY seq", {id},
          [&](const Row& r) { out.push_back(event_from_row(r)); });
  return out;
}

std::vector<Incident> Book::list(const std::string& status) {
  std::vector<Incident> out;
  auto tx = store_.begin(TxMode::read);
  tx->exec(std::string("SELECT ") + kColumns + " FROM breaches" + (status.empty() ? " WHERE ? = ''" : " WHERE status = ?") +
               " ORDER BY discovered_at",
           {status}, [&](const Row& r) { out.push_back(from_row(r)); });
  return out;
}

std::vector<Deadline> Book::deadlines(const Incident& i, const dsr::Regulations& regs) {
  auto tx = store_.begin(TxMode::read);
  return deadlines_in(*tx, i, regs);
}

std::vector<Deadline> Book::deadlines_in(store::Transaction& tx, const Incident& i, const dsr::Regulations& regs) {
  const auto events = timeline_in(tx, i.id);
  // Residents per region as the incident gives them; without them, the
  // affected count stands for every count (and unknown stays required).
  std::optional<std::map<std::string, std::int64_t>> residents;
  if (!i.residents.empty()) {
    const auto j = json::parse(i.residents, nullptr, false);
    if (j.is_object()) {
      residents.emplace();
      for (const auto& [k, v] : j.items())
        if (v.is_number_integer()) (*residents)[k] = v.get<std::int64_t>();
    }
  }
  const auto count_for = [&](const std::string& of) -> std::optional<std::int64_t> {
    if (!residents) return i.affected_count;
    std::int64_t n = 0;
    for (const auto& [region, c] : *residents) {
      if (of.empty()) n += c;
      else if (of == "*") n = std::max(n, c);
      else if (region == of) n = c;
    }
    return n;
  };
  std::vector<Deadline> out;
  for (const auto& key : i.regimes) {
    const dsr::BreachRules* rules = regs.breach(key);
    if (rules == nullptr) continue;
    std::map<std::string, std::optional<std::int64_t>> sent;  // recipient -> when first notified
    for (const auto& r : rules->recipients)
      for (const auto& e : events)
        if (satisfies(e, rules->key, r.key) && !sent[r.key]) sent[r.key] = e.at_us;
    std::map<std::string, const Deadline*> by_recipient;
    const std::size_t first = out.size();
    for (const auto& r : rules->recipients) {
      Deadline d;
      d.regime = rules->key;
      d.regime_name = rules->name;
      d.who = r.key;
      d.recipient_name = r.name;
      d.timing = r.timing;
      d.source = r.source.citation;
      d.met_us = sent[r.key];
      d.met = d.met_us.has_value();
      std::vector<std::string> conditions;
      if (r.high_risk_only) {
        conditions.push_back(std::string("likely high risk (") + (i.high_risk ? "yes" : "no") + ")");
        if (!i.high_risk) d.required = false;
      }
      if (r.residents_over || r.residents_at_least || r.residents_under) {
        const auto n = count_for(r.residents_of);
        const std::string whose = r.residents_of.empty() ? "affected" : r.residents_of == "*" ? "residents of one region" : "residents of " + r.residents_of;
        const std::string seen = n ? std::to_string(*n) : "unknown";
        if (r.residents_over) conditions.push_back("more than " + std::to_string(*r.residents_over) + " " + whose + " (" + seen + ")");
        if (r.residents_at_least) conditions.push_back("at least " + std::to_string(*r.residents_at_least) + " " + whose + " (" + seen + ")");
        if (r.residents_under) conditions.push_back("fewer than " + std::to_string(*r.residents_under) + " " + whose + " (" + seen + ")");
        if (n && ((r.residents_over && *n <= *r.residents_over) || (r.residents_at_least && *n < *r.residents_at_least) ||
                  (r.residents_under && *n >= *r.residents_under)))
          d.required = false;
      }
      d.condition = join(conditions);
      std::optional<std::int64_t> anchor = i.discovered_us;
      if (r.anchor == dsr::Recipient::Anchor::after_recipient) {
        const Deadline* before = by_recipient.count(r.after) ? by_recipient[r.after] : nullptr;
        anchor = before && before->met_us ? before->met_us : before ? before->due_us : std::nullopt;
        d.projected = !(before && before->met_us);
      }
      if (anchor) d.due_us = regs.breach_due(*rules, r, *anchor);
      out.push_back(std::move(d));
      by_recipient[r.key] = nullptr;  // re-pointed below, once `out` stops moving
      for (std::size_t k = first; k < out.size(); ++k) by_recipient[out[k].who] = &out[k];
    }
  }
  return out;
}

AffectedResult Book::store_affected(const audit::Actor& actor, const std::string& id, AffectedResult r,
                                    const std::map<std::string, std::set<std::string>>& found, const std::string& how) {
  r.count = static_cast<std::int64_t>(found.size());
  auto tx = store_.begin(TxMode::write);
  if (!load(*tx, id)) throw Error(ErrorCode::not_found, "breach " + id.substr(0, 40) + " not found");
  tx->exec("DELETE FROM breach_affected WHERE breach_id = ?", {id});
  for (const auto& [hex, fields] : found) {
    std::array<std::uint8_t, 16> sid{};
    std::size_t len = 0;
    if (sodium_hex2bin(sid.data(), sid.size(), hex.data(), hex.size(), nullptr, &len, nullptr) != 0 || len != 16) continue;
    tx->exec("INSERT INTO breach_affected (breach_id, subject_id, fields) VALUES (?, ?, ?)",
             {id, sid, json(std::vector<std::string>(fields.begin(), fields.end())).dump()});
    if (r.sample.size() < 100) r.sample.emplace_back(hex, std::vector<std::string>(fields.begin(), fields.end()));
  }
  json computation = {{"method", how},
                      {"count", r.count},
                      {"first_seq", r.first_seq},
                      {"last_seq", r.last_seq},
                      {"entries_scanned", r.entries_scanned},
                      {"checkpoint_size", r.checkpoint.size},
                      {"checkpoint_root", auditfmt::to_hex(r.checkpoint.root)}};
  // The window and the signed checkpoint it was computed against, so the
  // incident page shows what the count stands on.
  if (r.window_us) {
    computation["from"] = audit::format_time_us(r.window_us->first);
    computation["to"] = audit::format_time_us(r.window_us->second);
  }
  tx->exec("UPDATE breaches SET affected_count = ?, computation = ?, updated_at = ? WHERE id = ?",
           {r.count, computation.dump(), audit_.now_us(), id});
  audit_.append(*tx, actor, {"breach.compute_affected", "", {}, {}, true, "",
                             "breach=" + id + " method=" + how + " count=" + std::to_string(r.count)});
  tx->commit();
  return r;
}

AffectedResult Book::affected_by_access(const audit::Actor& actor, const std::string& id,
                                        const std::set<std::string>& principals, const std::set<std::string>& token_ids,
                                        std::int64_t from_us, std::int64_t to_us) {
  get(id);  // not_found early
  if (to_us <= from_us) throw Error(ErrorCode::invalid_field, "field 'to': the window ends before it starts");
  if (principals.empty() && token_ids.empty())
    throw Error(ErrorCode::invalid_field, "field 'principals': name compromised principals or token ids");
  {
    auto tx = store_.begin(TxMode::read);
    for (const auto& p : principals)
      if (p.rfind("local:", 0) != 0 && !access::token_name_known(*tx, p))
        throw Error(ErrorCode::invalid_field, "field 'principals': unknown principal '" + util::printable_prefix(p) + "'");
    for (const auto& t : token_ids)
      if (!access::token_id_known(*tx, t))
        throw Error(ErrorCode::invalid_field, "field 'token_ids': unknown token id '" + t.substr(0, 32) + "'");
  }
  AffectedResult r;
  r.checkpoint = audit_.checkpoint_now();
  r.window_us = std::make_pair(from_us, to_us);
  std::map<std::string, std::set<std::string>> found;
  bool any = false;
  auto tx = store_.begin(TxMode::read);
  // Every entry timed inside the window lies between the smallest and the
  // largest sequence number timed inside it (whatever the clock did), so the
  // scan walks that seq range in primary-key order and filters on time: no
  // sort of the window, memory independent of its size.
  const auto window = audit::seq_range_at(*tx, from_us, to_us);
  if (!window) return store_affected(actor, id, std::move(r), found, "audit_log");
  const auto first = static_cast<std::int64_t>(window->first);
  const auto last = static_cast<std::int64_t>(window->second);
  // Entries covering many subjects commit to them (FORMAT.md §1.5); the scan
  // gets their ids from the audit log's own openings.
  if (r.checkpoint.size == 0 || first >= static_cast<std::int64_t>(r.checkpoint.size))
    return store_affected(actor, id, std::move(r), found, "audit_log");
  const auto scan_last = std::min<std::uint64_t>(static_cast<std::uint64_t>(last), r.checkpoint.size - 1);
  audit_.scan(*tx, static_cast<std::uint64_t>(first), scan_last, [&](std::int64_t at, const auditfmt::Entry& e) {
             if (at < from_us || at >= to_us) return;
             ++r.entries_scanned;
             if (e.outcome != "allowed") return;
             if (!principals.count(e.principal) && !token_ids.count(e.token_id)) return;
             if (e.subject_id.empty() && e.subject_ids.empty()) return;
             if (!any) r.first_seq = e.seq;
             any = true;
             r.last_seq = e.seq;
             // An invalid_subject marker (an audit query's odd filter) names no subject.
             if (auditfmt::is_subject_id(e.subject_id)) found[e.subject_id].insert(e.fields.begin(), e.fields.end());
             for (const auto& s : e.subject_ids)
               if (auditfmt::is_subject_id(s)) found[s].insert(e.fields.begin(), e.fields.end());
           });
  return store_affected(actor, id, std::move(r), found, "audit_log");
}

AffectedResult Book::affected_by_categories(const audit::Actor& actor, const std::string& id,
                                            const records::Schema& schema, const std::set<std::string>& categories) {
  get(id);
  for (const auto& c : categories) {
    const auto known = schema.categories();
    if (!one_of(known, c)) throw Error(ErrorCode::invalid_field, "field 'categories': unknown category '" + util::printable_prefix(c, 32) + "'");
  }
  AffectedResult r;
  r.checkpoint = audit_.checkpoint_now();
  std::map<std::string, std::set<std::string>> found;
  auto tx = store_.begin(TxMode::read);
  // Field names sit in clear in the field record's framing: no decryption needed.
  records::for_each_active_field_names(*tx, [&](const records::SubjectId& sid, const std::vector<std::string>& names) {
    std::set<std::string> hit;
    for (const auto& name : names)
      if (const auto* f = schema.find(name); f && categories.count(f->category)) hit.insert(name);
    if (!hit.empty()) found[records::to_hex(sid)] = std::move(hit);
    ++r.entries_scanned;
  });
  return store_affected(actor, id, std::move(r), found, "categories");
}

std::vector<records::SubjectId> Book::affected_subjects(const std::string& id, std::size_t limit,
                                                        const std::optional<records::SubjectId>& after) {
  std::vector<records::SubjectId> out;
  const records::SubjectId zero{};
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT subject_id FROM breach_affected WHERE breach_id = ? AND subject_id > ? ORDER BY subject_id LIMIT ?",
           {id, store::Blob(after ? *after : zero), static_cast<std::int64_t>(limit)}, [&](const Row& r) {
             records::SubjectId sid{};
             if (r.blob(0).size() == sid.size()) std::copy(r.blob(0).begin(), r.blob(0).end(), sid.begin());
             out.push_back(sid);
           });
  return out;
}

}  // namespace custos::breach
