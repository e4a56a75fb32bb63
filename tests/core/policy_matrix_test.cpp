// Issue 15, "Tests that prove it": a policy-generated matrix of
// role × declared purpose × subject state × operation, run through the
// Service façade on real vaults.
//
// The expectation of every cell (the oracle) is computed here, from the
// policy files read with yaml-cpp and the rules the documentation states,
// never through access::Policy or any other product code:
//   - roles.yaml: operations, purposes a role may declare, capture_consent,
//     visibility per category (a category not listed is none);
//   - purposes.yaml: marketing, channels, required_for,
//     allowed_when_restricted (default dsr_fulfilment, legal_claims, audit);
//   - schema.yaml: the category of each field and the channels it is bound
//     to (under a marketing purpose shown only for a consented channel);
//   - README "Who may do what", docs/openapi.yaml and the code list of
//     include/custos/error.h (subject_restricted: "the subject is restricted
//     or objected for this purpose").
// Where the documents leave an order of checks open, the oracle checks the
// caller before the subject: the operation class (forbidden_role), then the
// declared purpose (purpose_not_allowed, including required_for), then what
// the role may capture or look up, then the subject (not_found, conflict,
// subject_restricted), then consent (consent_missing).
//
// Each state lives in a vault of its own. Reads and refused writes use one
// probe subject per state (and consent variant); a write the oracle expects
// to succeed gets a fresh subject in that state, and a probe that a refused
// write changed anyway is reported and replaced. Every refusal is checked in
// the audit log (403s as denials with their code, and no refusal writes an
// allowed entry), and every refused write is checked to have changed
// nothing the façade can show. Mismatches are collected and printed as one
// table.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "custos/error.h"
#include "test_support.h"

namespace custos {
namespace {

namespace fs = std::filesystem;
using service::Json;
using testing::TestVault;

// ------------------------------------------------------------ the oracle's rules

struct RoleRules {
  std::set<std::string> operations, purposes, capture_consent;
  std::map<std::string, std::string> visibility;  // category -> plain | masked | none
};

struct PurposeRules {
  bool marketing = false;
  std::vector<std::string> channels;
  std::set<std::string> required_for;
  bool allowed_when_restricted = false;
};

std::set<std::string> string_set(const YAML::Node& node) {
  std::set<std::string> out;
  if (node)
    for (const auto& item : node) out.insert(item.as<std::string>());
  return out;
}

// The three policy files as written, with the defaults their comments state.
struct Rules {
  std::map<std::string, RoleRules> roles;
  std::map<std::string, PurposeRules> purposes;
  std::map<std::string, std::string> field_category;
  std::map<std::string, std::set<std::string>> field_channels;  // schema.yaml `channels`

  static Rules load(const fs::path& dir) {
    Rules r;
    for (const auto& kv : YAML::LoadFile((dir / "roles.yaml").string())["roles"]) {
      RoleRules role;
      const YAML::Node n = kv.second;
      role.operations = string_set(n["operations"]);
      role.purposes = string_set(n["purposes"]);
      role.capture_consent = string_set(n["capture_consent"]);
      if (n["visibility"])
        for (const auto& v : n["visibility"]) role.visibility[v.first.as<std::string>()] = v.second.as<std::string>();
      r.roles[kv.first.as<std::string>()] = role;
    }
    bool any_restricted_flag = false;
    for (const auto& kv : YAML::LoadFile((dir / "purposes.yaml").string())["purposes"]) {
      PurposeRules p;
      const YAML::Node n = kv.second;
      p.marketing = n["marketing"] && n["marketing"].as<bool>();
      if (n["channels"]) p.channels = n["channels"].as<std::vector<std::string>>();
      p.required_for = string_set(n["required_for"]);
      p.allowed_when_restricted = n["allowed_when_restricted"] && n["allowed_when_restricted"].as<bool>();
      any_restricted_flag = any_restricted_flag || p.allowed_when_restricted;
      r.purposes[kv.first.as<std::string>()] = p;
    }
    if (!any_restricted_flag)  // "If no purpose says true: dsr_fulfilment, legal_claims, audit"
      for (const char* name : {"dsr_fulfilment", "legal_claims", "audit"})
        if (r.purposes.count(name)) r.purposes[name].allowed_when_restricted = true;
    for (const auto& f : YAML::LoadFile((dir / "schema.yaml").string())["fields"]) {
      r.field_category[f["name"].as<std::string>()] = f["category"].as<std::string>();
      r.field_channels[f["name"].as<std::string>()] = string_set(f["channels"]);
    }
    return r;
  }

