// Structured output, logit_bias, n / best_of, min_tokens and stop strings in OpenAI request
// bodies, and worker errors renamed to the parameter as sent.
#include "services/gateway/openai_request.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/unit/gateway/openai_request_test_util.h"

namespace phi::gateway {
namespace {

using namespace phi::gateway::openai_test;  // NOLINT: the parsers' test helpers

// `levels` objects nested in each other: {"a": {"a": ... {} ...}}.
std::string NestedObjects(size_t levels) {
  std::string s;
  for (size_t i = 1; i < levels; ++i) s += "{\"a\": ";
  s += "{}";
  s += std::string(levels - 1, '}');
  return s;
}

std::string SchemaFormat(std::string_view schema) {
  return WithField("response_format",
                   std::string(R"({"type": "json_schema", "json_schema": {"name": "out_1-A", "schema": )") +
                       std::string(schema) + "}}");
}

TEST(OpenAiRequest, ResponseFormatBecomesTheConstraint) {
  // The schema's text as sent, whitespace and all (the worker's errors point into it).
  const std::string schema = R"({"type": "object", "properties": {"n": {"type": "integer"}},
      "required": ["n"]})";
  auto r = ParseChatCompletionRequest(SchemaFormat(schema + "  \n"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.sampling.constraint().json_schema(), schema);
  EXPECT_EQ(r->constraint_param, "response_format");
  EXPECT_FALSE(r->params.sampling.constraint().any_whitespace());

  r = ParseChatCompletionRequest(WithField("response_format", R"({"type": "json_object"})"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->params.sampling.constraint().json_object());
  // No schema: any JSON object.
  r = ParseChatCompletionRequest(WithField("response_format", R"({"type": "json_schema", "json_schema":
      {"name": "x", "description": "d", "strict": true, "schema": null}})"),
                                 {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->params.sampling.constraint().json_object());
  // text: no constraint.
  r = ParseChatCompletionRequest(WithField("response_format", R"({"type": "text"})"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->params.sampling.has_constraint());
  EXPECT_EQ(r->constraint_param, "");
  // Also on completions (as vLLM), for every prompt.
  auto c = ParseCompletionRequest(R"({"prompt": ["a", "b"], "response_format": {"type": "json_object"}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->prompts[1].sampling.constraint().json_object());
  EXPECT_EQ(c->constraint_param, "response_format");
}

TEST(OpenAiRequest, GuidedExtrasBecomeTheConstraint) {
  auto r = ParseChatCompletionRequest(WithField("guided_json", R"({"type": "array"})"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.sampling.constraint().json_schema(), R"({"type": "array"})");
  EXPECT_EQ(r->constraint_param, "guided_json");
  // A string holding the schema (vLLM's clients send either), unescaped.
  r = ParseChatCompletionRequest(WithField("guided_json", R"("{\"type\": \"string\"}")"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.sampling.constraint().json_schema(), R"({"type": "string"})");
  auto c = ParseCompletionRequest(R"({"prompt": "a", "guided_regex": "[0-9]{3}\\.x"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[0].sampling.constraint().regex(), R"([0-9]{3}\.x)");
  EXPECT_EQ(c->constraint_param, "guided_regex");
  c = ParseCompletionRequest(R"({"prompt": "a", "guided_grammar": "root ::= \"yes\" | \"no\""})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[0].sampling.constraint().grammar(), R"(root ::= "yes" | "no")");
  r = ParseChatCompletionRequest(WithField("guided_choice", R"(["red", "green", "x y"])"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->params.sampling.constraint().choice().choices_size(), 3);
  EXPECT_EQ(r->params.sampling.constraint().choice().choices(2), "x y");
  EXPECT_EQ(r->constraint_param, "guided_choice");
  // null is absent, for every one of them; so is a null whitespace pattern.
  r = ParseChatCompletionRequest(WithField("guided_regex", "null"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->params.sampling.has_constraint());
  EXPECT_TRUE(Chat(WithField("guided_whitespace_pattern", "null")).ok());
}

TEST(OpenAiRequest, OneConstraintPerRequest) {
  const std::string kUser = std::string("{\"messages\": ") + kUserMsg;
  ExpectRefused(Chat(kUser + R"(, "response_format": {"type": "json_object"}, "guided_regex": "a"})"),
                "guided_regex: only one of response_format (json_object, json_schema), guided_json, guided_regex, "
                "guided_grammar, guided_choice per request; response_format is given too",
                "");
  ExpectRefused(Chat(kUser + R"(, "guided_choice": ["a"], "guided_json": {}})"),
                "guided_json: only one of", "");
  ExpectRefused(Completion(R"({"prompt": "a", "guided_grammar": "root ::= \"a\"", "guided_regex": "a"})"),
                "guided_regex: only one of", "");
  EXPECT_NE(Msg(Chat(kUser + R"(, "guided_choice": ["a"], "guided_json": {}})")).find("guided_choice is given too"),
            std::string::npos);
  // A text response_format is no constraint: fine with a guided_* one, in either order.
  EXPECT_TRUE(Chat(kUser + R"(, "response_format": {"type": "text"}, "guided_regex": "a"})").ok());
  EXPECT_TRUE(Chat(kUser + R"(, "guided_regex": "a", "response_format": {"type": "text"}})").ok());
}

TEST(OpenAiRequest, ConstraintsAreChecked) {
  auto format = [](std::string_view json_schema) {
    return Chat(WithField("response_format",
                          std::string(R"({"type": "json_schema", "json_schema": )") + std::string(json_schema) + "}"));
  };
  ExpectRefused(format(R"({"schema": {}})"), "response_format.json_schema.name: required, 1 to 64 of a-z", "");
  for (const char* name : {R"("")", R"("a b")", R"("a.b")", R"("\u00fc")"}) {
    ExpectRefused(format(std::string(R"({"name": )") + name + "}"), "response_format.json_schema.name: must be 1 to 64",
                  name);
  }
  ExpectRefused(format("{\"name\": \"" + std::string(65, 'n') + "\"}"), "response_format.json_schema.name: must be",
                "");
  EXPECT_TRUE(format("{\"name\": \"" + std::string(64, 'n') + "\"}").ok());
  ExpectRefused(format(R"({"name": "x", "schema": "{}"})"),
                "response_format.json_schema.schema: must be a JSON schema object, got string", "");
  ExpectRefused(format(R"({"name": "x", "schema": [{}]})"), "response_format.json_schema.schema: must be", "");
  // Bad JSON inside a schema: what On Demand skips unchecked is parsed again whole (a 400
  // naming the schema), or the body's own pass finds it first (a 400 for the body).
  for (const char* bad : {R"({"type": tru})", R"({"a": 1 2})", R"({"a": [1,,2]})", R"({"a" 1})"}) {
    const absl::Status st = format(std::string(R"({"name": "x", "schema": )") + bad + "}");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(Msg(st).find("not valid JSON"), std::string::npos) << bad << " -> " << st;
  }
  ExpectRefused(format(R"({"name": "x", "schema": {}, "schemas": {}})"),
                "response_format.json_schema.schemas: unknown parameter", "");
  ExpectRefused(format("{\"name\": \"x\", \"description\": \"" + std::string(4097, 'd') + "\"}"),
                "response_format.json_schema.description: must be a string of at most 4096 bytes", "");
  ExpectRefused(Chat(WithField("response_format", R"({"type": "json_schema"})")),
                "response_format.json_schema: required with type json_schema", "");
  ExpectRefused(Chat(WithField("response_format", R"({"type": "json_object", "json_schema": {"name": "x"}})")),
                "response_format.json_schema: only with type json_schema", "");
  ExpectRefused(Chat(WithField("response_format", R"({"type": "xml"})")), "response_format.type: must be one of", "");
  // 64 KiB of schema text at most.
  const std::string big = "{\"description\": \"" + std::string(64 << 10, 'd') + "\"}";
  ExpectRefused(Chat(SchemaFormat(big)), "response_format.json_schema.schema: a schema of at most 65536 bytes", "");
  ExpectRefused(Chat(WithField("guided_json", big)), "guided_json: a schema of at most 65536 bytes", "");
  // guided_json in a string: JSON, an object.
  ExpectRefused(Chat(WithField("guided_json", R"("{\"type\": ")")), "guided_json: not valid JSON", "");
  ExpectRefused(Chat(WithField("guided_json", R"("[1]")")), "guided_json: must be a JSON schema object", "");
  ExpectRefused(Chat(WithField("guided_json", R"("{} x")")), "guided_json: not valid JSON", "");
  ExpectRefused(Chat(WithField("guided_json", "[]")), "guided_json: must be a JSON schema (an object, or a string",
                "");
  // Regexes and grammars: non-empty, 64 KiB at most (their syntax is the worker's compiler's).
  ExpectRefused(Chat(WithField("guided_regex", "\"\"")), "guided_regex: must be a non-empty string", "");
  ExpectRefused(Chat(WithField("guided_grammar", "\"" + std::string((64 << 10) + 1, 'g') + "\"")),
                "guided_grammar: must be a non-empty string of at most 65536 bytes, got 65537 bytes", "");
  EXPECT_TRUE(Chat(WithField("guided_grammar", "\"" + std::string(64 << 10, 'g') + "\"")).ok());
  // Choices: 1 to 256 non-empty strings.
  ExpectRefused(Chat(WithField("guided_choice", "[]")), "guided_choice: must not be empty", "");
  ExpectRefused(Chat(WithField("guided_choice", R"(["a", ""])")), "guided_choice[1]: must not be empty", "");
  ExpectRefused(Chat(WithField("guided_choice", R"(["a", 1])")), "guided_choice[1]: must be a string, got number", "");
  std::string many = "[";
  for (int i = 0; i < 257; ++i) many += (i ? ", \"" : "\"") + std::to_string(i) + "\"";
  ExpectRefused(Chat(WithField("guided_choice", many + "]")), "guided_choice: at most 256 strings", "");
  ExpectRefused(Chat(WithField("guided_whitespace_pattern", R"("\\s*")")),
                "guided_whitespace_pattern: not supported (only null)", "");
}

TEST(OpenAiRequest, SchemasNestDeeperThanTheBody) {
  // 32 levels of schema in a body whose limit elsewhere is 16.
  auto ok = ParseChatCompletionRequest(SchemaFormat(NestedObjects(32)), {});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->params.sampling.constraint().json_schema(), NestedObjects(32));
  EXPECT_EQ(Msg(Chat(SchemaFormat(NestedObjects(33)))), "response_format.json_schema.schema: nested deeper than 32");
  EXPECT_TRUE(Chat(WithField("guided_json", NestedObjects(32))).ok());
  EXPECT_EQ(Msg(Chat(WithField("guided_json", NestedObjects(33)))), "guided_json: nested deeper than 32");
  // In a string: the same bound.
  auto quoted = [](const std::string& json) {
    std::string out = "\"";
    for (char c : json) out += c == '"' ? std::string("\\\"") : std::string(1, c);
    return out + "\"";
  };
  EXPECT_TRUE(Chat(WithField("guided_json", quoted(NestedObjects(32)))).ok());
  EXPECT_EQ(Msg(Chat(WithField("guided_json", quoted(NestedObjects(33))))), "guided_json: nested deeper than 32");
  // Arrays count too; a million brackets end the scan at once.
  EXPECT_EQ(Msg(Chat(WithField("guided_json", "{\"a\": " + std::string(1'000'000, '[')))),
            "guided_json: nested deeper than 32");
  // The raised bound is only for schemas: the same key elsewhere keeps 16.
  EXPECT_EQ(Msg(Chat(WithField("metadata", "{\"guided_json\": " + NestedObjects(20) + "}"))),
            "body: nested deeper than 16");
  EXPECT_EQ(Msg(Chat(WithField("response_format", R"({"type": "json_schema", "json_schema": {"name": "x",
      "description": )" + NestedObjects(20) + "}}"))),
            "body: nested deeper than 16");
  EXPECT_EQ(Msg(Chat(WithField("messages2", "{\"schema\": " + NestedObjects(20) + "}"))),
            "body: nested deeper than 16");
  // After the schema, the body's bound again.
  EXPECT_EQ(Msg(Chat(SchemaFormat(NestedObjects(20)) .substr(0, SchemaFormat(NestedObjects(20)).size() - 1) +
                     ", \"tools\": " + std::string(20, '[') + std::string(20, ']') + "}")),
            "body: nested deeper than 16");
  OpenAiRequestLimits limits;
  limits.max_schema_depth = 4;
  EXPECT_EQ(Msg(Chat(WithField("guided_json", NestedObjects(5)), limits)), "guided_json: nested deeper than 4");
  EXPECT_TRUE(Chat(WithField("guided_json", NestedObjects(4)), limits).ok());
}

TEST(OpenAiRequest, LogitBias) {
  auto r = ParseChatCompletionRequest(WithField("logit_bias", R"({"50256": -100, "0": 100, "7": 2.5})"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& bias = r->params.sampling.logit_bias();
  ASSERT_EQ(bias.size(), 3u);
  EXPECT_EQ(bias.at(50256), -100.0f);
  EXPECT_EQ(bias.at(0), 100.0f);
  EXPECT_EQ(bias.at(7), 2.5f);
  auto c = ParseCompletionRequest(R"({"prompt": ["a", "b"], "logit_bias": {"2147483647": 1}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[1].sampling.logit_bias().at(2147483647), 1.0f);
  for (const char* key : {"-1", "abc", "01", "2147483648", "", "1.0", " 1", "99999999999"}) {
    ExpectRefused(Chat(WithField("logit_bias", std::string("{\"") + key + "\": 1}")),
                  std::string("logit_bias.") + key + ": the key must be a token id in decimal, in [0, 2147483647]",
                  key);
  }
  ExpectRefused(Chat(WithField("logit_bias", R"({"5": 101})")),
                "logit_bias.5: must be a number in [-100, 100], got 101", "");
  ExpectRefused(Chat(WithField("logit_bias", R"({"5": -100.5})")), "logit_bias.5: must be a number in [-100, 100]", "");
  ExpectRefused(Chat(WithField("logit_bias", R"({"5": "1"})")), "logit_bias.5: must be a number", "");
  ExpectRefused(Chat(WithField("logit_bias", R"({"5": 1, "5": 2})")), "logit_bias.5: given twice", "");
  ExpectRefused(Chat(WithField("logit_bias", R"([5])")), "logit_bias: must be an object", "");
  auto entries = [](int count) {
    std::string o = "{";
    for (int i = 0; i < count; ++i) o += (i ? ", \"" : "\"") + std::to_string(i) + "\": 1";
    return o + "}";
  };
  EXPECT_TRUE(Chat(WithField("logit_bias", entries(1024))).ok());
  ExpectRefused(Chat(WithField("logit_bias", entries(1025))), "logit_bias: at most 1024 entries", "");
}

TEST(OpenAiRequest, NAndBestOf) {
  auto r = ParseChatCompletionRequest(WithField("n", "3"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.n, 3);
  EXPECT_EQ(r->params.best_of, 3);
  EXPECT_FALSE(r->params.stream);
  auto c = ParseCompletionRequest(R"({"prompt": "a", "n": 2, "best_of": 5})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[0].n, 2);
  EXPECT_EQ(c->prompts[0].best_of, 5);
  c = ParseCompletionRequest(R"({"prompt": "a", "n": 4, "stream": true})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[0].n, 4);
  EXPECT_TRUE(c->prompts[0].stream);
  r = ParseChatCompletionRequest(WithField("best_of", "16"), {});  // chat too, as vLLM
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.n, 1);
  EXPECT_EQ(r->params.best_of, 16);
  ExpectRefused(Chat(WithField("n", "0")), "n: must be an integer in [1, 16], got 0", "");
  ExpectRefused(Completion(R"({"prompt": "a", "best_of": 17})"), "best_of: must be an integer in [1, 16], got 17", "");
  ExpectRefused(Completion(R"({"prompt": "a", "n": 3, "best_of": 2})"),
                "best_of: must be an integer in [n, 16] = [3, 16], got 2", "");
  ExpectRefused(Completion(R"({"prompt": "a", "n": 2, "best_of": 3, "stream": true})"),
                "best_of: must equal n (2) when stream is true", "");
  EXPECT_TRUE(Completion(R"({"prompt": "a", "n": 2, "best_of": 2, "stream": true})").ok());
  ExpectRefused(Completion(R"({"prompt": "a", "n": 2, "echo": true, "max_tokens": 0})"),
                "n: must be 1 with max_tokens 0 (scoring the prompt)", "");
}

TEST(OpenAiRequest, MinTokensAndStopStrings) {
  auto r = ParseChatCompletionRequest(WithField("min_tokens", "5"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.stopping.min_new_tokens(), 5);
  EXPECT_FALSE(r->params.stopping.include_stop_str_in_output());
  auto c = ParseCompletionRequest(R"({"prompt": "a", "max_tokens": 8, "min_tokens": 8, "stop": "x",
      "include_stop_str_in_output": true})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[0].stopping.min_new_tokens(), 8);
  EXPECT_TRUE(c->prompts[0].stopping.include_stop_str_in_output());
  ExpectRefused(Completion(R"({"prompt": "a", "max_tokens": 8, "min_tokens": 9})"),
                "min_tokens: must be an integer in [0, max_tokens] = [0, 8], got 9", "");
  // Completions' default max_tokens is 16.
  ExpectRefused(Completion(R"({"prompt": "a", "min_tokens": 17})"), "min_tokens: must be an integer in [0, max_tokens]",
                "");
  ExpectRefused(Completion(R"({"prompt": "a", "max_tokens": 0, "echo": true, "min_tokens": 1})"),
                "min_tokens: must be an integer in [0, max_tokens] = [0, 0], got 1", "");
  ExpectRefused(Chat(WithField("min_tokens", "-1")), "min_tokens: must be an integer in [0, 16777216], got -1", "");
  ExpectRefused(Chat(WithField("max_completion_tokens", R"(2, "min_tokens": 3)")),
                "min_tokens: must be an integer in [0, max_tokens] = [0, 2], got 3", "");
  ExpectRefused(Chat(WithField("include_stop_str_in_output", "1")),
                "include_stop_str_in_output: must be a boolean, got number", "");
}

TEST(OpenAiRequest, WorkerErrorsNameTheParameterAsSent) {
  auto rename = [](std::string_view message, std::string_view param) {
    return Msg(ClientFieldError(absl::InvalidArgumentError(absl::string_view(message.data(), message.size())), param));
  };
  EXPECT_EQ(rename("worker group 127.0.0.1:5: sampling.constraint.json_schema: at line 1 column 9: bad type",
                   "response_format"),
            "response_format: at line 1 column 9: bad type");
  EXPECT_EQ(rename("sampling.constraint.regex: unbalanced ( at position 3", "guided_regex"),
            "guided_regex: unbalanced ( at position 3");
  EXPECT_EQ(rename("sampling.constraint.choice.choices[3]: 70000 bytes, at most 65536", "guided_choice"),
            "guided_choice[3]: 70000 bytes, at most 65536");
  EXPECT_EQ(rename("sampling.constraint.choice.choices: 0 strings, 1 to 256", "guided_choice"),
            "guided_choice: 0 strings, 1 to 256");
  EXPECT_EQ(rename("sampling.constraint: compiling took longer than 10 s", "guided_grammar"),
            "guided_grammar: compiling took longer than 10 s");
  EXPECT_EQ(rename("sampling.logit_bias[51200]: past the vocabulary (51200 ids)", ""),
            "logit_bias.51200: past the vocabulary (51200 ids)");
  EXPECT_EQ(rename("sampling.logit_bias: 2000 entries, at most 1024", ""), "logit_bias: 2000 entries, at most 1024");
  EXPECT_EQ(rename("stopping.min_new_tokens: 9 is more than max_new_tokens 8", ""),
            "min_tokens: 9 is more than max_new_tokens 8");
  // Nothing to rename: unchanged.
  EXPECT_EQ(rename("sampling.temperature: 300 is outside [0, 100]", "guided_regex"),
            "sampling.temperature: 300 is outside [0, 100]");
  EXPECT_EQ(rename("sampling.constraint.regex: bad", ""), "sampling.constraint.regex: bad");
  const absl::Status other = absl::UnavailableError("sampling.constraint.regex: x");
  EXPECT_EQ(ClientFieldError(other, "guided_regex"), other);
}

}  // namespace
}  // namespace phi::gateway
