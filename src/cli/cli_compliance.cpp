// The compliance officer's commands: data-subject requests, breaches,
// retention and legal holds. Each is a thin shell over the service façade,
// the same calls custosd makes for the matching HTTP routes.
#include <chrono>
#include <fstream>
#include <map>
#include <thread>

#include "cli_common.h"
#include "custos/dsr/regulations.h"
#include "custos/service/policy_upgrade.h"
#include "custos/service/regulations_view.h"
#include "custos/util/files.h"

namespace custos::cli {
namespace {

// Options shared by the commands below; CLI11 binds to their addresses, so
// they live as long as the App (a static inside add_compliance_commands).
struct ComplianceOptions {
  std::string id, type, regime, email, phone, external_id, channel, received_at, note, reason, to, out, purpose;
  std::string status, at, from, until, recipient;
  std::vector<std::string> principals, token_ids, categories, subjects;
  std::string format = "json", table;
  int due_within_days = -1;
  bool overdue = false, at_risk = false, dry_run = false, release = false, stdin_json = false;
  int margin_hours = -1;
  int reload_wait_s = 30;
};

void add_dsr(CLI::App& app, Globals& g, Action& action, ComplianceOptions& o) {
  auto* dsr = app.add_subcommand("dsr", "data-subject requests (GDPR, CCPA and state laws)")->require_subcommand(1);

  auto* create = dsr->add_subcommand("create", "take in a request; prints it with its due date");
  create->add_option("--type", o.type, "access, portability, rectification, erasure, restriction, objection, opt_out_sale_share");
  create->add_option("--regime", o.regime, "eu-gdpr, uk-gdpr, us-ca, us-<state>, br-lgpd, ca-pipeda, ch-nfadp (old names gdpr, ccpa, ... still work)");
  create->add_option("--email", o.email, "identify the subject by email");
  create->add_option("--phone", o.phone, "identify the subject by phone");
  create->add_option("--external-id", o.external_id, "identify the subject by external id");
  create->add_option("--channel", o.channel, "how the request arrived (email, web_form, letter, ...)");
  create->add_option("--received-at", o.received_at, "RFC 3339 time of receipt (default now)");
  create->add_option("--note", o.note, "note for the timeline (no personal data)");
  create->add_flag("--stdin", o.stdin_json, "read the whole request as JSON on stdin (needed for rectification 'changes')");
  create->callback([&] {
    action = [&] {
      Json body;
      if (o.stdin_json) {
        body = read_stdin_json();
      } else {
        if (o.type.empty() || o.regime.empty())
          throw Error(ErrorCode::invalid_argument, "--type and --regime are required (or --stdin)");
        body = {{"type", o.type}, {"regime", o.regime}, {"identifier", Json::object()}};
        if (!o.email.empty()) body["identifier"]["email"] = o.email;
        if (!o.phone.empty()) body["identifier"]["phone"] = o.phone;
        if (!o.external_id.empty()) body["identifier"]["external_id"] = o.external_id;
        if (!o.channel.empty()) body["channel"] = o.channel;
        if (!o.received_at.empty()) body["received_at"] = o.received_at;
        if (!o.note.empty()) body["note"] = o.note;
      }
      auto svc = g.open();
      print(svc->dsr_create(g.caller(*svc, "dsr_fulfilment"), body));
      return 0;
    };
  });

  auto* list = dsr->add_subcommand("list", "list requests; --overdue and --due-within-days give the deadline reports");
  list->add_option("--status", o.status, "only this status");
  list->add_flag("--overdue", o.overdue, "only requests past their due date");
  list->add_option("--due-within-days", o.due_within_days, "only open requests due within N days");
  list->callback([&] {
    action = [&] {
      std::map<std::string, std::string> q;
      if (!o.status.empty()) q["status"] = o.status;
      if (o.overdue) q["overdue"] = "true";
      if (o.due_within_days >= 0) q["due_within_days"] = std::to_string(o.due_within_days);
      auto svc = g.open();
      print(svc->dsr_list(g.caller(*svc, "dsr_fulfilment"), q));
      return 0;
    };
  });

  auto* get = dsr->add_subcommand("get", "a request with its due date, timeline and report");
  get->add_option("id", o.id, "request id")->required();
  get->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->dsr_get(g.caller(*svc, "dsr_fulfilment"), o.id));
      return 0;
    };
  });

  auto* transition = dsr->add_subcommand("transition", "move a request on; 'completed' fulfils it");
  transition->add_option("id", o.id, "request id")->required();
  transition->add_option("--to", o.to, "identity_verified, in_progress, extended, completed, denied, canceled")->required();
  transition->add_option("--reason", o.reason, "required for denied and extended");
  transition->add_option("--note", o.note, "note for the timeline (no personal data)");
  transition->add_option("--subject", o.subjects,
                         "with --to completed: act on this matched subject only (repeatable; needs --reason)");
  transition->callback([&] {
    action = [&] {
      Json body = {{"to", o.to}};
      if (!o.reason.empty()) body["reason"] = o.reason;
      if (!o.note.empty()) body["note"] = o.note;
      if (!o.subjects.empty()) body["subjects"] = o.subjects;
      auto svc = g.open();
      print(svc->dsr_transition(g.caller(*svc, "dsr_fulfilment"), o.id, body));
      return 0;
    };
  });

  auto* exp = dsr->add_subcommand("export", "the access / portability package (JSON)");
  exp->add_option("id", o.id, "request id")->required();
  exp->add_option("--out", o.out, "write to this file (mode 0600) instead of stdout");
  exp->add_option("--format", o.format, "json (the whole package) or csv (one table)")
      ->check(CLI::IsMember({"json", "csv"}));
  exp->add_option("--table", o.table, "with --format csv: fields, touchpoints, orders, consent_history, access_log");
  exp->callback([&] {
    action = [&] {
      auto svc = g.open();
      const service::Service::ExportFormat format{o.format, o.table};
      const auto caller = g.caller(*svc, "dsr_fulfilment");
      if (o.out.empty()) {
        // Streamed as it is read; stdout may be a pipe to another tool.
        svc->dsr_export(caller, o.id, format, [](std::string_view chunk) {
          std::cout.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
          return static_cast<bool>(std::cout);
        });
        std::cout.flush();
        if (o.format == "json") std::cout << "\n";
      } else {
        // Streamed too: into a private temp file, renamed into place when whole.
        util::write_file_streamed(o.out, 0600, [&](const std::function<bool(std::string_view)>& write) {
          svc->dsr_export(caller, o.id, format, write);
        });
        std::cerr << "custos: export written to " << o.out << "\n";
      }
      return 0;
    };
  });
}