  bool marketing(const std::string& purpose) const {
    const auto it = purposes.find(purpose);
    return it != purposes.end() && it->second.marketing;
  }
  bool allowed_when_restricted(const std::string& purpose) const {
    const auto it = purposes.find(purpose);
    return it != purposes.end() && it->second.allowed_when_restricted;
  }
  std::string first_channel(const std::string& purpose) const { return purposes.at(purpose).channels.at(0); }
  // Whether a field is shown under `purpose` to a caller whose role sees it:
  // under a marketing purpose a field bound to channels (schema.yaml) only
  // for a channel the subject consented to, here the purpose's first (the
  // only one the world grants).
  bool reaches(const std::string& purpose, const std::string& field) const {
    if (!marketing(purpose)) return true;
    const auto it = field_channels.find(field);
    return it == field_channels.end() || it->second.empty() || it->second.count(first_channel(purpose)) > 0;
  }
  // The purposes that list `operation` in required_for; empty: any purpose.
  std::set<std::string> required_for(const std::string& operation) const {
    std::set<std::string> out;
    for (const auto& [name, p] : purposes)
      if (p.required_for.count(operation)) out.insert(name);
    return out;
  }
  std::string visibility(const std::string& role, const std::string& field) const {
    const auto& v = roles.at(role).visibility;
    const auto it = v.find(field_category.at(field));
    return it == v.end() ? "none" : it->second;
  }
  std::vector<std::string> marketing_purposes() const {
    std::vector<std::string> out;
    for (const auto& [name, p] : purposes)
      if (p.marketing) out.push_back(name);
    return out;
  }
};

// ------------------------------------------------------------ cells

enum class State { active, restricted, objected, erased, held };
enum class Op { read, batch_get, lookup, update, erase, grant, withdraw, campaign, touchpoint, legal_hold, dsr_intake };

const std::vector<State> kStates = {State::active, State::restricted, State::objected, State::erased, State::held};
const std::vector<Op> kOps = {Op::read,     Op::batch_get, Op::lookup,   Op::update,     Op::erase,     Op::grant,
                              Op::withdraw, Op::campaign,  Op::touchpoint, Op::legal_hold, Op::dsr_intake};

const char* name_of(State s) {
  switch (s) {
    case State::active: return "active";
    case State::restricted: return "restricted";
    case State::objected: return "objected";
    case State::erased: return "erased";
    case State::held: return "held";
  }
  return "?";
}

const char* name_of(Op op) {
  switch (op) {
    case Op::read: return "read";
    case Op::batch_get: return "batchGet";
    case Op::lookup: return "lookup(email)";
    case Op::update: return "update";
    case Op::erase: return "erase";
    case Op::grant: return "consent.grant";
    case Op::withdraw: return "consent.withdraw";
    case Op::campaign: return "campaign";
    case Op::touchpoint: return "touchpoint";
    case Op::legal_hold: return "legalHold";
    case Op::dsr_intake: return "dsr.intake";
  }
  return "?";
}

bool writes(Op op) {
  return op == Op::update || op == Op::erase || op == Op::grant || op == Op::withdraw || op == Op::touchpoint ||
         op == Op::legal_hold;
}

struct Cell {
  State state = State::active;
  std::string role, purpose;  // purpose "" = none declared
  Op op = Op::read;
  bool consented = true;  // the subject has a granted consent for every marketing purpose
  std::string target;     // grant / withdraw: the consent's purpose
};

std::string describe(const Cell& c) {
  std::string s = std::string(name_of(c.state)) + " | " + c.role + " | " + (c.purpose.empty() ? "-" : c.purpose) +
                  " | " + name_of(c.op);
  if (!c.target.empty()) s += "(" + c.target + ")";
  if (!c.consented) s += " | no consent";
  return s;
}

// Outcomes: "ok", an error code, or for calls that answer with a list
// "ok:found"/"ok:absent" (lookup), "ok:present"/"ok:absent" (campaign),
// "item:ok"/"item:<code>" (batchGet), "ok:matched"/"ok:no_data_held" (DSR).
bool is_denial(const std::string& code) {
  return code == "forbidden_role" || code == "purpose_not_allowed" || code == "consent_missing" ||
         code == "subject_restricted" || code == "consent_capture_not_allowed";
}

// The caller's own checks: operation class, then the declared purpose.
std::optional<std::string> authorize(const Rules& r, const Cell& c, const std::string& op_class, bool purpose_required,
                                     const std::string& operation) {
  const RoleRules& role = r.roles.at(c.role);
  if (!role.operations.count(op_class)) return "forbidden_role";
  if (c.purpose.empty()) {
    if (purpose_required) return "purpose_not_allowed";
  } else if (!r.purposes.count(c.purpose) || !role.purposes.count(c.purpose)) {
    return "purpose_not_allowed";
  }
  const auto only = r.required_for(operation);
  if (!only.empty() && !only.count(c.purpose)) return "purpose_not_allowed";
  return std::nullopt;
}

std::string expected(const Rules& r, const Cell& c) {
  const bool marketing = r.marketing(c.purpose);
  const bool erased = c.state == State::erased;
  const bool restricted = c.state == State::restricted;
  const bool objected = c.state == State::objected;
  // Why this subject may not be read under the declared purpose, if so.
  const auto read_refusal = [&]() -> std::optional<std::string> {
    if (erased) return "not_found";
    if (restricted && !r.allowed_when_restricted(c.purpose)) return "subject_restricted";
    if (marketing && objected) return "subject_restricted";
    if (marketing && !c.consented) return "consent_missing";
    return std::nullopt;
  };
  switch (c.op) {
    case Op::read:
      if (auto e = authorize(r, c, "records.read", true, "subject.read")) return *e;
      if (auto e = read_refusal()) return *e;
      return "ok";
    case Op::batch_get:
      if (auto e = authorize(r, c, "records.read", true, "subject.read")) return *e;
      if (auto e = read_refusal()) return "item:" + *e;
      return "item:ok";
    case Op::lookup:
      if (auto e = authorize(r, c, "records.read", true, "subject.lookup")) return *e;
      if (r.visibility(c.role, "email") != "plain") return "forbidden_role";
      // An e-mail address finds a subject for marketing only where its consent covers e-mail.
      return read_refusal() || !r.reaches(c.purpose, "email") ? "ok:absent" : "ok:found";
    case Op::campaign:
      if (auto e = authorize(r, c, "records.read", true, "campaign.fetch")) return *e;
      if (!marketing) return "invalid_field";
      return !erased && !restricted && !objected && c.consented ? "ok:present" : "ok:absent";
    case Op::update:
    case Op::touchpoint:
      if (auto e = authorize(r, c, "records.write", false, c.op == Op::update ? "subject.update" : "touchpoint.create"))
        return *e;
      if (erased) return "not_found";
      if (restricted) return "subject_restricted";  // only through a rectification request
      return "ok";
    case Op::erase:
      if (auto e = authorize(r, c, "records.erase", true, "subject.erase")) return *e;
      if (erased) return "not_found";
      if (c.state == State::held) return "conflict";
      // "nothing may change it but a rectification request" (purposes.yaml);
      // Art. 18(1)(b): a restriction may be asked for instead of erasure.
      if (restricted) return "subject_restricted";
      return "ok";
    case Op::grant:
      if (auto e = authorize(r, c, "consent", false, "consent.record")) return *e;
      if (!r.roles.at(c.role).capture_consent.count(c.target)) return "consent_capture_not_allowed";
      if (erased) return "not_found";
      return "ok";
    case Op::withdraw:
      if (auto e = authorize(r, c, "consent", false, "consent.record")) return *e;
      if (erased) return "not_found";
      return "ok";
    case Op::legal_hold:
      if (auto e = authorize(r, c, "dsr", false, "subject.legal_hold")) return *e;
      if (erased) return "not_found";
      return "ok";
    case Op::dsr_intake:
      if (auto e = authorize(r, c, "dsr", false, "dsr.intake")) return *e;
      return erased ? "ok:no_data_held" : "ok:matched";
  }
  return "?";
}

// ------------------------------------------------------------ the vaults

// What the façade shows of a subject to an all-seeing caller.
struct Snapshot {
  Json subject;   // the read, or {"error": code}
  Json consents;  // the consent document, or {"error": code}
  bool operator==(const Snapshot& o) const { return subject == o.subject && consents == o.consents; }
};

Json attempt(const std::function<Json()>& fn) {
  try {
    return fn();
  } catch (const Error& e) {
    return {{"error", code_name(e.code())}};
  }
}

// One vault whose subjects are all in one state.
class World {
 public:
  explicit World(State state) : state_(state) {}

