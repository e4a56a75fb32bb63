// Shared pieces of the `custos` command line: global options, the caller
// every command acts as, printing and exit codes.
#ifndef CUSTOS_CLI_CLI_COMMON_H_
#define CUSTOS_CLI_CLI_COMMON_H_

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "custos/crypto/keyring.h"
#include "custos/error.h"
#include "custos/service/service.h"

namespace custos::cli {

namespace fs = std::filesystem;
using custos::Error;
using custos::ErrorCode;
using custos::service::Json;

inline int exit_code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
    case ErrorCode::invalid_field:
    case ErrorCode::payload_too_large: return 2;
    case ErrorCode::not_found: return 3;
    case ErrorCode::unauthenticated:
    case ErrorCode::forbidden_role:
    case ErrorCode::purpose_not_allowed:
    case ErrorCode::consent_missing:
    case ErrorCode::consent_capture_not_allowed:
    case ErrorCode::subject_restricted:
    case ErrorCode::second_approver_required: return 4;
    case ErrorCode::duplicate_subject: return 1;
    case ErrorCode::integrity: return 5;
    default: return 1;
  }
}

inline std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

struct Globals {
  std::string data_dir = env_or("CUSTOS_DATA_DIR", "./custos-data");
  std::string passphrase_file = env_or("CUSTOS_PASSPHRASE_FILE", "");
  std::string token = env_or("CUSTOS_TOKEN", "");
  std::string store = env_or("CUSTOS_STORE", "");  // empty: what the data dir remembers, else SQLCipher
  std::string policies;
  std::string request_id;

  std::optional<custos::crypto::Passphrase> passphrase() const {
    if (passphrase_file.empty()) return std::nullopt;
    return custos::crypto::read_passphrase_file(passphrase_file);
  }

  std::unique_ptr<custos::service::Service> open() const {
    custos::service::OpenOptions o;
    o.data_dir = data_dir;
    o.store_url = store;
    o.passphrase = passphrase();
    if (!policies.empty()) o.policy_dir = policies;
    o.defer_regulations = true;  // most commands never count a deadline
    return custos::service::Service::open(o);
  }

  custos::service::Caller caller(custos::service::Service& svc, const std::string& purpose) const {
    custos::service::Caller c;
    c.principal = token.empty() ? svc.local_operator() : svc.authenticate(token);
    c.purpose = purpose;
    c.request_id = request_id.empty() ? "cli" : request_id;
    return c;
  }
};

inline void print(const Json& doc) { std::cout << doc.dump(2) << "\n"; }

inline Json read_stdin_json() {
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(ErrorCode::invalid_argument,
                "standard input is not valid JSON (at byte " + std::to_string(e.byte) + ")");
  }
}

// The command being run, set by the chosen subcommand's callback.
using Action = std::function<int()>;

// Adds `dsr`, `breach`, `retention` and `subject hold` (cli_compliance.cpp).
void add_compliance_commands(CLI::App& app, Globals& g, Action& action);

// Adds `backup`, `backup verify` and `restore` (cli_ops.cpp).
void add_ops_commands(CLI::App& app, Globals& g, Action& action);

// Adds `system secret` and `outbox list|retry` (cli_outbox.cpp).
void add_outbox_commands(CLI::App& app, Globals& g, Action& action);
// Adds `import`, `consent`, `order`, `touchpoint`, `audit entries` and
// `token list` (cli_integration.cpp); call after `audit` and `token` exist.
void add_integration_commands(CLI::App& app, Globals& g, Action& action);

}  // namespace custos::cli

#endif  // CUSTOS_CLI_CLI_COMMON_H_