void add_breach(CLI::App& app, Globals& g, Action& action, ComplianceOptions& o) {
  auto* breach = app.add_subcommand("breach", "breach incidents and notification deadlines")->require_subcommand(1);

  breach->add_subcommand("create", "open an incident from JSON on stdin (see POST /v1/breaches)")->callback([&] {
    action = [&] {
      const Json body = read_stdin_json();
      auto svc = g.open();
      print(svc->breach_create(g.caller(*svc, "breach_notification"), body));
      return 0;
    };
  });

  auto* list = breach->add_subcommand("list", "list incidents; --at-risk and --overdue give the deadline reports");
  list->add_option("--status", o.status, "only this status");
  list->add_flag("--at-risk", o.at_risk, "less than --margin-hours left on a pending deadline");
  list->add_flag("--overdue", o.overdue, "a deadline has passed unmet");
  list->add_option("--margin-hours", o.margin_hours, "margin for --at-risk (default 24)");
  list->callback([&] {
    action = [&] {
      std::map<std::string, std::string> q;
      if (!o.status.empty()) q["status"] = o.status;
      if (o.at_risk) q["at_risk"] = "true";
      if (o.overdue) q["overdue"] = "true";
      if (o.margin_hours >= 0) q["margin_hours"] = std::to_string(o.margin_hours);
      auto svc = g.open();
      print(svc->breach_list(g.caller(*svc, "breach_notification"), q));
      return 0;
    };
  });

  auto* get = breach->add_subcommand("get", "an incident with deadlines and timeline");
  get->add_option("id", o.id, "incident id")->required();
  get->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->breach_get(g.caller(*svc, "breach_notification"), o.id));
      return 0;
    };
  });

  auto* event = breach->add_subcommand("event", "append a timeline event");
  event->add_option("id", o.id, "incident id")->required();
  event->add_option("--type", o.type, "note, contained, notified, closed (authority_notified, subjects_notified: older names)")->required();
  event->add_option("--recipient", o.recipient, "notified: authority, individuals, attorney_general, media, hhs, ...");
  event->add_option("--regime", o.regime, "notified: the regime whose recipient was told (when several have it)");
  event->add_option("--at", o.at, "RFC 3339 time (default now)");
  event->add_option("--note", o.note, "note (no personal data)");
  event->callback([&] {
    action = [&] {
      Json body = {{"type", o.type}};
      if (!o.recipient.empty()) body["recipient"] = o.recipient;
      if (!o.regime.empty()) body["regime"] = o.regime;
      if (!o.at.empty()) body["at"] = o.at;
      if (!o.note.empty()) body["note"] = o.note;
      auto svc = g.open();
      print(svc->breach_add_event(g.caller(*svc, "breach_notification"), o.id, body));
      return 0;
    };
  });

  auto* compute = breach->add_subcommand("compute-affected", "subjects whose data was touched, from the audit log");
  compute->add_option("id", o.id, "incident id")->required();
  compute->add_option("--principal", o.principals, "compromised principal (repeatable)");
  compute->add_option("--token-id", o.token_ids, "compromised token id (repeatable)");
  compute->add_option("--from", o.from, "window start, RFC 3339");
  compute->add_option("--to", o.until, "window end (exclusive), RFC 3339");
  compute->add_option("--category", o.categories, "leaked data category (repeatable), when the store itself leaked");
  compute->callback([&] {
    action = [&] {
      Json body = Json::object();
      if (!o.principals.empty()) body["principals"] = o.principals;
      if (!o.token_ids.empty()) body["token_ids"] = o.token_ids;
      if (!o.from.empty()) body["from"] = o.from;
      if (!o.until.empty()) body["to"] = o.until;
      if (!o.categories.empty()) body["categories"] = o.categories;
      auto svc = g.open();
      print(svc->breach_compute_affected(g.caller(*svc, "breach_notification"), o.id, body));
      return 0;
    };
  });

  auto* affected = breach->add_subcommand("affected", "affected subjects with contact fields, for notification");
  affected->add_option("id", o.id, "incident id")->required();
  affected->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->breach_affected(g.caller(*svc, "breach_notification"), o.id, {}));
      return 0;
    };
  });
}

