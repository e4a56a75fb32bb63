// One HTTP/1.1 connection, plain or TLS, as a class template over its
// stream: the life of a request on it (all I/O on the connection's strand):
//   await   — wait (idle timeout) for the first byte of the next request;
//   header  — read request line + headers (header timeout, size limit),
//             check RFC 9112 framing, refuse over-long bodies (413) unread;
//   body    — read the body under a deadline from --min-body-rate;
//   handle  — on a worker thread: RequestHandler::handle;
//   send    — write the response (idle timeout; a reply to HEAD without its
//             body), then await again or close. On a plain connection the
//             worker writes what the socket takes at once itself
//             (send_from_worker) and the strand writes any rest.
// A refusal at the edge (400, 413, 431, 503) is answered with
// problem+json and the connection is closed, because the rest of the
// byte stream cannot be trusted to frame the next request.
//
// Private to src/http. Each stream type is instantiated in a translation
// unit of its own (connection_plain.cpp, connection_tls.cpp), because one
// instantiation of Beast's composed operations is most of the compile time
// of this module and two units compile in parallel. For the same reason
// each kind of asynchronous operation is started from one place with one
// completion handler type (write_rest, write_continue, write_stream_head,
// pump_stream): every distinct handler instantiates the whole chain of
// composed operations again.
#pragma once

#include <sodium.h>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <array>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <string_view>

#include "connection.h"
#include "custos/error.h"

