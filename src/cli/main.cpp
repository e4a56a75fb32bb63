// custos — the operator's and compliance officer's command line.
//
// Data operations go through the same service façade as custosd; by default
// the CLI acts as the local operator (whoever can read the key files), or as
// a token's principal with --token / CUSTOS_TOKEN.
//
// Exit codes: 0 ok, 2 usage or invalid input, 3 not found, 4 denied,
// 5 integrity failure, 1 anything else. Errors go to stderr on one line and
// never contain a personal value.
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "custos/crypto/keyring.h"
#include "custos/error.h"
#include "custos/service/service.h"
#include "custos/util/files.h"
#include "custos/util/process.h"
#include "custos_audit/verify.h"
#include "cli_common.h"

namespace {
using namespace custos::cli;
}  // namespace

int main(int argc, char** argv) {
  custos::util::harden_process();  // no core dumps of keys or plaintext
  CLI::App app{"custos — customer-data vault: keys, subjects, audit"};
  app.require_subcommand(1);
  Globals g;
  app.add_option("--data-dir", g.data_dir, "data directory (default ./custos-data, or $CUSTOS_DATA_DIR)");
  app.add_option("--passphrase-file", g.passphrase_file,
                 "derive the master key from this passphrase (Argon2id) instead of a key file");
  app.add_option("--token", g.token, "act as this API token's principal (default: the local operator)");
  app.add_option("--policies", g.policies, "policy directory (default <data-dir>/policies)");
  app.add_option("--request-id", g.request_id, "request id recorded in the audit log");
  app.add_option("--store", g.store,
                 "sqlcipher: (default, in the data dir) or postgresql://… (or $CUSTOS_STORE; after init the data dir "
                 "remembers it)");

  Action action;

  // init
  auto* init = app.add_subcommand("init", "create the data directory, master key, store and an admin token");
  bool fast_kdf = false;
  init->add_flag("--fast-kdf", fast_kdf, "cheaper Argon2id parameters (tests only)");
  init->callback([&] {
    action = [&] {
      custos::service::InitOptions o;
      o.data_dir = g.data_dir;
      o.store_url = g.store;
      o.passphrase = g.passphrase();
      o.fast_kdf = fast_kdf;
      // The source tree's policies in a build, the package's once installed.
      fs::path shipped = CUSTOS_SHIPPED_POLICIES;
      if (!fs::exists(shipped)) shipped = CUSTOS_INSTALLED_POLICIES;
      o.shipped_policies = g.policies.empty() ? shipped : fs::path(g.policies);
      const auto r = custos::service::init_data_dir(o);
      std::cout << "initialised " << g.data_dir << "\n"
                << "admin token (shown once; also saved to " << r.admin_token_file.string()
                << ", mode 0600): " << r.admin_token << "\n"
                << "audit verifier key: " << r.audit_verifier_key << "\n";
      return 0;
    };
  });

  // token
  auto* token = app.add_subcommand("token", "API tokens")->require_subcommand(1);
  std::string role, name;
  auto* token_create = token->add_subcommand("create", "create a token; prints it once");
  token_create->add_option("--role", role, "role from roles.yaml")->required();
  token_create->add_option("--name", name, "unique token name")->required();
  token_create->callback([&] {
    action = [&] {
      auto svc = g.open();
      const Json r = svc->create_token(g.caller(*svc, "administration"), name, role);
      std::cout << r["token"].get<std::string>() << "\n";
      return 0;
    };
  });
  auto* token_revoke = token->add_subcommand("revoke", "revoke a token by name");
  token_revoke->add_option("name", name, "token name")->required();
  token_revoke->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->revoke_token(g.caller(*svc, "administration"), name));
      return 0;
    };
  });

  // key
  auto* key = app.add_subcommand("key", "master keys")->require_subcommand(1);
  key->add_subcommand("rotate", "new master-key version; re-wraps every key (safe while custosd runs)")
      ->callback([&] {
        action = [&] {
          auto svc = g.open();
          print(svc->rotate_keys(g.caller(*svc, "administration")));
          return 0;
        };
      });
  key->add_subcommand("retire", "delete master-key versions nothing refers to any more")->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->retire_keys(g.caller(*svc, "administration")));
      return 0;
    };
  });

  // subject
  auto* subject = app.add_subcommand("subject", "data subjects")->require_subcommand(1);
  std::string id, purpose, email, phone, external_id;
  std::string on_conflict;
  auto* subject_put = subject->add_subcommand("put", "create a subject from JSON on stdin ({\"fields\": {...}})");
  subject_put->add_option("--on-conflict", on_conflict,
                          "when an email, phone or external id already names a subject: reject (default), merge, create");
  subject_put->callback([&] {
    action = [&] {
      Json body = read_stdin_json();
      if (!on_conflict.empty() && body.is_object()) body["on_conflict"] = on_conflict;
      auto svc = g.open();
      print(svc->create_subject(g.caller(*svc, purpose), body));
      return 0;
    };
  });
  auto* subject_get = subject->add_subcommand("get", "read a subject");
  subject_get->add_option("id", id, "subject id")->required();
  subject_get->add_option("--purpose", purpose, "declared purpose")->required();
  subject_get->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->get_subject(g.caller(*svc, purpose), id));
      return 0;
    };
  });
  auto* subject_find = subject->add_subcommand("find", "exact lookup through a blind index");
  auto* by_email = subject_find->add_option("--email", email, "email address");
  auto* by_phone = subject_find->add_option("--phone", phone, "phone number");
  auto* by_ext = subject_find->add_option("--external-id", external_id, "external id");
  by_email->excludes(by_phone)->excludes(by_ext);
  by_phone->excludes(by_ext);
  subject_find->add_option("--purpose", purpose, "declared purpose")->required();
  subject_find->callback([&] {
    action = [&] {
      std::string field = "email", value = email;
      if (!phone.empty()) field = "phone", value = phone;
      if (!external_id.empty()) field = "external_id", value = external_id;
      if (value.empty()) throw Error(ErrorCode::invalid_argument, "give one of --email, --phone, --external-id");
      auto svc = g.open();
      const Json r = svc->find_subjects(g.caller(*svc, purpose), field, value);
      print(r);
      return r["subjects"].empty() ? 3 : 0;
    };
  });
  std::string erase_reason;
  auto* subject_erase =
      subject->add_subcommand("erase", "crypto-shred a subject outside a data-subject request (irreversible)");
  subject_erase->add_option("id", id, "subject id")->required();
  subject_erase->add_option("--purpose", purpose, "declared purpose (dsr_fulfilment or administration)")->required();
  subject_erase->add_option("--reason", erase_reason, "why, e.g. a ticket reference (1-128 bytes, audited)")
      ->required();
  subject_erase->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->erase_subject(g.caller(*svc, purpose), id, erase_reason));
      return 0;
    };
  });

  // Identity resolution: clusters of subjects sharing an identifier, and merging them.
  std::string dup_after;
  std::size_t dup_limit = 100;
  auto* subject_dups = subject->add_subcommand("duplicates", "subjects that share an email, phone or external id");
  subject_dups->add_option("--purpose", purpose, "declared purpose (dsr_fulfilment or administration)")->required();
  subject_dups->add_option("--after", dup_after, "next_after of the previous page");
  subject_dups->add_option("--limit", dup_limit, "clusters per page (1-1000)");
  subject_dups->callback([&] {
    action = [&] {
      auto svc = g.open();
      std::map<std::string, std::string> q = {{"limit", std::to_string(dup_limit)}};
      if (!dup_after.empty()) q["after"] = dup_after;
      print(svc->subject_duplicates(g.caller(*svc, purpose), q));
      return 0;
    };
  });
  std::vector<std::string> merge_from;
  std::string merge_reason;
  auto* subject_merge = subject->add_subcommand(
      "merge", "merge subjects into ID: fills its missing fields, moves their records, shreds their keys (irreversible)");
  subject_merge->add_option("id", id, "the subject that remains")->required();
  subject_merge->add_option("--from", merge_from, "a subject to merge into ID (repeatable)")->required();
  subject_merge->add_option("--purpose", purpose, "declared purpose (dsr_fulfilment or administration)")->required();
  subject_merge->add_option("--reason", merge_reason, "why, e.g. a ticket reference (1-128 bytes, audited)")->required();
  subject_merge->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->merge_subjects(g.caller(*svc, purpose), id, {{"subjects", merge_from}, {"reason", merge_reason}}));
      return 0;
    };
  });

  // campaign / analytics
  auto* campaign = app.add_subcommand("campaign", "consented campaign data")->require_subcommand(1);
  std::string channel, segment;
  std::vector<std::string> fields;
  auto* campaign_fetch = campaign->add_subcommand("fetch", "stream consented subjects as NDJSON");
  campaign_fetch->add_option("--purpose", purpose, "marketing purpose")->required();
  campaign_fetch->add_option("--channel", channel, "channel (email, sms, ...)")->required();
  campaign_fetch->add_option("--segment", segment, "RFM segment from segments.yaml");
  campaign_fetch->add_option("--fields", fields, "fields wanted")->required()->delimiter(',');
  campaign_fetch->callback([&] {
    action = [&] {
      auto svc = g.open();
      Json body = {{"purpose", purpose}, {"channel", channel}, {"fields", fields}};
      if (!segment.empty()) body["segment"] = segment;
      svc->campaign_fetch(g.caller(*svc, purpose), body, [](const std::string& line) {
        std::cout << line;
        return static_cast<bool>(std::cout);
      });
      return 0;
    };
  });
  auto* analytics = app.add_subcommand("analytics", "identity-free analytics")->require_subcommand(1);
  analytics->add_subcommand("rfm", "RFM distribution, segment sizes and CLV")->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->analytics_rfm(g.caller(*svc, "analytics")));
      return 0;
    };
  });

  // audit
  auto* audit = app.add_subcommand("audit", "the audit log")->require_subcommand(1);
  std::string out_file, in_file, pubkey_file;
  auto* audit_export = audit->add_subcommand("export", "write a self-contained, verifiable export");
  audit_export->add_option("--out", out_file, "output file")->required();
  audit_export->callback([&] {
    action = [&] {
      auto svc = g.open();
      // A private temp file (0600, O_EXCL|O_NOFOLLOW) renamed into place:
      // a link planted at the output path or beside it is never written through.
      custos::util::AtomicFile out(out_file, 0600);
      svc->audit_export(g.caller(*svc, "audit"), out.stream());
      out.commit();
      std::cout << "wrote " << out_file << "\n";
      return 0;
    };
  });
  auto* audit_verify = audit->add_subcommand("verify", "verify an export against the audit public key");
  audit_verify->add_option("file", in_file, "export file")->required();
  audit_verify->add_option("--pubkey", pubkey_file, "verifier key file (default <data-dir>/audit.pub)");
  audit_verify->callback([&] {
    action = [&] {
      const fs::path key_path = pubkey_file.empty() ? fs::path(g.data_dir) / "audit.pub" : fs::path(pubkey_file);
      std::string vkey = custos::util::read_text_file(key_path);
      while (!vkey.empty() && (vkey.back() == '\n' || vkey.back() == '\r')) vkey.pop_back();
      std::ifstream in(in_file, std::ios::binary);
      if (!in) throw Error(ErrorCode::not_found, "cannot read export file " + in_file);
      const auto result = custos::auditfmt::verify_export(in, vkey);
      if (!result.ok) {
        std::cerr << "custos: integrity failure: " << one_line(result.error) << "\n";
        return 5;
      }
      std::cout << result.summary << "\n";
      return 0;
    };
  });
  audit->add_subcommand("pubkey", "print the audit verifier (public) key")->callback([&] {
    action = [&] {
      const fs::path p = fs::path(g.data_dir) / "audit.pub";
      if (fs::exists(p)) {
        std::cout << custos::util::read_text_file(p);
      } else {
        auto svc = g.open();
        std::cout << svc->audit_verifier_key() << "\n";
      }
      return 0;
    };
  });
  audit->add_subcommand("checkpoint", "sign the current tree head now and print it")->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->audit_checkpoint(g.caller(*svc, "audit")));
      return 0;
    };
  });

  add_compliance_commands(app, g, action);
  add_ops_commands(app, g, action);
  add_outbox_commands(app, g, action);
  add_integration_commands(app, g, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << "custos: usage: " << one_line(e.what()) << " (see --help)\n";
    return 2;
  }
  try {
    return action ? action() : 2;
  } catch (const Error& e) {
    std::cerr << "custos: " << custos::code_name(e.code()) << ": " << one_line(e.what()) << "\n";
    return exit_code_for(e.code());
  } catch (const std::exception& e) {
    // Library messages (yaml, json, filesystem) may quote input: keep only the kind.
    std::cerr << "custos: internal error (" << typeid(e).name() << ")\n";
    return 1;
  }
}
