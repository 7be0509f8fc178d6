#include "services/common/logging.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace phi::log {
namespace {

std::atomic<int> g_min_level{static_cast<int>(Level::kInfo)};
std::mutex g_service_mu;
std::string* g_service = new std::string("phi");  // never destroyed: logging may run at exit

const char* LevelName(Level l) {
  switch (l) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarning: return "warning";
    case Level::kError: return "error";
  }
  return "info";
}

}  // namespace

void SetService(std::string_view service) {
  std::lock_guard<std::mutex> lock(g_service_mu);
  *g_service = std::string(service);
}

void SetMinLevel(Level level) { g_min_level.store(static_cast<int>(level)); }

bool ParseLevel(std::string_view text, Level* level) {
  if (text == "debug") *level = Level::kDebug;
  else if (text == "info") *level = Level::kInfo;
  else if (text == "warning") *level = Level::kWarning;
  else if (text == "error") *level = Level::kError;
  else return false;
  return true;
}

void AppendJsonString(std::string* out, std::string_view s) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          *out += buf;
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

Line::Line(Level level, std::string_view event)
    : enabled_(static_cast<int>(level) >= g_min_level.load(std::memory_order_relaxed)) {
  if (!enabled_) return;
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char ts[96];
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  buf_.reserve(256);
  buf_ += "{\"ts\":\"";
  buf_ += ts;
  buf_ += "\",\"level\":\"";
  buf_ += LevelName(level);
  buf_ += "\",\"service\":";
  {
    std::lock_guard<std::mutex> lock(g_service_mu);
    AppendJsonString(&buf_, *g_service);
  }
  buf_ += ",\"event\":";
  AppendJsonString(&buf_, event);
}

Line::~Line() {
  if (!enabled_) return;
  buf_ += "}\n";
  // One write: lines from concurrent threads do not interleave.
  ssize_t unused = ::write(STDERR_FILENO, buf_.data(), buf_.size());
  (void)unused;
}

Line& Line::Str(std::string_view key, std::string_view value) {
  if (!enabled_) return *this;
  buf_ += ',';
  AppendJsonString(&buf_, key);
  buf_ += ':';
  AppendJsonString(&buf_, value);
  return *this;
}

Line& Line::Int(std::string_view key, int64_t value) {
  if (!enabled_) return *this;
  buf_ += ',';
  AppendJsonString(&buf_, key);
  buf_ += ':';
  buf_ += std::to_string(value);
  return *this;
}

Line& Line::Num(std::string_view key, double value) {
  if (!enabled_) return *this;
  buf_ += ',';
  AppendJsonString(&buf_, key);
  buf_ += ':';
  if (std::isfinite(value)) {
    char b[32];
    std::snprintf(b, sizeof b, "%.6g", value);
    buf_ += b;
  } else {
    buf_ += "null";
  }
  return *this;
}

Line& Line::Bool(std::string_view key, bool value) {
  if (!enabled_) return *this;
  buf_ += ',';
  AppendJsonString(&buf_, key);
  buf_ += value ? ":true" : ":false";
  return *this;
}

}  // namespace phi::log
