// The HTTP API's error mapping and JSON output (request parsing: openai_request_test.cc), and
// its responses over a loopback socket against the in-process fake tokenizer and worker: n
// choices (plain and streamed), completions over several prompts, best_of, and worker errors
// named as the client sent the parameter.
#include "services/gateway/http_api.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>

#include "tests/unit/gateway/chat_service_fixture.h"

namespace phi::gateway {
namespace {

using nlohmann::json;

TEST(HttpApi, ErrorShapeAndCodes) {
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInternal), 500);
  json e = OpenAiError(absl::InvalidArgumentError("sampling.temperature: 300 is outside [0, 100]"));
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["param"], "sampling.temperature");
  EXPECT_EQ(e["error"]["message"], "sampling.temperature: 300 is outside [0, 100]");
  EXPECT_EQ(OpenAiError(absl::UnauthenticatedError("x"))["error"]["code"], "invalid_api_key");
  EXPECT_EQ(OpenAiFinishReason(phi::v1::FINISH_REASON_LENGTH), "length");
  EXPECT_EQ(OpenAiFinishReason(phi::v1::FINISH_REASON_STOP_STRING), "stop");
  // OpenAI's param is the field as the client spelled it, paths included.
  EXPECT_EQ(OpenAiError(absl::InvalidArgumentError("messages[2].content[0].text: must be a string"))["error"]["param"],
            "messages[2].content[0].text");
  EXPECT_EQ(OpenAiError(absl::InvalidArgumentError("no field named here"))["error"]["param"], nullptr);
}

TEST(HttpApi, JsonOutputSurvivesPartialUtf8) {
  // A token may end in the middle of a character; its text must not abort the response.
  json j = {{"token", std::string("a\xe2\x82")}};
  std::string out = DumpJson(j);
  EXPECT_NE(out.find("a\xef\xbf\xbd"), std::string::npos) << out;
}

struct HttpReply {
  int status = 0;
  std::string body;  // de-chunked
};

// One request on a new connection (Connection: close), read to the end.
HttpReply Send(int port, std::string_view method, std::string_view path, const std::string& b) {
  const std::string req = std::string(method) + " " + std::string(path) +
                          " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                          "Content-Length: " +
                          std::to_string(b.size()) + "\r\n\r\n" + b;
  HttpReply r;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string raw;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
    char buf[16384];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) raw.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t head_end = raw.find("\r\n\r\n");
  if (raw.size() < 12 || head_end == std::string::npos) return r;
  r.status = std::atoi(raw.substr(9, 3).c_str());
  std::string head = raw.substr(0, head_end), rest = raw.substr(head_end + 4);
  if (head.find("Transfer-Encoding: chunked") == std::string::npos) {
    r.body = rest;
    return r;
  }
  for (size_t at = 0;;) {
    const size_t eol = rest.find("\r\n", at);
    if (eol == std::string::npos) break;
    const size_t size = std::stoul(rest.substr(at, eol - at), nullptr, 16);
    if (size == 0) break;
    r.body += rest.substr(eol + 2, size);
    at = eol + 2 + size + 2;
  }
  return r;
}

HttpReply PostJson(int port, std::string_view path, const json& body) { return Send(port, "POST", path, body.dump()); }

// The data of each SSE event.
std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  for (size_t at = 0; (at = body.find("data: ", at)) != std::string::npos;) {
    const size_t end = body.find("\n\n", at);
    out.push_back(body.substr(at + 6, end - at - 6));
    at = end;
  }
  return out;
}

// The fake worker's reply with seeded_reply: the text, then the seed's last digit (one token
// per byte, logprob -0.1 * (seed % 5 + 1) each).
const std::string kReply = "hello world STOP more text";
std::string Reply(uint64_t seed) { return kReply + static_cast<char>('0' + seed % 10); }
const int kReplyTokens = static_cast<int>(kReply.size()) + 1;

class HttpApiChoicesTest : public testing::ChatServiceTest {
 protected:
  void StartHttp() {
    Start();
    workers_[0]->seeded_reply = true;
    ASSERT_TRUE(Eventually([&] { return !pool_->Models().empty(); }));
    HttpApiOptions o;
    o.server.host = "127.0.0.1";
    o.server.port = 0;
    o.web_ui = false;
    auto api = HttpApi::Start(o, generations_.get(), auth_.get(), metrics_.get(), &registry_, ChatmlOptions{});
    ASSERT_TRUE(api.ok()) << api.status();
    api_ = std::move(*api);
  }

