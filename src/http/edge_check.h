// custos/http edge checks without a socket, for the fuzzers (tests/fuzz) and
// tests: the request parser configured exactly as a connection configures it,
// the RFC 9112 framing checks, the X-Request-Id rule, routing of the request
// target, and the JSON body parse every JSON route applies. Free of Beast,
// so code outside src/http may call it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace custos::http {

// What the edge makes of one request's bytes.
struct EdgeVerdict {
  // 0: the request would reach its route's handler. -1: the connection is
  // dropped without an answer (truncated request, end of stream). Otherwise
  // the edge's refusal: 400, 404, 405, 413 or 431, with its problem code.
  int status = 0;
  std::string code;
  std::string method, target;
  std::string route;       // the matched route template (status 0 only)
  std::string request_id;  // the id the request is logged under
  std::size_t body_bytes = 0;
  bool has_content_length = false;
  std::uint64_t content_length = 0;
};

// Reads one request from `bytes` as a connection reads it from a socket:
// the same parser, header limit, chunk limits, body limit and framing
// checks (connection.cpp), then routes it (router.h). Never throws for any
// input: a throw is a bug.
EdgeVerdict check_request_bytes(std::string_view bytes, std::size_t max_header_bytes, std::size_t max_body_bytes);

// The body parse of every JSON route (server.cpp): throws
// Error(invalid_argument) for an empty, malformed, too deeply nested or
// out-of-range body.
nlohmann::json parse_request_body(const std::string& text);

}  // namespace custos::http
