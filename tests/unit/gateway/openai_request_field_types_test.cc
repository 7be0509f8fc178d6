// Every field of every endpoint refused with a 400 naming it for every wrong JSON type.
#include "services/gateway/openai_request.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "tests/unit/gateway/openai_request_test_util.h"

namespace phi::gateway {
namespace {

using namespace phi::gateway::openai_test;  // NOLINT: the parsers' test helpers

struct FieldCase {
  std::string name;                // the parameter, as the error must start
  std::string body;                // with $ where the value goes
  std::set<std::string> accepted;  // values of kValues that are valid for it
  enum Endpoint { kChat, kCompletion, kTokenize, kDetokenize } endpoint = kChat;
  std::set<std::string> skip = {};  // values refused under another name
};

// clang-format off
const std::vector<std::string> kValues = {
    "null", "true", "1", "1.5", "-1", "18446744073709551616", "\"s\"", "[]", "[1]", "{}", "{\"a\":1}"};
// clang-format on

std::string Substitute(const std::string& body, const std::string& value) {
  std::string out = body;
  out.replace(out.find('$'), 1, value);
  return out;
}

std::vector<FieldCase> AllFields() {
  std::vector<FieldCase> cases;
  const std::string chat = std::string("{\"messages\": ") + kUserMsg + ", \"%\": $}";
  const std::string completion = "{\"prompt\": \"x\", \"%\": $}";
  auto top = [&](FieldCase::Endpoint e, const std::string& name, std::set<std::string> ok) {
    std::string body = e == FieldCase::kChat ? chat : completion;
    body.replace(body.find('%'), 1, name);
    ok.insert("null");  // null = absent for every optional field
    cases.push_back({name, body, std::move(ok), e});
  };
  for (auto e : {FieldCase::kChat, FieldCase::kCompletion}) {
    top(e, "model", {"\"s\""});
    top(e, "user", {"\"s\""});
    top(e, "temperature", {"1", "1.5"});
    top(e, "top_p", {"1"});
    top(e, "top_k", {"1", "-1"});
    top(e, "min_p", {"1"});
    top(e, "repetition_penalty", {"1", "1.5"});
    top(e, "presence_penalty", {"1", "1.5", "-1"});
    top(e, "frequency_penalty", {"1", "1.5", "-1"});
    top(e, "seed", {"1", "-1"});
    top(e, "n", {"1"});
    top(e, "best_of", {"1"});
    top(e, "min_tokens", {"1"});
    top(e, "include_stop_str_in_output", {"true"});
    top(e, "response_format", {});
    top(e, "guided_json", {"{}", "{\"a\":1}"});
    top(e, "guided_regex", {"\"s\""});
    top(e, "guided_grammar", {"\"s\""});
    top(e, "guided_choice", {});
    top(e, "guided_whitespace_pattern", {});
    top(e, "max_tokens", {"1"});
    top(e, "stop", {"\"s\"", "[]"});
    top(e, "stop_token_ids", {"[]", "[1]"});
    top(e, "ignore_eos", {"true"});
    top(e, "stream", {"true"});
    top(e, "stream_options", {});  // an object, but only with stream true
    top(e, "logit_bias", {"{}"});
  }
  top(FieldCase::kChat, "max_completion_tokens", {"1"});
  top(FieldCase::kChat, "logprobs", {"true"});
  top(FieldCase::kChat, "top_logprobs", {"1"});
  top(FieldCase::kChat, "tools", {"[]"});
  top(FieldCase::kChat, "functions", {"[]"});
  top(FieldCase::kChat, "tool_choice", {});
  top(FieldCase::kChat, "function_call", {});
  top(FieldCase::kChat, "parallel_tool_calls", {"true"});
  top(FieldCase::kChat, "service_tier", {});
  top(FieldCase::kChat, "store", {});
  top(FieldCase::kChat, "metadata", {"{}"});
  top(FieldCase::kChat, "modalities", {});
  top(FieldCase::kCompletion, "echo", {"true"});
  top(FieldCase::kCompletion, "logprobs", {"1"});
  top(FieldCase::kCompletion, "suffix", {});
  // Required fields and nested ones.
  cases.push_back({"messages", "{\"messages\": $}", {}});
  cases.push_back({"messages[0]", "{\"messages\": [$]}", {}});
  cases.push_back({"messages[0].role", R"({"messages": [{"role": $, "content": "x"}]})", {}});
  cases.push_back({"messages[0].content", R"({"messages": [{"role": "user", "content": $}]})", {"\"s\"", "[]"}});
  cases.push_back({"messages[0].name", R"({"messages": [{"role": "user", "content": "x", "name": $}]})", {"null"}});
  cases.push_back({"messages[0].tool_calls",
                   R"({"messages": [{"role": "user", "content": "x", "tool_calls": $}]})",
                   {"null", "[]"}});
  cases.push_back({"messages[0].content[0]", R"({"messages": [{"role": "user", "content": [$]}]})", {}});
  cases.push_back({"messages[0].content[0].type",
                   R"({"messages": [{"role": "user", "content": [{"type": $, "text": "x"}]}]})",
                   {}});
  cases.push_back({"messages[0].content[0].text",
                   R"({"messages": [{"role": "user", "content": [{"type": "text", "text": $}]}]})",
                   {"\"s\""}});
  cases.push_back(
      {"stream_options.include_usage",
       std::string("{\"messages\": ") + kUserMsg + R"(, "stream": true, "stream_options": {"include_usage": $}})",
       {"null", "true"}});
  cases.push_back(
      {"response_format.type", std::string("{\"messages\": ") + kUserMsg + R"(, "response_format": {"type": $}})", {}});
  const std::string schema_format =
      std::string("{\"messages\": ") + kUserMsg + R"(, "response_format": {"type": "json_schema", "json_schema": )";
  cases.push_back({"response_format.json_schema", schema_format + "$}}", {}});
  cases.push_back({"response_format.json_schema.name", schema_format + R"({"name": $, "schema": {}}}})", {"\"s\""}});
  cases.push_back({"response_format.json_schema.schema", schema_format + R"({"name": "n", "schema": $}}})",
                   {"null", "{}", "{\"a\":1}"}});
  cases.push_back({"response_format.json_schema.strict", schema_format + R"({"name": "n", "strict": $}}})",
                   {"null", "true"}});
  cases.push_back({"response_format.json_schema.description",
                   schema_format + R"({"name": "n", "description": $}}})",
                   {"null", "\"s\""}});
  cases.push_back({"logit_bias.5", std::string("{\"messages\": ") + kUserMsg + R"(, "logit_bias": {"5": $}})",
                   {"1", "1.5", "-1"}});
  cases.push_back({"guided_choice[0]", std::string("{\"messages\": ") + kUserMsg + R"(, "guided_choice": [$]})",
                   {"\"s\""}});
  cases.push_back({"guided_choice[1]", R"({"prompt": "x", "guided_choice": ["a", $]})", {"\"s\""},
                   FieldCase::kCompletion});
  cases.push_back({"prompt", "{\"prompt\": $}", {"\"s\"", "[1]"}, FieldCase::kCompletion});
  cases.push_back({"prompt[0]", "{\"prompt\": [$]}", {"\"s\"", "1", "[1]"}, FieldCase::kCompletion});
  cases.push_back({"prompt[1]", "{\"prompt\": [\"a\", $]}", {"\"s\""}, FieldCase::kCompletion});
  cases.push_back({"prompt[1]", "{\"prompt\": [7, $]}", {"1"}, FieldCase::kCompletion});
  cases.push_back({"prompt[1]", "{\"prompt\": [[7], $]}", {"[1]"}, FieldCase::kCompletion});
  cases.push_back({"prompt[0][0]", "{\"prompt\": [[$]]}", {"1"}, FieldCase::kCompletion});
  cases.push_back({"prompt", "{\"prompt\": $}", {"\"s\""}, FieldCase::kTokenize});
  cases.push_back({"model", "{\"prompt\": \"x\", \"model\": $}", {"null", "\"s\""}, FieldCase::kTokenize});
  cases.push_back(
      {"add_special_tokens", "{\"prompt\": \"x\", \"add_special_tokens\": $}", {"null", "true"}, FieldCase::kTokenize});
  cases.push_back(
      {"return_token_strs", "{\"prompt\": \"x\", \"return_token_strs\": $}", {"null", "true"}, FieldCase::kTokenize});
  // {"messages": null} is {}: "prompt: exactly one of prompt or messages is required".
  cases.push_back({"messages", "{\"messages\": $}", {}, FieldCase::kTokenize, {"null"}});
  cases.push_back({"add_generation_prompt",
                   std::string("{\"messages\": ") + kUserMsg + ", \"add_generation_prompt\": $}",
                   {"null", "true"},
                   FieldCase::kTokenize});
  cases.push_back({"tokens", "{\"tokens\": $}", {"[]", "[1]"}, FieldCase::kDetokenize});
  cases.push_back({"tokens[0]", "{\"tokens\": [$]}", {"1"}, FieldCase::kDetokenize});
  cases.push_back({"model", "{\"tokens\": [1], \"model\": $}", {"null", "\"s\""}, FieldCase::kDetokenize});
  return cases;
}

TEST(OpenAiRequest, EveryFieldRefusesEveryWrongType) {
  int refused = 0, accepted = 0;
  for (const FieldCase& c : AllFields()) {
    for (const std::string& value : kValues) {
      const std::string body = Substitute(c.body, value);
      absl::Status s;
      switch (c.endpoint) {
        case FieldCase::kChat: s = Chat(body); break;
        case FieldCase::kCompletion: s = Completion(body); break;
        case FieldCase::kTokenize: s = Tokenize(body); break;
        case FieldCase::kDetokenize: s = Detokenize(body); break;
      }
      if (c.skip.count(value)) {
        EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << body << " -> " << s;
        continue;
      }
      if (c.accepted.count(value)) {
        EXPECT_TRUE(s.ok()) << body << " -> " << s;
        ++accepted;
        continue;
      }
      ++refused;
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << body << " -> " << s;
      // The field's name, then ':' (or a part of it: '.', '[').
      const std::string m = Msg(s);
      EXPECT_TRUE(m.size() > c.name.size() && m.compare(0, c.name.size(), c.name) == 0 &&
                  (m[c.name.size()] == ':' || m[c.name.size()] == '.' || m[c.name.size()] == '['))
          << body << " -> " << m;
    }
  }
  EXPECT_GT(refused, 800);
  EXPECT_GT(accepted, 130);
}

}  // namespace
}  // namespace phi::gateway
