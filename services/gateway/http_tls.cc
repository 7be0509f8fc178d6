#include "services/gateway/http_tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>

#include "absl/strings/str_cat.h"

namespace phi::gateway {
namespace {

std::string OpenSslError() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {  // the queue, oldest first; the last is the most specific
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out = buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

// Loads the certificate chain and key into `ctx`; the error names the flag and the file.
absl::Status Configure(SSL_CTX* ctx, const HttpTlsFiles& files) {
  ERR_clear_error();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
    return absl::InternalError(absl::StrCat("TLS: cannot require TLS 1.2: ", OpenSslError()));
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, files.cert_file.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert: '", files.cert_file, "' is not a readable PEM certificate: ", OpenSslError()));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, files.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    // OpenSSL compares the key with the certificate while loading it: say which failure it is.
    const bool mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-key: '", files.key_file,
        mismatch ? absl::StrCat("' does not belong to --tls-cert '", files.cert_file, "'")
                 : "' is not a readable PEM private key",
        ": ", OpenSslError()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTlsFiles(const HttpTlsFiles& files) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()), &SSL_CTX_free);
  if (ctx == nullptr) return absl::InternalError(absl::StrCat("TLS: SSL_CTX_new: ", OpenSslError()));
  return Configure(ctx.get(), files);
}

absl::Status ConfigureSslContext(ssl_ctx_st* ctx, const HttpTlsFiles& files) {
  if (ctx == nullptr) return absl::InternalError("TLS: no SSL_CTX");
  return Configure(ctx, files);
}

}  // namespace phi::gateway
