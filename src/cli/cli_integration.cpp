// `custos import`, `consent record|list|confirm`, `order add`,
// `touchpoint add`, `audit entries` and `token list` (issue 18): what
// integrators and operators script.
//
// Output: a table when stdout is a terminal; JSON with --json or when
// stdout is not a terminal (a pipe, a file), so scripts never parse tables.
#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "cli_common.h"
#include "custos/util/files.h"

namespace custos::cli {
namespace {

bool stdout_is_terminal() { return ::isatty(STDOUT_FILENO) == 1; }

std::string cell(const Json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// A plain text table: a header row, a rule, one row per item.
void print_table(const std::vector<std::string>& headers, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(headers.size());
  for (std::size_t c = 0; c < headers.size(); ++c) width[c] = headers[c].size();
  for (const auto& r : rows)
    for (std::size_t c = 0; c < r.size() && c < width.size(); ++c) width[c] = std::max(width[c], r[c].size());
  auto line = [&](const std::vector<std::string>& r) {
    std::string out;
    for (std::size_t c = 0; c < width.size(); ++c) {
      const std::string v = c < r.size() ? r[c] : "";
      out += v + (c + 1 < width.size() ? std::string(width[c] - v.size() + 2, ' ') : "");
    }
    std::cout << out << "\n";
  };
  line(headers);
  std::vector<std::string> rule;
  for (auto w : width) rule.push_back(std::string(w, '-'));
  line(rule);
  for (const auto& r : rows) line(r);
}

// An object as a two-column table (key, value).
void print_object(const Json& doc) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& [k, v] : doc.items()) rows.push_back({k, cell(v)});
  print_table({"property", "value"}, rows);
}

// JSON (indented) unless a terminal reads it and --json was not given; then `table`.
void emit(bool json, const Json& doc, const std::function<void()>& table) {
  if (json || !stdout_is_terminal()) {
    print(doc);
  } else {
    table();
  }
}

std::string file_sha256(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, "cannot read " + path.string());
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  std::vector<char> buf(1 << 16);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = in.gcount();
    if (n > 0) crypto_hash_sha256_update(&st, reinterpret_cast<const unsigned char*>(buf.data()), static_cast<unsigned long long>(n));
  }
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&st, digest);
  char hex[2 * crypto_hash_sha256_BYTES + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  sodium_memzero(buf.data(), buf.size());
  return std::string("sha256:") + hex;
}

struct IntegrationOptions {
  bool json = false;
  // import
  std::string file, errors_file, import_id, on_conflict = "reject";
  std::size_t chunk_lines = 1000;
  std::uint64_t max_bytes = std::uint64_t{1} << 30;
  // consent / order / touchpoint
  std::string subject, purpose, channel, event, source, at, expires_at, evidence, token;
  bool double_opt_in = false;
  bool progress = false;
  std::int64_t amount_minor = 0;
  std::string currency, type, notes;
  // audit entries
  std::string principal, from, to, operation, audit_purpose;
  std::size_t limit = 100;
  std::string after;
};

}  // namespace

