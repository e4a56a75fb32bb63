// custos/outbox/systems.h — the downstream systems changes are pushed to
// (policies/systems.yaml).
//
// Each system is a recipient of personal data (listed in access exports,
// GDPR Art. 15(1)(c)); one with a `url` is also told of the changes it
// subscribes to (Art. 19): erasure, rectification, restriction, objection,
// opt_out (CCPA do-not-sell/share) and consent. Its signing secret is never
// in the file: `custos system secret NAME` creates it, wrapped by the master
// key in the store (Outbox::set_secret).
//
// A URL must be https://, or http:// to a loopback host (127.0.0.0/8, ::1,
// localhost); anything else refuses the whole file at load, so a reload
// (SIGHUP) that would send personal data in clear over a network keeps the
// systems in force.
//
// Immutable once loaded: safe to share between threads.
#pragma once

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace custos::outbox {

// The events a system may subscribe to.
inline const std::vector<std::string> kEventTypes = {"erasure",   "rectification", "restriction",
                                                     "objection", "opt_out",       "consent"};

struct System {
  std::string name;
  std::string recipient;                 // who it is, for disclosures
  std::vector<std::string> categories;   // data categories disclosed to it
  std::vector<std::string> purposes;
  std::string url;                       // empty: a recipient that is not notified
  std::set<std::string> events;          // of kEventTypes
  std::set<std::string> fields;          // schema fields a rectification may carry to it
  bool confirmation_required = false;    // an erasure waits for its confirmation
  std::string token;                     // name of the API token it confirms with (default: name)

  bool receives(std::string_view event) const { return !url.empty() && events.count(std::string(event)) > 0; }
};

class Systems {
 public:
  // Loads and checks `file` (a missing file: no systems). `schema_fields`
  // are the field names `fields` may use. Throws Error(invalid_argument)
  // naming the entry and what is wrong with it (never a URL's user info).
  static std::shared_ptr<const Systems> load(const std::filesystem::path& file,
                                             const std::set<std::string>& schema_fields);

  const std::vector<System>& all() const { return systems_; }
  const System* find(std::string_view name) const;
  // The system whose confirmations come with the token named `token_name`.
  const System* by_token(std::string_view token_name) const;

 private:
  std::vector<System> systems_;
};

// Throws Error(invalid_argument, "<where>: ...") unless `url` is an https://
// URL, or an http:// URL whose host is loopback. No user info, no spaces.
void check_url(const std::string& url, const std::string& where);

}  // namespace custos::outbox
