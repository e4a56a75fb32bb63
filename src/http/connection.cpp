// The listener, the edge rules both connection types share, and
// check_request_bytes. The connection itself: connection_session.h.
#include <cctype>
#include <future>
#include <unordered_map>

#include "client_address.h"
#include "connection_session.h"
#include "edge_check.h"
#include "log.h"

namespace custos::http {
namespace detail {

// 128 random bits in hex. The bits come from a per-thread pool refilled
// 4 KiB at a time: one getrandom() per 256 ids instead of one per request
// (a syscall was a visible share of a request's CPU). Request ids are
// public; they only need to be unique and unguessable in advance.
std::string random_request_id() {
  constexpr std::size_t kIdBytes = 16;
  thread_local std::array<unsigned char, 4096> pool{};
  thread_local std::size_t used = pool.size();
  if (used == pool.size()) {
    randombytes_buf(pool.data(), pool.size());
    used = 0;
  }
  std::array<char, 2 * kIdBytes + 1> hex{};
  sodium_bin2hex(hex.data(), hex.size(), pool.data() + used, kIdBytes);
  used += kIdBytes;
  return std::string(hex.data(), 2 * kIdBytes);
}

std::string request_id_for(const Request& req) {
  const beast::string_view value = req["X-Request-Id"];
  bool ok = !value.empty() && value.size() <= kMaxRequestIdLength;
  for (char c : value)
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  return ok ? std::string(value) : random_request_id();
}

bool is_timeout(const error_code& ec) { return ec == beast::error::timeout; }

bool iequals(beast::string_view a, beast::string_view b) { return beast::iequals(a, b); }

beast::string_view trim(beast::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The body limit is the largest, not boost::none: Beast 1.74 compares the
// length against the optional, and any length is "greater" than none.
void configure_header_parser(bhttp::request_parser<bhttp::string_body>& parser, std::size_t max_header_bytes) {
  parser.header_limit(static_cast<std::uint32_t>(max_header_bytes));
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
}

void check_chunk_size(std::uint64_t size, std::size_t max_body_bytes, std::uint64_t& total, error_code& ec) {
  if (size > max_body_bytes) {
    ec = bhttp::error::bad_chunk;
    return;
  }
  total += size;
  if (total > max_body_bytes) ec = bhttp::error::body_limit;
}

bool answers_malformed(const error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
         ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
}

const char* request_framing_error(const Request& req) {
  if (req.version() >= 11 && req.count(bhttp::field::host) != 1) return "an HTTP/1.1 request needs exactly one Host header";
  if (req.version() < 11 && req.count(bhttp::field::transfer_encoding) > 0)
    return "Transfer-Encoding is not allowed in an HTTP/1.0 request";
  const auto lengths = req.equal_range(bhttp::field::content_length);
  const auto n_lengths = std::distance(lengths.first, lengths.second);
  if (n_lengths > 1) return "more than one Content-Length header";
  if (n_lengths == 1 && lengths.first->value().find(',') != beast::string_view::npos)
    return "Content-Length must be a single number";
  const auto codings = req.equal_range(bhttp::field::transfer_encoding);
  const auto n_codings = std::distance(codings.first, codings.second);
  if (n_codings > 1) return "more than one Transfer-Encoding header";
  if (n_codings == 1) {
    if (n_lengths == 1) return "Content-Length together with Transfer-Encoding";
    if (!iequals(trim(codings.first->value()), "chunked")) return "only Transfer-Encoding: chunked is supported";
  }
  return nullptr;
}

}  // namespace detail

using namespace detail;

// Open connections per client address group, for
// --max-connections-per-address. Shared by the listener and the slots of
// its connections, which give theirs back from whatever thread ends them
// (a connection may outlive the listener).
//
// Thread safety: safe for concurrent use.
class ConnectionsPerAddress : public std::enable_shared_from_this<ConnectionsPerAddress> {
 public:
  explicit ConnectionsPerAddress(std::size_t cap) : cap_(cap) {}

  // One more connection from `group`, held until the returned handle goes;
  // null when `group` has `cap` open already.
  std::shared_ptr<void> claim(const std::string& group) {
    util::MutexLock lock(mu_);
    std::size_t& open = open_[group];
    if (open >= cap_) return nullptr;
    ++open;
    return std::shared_ptr<void>(static_cast<void*>(this),
                                 [self = shared_from_this(), group](void*) { self->release(group); });
  }

