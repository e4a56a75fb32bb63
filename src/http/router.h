// The route table and request routing of custosd: which handler serves a
// method and path, which query parameters it accepts, whether it needs a
// token and a JSON body. docs/openapi.yaml documents exactly these routes
// (a test compares them).
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "custos/service/service.h"
#include "problem.h"

namespace custos::http {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using service::Json;

// What a handler answers: a complete body, or `streamed` when it has
// already answered through the ResponseStream.
struct Result {
  int status = 200;
  std::string body;
  std::string content_type = kJson;
  HeaderList headers;
  bool streamed = false;
  // Held until the reply is written (e.g. the principal's in-flight slot).
  std::shared_ptr<void> hold;
};

// A response body written piece by piece (chunked) by a handler running on
// a worker thread, while the connection's I/O thread sends it.
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;
  // Sends the status line and headers. Call once, before write().
  virtual void begin(int status, const std::string& content_type, HeaderList headers) = 0;
  // Queues `data`; blocks while too much is unsent (back-pressure). False
  // when the client is gone or stopped reading for the write timeout.
  virtual bool write(std::string data) = 0;
  // Ends the body. The connection may then take its next request.
  virtual void end() = 0;
  // Cuts the response short after begin(): the connection closes without
  // the body's end (no last chunk), so the client sees an incomplete body,
  // never one that looks whole.
  virtual void abort() = 0;
  // The client's IP address as the socket sees it (a proxy's, behind one):
  // what unauthenticated routes are rate-limited by.
  virtual const std::string& peer_address() const = 0;
  // For the rest of the current request, asks `check` at most once per
  // `every` whether the response may go on; `check` throws when it may not
  // (server.cpp: the caller's token was revoked while it streams). Asked on
  // the handler's thread, in begin() and in write(), also while write()
  // waits on a slow client, so a stream held by back-pressure is stopped
  // too. In begin() its exception leaves begin(): nothing was sent, and the
  // handler answers it as any error before the first byte. In write() the
  // stream is cut short as by abort(), except that the connection is reset
  // and what it had not yet delivered is dropped; write() returns false.
  virtual void recheck(std::function<void()> check, std::chrono::milliseconds every) = 0;
};

// A request body a handler pulls on its worker thread while the
// connection's I/O thread receives it (routes with BodyMode::stream): the
// server holds at most one read block of it, whatever its size.
class RequestBodyStream {
 public:
  virtual ~RequestBodyStream() = default;
  // Copies up to `capacity` body bytes into `buffer`, waiting for them; 0 at
  // the end of the body. Throws Error(payload_too_large) past the route's
  // limit, Error(invalid_argument) when the body stops arriving (idle
  // timeout, disconnect, malformed chunking).
  virtual std::size_t read(char* buffer, std::size_t capacity) = 0;
};

struct HandlerContext {
  service::Service& svc;
  const Request& req;
  service::Caller caller;
  std::vector<std::string> params;  // path parameters in template order
  std::map<std::string, std::string> query;
  Json body;
  ResponseStream* stream = nullptr;
  // Claims a per-principal campaign stream slot (throws 429) and a global
  // one (throws 503); both are released when the returned handle goes.
  std::function<std::shared_ptr<void>()> claim_stream;
  std::function<std::string()> metrics_text;
  // BodyMode::stream: the body, read as it arrives (`body` stays null).
  RequestBodyStream* body_stream = nullptr;

  const std::string& param(std::size_t i) const { return params.at(i); }
  std::string query_or_empty(const std::string& key) const {
    const auto it = query.find(key);
    return it == query.end() ? std::string() : it->second;
  }
};

using Handler = std::function<Result(HandlerContext&)>;

// json: the whole body is read (under --max-body-bytes) and parsed before
// the handler runs; stream: the handler reads it as it arrives
// (RequestBodyStream) under the server's streamed-body limit.
enum class BodyMode { none, json, stream };

struct Route {
  std::string method;
  std::string path;                   // OpenAPI template
  std::vector<std::string> segments;  // the template split at '/'
  bool auth = true;
  BodyMode body = BodyMode::none;
  std::vector<std::string> query;  // accepted query parameters
  Handler handler;
  // The handler claims a stream slot and may hold its thread while the
  // client sends or reads: it runs on the stream pool, not among the quick
  // workers (connection.h, WorkerPools).
  bool streams = false;
};

// Every route custosd serves (defined with the handlers).
std::vector<Route> make_routes();
// "/v1/subjects/{id}" -> {"v1", "subjects", "{id}"}.
std::vector<std::string> split_route_template(const std::string& path);

struct RouteMatch {
  const Route* route = nullptr;
  std::vector<std::string> params;
  std::map<std::string, std::string> query;
};

// Routes `method` and request-target `target` (origin form). Throws
// HttpProblem 404/405 (with Allow) or Error(invalid_argument) for a
// malformed target, an unknown or repeated query parameter.
RouteMatch match_route(const std::vector<Route>& routes, std::string_view method, std::string_view target);

// Json helper shared by handlers.
Result json_result(int status, const Json& doc);

}  // namespace custos::http
