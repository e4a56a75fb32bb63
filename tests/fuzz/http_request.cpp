// Fuzz target: the HTTP request parser at custosd's edge (src/http): raw
// bytes read as one request by the Beast parser configured as a connection
// configures it, with custosd's limits, the RFC 9112 framing checks, the
// X-Request-Id rule and routing (http::check_request_bytes, edge_check.h).
//
// Input: byte 0 picks the limits (even: custosd's defaults, 16 KiB of
// header and 1 MiB of body; odd: 512 and 1024 bytes, so the limits are
// reached by small inputs), the rest is the request.
// Invariants: no throw and no crash; the verdict is one the edge gives (a
// handler, a dropped connection, or 400/404/405/413/431 with a problem
// code); a request that reaches a handler carries a plain request id of at
// most 64 characters and a body within the limit, of exactly its
// Content-Length when it has one; a request with a Content-Length over the
// limit never reaches a handler.
#include <cctype>
#include <cstdint>

#include "edge_check.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  custos::fuzz::InputReader in(data, size);
  const bool small = in.byte() & 1;
  const std::size_t max_header = small ? 512 : 16 * 1024;
  const std::size_t max_body = small ? 1024 : 1024 * 1024;
  const custos::http::EdgeVerdict v = custos::http::check_request_bytes(in.rest(), max_header, max_body);
  switch (v.status) {
    case -1:
    case 0:
      break;
    case 400:
    case 404:
    case 405:
    case 413:
    case 431:
      FUZZ_CHECK(!v.code.empty(), "a refusal without a problem code");
      break;
    default:
      FUZZ_CHECK(false, "unexpected edge status " + std::to_string(v.status));
  }
  if (v.status == 0) {
    FUZZ_CHECK(!v.route.empty(), "a request reached a handler without a route");
    FUZZ_CHECK(!v.request_id.empty() && v.request_id.size() <= 64, "request id empty or too long");
    for (const char c : v.request_id)
      FUZZ_CHECK(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-',
                 "request id holds a character outside [A-Za-z0-9._-]");
    FUZZ_CHECK(v.body_bytes <= max_body, "a body over the limit reached a handler");
    if (v.has_content_length && v.route != "/v1/import") {
      FUZZ_CHECK(v.content_length <= max_body, "a Content-Length over the limit reached a handler");
      FUZZ_CHECK(v.body_bytes == v.content_length, "the body read differs from its Content-Length");
    }
  }
  return 0;
}
