// TLS for the gateway's civetweb HTTP API: getting Debian's civetweb to use OpenSSL 3 (see
// civetweb_openssl3_compat.cc) and loading --tls-cert / --tls-key into its SSL_CTX ourselves,
// so the certificate and key may be separate files and errors name the file.
#ifndef PHI_SERVICES_GATEWAY_HTTP_TLS_H_
#define PHI_SERVICES_GATEWAY_HTTP_TLS_H_

#include <string>

#include "absl/status/status.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace phi::gateway {

struct HttpTlsFiles {
  std::string cert_file;  // PEM certificate chain, leaf first
  std::string key_file;   // PEM private key of the leaf
};

// Once per process: loads the OpenSSL 3 compatibility library and initialises civetweb's TLS
// feature. FAILED_PRECONDITION (saying what is missing) when civetweb still cannot do TLS; never
// start an HTTPS listener then: civetweb would crash on the first handshake.
absl::Status InitCivetwebTls();

// Loads both files into a throwaway SSL_CTX and checks that the key belongs to the certificate;
// INVALID_ARGUMENT naming the flag, the file and OpenSSL's reason otherwise.
absl::Status CheckTlsFiles(const HttpTlsFiles& files);

// Configures a server SSL_CTX (an `SSL_CTX*`): TLS 1.2 or newer, the certificate chain and the
// key; errors as CheckTlsFiles.
absl::Status ConfigureSslContext(ssl_ctx_st* ctx, const HttpTlsFiles& files);

// civetweb's init_ssl callback: `user_data` is the HttpTlsFiles passed to mg_start. Returns 1
// (context configured: TLS 1.2 or newer, certificate, key) or -1.
int ConfigureCivetwebSslContext(void* ssl_ctx, void* user_data);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_HTTP_TLS_H_
