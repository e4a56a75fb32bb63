#include "custos/outbox/systems.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <arpa/inet.h>

#include "custos/error.h"

namespace custos::outbox {
namespace {

bool loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

bool valid_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

std::vector<std::string> strings(const YAML::Node& n, const std::string& where) {
  if (!n) return {};
  if (!n.IsSequence()) throw Error(ErrorCode::invalid_argument, where + ": expected a list");
  return n.as<std::vector<std::string>>();
}

}  // namespace

void check_url(const std::string& url, const std::string& where) {
  if (url.size() > 2048) throw Error(ErrorCode::invalid_argument, where + ": url is longer than 2048 bytes");
  if (std::any_of(url.begin(), url.end(), [](unsigned char c) { return c <= 0x20 || c >= 0x7f; }))
    throw Error(ErrorCode::invalid_argument, where + ": url holds spaces or control characters");
  std::string rest;
  bool https = false;
  if (url.rfind("https://", 0) == 0) {
    https = true;
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    throw Error(ErrorCode::invalid_argument, where + ": url must be https:// (or http:// to a loopback host)");
  }
  const std::string authority = rest.substr(0, rest.find_first_of("/?#"));
  // Credentials in a policy file would be read by everyone who reads policies.
  if (authority.find('@') != std::string::npos)
    throw Error(ErrorCode::invalid_argument, where + ": url may not carry user info; the system's secret signs each delivery");
  std::string host;
  if (!authority.empty() && authority[0] == '[') {
    const auto close = authority.find(']');
    if (close == std::string::npos) throw Error(ErrorCode::invalid_argument, where + ": url has an unclosed IPv6 host");
    host = authority.substr(1, close - 1);
  } else {
    host = authority.substr(0, authority.find(':'));
  }
  if (host.empty()) throw Error(ErrorCode::invalid_argument, where + ": url has no host");
  if (!https && !loopback_host(host))
    throw Error(ErrorCode::invalid_argument,
                where + ": plain http:// is allowed only to a loopback host (127.0.0.0/8, ::1, localhost); use https://");
}

std::shared_ptr<const Systems> Systems::load(const std::filesystem::path& file,
                                             const std::set<std::string>& schema_fields) {
  auto out = std::make_shared<Systems>();
  if (!std::filesystem::exists(file)) return out;
  const std::string base = file.filename().string();
  try {
    const YAML::Node root = YAML::LoadFile(file.string());
    if (!root["systems"]) return out;
    if (!root["systems"].IsSequence()) throw Error(ErrorCode::invalid_argument, base + ": 'systems' must be a list");
    static const std::set<std::string> kKeys = {"name",   "recipient", "categories",           "purposes", "url",
                                                "events", "fields",    "confirmation_required", "token"};
    std::size_t index = 0;
    for (const auto& n : root["systems"]) {
      std::string where = base + ": system #" + std::to_string(++index);
      if (!n.IsMap()) throw Error(ErrorCode::invalid_argument, where + ": expected a mapping");
      System s;
      s.name = n["name"] ? n["name"].as<std::string>() : "";
      if (!valid_name(s.name))
        throw Error(ErrorCode::invalid_argument, where + ": 'name' must be 1-64 of a-z, 0-9, '-', '_'");
      where = base + ": system '" + s.name + "'";
      for (const auto& kv : n) {
        const auto key = kv.first.as<std::string>();
        if (!kKeys.count(key)) throw Error(ErrorCode::invalid_argument, where + ": unknown key '" + key.substr(0, 32) + "'");
      }
      if (out->find(s.name)) throw Error(ErrorCode::invalid_argument, where + ": listed twice");
      s.recipient = n["recipient"] ? n["recipient"].as<std::string>() : "";
      s.categories = strings(n["categories"], where + ": categories");
      s.purposes = strings(n["purposes"], where + ": purposes");
      s.token = n["token"] ? n["token"].as<std::string>() : s.name;
      if (n["url"]) {
        s.url = n["url"].as<std::string>();
        check_url(s.url, where);
      }
      for (const auto& e : strings(n["events"], where + ": events")) {
        if (std::find(kEventTypes.begin(), kEventTypes.end(), e) == kEventTypes.end())
          throw Error(ErrorCode::invalid_argument, where + ": unknown event '" + e.substr(0, 32) +
                                                       "' (erasure, rectification, restriction, objection, opt_out, consent)");
        s.events.insert(e);
      }
      if (!s.events.empty() && s.url.empty())
        throw Error(ErrorCode::invalid_argument, where + ": 'events' need a 'url' to deliver them to");
      for (const auto& f : strings(n["fields"], where + ": fields")) {
        if (!schema_fields.count(f))
          throw Error(ErrorCode::invalid_argument, where + ": unknown field '" + f.substr(0, 32) + "' (schema.yaml)");
        s.fields.insert(f);
      }
      s.confirmation_required = n["confirmation_required"] ? n["confirmation_required"].as<bool>() : false;
      if (s.confirmation_required && !s.receives("erasure"))
        throw Error(ErrorCode::invalid_argument, where + ": confirmation_required needs the 'erasure' event and a url");
      out->systems_.push_back(std::move(s));
    }
  } catch (const YAML::Exception& e) {
    throw Error(ErrorCode::invalid_argument, base + ": " + e.msg.substr(0, 120));
  }
  return out;
}

const System* Systems::find(std::string_view name) const {
  for (const auto& s : systems_)
    if (s.name == name) return &s;
  return nullptr;
}

const System* Systems::by_token(std::string_view token_name) const {
  for (const auto& s : systems_)
    if (!s.url.empty() && s.token == token_name) return &s;
  return nullptr;
}

}  // namespace custos::outbox