  static json Chat(json extra) {
    json body = {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
    body.update(extra);
    return body;
  }

  // The error of a 400 reply: {"param", "message"}.
  json Error400(std::string_view path, const json& body) {
    HttpReply r = PostJson(api_->port(), path, body);
    EXPECT_EQ(r.status, 400) << r.body;
    json e = json::parse(r.body, nullptr, false);
    return e.is_object() && e.contains("error") ? e["error"] : json::object();
  }

  std::unique_ptr<HttpApi> api_;
};

TEST_F(HttpApiChoicesTest, ChatWithNChoices) {
  StartHttp();
  HttpReply r = PostJson(api_->port(), "/v1/chat/completions", Chat({{"n", 3}, {"seed", 5}, {"logprobs", true}}));
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 3u) << r.body;
  for (int i = 0; i < 3; ++i) {
    const json& c = j["choices"][i];
    EXPECT_EQ(c["index"], i);
    EXPECT_EQ(c["message"]["content"], Reply(5 + i));
    EXPECT_EQ(c["finish_reason"], "stop");
    EXPECT_EQ(c["logprobs"]["content"].size(), static_cast<size_t>(kReplyTokens));
    EXPECT_NEAR(c["logprobs"]["content"][0]["logprob"].get<double>(), -0.1 * ((5 + i) % 5 + 1), 1e-6);
  }
  EXPECT_EQ(j["usage"]["completion_tokens"], 3 * kReplyTokens);
  HttpReply one = PostJson(api_->port(), "/v1/chat/completions", Chat({{"seed", 5}}));
  ASSERT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(j["usage"]["prompt_tokens"], json::parse(one.body)["usage"]["prompt_tokens"]);
}