  TestVault& vault() { return v_; }
  State state() const { return state_; }

  service::Caller caller(const std::string& role, const std::string& purpose) { return v_.caller(role, purpose); }

  // A subject in this world's state: every field of the schema, a granted
  // consent for every marketing purpose on its first channel if `consented`.
  std::string make_subject(const Rules& rules, bool consented) {
    const int n = ++made_;
    const std::string email = "matrix" + std::to_string(n) + "@example.com";
    const Json body = {{"fields",
                        {{"given_name", "Ada"},
                         {"family_name", "Lovelace"},
                         {"email", email},
                         {"phone", "+1 202 555 0142"},
                         {"postal_address", "12 St James's Square, London"},
                         {"birth_date", "1815-12-10"},
                         {"external_id", "crm-" + std::to_string(n)},
                         {"gender", "female"},
                         {"occupation", "mathematician"},
                         {"preferences", "analytical engines"},
                         {"notes", "prefers letters"},
                         {"income_band", "high"}}},
                       {"on_conflict", "create"}};  // many cells share one phone number on purpose
    const std::string id = v_.service->create_subject(v_.admin(), body)["id"];
    email_of_[id] = email;
    if (consented) grant_all(rules, id);
    const auto officer = v_.caller("compliance_officer", "dsr_fulfilment");
    switch (state_) {
      case State::active: break;
      case State::restricted: complete_request(id, "restriction"); break;
      case State::objected:
        complete_request(id, "objection");
        // A fresh consent after the objection: the cell then tests the
        // objection itself, not the consents it withdrew.
        if (consented) grant_all(rules, id);
        break;
      case State::erased: v_.service->erase_subject(v_.admin("administration"), id, "matrix setup"); break;
      case State::held: v_.service->set_legal_hold(officer, id, true); break;
    }
    return id;
  }

