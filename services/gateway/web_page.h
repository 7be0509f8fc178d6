// The chat page (services/gateway/web/: index.html, app.js, style.css) served by the gateway's
// HTTP port at "/". The files are compiled into the binary (cmake/embed_files.cmake turns each
// into a byte array at build time): nothing is read from disk at run time and nothing is loaded
// from outside the gateway. Every response carries a Content-Security-Policy that allows only
// the gateway's own origin (no inline script, no eval), X-Content-Type-Options: nosniff and
// Referrer-Policy: no-referrer; ETags from the files' SHA-256 make reloads cheap (304).
#ifndef PHI_SERVICES_GATEWAY_WEB_PAGE_H_
#define PHI_SERVICES_GATEWAY_WEB_PAGE_H_

#include <cstddef>
#include <string_view>

#include "services/gateway/http_server.h"

namespace phi::gateway {

struct EmbeddedFile {
  const char* name;  // file name in services/gateway/web/, e.g. "app.js"
  const unsigned char* data;
  size_t size;
  const char* etag;  // quoted, e.g. "\"1f3a...\""
};

namespace web {
// Defined by the source that cmake/embed_files.cmake generates.
extern const EmbeddedFile kEmbeddedFiles[];
extern const size_t kEmbeddedFileCount;
}  // namespace web

// The file that `path` names: "/" and "/index.html" the page, "/static/NAME" the others;
// null for any other path.
const EmbeddedFile* WebPageFile(std::string_view path);

// Content-Type from the file name's extension ("text/html; charset=utf-8", ...).
std::string_view WebContentType(std::string_view name);

// Answers `ex` when its path is the page's: 200 with the file (HEAD: headers only), 304 when
// If-None-Match names the file's ETag, 405 for methods other than GET and HEAD. Returns false,
// answering nothing, for any other path.
bool ServeWebPage(HttpExchange& ex);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_WEB_PAGE_H_