void add_retention_and_hold(CLI::App& app, Globals& g, Action& action, ComplianceOptions& o) {
  auto* retention = app.add_subcommand("retention", "retention limits")->require_subcommand(1);
  auto* run = retention->add_subcommand("run", "crypto-shred what policies/retention.yaml says has expired");
  run->add_flag("--dry-run", o.dry_run, "report what would be purged and kept; change nothing");
  run->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->retention_run(g.caller(*svc, "administration"), o.dry_run));
      return 0;
    };
  });

  CLI::App* subject = app.get_subcommand("subject");
  auto* hold = subject->add_subcommand("hold", "place (or with --release lift) a legal hold on a subject");
  hold->add_option("id", o.id, "subject id")->required();
  hold->add_flag("--release", o.release, "lift the hold");
  hold->callback([&] {
    action = [&] {
      auto svc = g.open();
      print(svc->set_legal_hold(g.caller(*svc, "legal_claims"), o.id, !o.release));
      return 0;
    };
  });
}

// This release's policy files: the source tree's in a build, the
// package's once installed (as `custos init` copies them).
fs::path shipped_policies() {
  const fs::path shipped = CUSTOS_SHIPPED_POLICIES;
  return fs::exists(shipped) ? shipped : fs::path(CUSTOS_INSTALLED_POLICIES);
}

// The rule files in force: --policies, else the data directory's, else the
// shipped ones (officers may ask before any vault exists).
std::shared_ptr<const dsr::Regulations> load_regulations(const Globals& g) {
  fs::path dir = g.policies.empty() ? fs::path(g.data_dir) / "policies" : fs::path(g.policies);
  if (g.policies.empty() && !fs::exists(dir / "regulations.yaml")) dir = shipped_policies();
  return dsr::Regulations::load(dir / "regulations.yaml");
}