  const std::string& email_of(const std::string& id) const { return email_of_.at(id); }

  Snapshot snapshot(const std::string& id) {
    return {attempt([&] { return v_.service->get_subject(v_.admin("legal_claims"), id); }),
            attempt([&] { return v_.service->get_consents(v_.admin(""), id); })};
  }

  // The probe for reads and expected refusals, made on first use.
  struct Probe {
    std::string id;
    Snapshot reference;
  };
  Probe& probe(const Rules& rules, bool consented) {
    auto& p = probes_[consented];
    if (p.id.empty()) {
      p.id = make_subject(rules, consented);
      p.reference = snapshot(p.id);
    }
    return p;
  }
  void replace_probe(bool consented) { probes_[consented] = Probe{}; }

 private:
  void grant_all(const Rules& rules, const std::string& id) {
    for (const auto& purpose : rules.marketing_purposes())
      v_.service->record_consent(v_.admin(""), id,
                                 {{"purpose", purpose},
                                  {"channel", rules.first_channel(purpose)},
                                  {"event", "granted"},
                                  {"source", "import"}},
                                 false);
  }

  void complete_request(const std::string& id, const std::string& type) {
    const auto officer = v_.caller("compliance_officer", "dsr_fulfilment");
    const Json req = v_.service->dsr_create(officer, {{"type", type},
                                                      {"regime", "gdpr"},
                                                      {"identifier", {{"email", email_of_.at(id)}}},
                                                      {"channel", "web_form"}});
    ASSERT_EQ(req["subject_id"], id);
    for (const char* to : {"identity_verified", "in_progress", "completed"})
      v_.service->dsr_transition(officer, req["id"].get<std::string>(), {{"to", to}, {"note", "matrix setup"}});
  }

