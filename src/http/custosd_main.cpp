// custosd — the Custos HTTP(S) service.
//
//   custosd --data-dir DIR --listen 127.0.0.1:8443 [--tls-cert C --tls-key K]
//           [--passphrase-file F] [--policies DIR] [edge limits and quotas, see --help]
//           [--allow-plain-http-non-loopback] [--node-id ID] [--log-level L]
//
// Signals: SIGTERM / SIGINT stop gracefully (stop accepting, in-flight
// requests finish, the audit journal is folded, the store is closed, exit
// 0); SIGHUP reloads roles, purposes and segments and the TLS certificate
// and key (whatever is invalid is logged and the old one stays in force).
// All signals are taken by sigwait on the main thread; every other thread
// has them blocked.
//
// Exit codes: 0 clean shutdown, 2 usage, 1 start-up failure.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "custos/crypto/keyring.h"
#include "custos/error.h"
#include "custos/service/service.h"
#include "custos/util/mutex.h"
#include "custos/util/process.h"
#include "log.h"
#include "outbox_sender.h"
#include "server.h"

namespace {

namespace fs = std::filesystem;
namespace hlog = custos::http::log;

// Background upkeep: signs a checkpoint when one is due (every 250 ms check)
// while this node holds the checkpoint lease (several nodes on one store:
// one signs, another takes over within kCheckpointLeaseTerm of its death),
// and runs the retention purge every `retention_interval` (0: never). Waits
// on a condition variable, so stop() returns at once.
class Maintenance {
 public:
  static constexpr const char* kCheckpointLease = "audit-checkpoints";
  static constexpr std::chrono::milliseconds kCheckpointLeaseTerm{5000};

  Maintenance(custos::service::Service& svc, std::chrono::seconds retention_interval)
      : svc_(svc), retention_interval_(retention_interval), thread_([this] { run(); }) {}
  ~Maintenance() { stop(); }

  void stop() {
    {
      custos::util::MutexLock lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    custos::util::MutexLock lock(mu_);
    bool failing = false;
    auto next_cluster_check = std::chrono::steady_clock::now();
    auto next_journal_try = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!stop_) {
      if (cv_.wait_for(lock, std::chrono::milliseconds(250), [this]() CUSTOS_REQUIRES(mu_) { return stop_; })) break;
      lock.unlock();
      try {
        if (svc_.hold_lease(kCheckpointLease, kCheckpointLeaseTerm)) svc_.checkpoint_if_due();
        if (failing) hlog::info("checkpoint_recovered");
        failing = false;
      } catch (const custos::Error& e) {
        if (!failing) hlog::error("checkpoint_failed", {{"code", custos::code_name(e.code())}, {"cause", e.what()}});
        failing = true;  // log the first failure of a run, not every 250 ms
      } catch (const std::exception&) {
        if (!failing) hlog::error("checkpoint_failed", {{"code", "internal"}});
        failing = true;
      }
      if (!svc_.audit_journal_active() && std::chrono::steady_clock::now() >= next_journal_try) {
        next_journal_try = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        try {
          if (svc_.retry_audit_journal()) hlog::info("audit_journal_enabled");
        } catch (const std::exception&) {
          // Reads keep committing their entries directly; tried again later.
        }
      }
      if (std::chrono::steady_clock::now() >= next_cluster_check) {
        next_cluster_check = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        follow_cluster();
        // Several nodes on one store run retention once per interval between
        // them: each asks the store whether the run is its to do.
        if (retention_interval_.count() > 0) {
          try {
            if (svc_.claim_schedule("retention", retention_interval_)) run_retention();
            schedule_failing_ = false;
          } catch (const custos::Error& e) {
            if (!schedule_failing_)  // once per run of failures, as above
              hlog::error("retention_failed", {{"code", custos::code_name(e.code())}, {"cause", e.what()}});
            schedule_failing_ = true;
          }
        }
      }
      lock.lock();
    }
  }

