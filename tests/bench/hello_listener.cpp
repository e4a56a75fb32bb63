// bench_hello_listener URL [THREADS] — the smallest cpprestsdk http_listener:
// answers every request with 200 "ok" until SIGTERM/SIGINT. The baseline for
// scripts/bench_http.sh: custosd's cost over it is the vault's own work.
// THREADS sizes cpprestsdk's pool (default: its own, 40), so the baseline
// can run with the same pool as custosd.
#include <signal.h>

#include <cpprest/http_listener.h>
#include <pplx/threadpool.h>

#include <cstdlib>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::cerr << "usage: bench_hello_listener http://127.0.0.1:PORT [THREADS]\n";
    return 2;
  }
  if (argc == 3) {
    const unsigned long threads = std::strtoul(argv[2], nullptr, 10);
    if (threads < 1 || threads > 512) {
      std::cerr << "bench_hello_listener: THREADS must be 1-512\n";
      return 2;
    }
    crossplat::threadpool::initialize_with_threads(threads);
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  web::http::experimental::listener::http_listener listener{web::uri(argv[1])};
  listener.support([](web::http::http_request req) {
    req.reply(web::http::status_codes::OK, "ok").then([](pplx::task<void> t) {
      try {
        t.get();
      } catch (...) {
      }
    });
  });
  try {
    listener.open().wait();
  } catch (const std::exception& e) {
    std::cerr << "bench_hello_listener: " << e.what() << "\n";
    return 1;
  }
  std::cout << "listening on " << argv[1] << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  listener.close().wait();
  return 0;
}