namespace custos::http::detail {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

using error_code = boost::system::error_code;

constexpr std::size_t kMaxRequestIdLength = 64;
// Unsent stream bytes above which a streaming handler waits for the client.
constexpr std::size_t kMaxBufferedStream = 1 << 20;
// After a refusal: how long and how much of the client's remaining bytes
// are read and dropped before closing, so the client reads the refusal
// instead of a reset.
constexpr std::chrono::milliseconds kLingerTime{1000};
constexpr std::size_t kLingerBytes = 1 << 20;
// Read buffer beyond the header limit: room for one read of body bytes.
constexpr std::size_t kReadSlack = 64 * 1024;
// One read of a streamed request body (RequestBodyStream).
constexpr std::size_t kBodyBlock = 64 * 1024;

// Edge rules shared by both stream types and check_request_bytes
// (connection.cpp).
std::string random_request_id();
// A caller's X-Request-Id is kept only if it is short and plain
// ([A-Za-z0-9._-], at most 64); anything else is replaced, not repaired.
std::string request_id_for(const Request& req);
bool is_timeout(const error_code& ec);
bool iequals(beast::string_view a, beast::string_view b);
beast::string_view trim(beast::string_view s);
// A request's parser as every connection configures it: the header limit
// (431 above it); the body limit is enforced by the connection instead: 413
// by Content-Length, check_chunk_size for chunks.
void configure_header_parser(bhttp::request_parser<bhttp::string_body>& parser, std::size_t max_header_bytes);
// One chunk larger than a whole body is a framing error (400); chunks that
// add up to more than the limit are a body too large (413).
void check_chunk_size(std::uint64_t size, std::size_t max_body_bytes, std::uint64_t& total, error_code& ec);
// A parse error gets 400 (true); a timeout, end of stream or vanished peer
// gets nothing.
bool answers_malformed(const error_code& ec);
// RFC 9112 §6: what Beast tolerates but a proxy in front might read
// differently (request smuggling); null when the framing is sound.
const char* request_framing_error(const Request& req);

// Serve one accepted connection until it closes (connection_plain.cpp,
// connection_tls.cpp). `address_slot` (its client address's share of
// --max-connections-per-address, or null) is held until then.
void serve_plain(tcp::socket socket, RequestHandler& handler, WorkerPools workers, const EdgeLimits& limits,
                 EdgeCounters& counters, std::shared_ptr<std::atomic<bool>> draining,
                 std::shared_ptr<void> address_slot);
void serve_tls(tcp::socket socket, std::shared_ptr<net::ssl::context> tls, RequestHandler& handler,
               WorkerPools workers, const EdgeLimits& limits, EdgeCounters& counters,
               std::shared_ptr<std::atomic<bool>> draining, std::shared_ptr<void> address_slot);

template <class Stream>
class Connection : public std::enable_shared_from_this<Connection<Stream>>,
                   public ResponseStream,
                   public RequestBodyStream {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  Connection(Stream&& stream, RequestHandler& handler, WorkerPools workers, const EdgeLimits& limits,
             EdgeCounters& counters, std::shared_ptr<std::atomic<bool>> draining,
             std::shared_ptr<net::ssl::context> tls, std::shared_ptr<void> address_slot)
      : stream_(std::move(stream)),
        handler_(handler),
        workers_(workers),
        limits_(limits),
        counters_(counters),
        draining_(std::move(draining)),
        tls_(std::move(tls)),
        address_slot_(std::move(address_slot)),
        // Bounded: unconsumed bytes (a header, a chunk line, trailers) may
        // not grow past this; Beast then fails the read (400).
        buffer_(limits.max_header_bytes + kReadSlack) {
    counters_.open.fetch_add(1);
    error_code ec;
    const auto remote = tcp_layer().socket().remote_endpoint(ec);
    if (!ec) peer_ = remote.address().to_string();
    // Synchronous sends return would_block instead of waiting
    // (send_from_worker); asynchronous operations are unaffected.
    if constexpr (!kTls) tcp_layer().socket().non_blocking(true, ec);
    chunk_limit_ = [this](std::uint64_t size, beast::string_view, error_code& ec) {
      check_chunk_size(size, limits_.max_body_bytes, chunked_total_, ec);
    };
  }

  ~Connection() override {
    release_busy();
    counters_.open.fetch_sub(1);
  }

  void start() {
    if constexpr (kTls) {
      tcp_layer().expires_after(limits_.header_timeout);
      stream_.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this()](error_code ec) { self->on_handshake(ec); });
    } else {
      on_handshake({});
    }
  }

  const std::string& peer_address() const override { return peer_; }

  // ResponseStream: called from the worker thread running a streaming handler.
  void begin(int status, const std::string& content_type, HeaderList headers) override {
    if (recheck_due()) run_recheck();  // throws before anything is sent
    auto head = std::make_shared<bhttp::response<bhttp::empty_body>>(static_cast<bhttp::status>(status),
                                                                     request_.version());
    decorate(*head, request_id_);
    head->set(bhttp::field::content_type, content_type);
    for (const auto& [k, v] : headers) head->insert(k, v);
    // HTTP/1.0 has no chunked coding: the body is delimited by the close.
    const bool chunked = request_.version() >= 11;
    head->keep_alive(chunked && request_.keep_alive() && !draining_->load());
    head->chunked(chunked);
    {
      util::MutexLock lock(stream_mu_);
      stream_writing_ = true;
      stream_begun_ = true;
      stream_raw_ = !chunked;
    }
    net::post(stream_.get_executor(), [self = this->shared_from_this(), head] { self->write_stream_head(head); });
  }

  bool write(std::string data) override {
    if (recheck_due() && !passes_recheck()) return cut_after_recheck();
    util::MutexLock lock(stream_mu_);
    const auto deadline = std::chrono::steady_clock::now() + limits_.idle_timeout;
    bool give_up = false;
    // Back-pressure: wait while too much is unsent. Woken by the strand as
    // bytes go out; checks the drain flag (and a due recheck) every 100 ms,
    // so a slow reader can hold neither a shutdown nor a revoked stream.
    while (!stream_failed_ && !give_up && stream_pending_.size() > kMaxBufferedStream) {
      const auto now = std::chrono::steady_clock::now();
      give_up = now >= deadline || draining_->load();
      if (!give_up && recheck_due()) {
        lock.unlock();  // the check reads the store: not under the strand's lock
        if (!passes_recheck()) return cut_after_recheck();
        lock.lock();
      }
      if (!give_up) stream_cv_.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(100)));
    }
    if (stream_failed_ || give_up || draining_->load()) {
      lock.unlock();
      fail_from_worker();
      return false;
    }
    stream_pending_ += data;
    if (!stream_writing_) {
      stream_writing_ = true;
      net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->pump_stream(); });
    }
    return true;
  }

  void abort() override { fail_from_worker(); }

  void recheck(std::function<void()> check, std::chrono::milliseconds every) override {
    recheck_ = std::move(check);
    recheck_every_ = every;
    rechecked_at_ = std::chrono::steady_clock::now();
  }

  // RequestBodyStream: called from the worker thread running a handler of a
  // streamed-body route. Each call that finds nothing buffered asks the
  // strand for one more block, so the client is read no faster than the
  // handler consumes (back-pressure through TCP).
  std::size_t read(char* out, std::size_t capacity) override {
    util::MutexLock lock(body_mu_);
    // The strand's own read times out after idle_timeout; this is a backstop.
    const auto deadline = std::chrono::steady_clock::now() + limits_.idle_timeout + std::chrono::seconds(5);
    while (body_offset_ == body_pending_.size() && !body_done_ && !body_failed_) {
      if (!body_reading_) {
        body_reading_ = true;
        net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->read_body_block(); });
      }
      if (body_cv_.wait_until(lock, deadline) == std::cv_status::timeout && body_offset_ == body_pending_.size() &&
          !body_done_ && !body_failed_) {
        body_failed_ = true;
        lock.unlock();
        fail_from_worker();
        throw Error(ErrorCode::invalid_argument, "the request body stopped arriving");
      }
    }
    if (body_offset_ < body_pending_.size()) {
      const std::size_t n = std::min(capacity, body_pending_.size() - body_offset_);
      std::memcpy(out, body_pending_.data() + body_offset_, n);
      body_offset_ += n;
      if (body_offset_ == body_pending_.size()) {
        sodium_memzero(body_pending_.data(), body_pending_.size());
        body_pending_.clear();
        body_offset_ = 0;
      }
      return n;
    }
    if (body_too_large_)
      throw Error(ErrorCode::payload_too_large, "request body larger than " + std::to_string(streamed_limit_) + " bytes");
    if (body_failed_)
      throw Error(ErrorCode::invalid_argument,
                  "the request body stopped arriving (timeout, disconnect or malformed chunked coding)");
    return 0;
  }

  void end() override {
    util::MutexLock lock(stream_mu_);
    stream_ended_ = true;
    if (!stream_writing_) {
      stream_writing_ = true;
      net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->pump_stream(); });
    }
  }

 private:
  auto& tcp_layer() { return beast::get_lowest_layer(stream_); }

  void on_handshake(error_code ec) {
    if (ec) return abort(ec);
    await_request();
  }

  // Waits for the first byte of the next request under the idle timeout.
  void await_request() {
    if (buffer_.size() > 0) return read_header();  // pipelined bytes are here already
    tcp_layer().expires_after(limits_.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096), [self = this->shared_from_this()](error_code ec, std::size_t n) {
      self->buffer_.commit(n);
      if (ec) return self->abort(ec);
      self->read_header();
    });
  }

  void read_header() {
    parser_.emplace();
    configure_header_parser(*parser_, limits_.max_header_bytes);
    parser_->on_chunk_header(chunk_limit_);
    chunked_total_ = 0;
    request_id_.clear();
    head_request_ = false;
    // The whole header usually came with the bytes already read (one TCP
    // segment): parse it here. Beast's asynchronous read would parse the
    // same bytes and then complete through the strand's queue, with a
    // timer armed and cancelled for nothing. Incomplete, nothing is
    // consumed and the asynchronous read goes on from the same bytes.
    if (buffer_.size() > 0) {
      error_code ec;
      buffer_.consume(parser_->put(buffer_.data(), ec));
      if (ec != bhttp::error::need_more) return on_header(ec);
    }
    tcp_layer().expires_after(limits_.header_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = this->shared_from_this()](error_code ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(error_code ec) {
    if (ec == bhttp::error::header_limit)
      return refuse(431, "header_too_large",
                    "request line and headers exceed " + std::to_string(limits_.max_header_bytes) + " bytes", {});
    if (ec) return refuse_malformed(ec);
    const Request& req = parser_->get();
    head_request_ = req.method() == bhttp::verb::head;
    if (const char* why = request_framing_error(req)) return refuse(400, "invalid_argument", why, {});
    header_fields_ = static_cast<std::size_t>(std::distance(req.begin(), req.end()));
    // A streamed-body route (import) has its own, larger limit; its body is
    // read by the handler as it goes, never held whole.
    const RequestHandler::RouteTraits traits = handler_.route_traits(req);
    streamed_limit_ = traits.streamed_body_limit;
    long_running_ = traits.streams;
    const std::size_t body_limit = streamed_limit_ > 0 ? streamed_limit_ : limits_.max_body_bytes;
    if (const auto length = parser_->content_length(); length && *length > body_limit)
      return refuse(413, "payload_too_large", "request body larger than " + std::to_string(body_limit) + " bytes", {});
    const bool expects_continue = iequals(trim(req[bhttp::field::expect]), "100-continue");
    if (streamed_limit_ > 0 && !parser_->is_done() && expects_continue)
      return write_continue(&Connection::dispatch_streamed);
    if (streamed_limit_ > 0) return dispatch_streamed();
    if (parser_->is_done()) return dispatch();
    if (expects_continue) return write_continue(&Connection::read_body);
    read_body();
  }

  // "100 Continue", then `next` (the client waits for it before the body).
  void write_continue(void (Connection::*next)()) {
    auto cont = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::continue_, 11);
    tcp_layer().expires_after(limits_.idle_timeout);
    bhttp::async_write(stream_, *cont, [self = this->shared_from_this(), cont, next](error_code ec, std::size_t) {
      if (ec) return self->abort(ec);
      ((*self).*next)();
    });
  }

  void read_body() {
    // Deadline: the header timeout plus the time the body takes at the
    // minimum rate (the whole limit when the length is not known).
    const std::uint64_t expected = parser_->content_length().value_or(limits_.max_body_bytes);
    const auto transfer = std::chrono::milliseconds(expected * 1000 / std::max<std::size_t>(1, limits_.min_body_rate));
    tcp_layer().expires_after(limits_.header_timeout + transfer);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = this->shared_from_this()](error_code ec, std::size_t) { self->on_body(ec); });
  }

  void on_body(error_code ec) {
    if (ec == bhttp::error::body_limit)
      return refuse(413, "payload_too_large",
                    "request body larger than " + std::to_string(limits_.max_body_bytes) + " bytes", {});
    if (ec) return refuse_malformed(ec);
    // Beast adds chunked trailer fields to the request's headers, after the
    // checks above and before authentication: a trailer could carry an
    // Authorization or Custos-Purpose no proxy in front ever saw.
    const Request& req = parser_->get();
    if (static_cast<std::size_t>(std::distance(req.begin(), req.end())) != header_fields_)
      return refuse(400, "invalid_argument", "trailer fields are not accepted", {});
    dispatch();
  }

  // A parse error gets 400; a timeout or a vanished peer gets nothing.
  void refuse_malformed(error_code ec) {
    if (answers_malformed(ec)) return refuse(400, "invalid_argument", "malformed HTTP request: " + ec.message(), {});
    abort(ec);
  }

  void dispatch() {
    request_ = parser_->release();
    parser_.reset();
    {
      util::MutexLock lock(body_mu_);
      body_streamed_ = false;
    }
    admit(nullptr);
  }

  // A streamed-body request: the handler starts once the header is in and
  // pulls the body through read(); the header parser becomes a buffer_body
  // parser that reads each block straight into body_block_.
  void dispatch_streamed() {
    request_ = Request(parser_->get().base());
    const bool done = parser_->is_done();
    if (!done) {
      body_parser_.emplace(std::move(*parser_));
      body_parser_->body_limit(streamed_limit_);
    }
    parser_.reset();
    {
      util::MutexLock lock(body_mu_);
      body_streamed_ = true;
      body_pending_.clear();
      body_offset_ = 0;
      body_done_ = done;
      body_failed_ = body_too_large_ = body_reading_ = false;
    }
    admit(this);
  }

  // The request is in (its body too, unless `body` streams it): its id,
  // then 503 while draining, else a worker.
  void admit(RequestBodyStream* body) {
    request_id_ = request_id_for(request_);
    if (draining_->load())
      return refuse(503, "unavailable", "the server is shutting down", {{"Retry-After", "1"}});
    take_busy();
    run_handler(body);
  }

  // Strand: reads the next block of a streamed body for read().
  void read_body_block() {
    body_block_.resize(kBodyBlock);
    auto& body = body_parser_->get().body();
    body.data = body_block_.data();
    body.size = body_block_.size();
    body.more = true;
    tcp_layer().expires_after(limits_.idle_timeout);
    bhttp::async_read(stream_, buffer_, *body_parser_,
                      [self = this->shared_from_this()](error_code ec, std::size_t) { self->on_body_block(ec); });
  }

  void on_body_block(error_code ec) {
    if (ec == bhttp::error::need_buffer) ec = {};  // the block is full: not an error
    const std::size_t got = body_block_.size() - body_parser_->get().body().size;
    {
      util::MutexLock lock(body_mu_);
      if (ec) {
        body_failed_ = true;
        body_too_large_ = ec == bhttp::error::body_limit;
      } else {
        body_pending_.append(body_block_.data(), got);
        body_done_ = body_parser_->is_done();
      }
      body_reading_ = false;
    }
    sodium_memzero(body_block_.data(), body_block_.size());
    body_cv_.notify_all();
    if (ec && is_timeout(ec)) counters_.timed_out.fetch_add(1);
  }

  // A streamed body the handler left unread: the rest of the byte stream
  // cannot frame a next request, so the connection closes after the reply.
  bool body_left_unread() {
    util::MutexLock lock(body_mu_);
    return body_streamed_ && !body_done_;
  }

  void run_handler(RequestBodyStream* body) {
    // request_ and request_id_ stay untouched until the handler is done:
    // the next request is read only after send() or finish_stream().
    net::post(long_running_ ? workers_.streams : workers_.quick, [self = this->shared_from_this(), body] {
      Result result = self->handler_.handle(self->request_, self->request_id_, *self, body);
      self->recheck_ = nullptr;  // it may refer to the request, which the next one replaces
      if (!result.streamed && self->stream_begun()) {
        // A handler that began a stream and then returned a whole body: the
        // stream is what the client has; end it.
        self->end();
        result.streamed = true;
      }
      if (result.streamed)
        return net::post(self->stream_.get_executor(), [self] {
          self->stream_handler_done_ = true;
          self->maybe_finish_stream();
        });
      if constexpr (!kTls) return self->send_from_worker(std::move(result));
      net::post(self->stream_.get_executor(),
                [self, r = std::make_shared<Result>(std::move(result))] { self->send(std::move(*r)); });
    });
  }

  template <class Response>
  void decorate(Response& res, const std::string& request_id) const {
    res.set("X-Request-Id", request_id);
    res.set(bhttp::field::cache_control, "no-store");
    res.set("X-Content-Type-Options", "nosniff");
    if constexpr (kTls) res.set(bhttp::field::strict_transport_security, "max-age=31536000");
  }

  void send(Result r) {
    bool close = false;
    auto hold = std::move(r.hold);
    auto res = make_response(std::move(r), close);
    write_response(std::move(res), close, std::move(hold));
  }

  // Plain TCP, on the worker that ran the handler: the response is written
  // here with non-blocking sends (the socket is non-blocking for
  // synchronous calls, see the constructor) and the strand is only asked
  // to read the next request. A small answer fits the socket's buffer at
  // once, so this saves the hand-back to the strand, the asynchronous
  // write's composed operation and its timer. Only the socket is touched,
  // not Beast's stream state: while a handler runs, the connection has no
  // operation pending and the strand runs nothing of it. What the socket
  // does not take at once is written by the strand as usual, and so is
  // everything on a TLS connection.
  void send_from_worker(Result r) {
    bool close = false;
    auto hold = std::move(r.hold);
    auto res = make_response(std::move(r), close);
    prepare_for_write(*res, close);
    auto serializer = std::make_shared<bhttp::response_serializer<bhttp::string_body>>(*res);
    error_code ec;
    while (!ec && !serializer->is_done()) bhttp::write_some(tcp_layer().socket(), *serializer, ec);
    const auto strand = stream_.get_executor();
    if (serializer->is_done()) {
      hold.reset();
      release_busy();
      return net::post(strand, [self = this->shared_from_this(), close] { self->after_write({}, close); });
    }
    if (ec != net::error::would_block)
      return net::post(strand, [self = this->shared_from_this(), ec] { self->after_write(ec, false); });
    net::post(strand, [self = this->shared_from_this(), res = std::move(res), serializer = std::move(serializer), close,
                       hold = std::move(hold)]() mutable {
      self->write_rest(std::move(res), std::move(serializer), close, std::move(hold));
    });
  }

  std::shared_ptr<bhttp::response<bhttp::string_body>> make_response(Result r, bool& close) {
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(static_cast<bhttp::status>(r.status),
                                                                      request_.version());
    decorate(*res, request_id_);
    res->set(bhttp::field::content_type, r.content_type);
    close = draining_->load() || !request_.keep_alive() || body_left_unread();
    for (auto& [k, v] : r.headers) {
      if (iequals(k, "Connection") && iequals(v, "close")) {
        close = true;
        continue;
      }
      // A handler's cache policy replaces the default no-store (static assets).
      if (iequals(k, "Cache-Control")) {
        res->set(bhttp::field::cache_control, v);
        continue;
      }
      res->insert(k, v);
    }
    res->body() = std::move(r.body);
    return res;
  }

  // The answer to a HEAD request keeps its status and headers, Content-Length
  // included, and loses its body (RFC 9110 §9.3.2): a client reads no content
  // after it, so body bytes would be taken for the start of the next response.
  void prepare_for_write(bhttp::response<bhttp::string_body>& res, bool close) const {
    res.keep_alive(!close);
    res.prepare_payload();
    if (head_request_) res.body().clear();  // after prepare_payload: the length stays stated
  }

  // A response is written (or failed): close, or read the next request.
  void after_write(error_code ec, bool close) {
    release_busy();
    if (ec) return abort(ec);
    if (close) return shutdown();
    await_request();
  }

  // Writes a whole response; then closes or reads the next request.
  // `hold` (e.g. the principal's in-flight slot) lasts until it is written.
  void write_response(std::shared_ptr<bhttp::response<bhttp::string_body>> res, bool close,
                      std::shared_ptr<void> hold) {
    prepare_for_write(*res, close);
    auto serializer = std::make_shared<bhttp::response_serializer<bhttp::string_body>>(*res);
    write_rest(std::move(res), std::move(serializer), close, std::move(hold));
  }

  // Writes what `serializer` has not sent yet: all of a response, or what
  // a worker's non-blocking send left (send_from_worker).
  void write_rest(std::shared_ptr<bhttp::response<bhttp::string_body>> res,
                  std::shared_ptr<bhttp::response_serializer<bhttp::string_body>> serializer, bool close,
                  std::shared_ptr<void> hold) {
    tcp_layer().expires_after(limits_.idle_timeout);
    auto& rest = *serializer;
    bhttp::async_write(stream_, rest, [self = this->shared_from_this(), res = std::move(res),
                                       serializer = std::move(serializer), close,
                                       hold = std::move(hold)](error_code ec, std::size_t) {
      self->after_write(ec, close);
    });
  }

  // Answers with a problem and closes (after letting the client read it).
  void refuse(int status, const std::string& code, const std::string& detail, HeaderList headers) {
    handler_.count_refusal(status);
    if (request_id_.empty()) request_id_ = random_request_id();
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(static_cast<bhttp::status>(status), 11);
    decorate(*res, request_id_);
    res->set(bhttp::field::content_type, kProblemJson);
    for (auto& [k, v] : headers) res->insert(k, v);
    res->body() = problem_body(status, code, detail, request_id_);
    write_response(std::move(res), /*close=*/true, nullptr);
  }

  // ---- streamed responses (see ResponseStream)

  void write_stream_head(const std::shared_ptr<bhttp::response<bhttp::empty_body>>& head) {
    stream_close_ = !head->keep_alive();
    auto serializer = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(*head);
    tcp_layer().expires_after(limits_.idle_timeout);
    bhttp::async_write_header(stream_, *serializer,
                              [self = this->shared_from_this(), head, serializer](error_code ec, std::size_t) {
                                if (ec) return self->fail_stream(ec);
                                self->pump_stream();
                              });
  }

  void pump_stream() {
    bool last = false;
    {
      util::MutexLock lock(stream_mu_);
      if (stream_failed_) return;
      stream_inflight_.clear();
      stream_inflight_.swap(stream_pending_);
      if (stream_inflight_.empty()) {
        if (!stream_ended_) {
          stream_writing_ = false;
          return;
        }
        last = true;
      }
    }
    stream_cv_.notify_all();
    if (last && stream_raw_) {
      stream_io_done_ = true;
      return maybe_finish_stream();
    }
    // The chunked coding (RFC 9112 §7.1) framed here rather than with
    // Beast's chunk buffer types: one buffer sequence type for every write
    // of a stream (see the top of this file).
    if (stream_raw_) {
      stream_chunk_head_.clear();
      stream_chunk_tail_ = {};
    } else if (last) {
      stream_chunk_head_ = "0\r\n\r\n";  // the last chunk, no trailers
      stream_chunk_tail_ = {};
    } else {
      std::array<char, 20> size{};
      const auto n = std::snprintf(size.data(), size.size(), "%zx\r\n", stream_inflight_.size());
      stream_chunk_head_.assign(size.data(), static_cast<std::size_t>(n));
      stream_chunk_tail_ = "\r\n";
    }
    const std::array<net::const_buffer, 3> buffers{net::buffer(stream_chunk_head_), net::buffer(stream_inflight_),
                                                   net::buffer(stream_chunk_tail_.data(), stream_chunk_tail_.size())};
    tcp_layer().expires_after(limits_.idle_timeout);
    net::async_write(stream_, buffers, [self = this->shared_from_this(), last](error_code ec, std::size_t) {
      if (ec) return self->fail_stream(ec);
      if (!last) return self->pump_stream();
      self->stream_io_done_ = true;
      self->maybe_finish_stream();
    });
  }

  bool stream_begun() {
    util::MutexLock lock(stream_mu_);
    return stream_begun_;
  }

  // The handler's recheck (ResponseStream::recheck), on its thread.
  bool recheck_due() const {
    return recheck_ && std::chrono::steady_clock::now() - rechecked_at_ >= recheck_every_;
  }
  void run_recheck() {
    rechecked_at_ = std::chrono::steady_clock::now();
    recheck_();
  }
  // False when the check throws, whatever it throws: a stream that cannot
  // be confirmed is cut, as one that is refused.
  bool passes_recheck() noexcept {
    try {
      run_recheck();
      return true;
    } catch (...) {
      return false;
    }
  }
  // A stream that failed its recheck ends now, and what the socket still
  // holds for the client (up to megabytes a slow reader has not taken) is
  // dropped with a reset rather than delivered after the stream's end: it
  // is meant for a caller who may no longer read it. Returns write()'s false.
  bool cut_after_recheck() {
    discard_unsent_ = true;
    fail_from_worker();
    return false;
  }

  // From a worker: the client is gone, too slow, or we are draining. The
  // strand closes the socket, so a write in flight ends at once.
  void fail_from_worker() {
    {
      util::MutexLock lock(stream_mu_);
      if (stream_failed_) return;
      stream_failed_ = true;
    }
    stream_cv_.notify_all();
    net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->fail_stream(net::error::operation_aborted); });
  }

  void fail_stream(error_code ec) {
    {
      util::MutexLock lock(stream_mu_);
      stream_failed_ = true;
    }
    stream_cv_.notify_all();
    if (!stream_io_done_) {
      stream_io_done_ = true;
      abort(ec);
    }
    maybe_finish_stream();
  }

  // A streamed response is over when its last byte is written (or the
  // stream failed) and its handler has returned; only then may the
  // connection read its next request.
  void maybe_finish_stream() {
    if (!stream_io_done_ || !stream_handler_done_) return;
    release_busy();
    bool failed = false;
    {
      util::MutexLock lock(stream_mu_);
      failed = stream_failed_;
      stream_pending_.clear();
      stream_writing_ = stream_ended_ = stream_failed_ = stream_begun_ = false;
    }
    stream_inflight_.clear();
    stream_io_done_ = stream_handler_done_ = false;
    if (failed) return;  // the socket is closed
    if (stream_close_ || stream_raw_ || body_left_unread()) return shutdown();
    await_request();
  }

  // ---- closing

  void abort(error_code ec) {
    if (is_timeout(ec)) counters_.timed_out.fetch_add(1);
    error_code ignored;
    if (discard_unsent_) {
      tcp_layer().socket().set_option(net::socket_base::linger(true, 0), ignored);  // close() resets
    } else {
      tcp_layer().socket().shutdown(tcp::socket::shutdown_both, ignored);
    }
    tcp_layer().close();
  }

  // Graceful close: TLS close_notify, or for plain TCP a half-close and a
  // bounded read of what the client still sends (so it reads our answer
  // rather than a reset), then close.
  void shutdown() {
    if constexpr (kTls) {
      tcp_layer().expires_after(kLingerTime);
      stream_.async_shutdown([self = this->shared_from_this()](error_code) { self->tcp_layer().close(); });
    } else {
      error_code ignored;
      tcp_layer().socket().shutdown(tcp::socket::shutdown_send, ignored);
      tcp_layer().expires_after(kLingerTime);
      linger();
    }
  }

  void linger() {
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(16 * 1024), [self = this->shared_from_this()](error_code ec, std::size_t n) {
      self->lingered_ += n;
      if (ec || self->lingered_ > kLingerBytes) return self->tcp_layer().close();
      self->linger();
    });
  }

  void take_busy() {
    util::MutexLock lock(counters_.busy_mu);
    ++counters_.busy;
    busy_ = true;
  }
  void release_busy() {
    util::MutexLock lock(counters_.busy_mu);
    if (!busy_) return;
    busy_ = false;
    if (--counters_.busy == 0) counters_.busy_cv.notify_all();
  }

  Stream stream_;
  RequestHandler& handler_;
  WorkerPools workers_;
  const EdgeLimits limits_;  // a copy: the listener may go before its connections
  EdgeCounters& counters_;   // outlives the io context
  const std::shared_ptr<std::atomic<bool>> draining_;
  const std::shared_ptr<net::ssl::context> tls_;  // kept alive for stream_
  const std::shared_ptr<void> address_slot_;       // --max-connections-per-address: released with the connection
  std::string peer_;  // the client's address, set once at accept

  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  // A streamed request body (BodyMode::stream), shared with the worker.
  std::optional<bhttp::request_parser<bhttp::buffer_body>> body_parser_;  // strand only
  std::vector<char> body_block_;  // strand only: the block being read
  std::size_t streamed_limit_ = 0;  // strand only: the streamed-body limit of the current request (0: none)
  bool long_running_ = false;        // strand only: the current request's handler runs on the stream pool
  util::Mutex body_mu_;
  util::CondVar body_cv_;
  std::string body_pending_ CUSTOS_GUARDED_BY(body_mu_);  // received, not yet read
  std::size_t body_offset_ CUSTOS_GUARDED_BY(body_mu_) = 0;
  bool body_streamed_ CUSTOS_GUARDED_BY(body_mu_) = false;  // the current request's body is streamed
  bool body_done_ CUSTOS_GUARDED_BY(body_mu_) = false;
  bool body_failed_ CUSTOS_GUARDED_BY(body_mu_) = false;
  bool body_too_large_ CUSTOS_GUARDED_BY(body_mu_) = false;
  bool body_reading_ CUSTOS_GUARDED_BY(body_mu_) = false;  // a block read is scheduled
  std::function<void(std::uint64_t, beast::string_view, error_code&)> chunk_limit_;
  std::uint64_t chunked_total_ = 0;
  std::size_t header_fields_ = 0;  // fields when the header was read (trailers add more)
  bool head_request_ = false;      // strand only: the current request is HEAD (its answer has no body)
  Request request_;  // the request being handled; read by the worker, then only here
  std::string request_id_;
  bool busy_ CUSTOS_GUARDED_BY(counters_.busy_mu) = false;
  std::size_t lingered_ = 0;

  // Streamed response state, shared with the worker running the handler.
  util::Mutex stream_mu_;
  util::CondVar stream_cv_;
  std::string stream_pending_ CUSTOS_GUARDED_BY(stream_mu_);
  std::string stream_inflight_;  // being written; strand only
  std::string stream_chunk_head_;            // strand only: its chunk-size line
  std::string_view stream_chunk_tail_;       // strand only: its CRLF
  bool stream_writing_ CUSTOS_GUARDED_BY(stream_mu_) = false;  // a pump or head write is scheduled
  bool stream_ended_ CUSTOS_GUARDED_BY(stream_mu_) = false;
  bool stream_failed_ CUSTOS_GUARDED_BY(stream_mu_) = false;
  bool stream_begun_ CUSTOS_GUARDED_BY(stream_mu_) = false;
  bool stream_raw_ = false;      // HTTP/1.0: no chunked coding; set before the head is written
  bool stream_close_ = false;    // strand only
  bool stream_io_done_ = false;       // strand only: last chunk written, or the stream failed
  bool stream_handler_done_ = false;  // strand only: the handler has returned
  // ResponseStream::recheck: the handler's thread only (set by the handler,
  // cleared when it returns, before the strand reads the next request).
  std::function<void()> recheck_;
  std::chrono::milliseconds recheck_every_{0};
  std::chrono::steady_clock::time_point rechecked_at_{};
  // Set by a failed recheck (cut_after_recheck) before the strand closes:
  // the close drops the unsent bytes.
  std::atomic<bool> discard_unsent_{false};
};

}  // namespace custos::http::detail
