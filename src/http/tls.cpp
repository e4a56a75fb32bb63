#include "tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace custos::http {
namespace {

// TLS 1.2 suites (Mozilla "intermediate" without DHE); TLS 1.3 uses OpenSSL's defaults.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

int no_password(char*, int, int, void*) { return 0; }  // never prompt on a terminal

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

[[noreturn]] void fail(const std::string& what) {
  ERR_clear_error();
  throw std::runtime_error(what);
}

File open_pem(const std::filesystem::path& path, const char* what) {
  File f(std::fopen(path.c_str(), "re"));
  if (!f) fail(std::string("cannot read TLS ") + what + " file " + path.string());
  return f;
}

}  // namespace

std::shared_ptr<boost::asio::ssl::context> make_tls_context(const std::filesystem::path& cert_path,
                                                            const std::filesystem::path& key_path) {
  ERR_clear_error();
  std::unique_ptr<X509, X509Free> cert;
  std::vector<std::unique_ptr<X509, X509Free>> chain;
  {
    File f = open_pem(cert_path, "certificate");
    cert.reset(PEM_read_X509_AUX(f.get(), nullptr, no_password, nullptr));
    while (cert) {
      X509* extra = PEM_read_X509(f.get(), nullptr, no_password, nullptr);
      if (extra == nullptr) break;
      chain.emplace_back(extra);
    }
    ERR_clear_error();  // the end of the PEM sequence reads as an error
    if (!cert) fail("no PEM certificate in " + cert_path.string());
  }
  std::unique_ptr<EVP_PKEY, KeyFree> key;
  {
    File f = open_pem(key_path, "key");
    // Checked on the open file, so the file read is the file judged.
    struct stat st {};
    if (::fstat(::fileno(f.get()), &st) != 0 || !S_ISREG(st.st_mode))
      fail("the TLS key " + key_path.string() + " is not a regular file");
    if ((st.st_mode & 0077) != 0)
      fail("the TLS private key " + key_path.string() +
           " is accessible by group or others; restrict it (chmod 600) and start again");
    key.reset(PEM_read_PrivateKey(f.get(), nullptr, no_password, nullptr));
    if (!key) fail("no unencrypted PEM private key in " + key_path.string());
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1)
    fail("the TLS key in " + key_path.string() + " does not match the certificate in " + cert_path.string());

  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use |
                   ssl::context::no_compression);
  SSL_CTX* native = ctx->native_handle();
  if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1) fail("TLS: cannot set the minimum version");
  SSL_CTX_set_options(native, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1) fail("TLS: cannot set the cipher list");
  if (SSL_CTX_use_certificate(native, cert.get()) != 1) fail("TLS: cannot use the certificate");
  for (const auto& c : chain)
    if (SSL_CTX_add1_chain_cert(native, c.get()) != 1) fail("TLS: cannot add a chain certificate");
  if (SSL_CTX_use_PrivateKey(native, key.get()) != 1) fail("TLS: cannot use the private key");
  return ctx;
}

}  // namespace custos::http
