// The web console (/console/) and the privacy page (/privacy/): static
// files from web/, built into custosd by cmake/embed_assets.cmake, so
// nothing is installed beside the binary and nothing needs configuring.
//
// They are served without authentication (they hold no data: every
// personal value arrives later through the authenticated JSON API) and with
// a strict Content-Security-Policy: scripts and styles from this origin
// only, no inline script, no framing, no outside host, and Trusted Types
// required, so a string can never reach an HTML sink such as innerHTML.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "router.h"

namespace custos::http {

// One file of web/, served at `path` ("/console/index.html").
struct EmbeddedFile {
  const char* path;
  const unsigned char* data;
  std::size_t size;
};

// Every embedded file (generated at build time).
const std::vector<EmbeddedFile>& embedded_files();

// The Content-Security-Policy sent with every static file.
extern const char* const kStaticCsp;

// Answers a request for a static page or asset: nullopt when the path is
// not under /console or /privacy (the API routes handle it). `label` is
// set to the route label for metrics and the access log ("/console/",
// "/privacy/"). GET only (throws HttpProblem 405 otherwise); an unknown
// file throws HttpProblem 404; a directory path serves its index.html;
// "/console" redirects to "/console/". HTML is never cached (no-store); other assets are
// revalidated with their ETag (no-cache, 304 on If-None-Match).
std::optional<Result> serve_static(const Request& req, std::string& label);

}  // namespace custos::http