TEST_F(HttpApiChoicesTest, StreamedChoicesCarryTheirIndex) {
  StartHttp();
  const json body = Chat({{"n", 3}, {"seed", 20}, {"stream", true}, {"stream_options", {{"include_usage", true}}}});
  HttpReply r = PostJson(api_->port(), "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<std::string> events = SseData(r.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::map<int, std::string> text, finish;
  std::map<int, int> roles;
  int usage_at = -1;
  for (size_t e = 0; e + 1 < events.size(); ++e) {
    json c = json::parse(events[e]);
    if (c.contains("usage") && c["usage"].is_object()) usage_at = static_cast<int>(e);
    for (const json& ch : c["choices"]) {
      const int i = ch["index"];
      if (ch["delta"].contains("role")) ++roles[i];
      if (ch["delta"].contains("content")) text[i] += ch["delta"]["content"].get<std::string>();
      if (!ch["finish_reason"].is_null()) {
        EXPECT_EQ(finish.count(i), 0u) << "choice " << i << " finished twice";
        finish[i] = ch["finish_reason"];
      }
    }
  }
  EXPECT_EQ(roles, (std::map<int, int>{{0, 1}, {1, 1}, {2, 1}}));
  EXPECT_EQ(text, (std::map<int, std::string>{{0, Reply(20)}, {1, Reply(21)}, {2, Reply(22)}}));
  EXPECT_EQ(finish, (std::map<int, std::string>{{0, "stop"}, {1, "stop"}, {2, "stop"}}));
  // Usage once, last, for every choice.
  ASSERT_EQ(usage_at, static_cast<int>(events.size()) - 2);
  EXPECT_EQ(json::parse(events[usage_at])["usage"]["completion_tokens"], 3 * kReplyTokens);
}

TEST_F(HttpApiChoicesTest, CompletionsNumberChoicesByPromptThenChoice) {
  StartHttp();
  HttpReply r = PostJson(api_->port(), "/v1/completions",
                         {{"prompt", {"a", "bc"}}, {"n", 2}, {"seed", 3}, {"max_tokens", 100}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 4u) << r.body;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["text"], Reply(3 + i % 2)) << "prompt " << i / 2 << " choice " << i % 2;
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], 1 + 2);  // each prompt once
  EXPECT_EQ(j["usage"]["completion_tokens"], 4 * kReplyTokens);
  // Streamed: the same indexes.
  r = PostJson(api_->port(), "/v1/completions",
               {{"prompt", {"a", "bc"}}, {"n", 2}, {"seed", 3}, {"max_tokens", 100}, {"stream", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::map<int, std::string> text;
  for (const std::string& e : SseData(r.body)) {
    if (e == "[DONE]") continue;
    const json chunk = json::parse(e);
    for (const json& ch : chunk["choices"]) text[ch["index"].get<int>()] += ch["text"].get<std::string>();
  }
  EXPECT_EQ(text, (std::map<int, std::string>{{0, Reply(3)}, {1, Reply(4)}, {2, Reply(3)}, {3, Reply(4)}})) << r.body;
}

TEST_F(HttpApiChoicesTest, BestOfReturnsTheMostLikely) {
  StartHttp();
  // Seeds 7, 8, 9: logprobs -0.3, -0.4, -0.5 per token.
  HttpReply r =
      PostJson(api_->port(), "/v1/completions", {{"prompt", "a"}, {"best_of", 3}, {"seed", 7}, {"max_tokens", 100}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 1u) << r.body;
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["text"], Reply(7));
  EXPECT_EQ(j["usage"]["completion_tokens"], 3 * kReplyTokens);
}

TEST_F(HttpApiChoicesTest, WorkerErrorsNameTheParameterAsSent) {
  StartHttp();
  // The fake worker refuses seed 9 with "sampling.constraint.json_schema: bad at offset 17".
  workers_[0]->refuse_seed = 9;
  const json format = {{"type", "json_schema"}, {"json_schema", {{"name", "x"}, {"schema", json::object()}}}};
  json e = Error400("/v1/chat/completions", Chat({{"seed", 9}, {"response_format", format}}));
  EXPECT_EQ(e["param"], "response_format") << e;
  EXPECT_NE(e["message"].get<std::string>().find("bad at offset 17"), std::string::npos) << e;
  e = Error400("/v1/completions", {{"prompt", "a"}, {"seed", 9}, {"guided_json", {{"type", "object"}}}});
  EXPECT_EQ(e["param"], "guided_json") << e;
  e = Error400("/v1/chat/completions", Chat({{"seed", 9}, {"guided_regex", "a+"}, {"stream", true}}));
  EXPECT_EQ(e["param"], "guided_regex") << e;
  // With n > 1, one refused choice (seed 9 = 8 + 1) fails the request the same way.
  e = Error400("/v1/completions", {{"prompt", "a"}, {"seed", 8}, {"n", 2}, {"guided_grammar", "root ::= \"a\""}});
  EXPECT_EQ(e["param"], "guided_grammar") << e;
  // The gateway's own checks of the proto fields are renamed too.
  e = Error400("/v1/completions", {{"prompt", "a"}, {"max_tokens", 4}, {"min_tokens", 4}, {"seed", 1},
                                   {"logit_bias", {{"2000000000", 1}}}});
  EXPECT_TRUE(e["param"].is_string() && e["param"].get<std::string>().starts_with("logit_bias")) << e;
}

// A body without temperature or max_tokens gets the model's generation_config.json defaults
// (temperature, chat's max_tokens); completions keep OpenAI's max_tokens 16.
TEST_F(HttpApiChoicesTest, AbsentSamplingFieldsGetTheModelDefaults) {
  StartHttp();
  ServeModelDefaults(0.7f, 7);
  auto sent = [&](std::string_view path, const json& body) {
    HttpReply r = PostJson(api_->port(), path, body);
    EXPECT_EQ(r.status, 200) << r.body;
    std::lock_guard<std::mutex> l(workers_[0]->mu);
    return std::make_pair(workers_[0]->last_request, json::parse(r.body, nullptr, false));
  };
  auto [req, reply] = sent("/v1/chat/completions", Chat(json::object()));
  EXPECT_EQ(req.sampling().temperature(), 0.7f);
  EXPECT_EQ(req.stopping().max_new_tokens(), 7);
  EXPECT_EQ(reply["usage"]["completion_tokens"], 7);
  EXPECT_EQ(reply["choices"][0]["finish_reason"], "length");

  std::tie(req, reply) = sent("/v1/chat/completions", Chat({{"temperature", 0}, {"max_tokens", 3}, {"top_k", -1}}));
  EXPECT_TRUE(req.sampling().has_temperature());
  EXPECT_EQ(req.sampling().temperature(), 0.0f);
  EXPECT_EQ(req.stopping().max_new_tokens(), 3);
  EXPECT_EQ(req.sampling().top_k(), 0);  // 0: the worker applies the model's top_k

  std::tie(req, reply) = sent("/v1/completions", {{"prompt", "ab"}, {"temperature", nullptr}});
  EXPECT_EQ(req.sampling().temperature(), 0.7f);
  EXPECT_EQ(req.stopping().max_new_tokens(), 16);
  EXPECT_EQ(reply["usage"]["completion_tokens"], 16);
}

}  // namespace
}  // namespace phi::gateway

