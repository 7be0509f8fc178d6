#include "services/common/config.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "services/common/status_macros.h"

namespace phi::common {

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

FlagSet::FlagSet(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void FlagSet::Add(Flag flag) {
  if (Find(flag.name) != nullptr) {
    std::fprintf(stderr, "flag --%s defined twice\n", flag.name.c_str());
    std::abort();
  }
  flags_.push_back(std::move(flag));
}

void FlagSet::AddString(const std::string& name, const std::string& env, std::string* value,
                        const std::string& help) {
  Add({name, env, help, Kind::kString, value, 0, 0, 0, 0, {}, "\"" + *value + "\""});
}

void FlagSet::AddChoice(const std::string& name, const std::string& env, std::string* value,
                        std::vector<std::string> allowed, const std::string& help) {
  Add({name, env, help, Kind::kChoice, value, 0, 0, 0, 0, std::move(allowed), *value});
}

void FlagSet::AddInt(const std::string& name, const std::string& env, int64_t* value, int64_t min, int64_t max,
                     const std::string& help) {
  Add({name, env, help, Kind::kInt, value, min, max, 0, 0, {}, std::to_string(*value)});
}

void FlagSet::AddDouble(const std::string& name, const std::string& env, double* value, double min, double max,
                        const std::string& help) {
  Add({name, env, help, Kind::kDouble, value, 0, 0, min, max, {}, absl::StrCat(*value)});
}

void FlagSet::AddBool(const std::string& name, const std::string& env, bool* value, const std::string& help) {
  Add({name, env, help, Kind::kBool, value, 0, 0, 0, 0, {}, *value ? "true" : "false"});
}

void FlagSet::AddStringList(const std::string& name, const std::string& env, std::vector<std::string>* values,
                            const std::string& help) {
  Add({name, env, help, Kind::kStringList, values, 0, 0, 0, 0, {}, values->empty() ? "none" : absl::StrJoin(*values, ",")});
}

FlagSet::Flag* FlagSet::Find(const std::string& name) {
  for (auto& f : flags_)
    if (f.name == name) return &f;
  return nullptr;
}

std::string FlagSet::Accepts(const Flag& flag) const {
  switch (flag.kind) {
    case Kind::kString: return "a string";
    case Kind::kChoice: return "one of: " + absl::StrJoin(flag.allowed, ", ");
    case Kind::kInt: return absl::StrCat("an integer in [", flag.imin, ", ", flag.imax, "]");
    case Kind::kDouble: return absl::StrCat("a number in [", flag.dmin, ", ", flag.dmax, "]");
    case Kind::kBool: return "true or false";
    case Kind::kStringList: return "a string, repeatable";
  }
  return "";
}

absl::Status FlagSet::Set(Flag& flag, const std::string& text, const std::string& source) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid value \"", text, "\" for ", source, ": expected ", Accepts(flag)));
  };
  switch (flag.kind) {
    case Kind::kString:
      *static_cast<std::string*>(flag.value) = text;
      return absl::OkStatus();
    case Kind::kChoice:
      for (const auto& a : flag.allowed) {
        if (a == text) {
          *static_cast<std::string*>(flag.value) = text;
          return absl::OkStatus();
        }
      }
      return bad();
    case Kind::kInt: {
      int64_t v = 0;
      if (!absl::SimpleAtoi(text, &v) || v < flag.imin || v > flag.imax) return bad();
      *static_cast<int64_t*>(flag.value) = v;
      return absl::OkStatus();
    }
    case Kind::kDouble: {
      double v = 0;
      if (!absl::SimpleAtod(text, &v) || !std::isfinite(v) || v < flag.dmin || v > flag.dmax) return bad();
      *static_cast<double*>(flag.value) = v;
      return absl::OkStatus();
    }
    case Kind::kBool: {
      bool v = false;
      if (!absl::SimpleAtob(text, &v)) return bad();
      *static_cast<bool*>(flag.value) = v;
      return absl::OkStatus();
    }
    case Kind::kStringList: {
      auto* values = static_cast<std::vector<std::string>*>(flag.value);
      if (source.rfind("environment", 0) == 0) {
        *values = absl::StrSplit(text, ',', absl::SkipEmpty());
        return absl::OkStatus();
      }
      if (!flag.seen_on_command_line) values->clear();
      flag.seen_on_command_line = true;
      values->push_back(text);
      return absl::OkStatus();
    }
  }
  return bad();
}

absl::Status FlagSet::Parse(int argc, const char* const* argv, const EnvLookup& env) {
  // Environment first, so that flags parsed afterwards win.
  for (auto& f : flags_) {
    if (f.env.empty()) continue;
    if (auto v = env(f.env); v.has_value()) {
      PHI_RETURN_IF_ERROR(Set(f, *v, "environment variable " + f.env + " (flag --" + f.name + ")"));
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) positional_.push_back(argv[i]);
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      positional_.push_back(arg);
      continue;
    }
    arg = arg.substr(arg[1] == '-' ? 2 : 1);
    if (arg == "help" || arg == "h") {
      help_requested_ = true;
      continue;
    }
    std::string name = arg, value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    Flag* flag = Find(name);
    if (flag == nullptr && !has_value && name.rfind("no", 0) == 0) {
      // --noname and --no-name
      Flag* negated = Find(name.substr(name.rfind("no-", 0) == 0 ? 3 : 2));
      if (negated != nullptr && negated->kind == Kind::kBool) {
        *static_cast<bool*>(negated->value) = false;
        continue;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " (", program_, " --help lists the flags)"));
    }
    if (!has_value) {
      if (flag->kind == Kind::kBool) {
        *static_cast<bool*>(flag->value) = true;
        continue;
      }
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value: ", Accepts(*flag)));
      }
      value = argv[++i];
    }
    PHI_RETURN_IF_ERROR(Set(*flag, value, "flag --" + name));
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  std::string out = absl::StrCat("Usage: ", program_, " [flags]\n", summary_, "\n\nFlags (a flag wins over its ",
                                 "environment variable):\n");
  for (const auto& f : flags_) {
    absl::StrAppend(&out, "  --", f.name, "  ", f.help, "\n      ", Accepts(f), "; default ", f.default_text);
    if (!f.env.empty()) absl::StrAppend(&out, "; env ", f.env);
    out += "\n";
  }
  return out;
}

void ParseFlagsOrExit(FlagSet& flags, int argc, char** argv, bool allow_positional) {
  absl::Status s = flags.Parse(argc, argv, ProcessEnv());
  if (s.ok() && !allow_positional && !flags.positional().empty()) {
    s = absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", flags.positional()[0],
                                                "\" (flags are --name=value)"));
  }
  if (flags.help_requested()) {
    std::fputs(flags.Usage().c_str(), stdout);
    std::exit(0);
  }
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", argc > 0 ? argv[0] : "phi", std::string(s.message()).c_str());
    std::exit(2);
  }
}

}  // namespace phi::common
