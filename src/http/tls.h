// TLS for custosd's listener: builds the OpenSSL server context from PEM
// files (TLS 1.2 or later, ECDHE AEAD suites, no renegotiation).
//
// A context is built once per (re)load and shared by every connection
// accepted while it is current; SIGHUP builds a new one, so certificates
// rotate without a restart and connections in flight keep the old one.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <filesystem>
#include <memory>

namespace custos::http {

// Throws std::runtime_error with an operator-facing message (never key
// bytes) if a file is unreadable, the key is readable by group or others,
// the key does not match the certificate, or OpenSSL refuses the policy.
std::shared_ptr<boost::asio::ssl::context> make_tls_context(const std::filesystem::path& cert_chain_pem,
                                                            const std::filesystem::path& private_key_pem);

}  // namespace custos::http
