// Structured logs: one JSON object per line on stderr, one line per event.
//
//   PHI_LOG(INFO, "request_done").Str("request_id", id).Int("tokens", n);
//
// The line is written with a single write(2) when the statement ends, so lines
// from concurrent threads never interleave.
#ifndef PHI_SERVICES_COMMON_LOGGING_H_
#define PHI_SERVICES_COMMON_LOGGING_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace phi::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Process-wide settings, set once by main().
void SetService(std::string_view service);
void SetMinLevel(Level level);
// "debug", "info", "warning", "error"; false if unknown.
bool ParseLevel(std::string_view text, Level* level);

class Line {
 public:
  Line(Level level, std::string_view event);
  ~Line();
  Line(const Line&) = delete;
  Line& operator=(const Line&) = delete;

  Line& Str(std::string_view key, std::string_view value);
  Line& Int(std::string_view key, int64_t value);
  Line& Num(std::string_view key, double value);
  Line& Bool(std::string_view key, bool value);

 private:
  bool enabled_;
  std::string buf_;
};

// JSON string escaping (exposed for tests).
void AppendJsonString(std::string* out, std::string_view s);

}  // namespace phi::log

// level: DEBUG, INFO, WARNING or ERROR.
#define PHI_LOG(level, event) ::phi::log::Line(::phi::log::LevelOf_##level, event)

namespace phi::log {
constexpr Level LevelOf_DEBUG = Level::kDebug;
constexpr Level LevelOf_INFO = Level::kInfo;
constexpr Level LevelOf_WARNING = Level::kWarning;
constexpr Level LevelOf_ERROR = Level::kError;
}  // namespace phi::log

#endif  // PHI_SERVICES_COMMON_LOGGING_H_