  TestVault v_;
  State state_;
  int made_ = 0;
  std::map<bool, Probe> probes_;
  std::map<std::string, std::string> email_of_;
};

// ------------------------------------------------------------ running a cell

struct Mismatch {
  Cell cell;
  std::string expected, got;
};

// The finding a mismatch belongs to: "state | operation[(target)][ | no consent] : expected -> got".
std::string group_of(const Mismatch& m) {
  std::string op = name_of(m.cell.op);
  if (m.cell.op == Op::grant && m.cell.purpose.empty() && m.cell.target != "partner_sharing") op += "(capture)";
  return std::string(name_of(m.cell.state)) + " | " + op + (m.cell.consented ? "" : " | no consent") + " : " +
         m.expected + " -> " + m.got;
}

struct MatrixRun {
  std::vector<Mismatch> mismatches;
  int cells = 0;
  int audit_checked = 0;
  int unchanged_checked = 0;
  int fresh_subjects = 0;
};

// Whether `got` shows every field of `reference` as `role` may see it.
std::string visibility_problem(const Rules& rules, const std::string& role, const std::string& purpose,
                               const Json& reference, const Json& got) {
  for (const auto& [name, value] : reference.items()) {
    const std::string v = rules.reaches(purpose, name) ? rules.visibility(role, name) : "none";
    const bool has = got.contains(name);
    if (v == "none" && has) return name + " shown, should be withheld";
    if (v == "plain" && (!has || got[name] != value)) return name + " should be plain";
    if (v == "masked" && (!has || got[name] == value ||
                          got[name].get<std::string>().find(value.get<std::string>()) != std::string::npos))
      return name + " should be masked";
  }
  for (const auto& [name, value] : got.items())
    if (!reference.contains(name)) return "unexpected field " + name;
  return "";
}

class Runner {
 public:
  Runner(const Rules& oracle, MatrixRun& out) : oracle_(oracle), out_(out) {}

  void run(World& w, const Cell& c) {
    ++out_.cells;
    const std::string want = expected(oracle_, c);
    const bool want_ok = want.rfind("ok", 0) == 0 || want == "item:ok";
    // A write expected to succeed changes its subject: a fresh one.
    const bool fresh = writes(c.op) && want_ok;
    const World::Probe& probe = w.probe(oracle_, c.consented);
    std::string id = probe.id;
    if (fresh) {
      ++out_.fresh_subjects;
      id = w.make_subject(oracle_, c.consented);
    }
    const auto pre = w.vault().service->audit_size();
    const std::string got = perform(w, c, id);
    check_audit(w, c, id, got, pre);
    if (got != want) {
      mismatch(c, want, got);
    } else if (const std::string problem = want_ok || got.rfind("item:", 0) == 0 ? postcondition(w, c, id, got) : "";
               !problem.empty()) {
      mismatch(c, want, got + " but " + problem);
    }
    if (writes(c.op) && !fresh) {
      // The probe must be as it was: a refused write changes nothing.
      ++out_.unchanged_checked;
      const Snapshot now = w.snapshot(id);
      if (!(now == w.probe(oracle_, c.consented).reference)) {
        mismatch(c, want + " (subject unchanged)", got + " (subject changed)");
        w.replace_probe(c.consented);
      } else if (got.rfind("ok", 0) == 0) {
        w.replace_probe(c.consented);  // it may have changed what the façade does not show
      }
    }
  }

 private:
  void mismatch(const Cell& c, const std::string& want, const std::string& got) {
    out_.mismatches.push_back({c, want, got});
  }

