#include "services/gateway/web_page.h"

#include <string>


namespace phi::gateway {

namespace {

constexpr std::string_view kStaticPrefix = "/static/";

// Only the gateway's own origin; no inline script or style, no eval, no plugins, no framing.
constexpr char kContentSecurityPolicy[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

HttpHeaders PageHeaders(const EmbeddedFile& f) {
  return {{"ETag", f.etag},
          // Revalidated on every load (304 when unchanged): a rebuilt gateway's page shows at once.
          {"Cache-Control", "no-cache"},
          {"Content-Security-Policy", kContentSecurityPolicy},
          {"X-Content-Type-Options", "nosniff"},
          {"Referrer-Policy", "no-referrer"},
          {"X-Frame-Options", "DENY"},
          {"Cross-Origin-Opener-Policy", "same-origin"}};
}

// If-None-Match: "*" or a comma-separated list of entity tags, weak ones (W/) compared weakly.
bool EtagMatches(std::string_view if_none_match, std::string_view etag) {
  while (!if_none_match.empty()) {
    const size_t comma = if_none_match.find(',');
    std::string_view tag = if_none_match.substr(0, comma);
    if_none_match = comma == std::string_view::npos ? std::string_view() : if_none_match.substr(comma + 1);
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    if (tag == "*" || tag == etag) return true;
  }
  return false;
}

}  // namespace

const EmbeddedFile* WebPageFile(std::string_view path) {
  std::string_view name;
  if (path == "/" || path == "/index.html") {
    name = "index.html";
  } else if (path.starts_with(kStaticPrefix) && path.size() > kStaticPrefix.size()) {
    name = path.substr(kStaticPrefix.size());
    if (name == "index.html") return nullptr;  // the page has one address
  } else {
    return nullptr;
  }
  for (size_t i = 0; i < web::kEmbeddedFileCount; ++i) {
    if (name == web::kEmbeddedFiles[i].name) return &web::kEmbeddedFiles[i];
  }
  return nullptr;
}

std::string_view WebContentType(std::string_view name) {
  if (name.ends_with(".html")) return "text/html; charset=utf-8";
  if (name.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (name.ends_with(".css")) return "text/css; charset=utf-8";
  if (name.ends_with(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

bool ServeWebPage(HttpExchange& ex) {
  const HttpRequest& req = ex.request();
  const EmbeddedFile* f = WebPageFile(req.path);
  if (f == nullptr) return false;
  if (req.method != "GET" && req.method != "HEAD") {
    // req.path is one of the page's fixed paths here: nothing to escape.
    ex.Respond(405, "application/json",
               R"({"error":{"message":")" + req.path +
                   R"(: use GET or HEAD","type":"invalid_request_error","param":null,"code":null}})",
               {{"Allow", "GET, HEAD"}});
    return true;
  }
  HttpHeaders headers = PageHeaders(*f);
  if (std::string_view inm = req.Header("If-None-Match"); !inm.empty() && EtagMatches(inm, f->etag)) {
    ex.Respond(304, "", "", std::move(headers));
    return true;
  }
  ex.Respond(200, WebContentType(f->name), std::string(reinterpret_cast<const char*>(f->data), f->size),
             std::move(headers));
  return true;
}

}  // namespace phi::gateway