  // A policy reload asked for with `custos policy reload` (any node, or the
  // CLI): re-read the files as SIGHUP does, and say so in the store.
  void follow_cluster() {
    try {
      std::string error;
      const auto reloaded = svc_.follow_cluster(&error);
      if (reloaded && *reloaded) hlog::info("policy_reload", {{"ok", true}, {"requested", "cluster"}});
      if (reloaded && !*reloaded)
        hlog::error("policy_reload", {{"ok", false}, {"requested", "cluster"}, {"cause", error},
                                      {"detail", "the previous policy stays in force"}});
      if (cluster_failing_) hlog::info("cluster_report_recovered");
      cluster_failing_ = false;
    } catch (const custos::Error& e) {
      // The first failure of a run, not one line a second while the store is away.
      if (!cluster_failing_)
        hlog::error("cluster_report_failed", {{"code", custos::code_name(e.code())}, {"cause", e.what()}});
      cluster_failing_ = true;
    }
  }

  void run_retention() {
    try {
      const custos::service::Caller scheduler{svc_.local_operator(), "administration", "retention-scheduler"};
      const auto report = svc_.retention_run(scheduler, false);
      // Counts only: the report lists subject ids, which stay in the audit log.
      hlog::info("retention_run", {{"purged", report["purged"].size()},
                                   {"kept", report["kept"].size()},
                                   {"touchpoints_deleted", report["touchpoints_deleted"]},
                                   {"orders_deleted", report["orders_deleted"]}});
    } catch (const custos::Error& e) {
      hlog::error("retention_failed", {{"code", custos::code_name(e.code())}, {"cause", e.what()}});
    } catch (const std::exception&) {
      hlog::error("retention_failed", {{"code", "internal"}});
    }
  }