  // Runs the cell's operation; the outcome as `expected` spells it.
  std::string perform(World& w, const Cell& c, const std::string& id) {
    service::Service& s = *w.vault().service;
    const auto caller = w.caller(c.role, c.purpose);
    result_ = Json();
    try {
      switch (c.op) {
        case Op::read:
          result_ = s.get_subject(caller, id);
          return "ok";
        case Op::batch_get: {
          result_ = s.batch_get(caller, {{"ids", {id}}})["results"].at(0);
          if (result_["status"] == 200) return "item:ok";
          return "item:" + result_["error"]["code"].get<std::string>();
        }
        case Op::lookup:
          result_ = s.find_subjects(caller, "email", w.email_of(id))["subjects"];
          return result_.empty() ? "ok:absent" : "ok:found";
        case Op::campaign: {
          const std::string channel = oracle_.marketing(c.purpose) ? oracle_.first_channel(c.purpose) : "email";
          bool present = false;
          s.campaign_fetch(caller, {{"channel", channel}, {"fields", {"email"}}}, [&](const std::string& line) {
            const Json j = Json::parse(line);
            present = present || (j.contains("id") && j["id"] == id);
            return true;
          });
          return present ? "ok:present" : "ok:absent";
        }
        case Op::update:
          result_ = "Rectified" + std::to_string(out_.cells);
          s.patch_subject(caller, id, {{"fields", {{"given_name", result_}}}});
          return "ok";
        case Op::touchpoint:
          result_ = s.add_touchpoint(caller, id, {{"channel", "phone"}, {"type", "support_call"}});
          return "ok";
        case Op::erase:
          s.erase_subject(caller, id, "ticket MX-1");
          return "ok";
        case Op::grant:
        case Op::withdraw:
          s.record_consent(caller, id,
                           {{"purpose", c.target},
                            {"channel", oracle_.first_channel(c.target)},
                            {"event", c.op == Op::grant ? "granted" : "withdrawn"},
                            {"source", c.op == Op::grant ? "import" : "email_link"}},
                           false);
          return "ok";
        case Op::legal_hold:
          s.set_legal_hold(caller, id, Json{{"hold", true}});
          return "ok";
        case Op::dsr_intake:
          result_ = s.dsr_create(caller, {{"type", "access"},
                                          {"regime", "gdpr"},
                                          {"identifier", {{"email", w.email_of(id)}}},
                                          {"channel", "web_form"}});
          return result_["subject_id"].is_null() ? "ok:no_data_held" : "ok:matched";
      }
    } catch (const Error& e) {
      return code_name(e.code());
    }
    return "?";
  }

  // What an allowed call must have done; "" if it did.
  std::string postcondition(World& w, const Cell& c, const std::string& id, const std::string& got) {
    service::Service& s = *w.vault().service;
    const Json reference = w.probe(oracle_, c.consented).reference.subject.value("fields", Json::object());
    const auto shape = [&](const Json& subject) {
      if (subject.value("id", "") != id) return std::string("another subject returned");
      return visibility_problem(oracle_, c.role, c.purpose, reference, subject.value("fields", Json::object()));
    };
    const auto admin_view = [&] { return attempt([&] { return s.get_subject(w.vault().admin("legal_claims"), id); }); };
    switch (c.op) {
      case Op::read: return shape(result_);
      case Op::batch_get:
        if (got == "item:ok") return shape(result_["subject"]);
        return result_.contains("subject") ? "a refused item carries the subject" : "";
      case Op::lookup:
        if (got == "ok:absent") return "";
        if (result_.size() != 1) return "more than one subject";
        return shape(result_[0]);
      case Op::campaign: return "";
      case Op::update:
        if (got != "ok") return "";
        return admin_view().value("fields", Json::object()).value("given_name", "") == result_
                   ? ""
                   : "the field did not change";
      case Op::touchpoint: return got != "ok" || result_.contains("id") ? "" : "no touchpoint id";
      case Op::erase:
        return got != "ok" || admin_view().value("error", "") == "not_found" ? "" : "the subject is still readable";
      case Op::grant:
      case Op::withdraw: {
        if (got != "ok") return "";
        const std::string want = c.op == Op::grant ? "granted" : "withdrawn";
        std::string state = "none";
        const Json consents = s.get_consents(w.vault().admin(""), id);
        for (const auto& cur : consents["current"])
          if (cur["purpose"] == c.target && cur["channel"] == oracle_.first_channel(c.target)) state = cur["state"];
        return state == want ? "" : "the consent is " + state;
      }
      case Op::legal_hold:
        return got != "ok" || admin_view().value("legal_hold", false) ? "" : "no legal hold recorded";
      case Op::dsr_intake:
        return got != "ok:matched" || result_["subject_id"] == id ? "" : "matched another subject";
    }
    return "";
  }

