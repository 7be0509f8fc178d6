// A tiny shared library (SONAME "libssl.so") that lets Debian 12's civetweb 1.15 use OpenSSL 3.
//
// Why it exists: Debian's libcivetweb loads OpenSSL at run time with dlopen("libssl.so") and then
// dlsym()s the OpenSSL 1.1 function table. OpenSSL 3 no longer exports SSL_get_peer_certificate
// (it became a macro for SSL_get1_peer_certificate), so the table fails to load: mg_start then
// refuses an HTTPS port, or, after mg_init_library(MG_FEATURES_TLS), starts anyway and crashes on
// the first handshake through a null function pointer. That was the segfault seen with HTTPS.
//
// http_tls.cc dlopen()s this library by path before civetweb initialises TLS; glibc then answers
// civetweb's dlopen("libssl.so") with it (an already-loaded object matches by SONAME), and
// dlsym() on it finds the one missing symbol here and every other one in its dependency
// libssl.so.3 (libcrypto.so.3 likewise, which civetweb opens by its own name and needs nothing).
#include <openssl/ssl.h>

#undef SSL_get_peer_certificate

extern "C" __attribute__((visibility("default"))) X509* SSL_get_peer_certificate(const SSL* ssl);

// OpenSSL 1.1's SSL_get_peer_certificate already returned a new reference, as get1 does.
extern "C" X509* SSL_get_peer_certificate(const SSL* ssl) { return SSL_get1_peer_certificate(ssl); }
