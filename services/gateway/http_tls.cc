#include "services/gateway/http_tls.h"

#include <civetweb.h>
#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <memory>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"

// Set by CMake: where the build put the compatibility library, and its file name (looked for
// next to the executable first, for installs that copy the two files together).
#ifndef PHI_CIVETWEB_OPENSSL3_COMPAT_PATH
#define PHI_CIVETWEB_OPENSSL3_COMPAT_PATH ""
#endif
#ifndef PHI_CIVETWEB_OPENSSL3_COMPAT_NAME
#define PHI_CIVETWEB_OPENSSL3_COMPAT_NAME "libphi_civetweb_openssl3.so"
#endif

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

std::string ExecutableDir() {
  std::vector<char> buf(4096);
  ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return "";
  std::string path(buf.data(), static_cast<size_t>(n));
  return path.substr(0, path.rfind('/') + 1);
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
        mismatch ? absl::StrCat("' does not belong to --tls-cert '", files.cert_file, "'") : "' is not a readable PEM private key",
        ": ", OpenSslError()));
  }
  return absl::OkStatus();
}

absl::Status LoadCivetwebTls() {
  std::string tried;
  for (const std::string& path :
       {ExecutableDir() + PHI_CIVETWEB_OPENSSL3_COMPAT_NAME, std::string(PHI_CIVETWEB_OPENSSL3_COMPAT_PATH)}) {
    if (path.empty()) continue;
    // Kept loaded for the life of the process: civetweb holds pointers into it.
    if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) != nullptr) {
      tried.clear();
      break;
    }
    const char* why = dlerror();
    absl::StrAppend(&tried, tried.empty() ? "" : "; ", why ? why : path);
  }
  const unsigned features = mg_init_library(MG_FEATURES_TLS);
  if ((features & MG_FEATURES_TLS) != 0) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("HTTPS: civetweb cannot load OpenSSL (libssl.so, libcrypto.so)",
                   tried.empty() ? "" : absl::StrCat("; the OpenSSL 3 compatibility library did not load: ", tried)));
}

}  // namespace

absl::Status InitCivetwebTls() {
  static const absl::Status status = LoadCivetwebTls();
  return status;
}

absl::Status CheckTlsFiles(const HttpTlsFiles& files) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()), &SSL_CTX_free);
  if (ctx == nullptr) return absl::InternalError(absl::StrCat("TLS: SSL_CTX_new: ", OpenSslError()));
  return Configure(ctx.get(), files);
}

absl::Status ConfigureSslContext(ssl_ctx_st* ctx, const HttpTlsFiles& files) {
  if (ctx == nullptr) return absl::InternalError("TLS: no SSL_CTX");
  return Configure(ctx, files);
}

int ConfigureCivetwebSslContext(void* ssl_ctx, void* user_data) {
  const auto* files = static_cast<const HttpTlsFiles*>(user_data);
  if (files == nullptr || ssl_ctx == nullptr) return -1;
  return Configure(static_cast<SSL_CTX*>(ssl_ctx), *files).ok() ? 1 : -1;
}

}  // namespace phi::gateway
