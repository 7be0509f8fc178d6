// TLS for the gateway's HTTP API (http_server.h): loading --tls-cert / --tls-key into an OpenSSL
// SSL_CTX, so the certificate and key may be separate files and errors name the flag and file.
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

// Loads both files into a throwaway SSL_CTX and checks that the key belongs to the certificate;
// INVALID_ARGUMENT naming the flag, the file and OpenSSL's reason otherwise.
absl::Status CheckTlsFiles(const HttpTlsFiles& files);

// Configures a server SSL_CTX (an `SSL_CTX*`): TLS 1.2 or newer, the certificate chain and the
// key; errors as CheckTlsFiles.
absl::Status ConfigureSslContext(ssl_ctx_st* ctx, const HttpTlsFiles& files);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_HTTP_TLS_H_
