// `custos system secret NAME` and `custos outbox list|retry`: downstream
// systems' signing secrets and the outbox of events sent to them.
#include <unistd.h>

#include <sodium.h>

#include <iomanip>

#include "cli_common.h"

namespace custos::cli {
namespace {

struct OutboxOptions {
  std::string system, status, request, id;
  std::size_t limit = 100;
  bool json = false;
};

// One line per event on a terminal; ids and names only, no payloads.
void print_table(const Json& doc) {
  std::cout << std::left << std::setw(37) << "ID" << std::setw(24) << "SYSTEM" << std::setw(15) << "EVENT"
            << std::setw(10) << "STATUS" << std::setw(9) << "ATTEMPTS" << "LAST\n";
  for (const auto& e : doc["events"]) {
    std::string last = e.contains("last_error") ? e["last_error"].get<std::string>()
                       : e.contains("last_status") ? "HTTP " + std::to_string(e["last_status"].get<int>())
                                                   : "";
    std::cout << std::setw(37) << e["id"].get<std::string>() << std::setw(24) << e["system"].get<std::string>()
              << std::setw(15) << e["event"].get<std::string>() << std::setw(10) << e["status"].get<std::string>()
              << std::setw(9) << e["attempts"].get<int>() << last << "\n";
  }
  std::cout << doc["count"].get<std::size_t>() << " event(s)\n";
}

}  // namespace

void add_outbox_commands(CLI::App& app, Globals& g, Action& action) {
  auto o = std::make_shared<OutboxOptions>();

  auto* system = app.add_subcommand("system", "downstream systems (policies/systems.yaml)")->require_subcommand(1);
  auto* secret = system->add_subcommand(
      "secret", "create or replace a system's webhook signing secret (kept wrapped by the master key); prints it once");
  secret->add_option("name", o->system, "system name from systems.yaml")->required();
  secret->callback([&action, &g, o] {
    action = [&g, o] {
      auto svc = g.open();
      Json r = svc->system_secret(g.caller(*svc, "administration"), o->system);
      std::string s = r["secret"].get<std::string>();
      std::cout << s << std::endl;
      sodium_memzero(s.data(), s.size());
      return 0;
    };
  });

  auto* outbox = app.add_subcommand("outbox", "events sent to downstream systems, and dead letters")->require_subcommand(1);
  auto* list = outbox->add_subcommand("list", "list outbox events (a table on a terminal, JSON with --json or piped)");
  list->add_option("--status", o->status, "pending | delivered | dead | destroyed");
  list->add_option("--system", o->system, "only this system's events");
  list->add_option("--request", o->request, "only this data-subject request's events");
  list->add_option("--limit", o->limit, "at most this many (default 100)")->check(CLI::Range(1, 10000));
  list->add_flag("--json", o->json, "JSON even on a terminal");
  list->callback([&action, &g, o] {
    action = [&g, o] {
      auto svc = g.open();
      std::map<std::string, std::string> q{{"limit", std::to_string(o->limit)}};
      if (!o->status.empty()) q["status"] = o->status;
      if (!o->system.empty()) q["system"] = o->system;
      if (!o->request.empty()) q["request"] = o->request;
      const Json doc = svc->outbox_list(g.caller(*svc, "administration"), q);
      if (o->json || !isatty(STDOUT_FILENO))
        print(doc);
      else
        print_table(doc);
      return 0;
    };
  });
  auto* retry = outbox->add_subcommand("retry", "put a dead letter back in the queue (custosd sends it again)");
  retry->add_option("id", o->id, "event id (msg_...)")->required();
  retry->callback([&action, &g, o] {
    action = [&g, o] {
      auto svc = g.open();
      print(svc->outbox_retry(g.caller(*svc, "administration"), o->id));
      return 0;
    };
  });
}

}  // namespace custos::cli
