#include "services/worker/grammar/grammar_from_spec.h"

#include <cstdio>
#include <exception>
#include <optional>
#include <regex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace phi::worker {
namespace {

using Kind = ConstraintSpec::Kind;

// OpenAI's json_object is "a JSON object", while xgrammar's builtin JSON grammar also allows a
// top-level array: a schema of any object says exactly that.
constexpr char kAnyObjectSchema[] = R"({"type": "object"})";

// One EBNF string literal. Control characters as \uXXXX: the lexer ends a literal at a raw
// newline, and \x takes every hex digit that follows.
void AppendEbnfLiteral(std::string_view s, std::string& out) {
  out += '"';
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;  // UTF-8 bytes pass through: the lexer reads UTF-8
    }
  }
  out += '"';
}

// xgrammar's checks throw "[12:00:00] /path/to/file.cc:94: Regex parsing error at position
// 6: ..."; the client gets the part after the source location.
std::string Message(const std::exception& e) {
  static const std::regex kLocation(R"(^\[[0-9:]+\] [^ ]+:[0-9]+: )");
  std::string m = std::regex_replace(e.what(), kLocation, "", std::regex_constants::format_first_only);
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

xgrammar::CompiledGrammar CompileOrThrow(xgrammar::GrammarCompiler& compiler, const ConstraintSpec& spec) {
  // Compact JSON means no whitespace at all: xgrammar's own compact separators have spaces.
  std::optional<std::pair<std::string, std::string>> separators;
  if (!spec.any_whitespace) separators = std::make_pair(std::string(","), std::string(":"));
  const std::optional<int> max_whitespace =
      spec.any_whitespace ? std::optional<int>(kMaxJsonWhitespace) : std::nullopt;
  switch (spec.kind) {
    case Kind::kJsonObject:
      return compiler.CompileJSONSchema(kAnyObjectSchema, spec.any_whitespace, std::nullopt, separators,
                                        /*strict_mode=*/false, max_whitespace);
    case Kind::kJsonSchema:
      return compiler.CompileJSONSchema(spec.text, spec.any_whitespace, std::nullopt, separators,
                                        /*strict_mode=*/true, max_whitespace);
    case Kind::kRegex:
      return compiler.CompileRegex(spec.text);
    case Kind::kGrammar:
      return compiler.CompileGrammar(spec.text, "root");
    case Kind::kChoice:
      return compiler.CompileGrammar(ChoiceGrammar(spec.choices), "root");
    case Kind::kNone:
      break;
  }
  throw std::invalid_argument("no constraint");
}

}  // namespace

std::string ConstraintFieldName(Kind kind) {
  switch (kind) {
    case Kind::kJsonObject: return "sampling.constraint.json_object";
    case Kind::kJsonSchema: return "sampling.constraint.json_schema";
    case Kind::kRegex: return "sampling.constraint.regex";
    case Kind::kGrammar: return "sampling.constraint.grammar";
    case Kind::kChoice: return "sampling.constraint.choice";
    case Kind::kNone: break;
  }
  return "sampling.constraint";
}

absl::Status ValidateConstraintSpec(const ConstraintSpec& spec, size_t max_text_bytes) {
  const std::string field = ConstraintFieldName(spec.kind);
  if (!spec.active()) return absl::InvalidArgumentError(absl::StrCat(field, ": no constraint kind set"));
  size_t bytes = spec.text.size();
  if (spec.kind == Kind::kChoice) {
    if (spec.choices.empty() || spec.choices.size() > kMaxChoices) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": ", spec.choices.size(),
                                                     " choices; allowed 1 to ", kMaxChoices));
    }
    bytes = 0;
    for (const std::string& c : spec.choices) bytes += c.size();
  }
  if (bytes > max_text_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", bytes, " bytes; at most ", max_text_bytes, " allowed"));
  }
  if ((spec.kind == Kind::kRegex || spec.kind == Kind::kGrammar) && spec.text.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": empty"));
  }
  if (spec.kind == Kind::kJsonSchema) {
    try {
      nlohmann::json schema = nlohmann::json::parse(spec.text);
      if (!schema.is_object() && !schema.is_boolean()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ": a schema is a JSON object or boolean"));
      }
    } catch (const nlohmann::json::parse_error& e) {
      // e.byte: 1-based index of the byte where parsing failed.
      return absl::InvalidArgumentError(absl::StrCat(field, ": invalid JSON at offset ",
                                                     e.byte == 0 ? 0 : e.byte - 1, ": ", e.what()));
    }
  }
  return absl::OkStatus();
}

std::string ConstraintCacheKey(const ConstraintSpec& spec) {
  std::string key = absl::StrCat(static_cast<int>(spec.kind), spec.any_whitespace ? "w" : "c", ":");
  if (spec.kind == Kind::kChoice) {
    key += nlohmann::json(spec.choices).dump();  // unambiguous, unlike joining with a separator
  } else {
    key += spec.text;
  }
  return key;
}

std::string ChoiceGrammar(const std::vector<std::string>& choices) {
  std::string ebnf = "root ::= ";
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i > 0) ebnf += " | ";
    AppendEbnfLiteral(choices[i], ebnf);
  }
  ebnf += '\n';
  return ebnf;
}

absl::StatusOr<xgrammar::CompiledGrammar> CompileConstraintSpec(xgrammar::GrammarCompiler& compiler,
                                                                const ConstraintSpec& spec) {
  try {
    return CompileOrThrow(compiler, spec);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(ConstraintFieldName(spec.kind), ": ", Message(e)));
  } catch (...) {
    return absl::InvalidArgumentError(absl::StrCat(ConstraintFieldName(spec.kind), ": cannot be compiled"));
  }
}

}  // namespace phi::worker
