// Problem details (RFC 9457) for custosd: the one place a custos::Error or
// an HTTP-level refusal becomes a status, a stable code and a JSON body.
//
// Contract: a problem's detail never holds a personal value; for 5xx the
// client gets a generic detail and the cause goes to the log.
#pragma once

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "custos/error.h"

namespace custos::http {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// An HTTP-level refusal that is not a custos::Error (404, 405, 429, 431,
// 503 at capacity or while draining).
struct HttpProblem : std::exception {
  int status;
  std::string code;
  std::string detail;
  HeaderList headers;
  HttpProblem(int s, std::string c, std::string d, HeaderList h = {})
      : status(s), code(std::move(c)), detail(std::move(d)), headers(std::move(h)) {}
  const char* what() const noexcept override { return detail.c_str(); }
};

int status_for(ErrorCode code);
// Detail for a server-side failure (5xx): the cause is logged, not sent.
std::string generic_detail(ErrorCode code);
// The application/problem+json body.
std::string problem_body(int status, const std::string& code, const std::string& detail,
                         const std::string& request_id);

inline constexpr const char* kProblemJson = "application/problem+json";
inline constexpr const char* kJson = "application/json";

}  // namespace custos::http