// `custos policy upgrade`: a previous release's policy files to this
// release's format, audited (service/policy_upgrade.h).
void add_policy(CLI::App& app, Globals& g, Action& action, ComplianceOptions& o) {
  auto* policy = app.add_subcommand("policy", "policy files")->require_subcommand(1);
  policy->add_subcommand("upgrade",
                         "convert a previous release's regulations.yaml (keeps it as regulations.yaml.v1; adds "
                         "calendars.yaml) and record it in the audit log")
      ->callback([&] {
        action = [&] {
          service::PolicyUpgradeOptions up;
          up.data_dir = g.data_dir;
          up.store_url = g.store;
          up.passphrase = g.passphrase();
          if (!g.policies.empty()) up.policy_dir = g.policies;
          up.shipped_dir = shipped_policies();
          print(service::upgrade_policies(up));
          return 0;
        };
      });
  // `custos cluster status`: the nodes on this store, the policy each runs
  // and who holds each lease (the node that signs audit checkpoints).
  app.add_subcommand("cluster", "the custosd nodes on this store")
      ->require_subcommand(1)
      ->add_subcommand("status",
                       "each node: when it last reported, and the policy generation it runs; who holds each lease")
      ->callback([&] {
        action = [&] {
          auto svc = g.open();
          print(svc->cluster_status(g.caller(*svc, "")));
          return 0;
        };
      });
  // `custos policy reload`: every custosd on the store re-reads its policy
  // files (as SIGHUP does for one); waits until each live node has said
  // what it did. Exit 1 if a node refused the files or did not answer.
  auto* reload = policy->add_subcommand(
      "reload", "make every custosd on this store re-read its policy files, and wait for each to report");
  reload->add_option("--wait", o.reload_wait_s, "seconds to wait for the nodes (default 30; 0: do not wait)")
      ->check(CLI::Range(0, 3600));
  reload->callback([&] {
    action = [&] {
      auto svc = g.open();
      const auto caller = g.caller(*svc, "");
      const std::int64_t generation = svc->request_policy_reload(caller)["generation"].get<std::int64_t>();
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.reload_wait_s);
      Json status;
      Json waiting = Json::array(), refused = Json::array(), nodes = Json::array();
      // Bounded: at most --wait seconds, five looks a second.
      for (;;) {
        status = svc->cluster_status(caller);
        waiting = Json::array();
        refused = Json::array();
        nodes = Json::array();
        for (const auto& n : status["nodes"]) {
          if (!n["live"].get<bool>()) continue;
          nodes.push_back(n);
          if (n["policy_generation"].get<std::int64_t>() < generation)
            waiting.push_back(n["node_id"]);
          else if (!n["policy_ok"].get<bool>())
            refused.push_back(n["node_id"]);
        }
        if (waiting.empty() || std::chrono::steady_clock::now() >= deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      Json out = {{"generation", generation}, {"nodes", nodes}, {"waiting", waiting}, {"refused", refused}};
      if (nodes.empty())
        out["note"] = "no custosd reported in the last 15 s; a node that starts later reads the files as they are then";
      print(out);
      return waiting.empty() && refused.empty() ? 0 : 1;
    };
  });
}

void add_regulations(CLI::App& app, Globals& g, Action& action, ComplianceOptions& o) {
  auto* regs = app.add_subcommand("regulations", "statutory deadlines: the rules and their sources")->require_subcommand(1);
  auto* show = regs->add_subcommand("show", "the rules of a regime with citations (no REGIME: list regimes and calendars)");
  show->add_option("regime", o.regime, "eu-gdpr, uk-gdpr, us-ca, us-<state>, br-lgpd, ca-pipeda, ch-nfadp, ...");
  show->callback([&] {
    action = [&] {
      print(service::regulations_show(*load_regulations(g), o.regime));
      return 0;
    };
  });
  auto* due = regs->add_subcommand("due", "the due dates of a request received at a time, without creating one");
  due->add_option("--regime", o.regime, "regime name or alias")->required();
  due->add_option("--type", o.type, "access, portability, ..., opt_out_sale_share; or breach (each recipient's clock)")->required();
  due->add_option("--received-at", o.received_at, "RFC 3339 time of receipt (or discovery)")->required();
  due->callback([&] {
    action = [&] {
      print(service::regulations_due(*load_regulations(g), o.regime, o.type, o.received_at));
      return 0;
    };
  });
}

}  // namespace

void add_compliance_commands(CLI::App& app, Globals& g, Action& action) {
  static ComplianceOptions options;
  add_dsr(app, g, action, options);
  add_breach(app, g, action, options);
  add_retention_and_hold(app, g, action, options);
  add_regulations(app, g, action, options);
  add_policy(app, g, action, options);
}

}  // namespace custos::cli