  custos::service::Service& svc_;
  const std::chrono::seconds retention_interval_;
  // Only the maintenance thread touches these.
  bool cluster_failing_ = false;
  bool schedule_failing_ = false;
  custos::util::Mutex mu_;
  custos::util::CondVar cv_;
  bool stop_ CUSTOS_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
  custos::util::harden_process();  // no core dumps of keys or plaintext
  // Block the signals before any thread exists: threads inherit the mask,
  // so only the sigwait loop below ever receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  CLI::App app{"custosd — the Custos customer-data vault HTTP(S) service"};
  std::string data_dir = "./custos-data";
  std::string listen = "127.0.0.1:8443";
  std::string tls_cert, tls_key, passphrase_file, policies, node_id = "node-1", log_level = "info";
  custos::http::ServerOptions options;
  options.io_threads = 0;  // default: one per core, resolved below
  long retention_interval = 86400;
  int threads = 0;
  bool allow_plain = false;
  long header_timeout_ms = options.header_timeout.count(), idle_timeout_ms = options.idle_timeout.count();
  app.add_option("--data-dir", data_dir, "data directory created by `custos init` (default ./custos-data)");
  std::string store_url;
  if (const char* env = std::getenv("CUSTOS_STORE"); env && *env) store_url = env;
  app.add_option("--store", store_url,
                 "sqlcipher: or postgresql://… (or $CUSTOS_STORE; default: what the data dir remembers, else SQLCipher)");
  app.add_option("--listen", listen, "HOST:PORT or [IPv6]:PORT to listen on (default 127.0.0.1:8443)");
  app.add_option("--tls-cert", tls_cert, "PEM certificate (chain) file: serve HTTPS (reloaded on SIGHUP)");
  app.add_option("--tls-key", tls_key, "PEM private key file for --tls-cert; must not be readable by group or others");
  app.add_option("--passphrase-file", passphrase_file, "master key from this passphrase (Argon2id)");
  app.add_option("--policies", policies, "policy directory (default <data-dir>/policies)");
  app.add_flag("--allow-plain-http-non-loopback", allow_plain,
               "allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy)");
  app.add_option("--retention-interval", retention_interval,
                 "seconds between scheduled retention purges (default 86400; 0 disables)")
      ->check(CLI::Range(0, 365 * 86400));
  app.add_option("--threads", threads,
                 "worker threads for the requests that return once done (default: 2 per core, at least 4)")
      ->check(CLI::Range(1, 512));
  app.add_option("--max-streams", options.max_streams,
                 "campaign fetches, exports and imports running at once, all principals (default 6; each holds a"
                 " thread of their own pool while its client reads or sends); above: 503")
      ->check(CLI::Range(1, 4096));
  app.add_option("--io-threads", options.io_threads, "socket I/O threads (default: one per core)")
      ->check(CLI::Range(1, 64));
  // Edge limits.
  app.add_option("--max-body-bytes", options.max_body_bytes, "largest accepted request body (default 1048576); above: 413")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
  app.add_option("--max-import-bytes", options.max_import_bytes,
                 "largest POST /v1/import body, read as it streams (default 1073741824); above: 413")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 40));
  app.add_option("--max-header-bytes", options.max_header_bytes,
                 "largest request line + headers (default 16384); above: 431")
      ->check(CLI::Range(std::size_t{1024}, std::size_t{1} << 20));
  app.add_option("--header-timeout-ms", header_timeout_ms,
                 "time from a request's first byte to its last header (default 10000)")
      ->check(CLI::Range(100L, 600L * 1000));
  app.add_option("--idle-timeout-ms", idle_timeout_ms,
                 "keep-alive wait for the next request, and the longest a write may stall (default 30000)")
      ->check(CLI::Range(100L, 3600L * 1000));
  app.add_option("--min-body-rate", options.min_body_rate,
                 "bytes per second a request body must at least arrive at (default 16384)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
  app.add_option("--max-connections", options.max_connections,
                 "open client connections (default 1024); above: 503 and close")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20));
  long max_per_address = -1;  // default: a quarter of --max-connections
  app.add_option("--max-connections-per-address", max_per_address,
                 "open connections from one client address, IPv6 counted per /64 (default: a quarter of"
                 " --max-connections, 256; 0 no cap; behind a reverse proxy all come from the proxy); above: 503"
                 " and close")
      ->check(CLI::Range(0L, 1L << 20));
  // Per-principal quotas.
  app.add_option("--principal-max-inflight", options.principal_max_inflight,
                 "concurrent requests per principal (default 64; 0 unlimited); above: 429")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--principal-rate", options.principal_rate,
                 "requests per second per principal (default 2000; 0 unlimited); above: 429")
      ->check(CLI::Range(0.0, 1e9));
  double burst = -1;
  app.add_option("--principal-burst", burst, "token-bucket depth: requests a principal may send at once before its rate applies (default 2 x rate)")
      ->check(CLI::Range(1.0, 1e9));
  app.add_option("--principal-max-streams", options.principal_max_streams,
                 "campaign fetches streaming at once per principal (default 2; 0 unlimited); above: 429")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--privacy-rate", options.privacy_rate,
                 "requests per second per client address to the privacy page's /v1/privacy/* routes (default 10;"
                 " 0 unlimited); above: 429")
      ->check(CLI::Range(0.0, 1e9));
  double privacy_burst = -1;
  app.add_option("--privacy-burst", privacy_burst,
                 "token-bucket depth for --privacy-rate (default 3 x rate)")
      ->check(CLI::Range(1.0, 1e9));
  long fold_interval_ms = 1000;
  app.add_option("--audit-fold-interval-ms", fold_interval_ms,
                 "how long reads' audit entries may wait in the journal before the background fold (default 1000)")
      ->check(CLI::Range(1L, 3600L * 1000));
  // Delivery of outbox events to downstream systems (policies/systems.yaml).
  custos::http::OutboxSenderOptions outbox_options;
  long outbox_timeout_ms = outbox_options.timeout.count(), outbox_poll_ms = outbox_options.poll.count();
  long outbox_horizon_s = outbox_options.retry.horizon_ms / 1000;
  app.add_option("--outbox-timeout-ms", outbox_timeout_ms,
                 "time a downstream system has to answer one delivery (default 10000); then it is retried")
      ->check(CLI::Range(10L, 600L * 1000));
  app.add_option("--outbox-backoff-base-ms", outbox_options.retry.base_ms,
                 "wait before the first retry of a failed delivery; doubles per retry, with jitter (default 1000)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3600} * 1000));
  app.add_option("--outbox-backoff-max-ms", outbox_options.retry.max_ms,
                 "longest wait between retries (default 900000)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{86400} * 1000));
  app.add_option("--outbox-horizon-s", outbox_horizon_s,
                 "an event still undelivered this long after it was committed is a dead letter (default 259200)")
      ->check(CLI::Range(1L, 365L * 86400));
  app.add_option("--outbox-poll-ms", outbox_poll_ms, "longest wait between looks at the outbox (default 250)")
      ->check(CLI::Range(1L, 60L * 1000));
  app.add_option("--outbox-batch", outbox_options.batch, "outbox deliveries in flight at once (default 64)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1024}));
  app.add_option("--node-id", node_id, "this node's id in audit entries (default node-1)");
  app.add_option("--log-level", log_level, "debug | info | warn | error (default info; warn drops access lines)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  hlog::Level level;
  if (!hlog::parse_level(log_level, &level)) {
    std::cerr << "custosd: --log-level must be debug, info, warn or error\n";
    return 2;
  }
  hlog::set_level(level);

  custos::http::ListenAddress addr;
  try {
    addr = custos::http::parse_listen(listen);
  } catch (const std::invalid_argument& e) {
    std::cerr << "custosd: " << e.what() << "\n";
    return 2;
  }
  if (tls_cert.empty() != tls_key.empty()) {
    std::cerr << "custosd: --tls-cert and --tls-key go together\n";
    return 2;
  }
  const bool https = !tls_cert.empty();
  if (!https && !addr.loopback && !allow_plain) {
    std::cerr << "custosd: refusing plain HTTP on non-loopback address " << addr.host
              << "; configure --tls-cert/--tls-key (or, behind a TLS proxy, --allow-plain-http-non-loopback)\n";
    return 2;
  }
  options.listen = addr;
  options.tls_cert = tls_cert;
  options.tls_key = tls_key;
  options.header_timeout = std::chrono::milliseconds(header_timeout_ms);
  options.idle_timeout = std::chrono::milliseconds(idle_timeout_ms);
  options.max_connections_per_address = max_per_address >= 0 ? static_cast<std::size_t>(max_per_address)
                                                            : std::max<std::size_t>(1, options.max_connections / 4);
  options.principal_burst = burst > 0 ? burst : std::max(1.0, 2 * options.principal_rate);
  options.privacy_burst = privacy_burst > 0 ? privacy_burst : std::max(1.0, 3 * options.privacy_rate);

  std::unique_ptr<custos::service::Service> svc;
  try {
    custos::service::OpenOptions o;
    o.data_dir = data_dir;
    o.store_url = store_url;
    if (!passphrase_file.empty()) o.passphrase = custos::crypto::read_passphrase_file(passphrase_file);
    if (!policies.empty()) o.policy_dir = policies;
    o.node_id = node_id;
    o.audit_journal = true;
    o.audit_journal_options.fold_interval_ms = fold_interval_ms;
    svc = custos::service::Service::open(o);
    if (!svc->audit_journal_active())
      hlog::warn("audit_journal_busy", {{"cause", "another process holds the audit journal; each read commits its entry"}});
  } catch (const custos::Error& e) {
    hlog::error("startup_failed", {{"code", custos::code_name(e.code())}, {"cause", e.what()}});
    std::cerr << "custosd: " << e.what() << "\n";
    return 1;
  } catch (const std::exception&) {
    hlog::error("startup_failed", {{"code", "internal"}});
    std::cerr << "custosd: cannot open the vault in " << data_dir << "\n";
    return 1;
  }

  // Workers run the handlers that return once done (store work, bounded
  // waits): a few per core keep the cores busy without the context switches
  // and cold store caches of more; handlers that wait on slow clients have
  // their own pool (--max-streams). io threads only move bytes.
  if (threads == 0) threads = std::max(4, 2 * static_cast<int>(std::thread::hardware_concurrency()));
  options.worker_threads = threads;
  if (options.io_threads == 0) options.io_threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  auto server = std::make_unique<custos::http::HttpServer>(*svc, options);
  try {
    server->open();
  } catch (const std::exception& e) {
    hlog::error("startup_failed", {{"cause", e.what()}});
    std::cerr << "custosd: " << e.what() << "\n";
    return 1;
  }

  const std::string url = server->url();
  const std::string token_file = (fs::path(data_dir) / "admin.token").string();
  std::cout << "custosd listening on " << url << " (admin token in " << token_file
            << "; use: curl -H \"Authorization: Bearer $(cat " << token_file << ")\" " << url
            << "/v1/audit/checkpoint)" << std::endl;
  hlog::info("listening", {{"url", url},
                           {"tls", https},
                           {"max_body_bytes", options.max_body_bytes},
                           {"max_import_bytes", options.max_import_bytes},
                           {"max_header_bytes", options.max_header_bytes},
                           {"max_connections", options.max_connections},
                           {"max_connections_per_address", options.max_connections_per_address},
                           {"io_threads", options.io_threads},
                           {"worker_threads", options.worker_threads},
                           {"max_streams", options.max_streams},
                           {"node_id", node_id}});

  Maintenance maintenance(*svc, std::chrono::seconds(retention_interval));
  outbox_options.timeout = std::chrono::milliseconds(outbox_timeout_ms);
  outbox_options.poll = std::chrono::milliseconds(outbox_poll_ms);
  outbox_options.retry.horizon_ms = outbox_horizon_s * 1000;
  custos::http::OutboxSender outbox_sender(*svc, outbox_options);

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      std::string error;
      bool ok = false;
      try {
        ok = svc->reload_policies(&error);
      } catch (const std::exception&) {
        error = "unexpected error while loading the policy";
      }
      if (ok) {
        hlog::info("policy_reload", {{"ok", true}});
      } else {
        hlog::error("policy_reload", {{"ok", false}, {"cause", error}, {"detail", "the previous policy stays in force"}});
      }
      std::string tls_error;
      if (https && server->reload_tls(&tls_error)) {
        hlog::info("tls_reload", {{"ok", true}});
      } else if (https) {
        hlog::error("tls_reload",
                    {{"ok", false}, {"cause", tls_error}, {"detail", "the previous certificate stays in force"}});
      }
      continue;
    }
    hlog::info("shutting_down", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
    break;
  }

  // Stop accepting, finish what is inside the Service, fold the journal,
  // close the store, exit.
  const bool drained = server->drain(std::chrono::seconds(20));
  maintenance.stop();
  try {
    svc->release_lease(Maintenance::kCheckpointLease);  // another node signs from its next look
  } catch (const std::exception&) {
    // The store is away: the lease ends with its term.
  }
  outbox_sender.stop();  // what it had not recorded is sent again after the restart
  if (!drained) {
    // A request is still inside the Service: closing the store under it
    // would be worse than leaving it to the OS.
    hlog::error("stopped", {{"clean", false}, {"detail", "requests still running after the drain period"}});
    std::fflush(nullptr);
    std::_Exit(1);
  }
  svc.reset();  // closes the store; no request can reach it any more
  hlog::info("stopped", {{"clean", true}});
  std::fflush(nullptr);
  std::_Exit(0);
}