  // Checks what the cell wrote to the audit log: only entries by the
  // caller's principal; a refusal audited as a denial with its code (403s)
  // and recording nothing as allowed; an allowed call naming its subject.
  void check_audit(World& w, const Cell& c, const std::string& id, const std::string& got, std::uint64_t pre) {
    ++out_.audit_checked;
    const Json entries = w.vault().service->audit_entries(
        w.caller("auditor", "audit"), {{"after", std::to_string(pre - 1)}, {"limit", "1000"}})["entries"];
    const std::string principal = "test-" + c.role;
    const bool item = got.rfind("item:", 0) == 0;
    const bool ok = got.rfind("ok", 0) == 0 || got == "item:ok";
    const std::string code = ok ? "" : item ? got.substr(5) : got;
    int denied = 0, allowed = 0, named = 0;
    for (const auto& e : entries) {
      if (e["principal"] != principal) {
        mismatch(c, "entries by " + principal + " only", "an entry by " + e["principal"].get<std::string>());
        return;
      }
      const bool names = e["subject_id"] == id || std::find(e["subject_ids"].begin(), e["subject_ids"].end(),
                                                            Json(id)) != e["subject_ids"].end();
      if (e["outcome"] == "allowed") {
        ++allowed;
        if (names) ++named;
        continue;
      }
      const std::string reason = e["reason"];
      // A call that answered may still have left a subject out (and audited why).
      if ((!code.empty() && reason != code) || (code.empty() && !is_denial(reason))) {
        mismatch(c, "denial audited as " + (code.empty() ? std::string("a denial code") : code),
                 "denial audited as " + reason);
        return;
      }
      ++denied;
    }
    if (is_denial(code) && denied == 0) mismatch(c, "refusal " + code + " audited as a denial", "no denial entry");
    if (!ok && !item && allowed > 0) mismatch(c, "refusal " + got + " records nothing allowed", "an allowed entry");
    if (item && !ok && named > 0) mismatch(c, "refused item not read", "an allowed entry names the subject");
    const bool touched = got == "ok" || got == "item:ok" || got == "ok:found" || got == "ok:present";
    if (touched && named == 0) mismatch(c, got + " audited for the subject", "no allowed entry names the subject");
  }