namespace phi::gateway {
namespace {

TEST_F(HttpApiChoicesTest, LoraAdaptersLoadListServeAndUnloadAsVllm) {
  StartHttp();
  workers_[0]->seeded_reply = false;
  HttpReply r = PostJson(api_->port(), "/v1/load_lora_adapter", {{"lora_name", "dpo"}, {"lora_path", "/a/dpo"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "Success: LoRA adapter 'dpo' added successfully.");
  r = Send(api_->port(), "GET", "/v1/models", "");
  ASSERT_EQ(r.status, 200) << r.body;
  json models = json::parse(r.body)["data"];
  ASSERT_EQ(models.size(), 2u) << r.body;
  EXPECT_EQ(models[0]["id"], "fake-model");
  EXPECT_EQ(models[0]["parent"], nullptr);
  EXPECT_EQ(models[1]["id"], "dpo");
  EXPECT_EQ(models[1]["parent"], "fake-model");
  EXPECT_EQ(models[1]["root"], "/a/dpo");
  r = PostJson(api_->port(), "/v1/chat/completions", Chat({{"model", "dpo"}}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["model"], "dpo");
  EXPECT_EQ(json::parse(r.body)["choices"][0]["message"]["content"], "dpo:" + kReply);
  EXPECT_EQ(Metric("phi_gateway_requests_total{route=\"http_chat_completions\",code=\"OK\",model=\"dpo\"}"), 1);
  // Unknown: OpenAI's 404 naming what is served, and no label for the name.
  r = PostJson(api_->port(), "/v1/chat/completions", Chat({{"model", "nope"}}));
  ASSERT_EQ(r.status, 404) << r.body;
  json e = json::parse(r.body)["error"];
  EXPECT_EQ(e["code"], "model_not_found");
  EXPECT_EQ(e["message"], "model: 'nope' is not served here (served: 'fake-model', 'dpo')");
  EXPECT_EQ(registry_.Serialize().find("\"nope\""), std::string::npos);
  // Refusals are 400 with the error JSON naming the field.
  EXPECT_EQ(Error400("/v1/load_lora_adapter", {{"lora_name", 3}, {"lora_path", "/a"}})["param"], "lora_name");
  EXPECT_EQ(Error400("/v1/load_lora_adapter", {{"lora_name", "x"}})["param"], "lora_path");
  EXPECT_EQ(Error400("/v1/load_lora_adapter", {{"lora_name", "dpo"}, {"lora_path", "/a/dpo"}})["message"],
            "lora_name: the adapter 'dpo' has already been loaded");
  EXPECT_NE(Error400("/v1/load_lora_adapter", {{"lora_name", "x"}, {"lora_path", "rel"}})["message"]
                .get<std::string>()
                .find("no folder rel"),
            std::string::npos);
  r = PostJson(api_->port(), "/v1/unload_lora_adapter", {{"lora_name", "dpo"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "Success: LoRA adapter 'dpo' removed successfully.");
  EXPECT_EQ(Error400("/v1/unload_lora_adapter", {{"lora_name", "dpo"}})["message"],
            "lora_name: no adapter 'dpo' is loaded");
  EXPECT_EQ(Send(api_->port(), "GET", "/v1/load_lora_adapter", "").status, 405);
}

}  // namespace
}  // namespace phi::gateway