 private:
  void release(const std::string& group) {
    util::MutexLock lock(mu_);
    const auto it = open_.find(group);
    if (--it->second == 0) open_.erase(it);
  }

  const std::size_t cap_;
  util::Mutex mu_;
  // Only groups with a connection open: no larger than --max-connections.
  std::unordered_map<std::string, std::size_t> open_ CUSTOS_GUARDED_BY(mu_);
};

Listener::Listener(net::io_context& ioc, WorkerPools workers, RequestHandler& handler, EdgeLimits limits,
                   EdgeCounters& counters)
    : ioc_(ioc),
      workers_(workers),
      handler_(handler),
      limits_(limits),
      counters_(counters),
      acceptor_(net::make_strand(ioc)),
      retry_timer_(acceptor_.get_executor()) {
  if (limits_.max_connections_per_address > 0)
    per_address_ = std::make_shared<ConnectionsPerAddress>(limits_.max_connections_per_address);
}

void Listener::open(const tcp::endpoint& endpoint) {
  error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(1024, ec);
  if (ec) throw std::runtime_error(ec.message());
}

void Listener::start() { net::post(acceptor_.get_executor(), [self = shared_from_this()] { self->accept(); }); }

void Listener::stop() {
  auto done = std::make_shared<std::promise<void>>();
  auto closed = done->get_future();
  net::post(acceptor_.get_executor(), [self = shared_from_this(), done] {
    error_code ignored;
    self->acceptor_.close(ignored);
    self->retry_timer_.cancel();
    done->set_value();
  });
  closed.wait_for(std::chrono::seconds(2));
}

namespace {

constexpr const char* kServerFull = "the server is at its connection limit; retry shortly";
constexpr const char* kAddressFull = "this client address has as many connections open as it may; retry shortly";

// Above --max-connections (or --max-connections-per-address) a connection
// costs no more than this: plain HTTP gets a fixed 503 written without
// waiting (it fits any socket buffer), TLS is closed at once (a handshake
// would cost what the limit saves).
void refuse_at_capacity(tcp::socket& socket, bool tls, const char* detail) {
  error_code ignored;
  if (!tls) {
    const std::string id = random_request_id();
    const std::string body = problem_body(503, "unavailable", detail, id);
    const std::string response = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: " + std::string(kProblemJson) +
                                 "\r\nRetry-After: 1\r\nX-Request-Id: " + id +
                                 "\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\n\r\n" + body;
    socket.non_blocking(true, ignored);
    socket.write_some(net::buffer(response), ignored);
    socket.shutdown(tcp::socket::shutdown_send, ignored);
  }
  socket.close(ignored);
}

}  // namespace

void Listener::set_tls(std::shared_ptr<net::ssl::context> tls) {
  util::MutexLock lock(tls_mu_);
  tls_ = std::move(tls);
}

void Listener::accept() {
  acceptor_.async_accept(net::make_strand(ioc_), [self = shared_from_this()](error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !self->acceptor_.is_open()) return;
    if (ec) {
      // Out of descriptors or memory: back off briefly instead of spinning.
      log::warn("accept_failed", {{"cause", ec.message()}});
      self->retry_timer_.expires_after(std::chrono::milliseconds(50));
      self->retry_timer_.async_wait([self](error_code wait_ec) {
        if (!wait_ec) self->accept();
      });
      return;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::shared_ptr<net::ssl::context> tls;
    {
      util::MutexLock lock(self->tls_mu_);
      tls = self->tls_;
    }
    std::shared_ptr<void> address_slot;
    if (const char* refusal = self->admission_refusal(socket, address_slot)) {
      self->counters_.refused_capacity.fetch_add(1);
      self->handler_.count_refusal(503);
      refuse_at_capacity(socket, tls != nullptr, refusal);
    } else if (tls) {
      serve_tls(std::move(socket), std::move(tls), self->handler_, self->workers_, self->limits_, self->counters_,
                self->draining_, std::move(address_slot));
    } else {
      serve_plain(std::move(socket), self->handler_, self->workers_, self->limits_, self->counters_,
                  self->draining_, std::move(address_slot));
    }
    self->accept();
  });
}

// The global cap first: past it, nobody is let in. Then the address's own,
// so one client cannot take every slot and keep everyone else at 503.
const char* Listener::admission_refusal(const tcp::socket& socket, std::shared_ptr<void>& address_slot) {
  if (counters_.open.load() >= limits_.max_connections) return kServerFull;
  if (!per_address_) return nullptr;
  error_code ec;
  const auto remote = socket.remote_endpoint(ec);
  if (ec) return nullptr;  // gone already: its connection ends at its first read
  address_slot = per_address_->claim(client_address_group(remote.address().to_string()));
  return address_slot ? nullptr : kAddressFull;
}

// check_request_bytes (edge_check.h): one request read from bytes with a
// connection's parser configuration, limits and checks, in the order
// read_header, on_header, read_body, on_body and dispatch apply them; the
// reads are synchronous over the bytes instead of asynchronous over a socket.
namespace {

// A SyncReadStream over bytes in memory; the end of the bytes is the end of
// the stream (as a client closing its side).
class BytesReadStream {
 public:
  explicit BytesReadStream(std::string_view bytes) : rest_(bytes) {}
  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers, error_code& ec) {
    if (rest_.empty()) {
      ec = net::error::eof;
      return 0;
    }
    const std::size_t n = net::buffer_copy(buffers, net::buffer(rest_.data(), rest_.size()));
    rest_.remove_prefix(n);
    ec = {};
    return n;
  }
  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers) {
    error_code ec;
    const std::size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  std::string_view rest_;
};

EdgeVerdict refused(EdgeVerdict v, int status, const char* code) {
  v.status = status;
  v.code = code;
  v.route.clear();
  return v;
}

}  // namespace

EdgeVerdict check_request_bytes(std::string_view bytes, std::size_t max_header_bytes, std::size_t max_body_bytes) {
  static const std::vector<Route> routes = make_routes();
  EdgeVerdict v;
  BytesReadStream stream(bytes);
  beast::flat_buffer buffer(max_header_bytes + kReadSlack);
  bhttp::request_parser<bhttp::string_body> parser;
  configure_header_parser(parser, max_header_bytes);
  std::uint64_t chunked_total = 0;
  auto chunk_limit = [&](std::uint64_t size, beast::string_view, error_code& ec) {
    check_chunk_size(size, max_body_bytes, chunked_total, ec);
  };
  parser.on_chunk_header(chunk_limit);  // Beast keeps a reference: it must outlive the parse
  error_code ec;
  bhttp::read_header(stream, buffer, parser, ec);
  if (ec == bhttp::error::header_limit) return refused(v, 431, "header_too_large");
  if (ec) return answers_malformed(ec) ? refused(v, 400, "invalid_argument") : refused(v, -1, "");
  {
    const Request& req = parser.get();
    v.method = std::string(req.method_string());
    v.target = std::string(req.target());
    if (request_framing_error(req)) return refused(v, 400, "invalid_argument");
  }
  const auto header_fields = static_cast<std::size_t>(std::distance(parser.get().begin(), parser.get().end()));
  if (const auto length = parser.content_length()) {
    v.has_content_length = true;
    v.content_length = *length;
  }
  // Routing comes before the body for streamed-body routes (the server's
  // streamed_body_limit); their body is the handler's to read.
  const Route* route = nullptr;
  try {
    route = match_route(routes, v.method, v.target).route;
  } catch (const HttpProblem& p) {
    v.status = p.status;
    v.code = p.code;
  } catch (const Error& e) {
    v.status = status_for(e.code());
    v.code = code_name(e.code());
  }
  if (route && route->body == BodyMode::stream) {
    v.route = route->path;
    v.request_id = request_id_for(parser.get());
    return v;
  }
  if (v.has_content_length && v.content_length > max_body_bytes) return refused(v, 413, "payload_too_large");
  if (!parser.is_done()) {
    bhttp::read(stream, buffer, parser, ec);
    if (ec == bhttp::error::body_limit) return refused(v, 413, "payload_too_large");
    if (ec) return answers_malformed(ec) ? refused(v, 400, "invalid_argument") : refused(v, -1, "");
    const Request& req = parser.get();
    if (static_cast<std::size_t>(std::distance(req.begin(), req.end())) != header_fields)
      return refused(v, 400, "invalid_argument");
  }
  const Request& req = parser.get();
  v.request_id = request_id_for(req);
  v.body_bytes = req.body().size();
  if (route) v.route = route->path;
  return v;
}

}  // namespace custos::http