  const Rules& oracle_;
  MatrixRun& out_;
  Json result_;
};

// Every role × every purpose of purposes.yaml and none × `ops`, in `w`'s
// state; reads also without consent; grants of every marketing purpose
// with no declared purpose.
void run_matrix(World& w, const Rules& oracle, const std::vector<std::string>& roles, const std::vector<Op>& ops,
                MatrixRun& out) {
  Runner runner(oracle, out);
  std::vector<std::string> purposes = {""};
  for (const auto& [name, p] : oracle.purposes) purposes.push_back(name);
  for (const auto& role : roles) {
    for (const auto& purpose : purposes) {
      for (const Op op : ops) {
        Cell c{w.state(), role, purpose, op, true, ""};
        if (op == Op::grant) c.target = oracle.marketing(purpose) ? purpose : "partner_sharing";
        if (op == Op::withdraw) c.target = oracle.marketing(purpose) ? purpose : "email_marketing";
        runner.run(w, c);
        if (op == Op::read || op == Op::batch_get || op == Op::lookup || op == Op::campaign) {
          c.consented = false;
          runner.run(w, c);
        }
      }
    }
    if (std::find(ops.begin(), ops.end(), Op::grant) != ops.end())
      for (const auto& target : oracle.marketing_purposes())
        if (target != "partner_sharing") runner.run(w, Cell{w.state(), role, "", Op::grant, true, target});
  }
}

std::vector<std::string> all_roles(const Rules& r) {
  std::vector<std::string> out;
  for (const auto& [name, role] : r.roles) out.push_back(name);
  return out;
}

std::string table(const std::vector<Mismatch>& mismatches, std::size_t max_rows = 150) {
  std::ostringstream out;
  // Grouped first: the same expected -> got across many cells is one finding.
  std::map<std::string, int> groups;
  for (const auto& m : mismatches) groups[group_of(m)]++;
  out << mismatches.size() << " mismatching cells\n";
  out << "-- grouped (state | operation : expected -> got : cells)\n";
  for (const auto& [key, n] : groups) out << "  " << key << " : " << n << "\n";
  out << "-- cells (state | role | purpose | operation | consent : expected -> got)\n";
  for (std::size_t i = 0; i < mismatches.size() && i < max_rows; ++i)
    out << "  " << describe(mismatches[i].cell) << " : " << mismatches[i].expected << " -> " << mismatches[i].got
        << "\n";
  if (mismatches.size() > max_rows) out << "  ... and " << mismatches.size() - max_rows << " more\n";
  return out.str();
}

// Product mismatches this matrix found, reported to the lead (issue 15),
// as group_of() spells them. Tolerated until fixed; a listed group that no
// longer occurs fails the test, so that the list only shrinks.
// Fixed since (read_refusal and erase_subject in service.cpp): refused
// batchGet items audited; objection answered subject_restricted; erased ids
// answer not_found under every purpose; DELETE refuses a restricted subject.
const std::set<std::string> kKnownProductMismatches = {
};

// ------------------------------------------------------------ the tests

class PolicyMatrix : public ::testing::TestWithParam<State> {};

TEST_P(PolicyMatrix, EveryRolePurposeAndOperationBehavesAsThePolicySays) {
  const auto started = std::chrono::steady_clock::now();
  World w(GetParam());
  const Rules oracle = Rules::load(testing::shipped_policies());
  MatrixRun out;
  run_matrix(w, oracle, all_roles(oracle), kOps, out);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cout << "[matrix] " << name_of(GetParam()) << ": " << out.cells << " cells, " << out.audit_checked
            << " audit checks, " << out.unchanged_checked << " unchanged checks, " << out.fresh_subjects
            << " fresh subjects, " << seconds << " s\n";
  std::vector<Mismatch> unknown;
  std::set<std::string> seen;
  for (const auto& m : out.mismatches) {
    seen.insert(group_of(m));
    if (!kKnownProductMismatches.count(group_of(m))) unknown.push_back(m);
  }
  if (!unknown.empty()) ADD_FAILURE() << table(unknown);
  const std::string prefix = std::string(name_of(GetParam())) + " | ";
  for (const auto& known : kKnownProductMismatches)
    if (known.rfind(prefix, 0) == 0 && !seen.count(known))
      ADD_FAILURE() << "fixed? remove it from kKnownProductMismatches: " << known;
  for (const auto& key : seen)
    if (kKnownProductMismatches.count(key)) std::cout << "[matrix] known product mismatch: " << key << "\n";
}

INSTANTIATE_TEST_SUITE_P(States, PolicyMatrix, ::testing::ValuesIn(kStates),
                         [](const ::testing::TestParamInfo<State>& info) { return std::string(name_of(info.param)); });

// The matrix can fail: one rule flipped on either side is seen.
TEST(PolicyMatrixSelfCheck, AFlippedRuleInTheVaultsPolicyIsSeen) {
  const Rules oracle = Rules::load(testing::shipped_policies());
  World w(State::active);
  // Give `service` records.erase in the vault's policy only.
  const fs::path roles_file = w.vault().data_dir() / "policies" / "roles.yaml";
  std::stringstream text;
  text << std::ifstream(roles_file).rdbuf();
  std::string yaml = text.str();
  const std::string from = "  service:\n    operations: [records.read, records.write, consent]";
  const auto at = yaml.find(from);
  ASSERT_NE(at, std::string::npos);
  yaml.replace(at, from.size(), "  service:\n    operations: [records.read, records.write, records.erase, consent]");
  std::ofstream(roles_file) << yaml;
  std::string error;
  ASSERT_TRUE(w.vault().service->reload_policies(&error)) << error;
  MatrixRun out;
  run_matrix(w, oracle, {"service"}, {Op::erase}, out);
  EXPECT_FALSE(out.mismatches.empty());
  bool seen = false;
  for (const auto& m : out.mismatches)
    seen = seen || (describe(m.cell) == "active | service | - | erase" && m.expected == "forbidden_role" &&
                    m.got == "purpose_not_allowed");
  EXPECT_TRUE(seen) << table(out.mismatches);
}

TEST(PolicyMatrixSelfCheck, AFlippedRuleInTheOracleIsSeen) {
  Rules oracle = Rules::load(testing::shipped_policies());
  oracle.roles.at("service").operations.insert("records.erase");
  World w(State::active);
  MatrixRun out;
  run_matrix(w, oracle, {"service"}, {Op::erase}, out);
  bool seen = false;
  for (const auto& m : out.mismatches)
    seen = seen || (describe(m.cell) == "active | service | - | erase" && m.expected == "purpose_not_allowed" &&
                    m.got == "forbidden_role");
  EXPECT_TRUE(seen) << table(out.mismatches);
}

}  // namespace
}  // namespace custos