void add_integration_commands(CLI::App& app, Globals& g, Action& action) {
  auto o = std::make_shared<IntegrationOptions>();

  // ---- import
  auto* import = app.add_subcommand("import", "import customers from an NDJSON file (one customer per line)");
  import->add_option("file", o->file, "NDJSON file")->required();
  import->add_option("--on-conflict", o->on_conflict,
                     "when an email or phone already names a subject: reject (default), merge, create")
      ->check(CLI::IsMember({"reject", "merge", "create"}));
  import->add_option("--errors", o->errors_file, "error file, one JSON line per failed line (default FILE.errors)");
  import->add_option("--import-id", o->import_id, "resume key (default sha256:<hash of the file>)");
  import->add_option("--chunk", o->chunk_lines, "lines per commit (1-1000, default 1000; a chunk also ends at 8 MiB of lines)");
  import->add_option("--max-bytes", o->max_bytes, "refuse a file larger than this (default 1 GiB)");
  import->add_flag("--json", o->json, "print the report as JSON");
  import->add_flag("--progress", o->progress,
                   "report progress after each commit even when stderr is not a terminal (one line per commit)");
  import->callback([&action, &g, o] {
    action = [&g, o] {
      const fs::path file = o->file;
      std::error_code ec;
      const auto size = fs::file_size(file, ec);
      if (ec) throw Error(ErrorCode::not_found, "cannot read " + file.string());
      if (size > o->max_bytes)
        throw Error(ErrorCode::payload_too_large, "import file is " + std::to_string(size) + " bytes, over --max-bytes " +
                                                      std::to_string(o->max_bytes));
      service::ImportOptions opts;
      opts.import_id = o->import_id.empty() ? file_sha256(file) : o->import_id;
      opts.on_conflict = o->on_conflict;
      opts.chunk_lines = o->chunk_lines;
      opts.max_bytes = o->max_bytes;
      std::ifstream in(file, std::ios::binary);
      if (!in) throw Error(ErrorCode::not_found, "cannot read " + file.string());
      const bool bar = ::isatty(STDERR_FILENO) == 1;
      service::ImportObserver observer;
      if (!bar && o->progress)
        observer.on_chunk = [](const service::ImportProgress& p) {
          std::cerr << "progress lines=" << p.lines << " succeeded=" << p.succeeded << " failed=" << p.failed
                    << std::endl;
        };
      if (bar)
        observer.on_chunk = [&](const service::ImportProgress& p) {
          const double frac = size == 0 ? 1.0 : std::min(1.0, static_cast<double>(p.bytes) / static_cast<double>(size));
          const int filled = static_cast<int>(frac * 30);
          std::cerr << "\r[" << std::string(filled, '#') << std::string(30 - filled, ' ') << "] " << std::setw(3)
                    << static_cast<int>(frac * 100) << "%  " << p.lines << " lines, " << p.failed << " failed"
                    << std::flush;
        };
      const fs::path errors_path = o->errors_file.empty() ? fs::path(file.string() + ".errors") : fs::path(o->errors_file);
      std::optional<util::AtomicFile> errors;
      observer.on_error = [&](std::uint64_t line, const std::string& code, const std::string& detail) {
        if (!errors) errors.emplace(errors_path, 0600);
        errors->stream() << Json{{"line", line}, {"code", code}, {"detail", detail}}.dump() << "\n";
      };
      auto svc = g.open();
      const Json report = svc->import_ndjson(
          g.caller(*svc, ""), opts,
          [&](char* buf, std::size_t cap) -> std::size_t {
            in.read(buf, static_cast<std::streamsize>(cap));
            if (in.bad()) throw Error(ErrorCode::storage, "cannot read " + file.string());
            return static_cast<std::size_t>(in.gcount());
          },
          observer);
      if (errors) errors->commit();
      if (bar) std::cerr << "\n";
      if (o->json) {
        Json shown = report;
        shown.erase("errors");
        if (errors) shown["errors_file"] = errors_path.string();
        print(shown);
      } else {
        std::cout << "imported " << report["lines"] << " lines: " << report["succeeded"] << " succeeded ("
                  << report["created"] << " created, " << report["updated"] << " updated), " << report["failed"]
                  << " failed" << (errors ? "; errors in " + errors_path.string() : std::string())
                  << "; import id " << report["import_id"].get<std::string>() << "\n";
      }
      return report["failed"].get<std::uint64_t>() == 0 ? 0 : 1;
    };
  });

  // ---- consent
  auto* consent = app.add_subcommand("consent", "consent ledger")->require_subcommand(1);
  auto* record = consent->add_subcommand("record", "record a consent event for a subject");
  record->add_option("subject", o->subject, "subject id")->required();
  record->add_option("--purpose", o->purpose, "the purpose consented to (purposes.yaml)");
  record->add_option("--channel", o->channel, "channel (email, sms, phone, post, push, web)");
  record->add_option("--event", o->event, "granted, denied, withdrawn, objection or opt_out_sale_share")->required();
  record->add_option("--source", o->source, "web_form, call_centre, import, api, email_link (default api)");
  record->add_option("--at", o->at, "when it was given (RFC 3339; default now)");
  record->add_option("--expires-at", o->expires_at, "when a grant expires (RFC 3339)");
  record->add_option("--evidence", o->evidence, "how it was captured: a JSON object (never personal values)");
  record->add_flag("--double-opt-in", o->double_opt_in, "pending until the subject confirms (prints the token)");
  record->add_flag("--json", o->json, "print JSON");
  record->callback([&action, &g, o] {
    action = [&g, o] {
      Json body = {{"event", o->event}};
      if (!o->purpose.empty()) body["purpose"] = o->purpose;
      if (!o->channel.empty()) body["channel"] = o->channel;
      if (!o->source.empty()) body["source"] = o->source;
      if (!o->at.empty()) body["at"] = o->at;
      if (!o->expires_at.empty()) body["expires_at"] = o->expires_at;
      if (o->double_opt_in) body["double_opt_in"] = true;
      if (!o->evidence.empty()) {
        const Json ev = Json::parse(o->evidence, nullptr, false);
        if (ev.is_discarded() || !ev.is_object())
          throw Error(ErrorCode::invalid_argument, "--evidence must be a JSON object");
        body["proof"] = ev;
      }
      auto svc = g.open();
      const Json r = svc->record_consent(g.caller(*svc, ""), o->subject, body, false);
      emit(o->json, r, [&] {
        std::vector<std::vector<std::string>> rows;
        for (const auto& e : r["events"])
          rows.push_back({cell(e["id"]), cell(e["purpose"]), cell(e["channel"]), cell(e["event"]), cell(e["status"]),
                          cell(e["at"])});
        print_table({"event_id", "purpose", "channel", "event", "status", "at"}, rows);
        if (r.contains("confirmation"))
          std::cout << "confirmation token (shown once): " << r["confirmation"]["token"].get<std::string>() << "\n";
      });
      return 0;
    };
  });
  auto* list = consent->add_subcommand("list", "a subject's current consent and its history");
  list->add_option("subject", o->subject, "subject id")->required();
  list->add_flag("--json", o->json, "print JSON");
  list->callback([&action, &g, o] {
    action = [&g, o] {
      auto svc = g.open();
      const Json r = svc->get_consents(g.caller(*svc, ""), o->subject);
      emit(o->json, r, [&] {
        std::vector<std::vector<std::string>> rows;
        for (const auto& s : r["current"])
          rows.push_back({cell(s["purpose"]), cell(s["channel"]), cell(s["state"]), cell(s["since"]),
                          cell(s["expires_at"])});
        print_table({"purpose", "channel", "state", "since", "expires_at"}, rows);
        std::cout << r["history"].size() << " events in the history (--json shows them)\n";
      });
      return 0;
    };
  });
  auto* confirm = consent->add_subcommand("confirm", "relay a subject's double opt-in confirmation token");
  confirm->add_option("token", o->token, "the confirmation token")->required();
  confirm->add_flag("--json", o->json, "print JSON");
  confirm->callback([&action, &g, o] {
    action = [&g, o] {
      auto svc = g.open();
      const Json r = svc->confirm_consent(g.caller(*svc, ""), {{"token", o->token}});
      emit(o->json, r, [&] { print_object(r["event"]); });
      return 0;
    };
  });

  // ---- order / touchpoint
  auto* order = app.add_subcommand("order", "orders")->require_subcommand(1);
  auto* order_add = order->add_subcommand("add", "add an order to a subject");
  order_add->add_option("subject", o->subject, "subject id")->required();
  order_add->add_option("--amount-minor", o->amount_minor, "amount in minor units (cents)")->required();
  order_add->add_option("--currency", o->currency, "ISO 4217 code, e.g. EUR")->required();
  order_add->add_option("--at", o->at, "when (RFC 3339; default now)");
  order_add->add_flag("--json", o->json, "print JSON");
  order_add->callback([&action, &g, o] {
    action = [&g, o] {
      Json body = {{"amount_minor", o->amount_minor}, {"currency", o->currency}};
      if (!o->at.empty()) body["at"] = o->at;
      auto svc = g.open();
      const Json r = svc->add_order(g.caller(*svc, ""), o->subject, body);
      emit(o->json, r, [&] { print_object(r); });
      return 0;
    };
  });
  auto* touchpoint = app.add_subcommand("touchpoint", "touchpoints")->require_subcommand(1);
  auto* tp_add = touchpoint->add_subcommand("add", "add a touchpoint to a subject");
  tp_add->add_option("subject", o->subject, "subject id")->required();
  tp_add->add_option("--channel", o->channel, "channel (email, phone, web, in_person, ...)")->required();
  tp_add->add_option("--type", o->type, "what happened, e.g. support_call")->required();
  tp_add->add_option("--at", o->at, "when (RFC 3339; default now)");
  tp_add->add_option("--notes", o->notes, "notes (personal: sealed under the subject's key)");
  tp_add->add_flag("--json", o->json, "print JSON");
  tp_add->callback([&action, &g, o] {
    action = [&g, o] {
      Json body = {{"channel", o->channel}, {"type", o->type}};
      if (!o->at.empty()) body["at"] = o->at;
      if (!o->notes.empty()) body["notes"] = o->notes;
      auto svc = g.open();
      const Json r = svc->add_touchpoint(g.caller(*svc, ""), o->subject, body);
      emit(o->json, r, [&] { print_object(r); });
      return 0;
    };
  });

  // ---- audit entries (the `audit` command exists: main.cpp)
  CLI::App* audit = app.get_subcommand("audit");
  auto* entries = audit->add_subcommand("entries", "query the audit log");
  entries->add_option("--subject", o->subject, "subject id");
  entries->add_option("--principal", o->principal, "principal (token name or local:<user>)");
  entries->add_option("--purpose", o->audit_purpose, "declared purpose");
  entries->add_option("--operation", o->operation, "operation, e.g. subject.read");
  entries->add_option("--from", o->from, "from this time (RFC 3339, inclusive)");
  entries->add_option("--to", o->to, "to this time (RFC 3339, exclusive)");
  entries->add_option("--after", o->after, "next_after of the previous page");
  entries->add_option("--limit", o->limit, "entries per page (1-1000, default 100)");
  entries->add_flag("--json", o->json, "print JSON");
  entries->callback([&action, &g, o] {
    action = [&g, o] {
      std::map<std::string, std::string> q = {{"limit", std::to_string(o->limit)}};
      if (!o->subject.empty()) q["subject"] = o->subject;
      if (!o->principal.empty()) q["principal"] = o->principal;
      if (!o->audit_purpose.empty()) q["purpose"] = o->audit_purpose;
      if (!o->operation.empty()) q["operation"] = o->operation;
      if (!o->from.empty()) q["from"] = o->from;
      if (!o->to.empty()) q["to"] = o->to;
      if (!o->after.empty()) q["after"] = o->after;
      auto svc = g.open();
      const Json r = svc->audit_entries(g.caller(*svc, "audit"), q);
      emit(o->json, r, [&] {
        std::vector<std::vector<std::string>> rows;
        for (const auto& e : r["entries"])
          rows.push_back({cell(e.value("seq", Json())), cell(e.value("time", Json())), cell(e.value("principal", Json())),
                          cell(e.value("purpose", Json())), cell(e.value("operation", Json())),
                          cell(e.value("subject_id", Json())), cell(e.value("outcome", Json()))});
        print_table({"seq", "time", "principal", "purpose", "operation", "subject", "outcome"}, rows);
        if (!r["next_after"].is_null()) std::cout << "more: --after " << cell(r["next_after"]) << "\n";
      });
      return 0;
    };
  });

  // ---- token list (the `token` command exists: main.cpp)
  CLI::App* token = app.get_subcommand("token");
  auto* token_list = token->add_subcommand("list", "list API tokens (never their secrets)");
  token_list->add_flag("--json", o->json, "print JSON");
  token_list->callback([&action, &g, o] {
    action = [&g, o] {
      auto svc = g.open();
      const Json r = svc->list_tokens(g.caller(*svc, "administration"));
      emit(o->json, r, [&] {
        std::vector<std::vector<std::string>> rows;
        for (const auto& t : r["tokens"])
          rows.push_back({cell(t["name"]), cell(t["role"]), cell(t["token_id"]), cell(t["created_at"]),
                          cell(t["revoked_at"])});
        print_table({"name", "role", "token_id", "created_at", "revoked_at"}, rows);
      });
      return 0;
    };
  });
}

}  // namespace custos::cli
