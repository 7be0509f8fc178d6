// Configuration from command-line flags and environment variables. A flag wins
// over its environment variable, which wins over the default.
//
//   phi::common::FlagSet flags("phi-tokenizer", "Serves phi.v1.TokenizerService.");
//   int64_t port = 50052;
//   flags.AddInt("port", "PHI_PORT", &port, 1, 65535, "gRPC port");
//   phi::common::ParseFlagsOrExit(flags, argc, argv);
#ifndef PHI_SERVICES_COMMON_CONFIG_H_
#define PHI_SERVICES_COMMON_CONFIG_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace phi::common {

// Reads an environment variable; tests pass their own.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup ProcessEnv();

class FlagSet {
 public:
  FlagSet(std::string program, std::string summary);

  // `env` may be empty (no environment variable). Values point at storage that
  // holds the default and outlives Parse.
  void AddString(const std::string& name, const std::string& env, std::string* value, const std::string& help);
  // A string restricted to `allowed` values.
  void AddChoice(const std::string& name, const std::string& env, std::string* value,
                 std::vector<std::string> allowed, const std::string& help);
  void AddInt(const std::string& name, const std::string& env, int64_t* value, int64_t min, int64_t max,
              const std::string& help);
  void AddDouble(const std::string& name, const std::string& env, double* value, double min, double max,
                 const std::string& help);
  // --name, --name=true|false|1|0, --noname, --no-name.
  void AddBool(const std::string& name, const std::string& env, bool* value, const std::string& help);
  // Repeatable: each --name VALUE appends one value. The environment variable holds a
  // comma-separated list; any --name on the command line replaces it.
  void AddStringList(const std::string& name, const std::string& env, std::vector<std::string>* values,
                     const std::string& help);

  // Accepts --name=value and --name value (also with a single dash). Errors are
  // INVALID_ARGUMENT naming the flag (or variable) and what it accepts.
  absl::Status Parse(int argc, const char* const* argv, const EnvLookup& env);

  bool help_requested() const { return help_requested_; }
  std::string Usage() const;
  // Positional arguments left after flags (after "--" too).
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  enum class Kind { kString, kChoice, kInt, kDouble, kBool, kStringList };
  struct Flag {
    std::string name, env, help;
    Kind kind;
    void* value;
    int64_t imin = 0, imax = 0;
    double dmin = 0, dmax = 0;
    std::vector<std::string> allowed;
    std::string default_text;
    bool seen_on_command_line = false;  // kStringList: the first flag drops the environment's values
  };
  Flag* Find(const std::string& name);
  absl::Status Set(Flag& flag, const std::string& text, const std::string& source);
  std::string Accepts(const Flag& flag) const;
  void Add(Flag flag);

  std::string program_, summary_;
  std::vector<Flag> flags_;
  std::vector<std::string> positional_;
  bool help_requested_ = false;
};

// For main(): parses flags and the process environment; --help prints usage and
// exits 0; a bad flag (or a positional argument, unless allowed) prints the
// error and exits 2.
void ParseFlagsOrExit(FlagSet& flags, int argc, char** argv, bool allow_positional = false);

}  // namespace phi::common

#endif  // PHI_SERVICES_COMMON_CONFIG_H_
