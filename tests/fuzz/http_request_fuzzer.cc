// libFuzzer: raw bytes -> Beast's HTTP/1.1 request parser with the server's limits -> route by
// path -> the OpenAI request parsers -> the status the handler decides. Beyond "no crash, no
// leak, no hang": a refused request is INVALID_ARGUMENT with a short printable message naming a
// parameter, and an accepted one passes every range the gateway checks (ValidateCommon).
#include <boost/beast/core/error.hpp>
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "services/gateway/openai_request.h"

namespace {

namespace http = boost::beast::http;
using phi::gateway::GenerateParams;

constexpr size_t kHeaderLimit = 16 << 10;  // the server's limits (http_server.h)
constexpr size_t kBodyLimit = 8 << 20;

#define FUZZ_CHECK(cond)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      __builtin_printf("check failed at line %d: %s\n", __LINE__, #cond); \
      std::abort();                                                       \
    }                                                                     \
  } while (0)

bool InRange(double v, double lo, double hi) { return v >= lo && v <= hi; }

// What ValidateCommon (request_validation.cc) refuses must never be accepted here.
void CheckParams(const GenerateParams& p) {
  const auto& s = p.sampling;
  FUZZ_CHECK(InRange(s.temperature(), 0, 100));
  FUZZ_CHECK(InRange(s.top_p(), 0, 1));
  FUZZ_CHECK(s.top_k() >= 0);
  FUZZ_CHECK(InRange(s.min_p(), 0, 1));
  FUZZ_CHECK(InRange(s.repetition_penalty(), 0, 10));
  FUZZ_CHECK(InRange(s.presence_penalty(), -2, 2));
  FUZZ_CHECK(InRange(s.frequency_penalty(), -2, 2));
  const auto& st = p.stopping;
  FUZZ_CHECK(st.max_new_tokens() >= 0 && st.max_new_tokens() <= (1 << 24));
  FUZZ_CHECK(st.stop_size() <= 16);
  for (const auto& stop : st.stop()) FUZZ_CHECK(!stop.empty() && stop.size() <= 256);
  FUZZ_CHECK(st.stop_token_ids_size() <= 64);
  for (int32_t id : st.stop_token_ids()) FUZZ_CHECK(id >= 0);
  FUZZ_CHECK(st.min_new_tokens() >= 0 && (st.max_new_tokens() == 0 || st.min_new_tokens() <= st.max_new_tokens()));
  FUZZ_CHECK(s.logit_bias_size() <= 1024);
  for (const auto& [id, bias] : s.logit_bias()) FUZZ_CHECK(id >= 0 && InRange(bias, -100, 100));
  FUZZ_CHECK(p.n >= 1 && p.n <= 16 && p.best_of >= p.n && p.best_of <= 16);
  FUZZ_CHECK(!p.stream || p.best_of == p.n);
  const auto& c = s.constraint();
  for (const std::string* t : {&c.json_schema(), &c.regex(), &c.grammar()}) FUZZ_CHECK(t->size() <= (64 << 10));
  if (c.has_choice()) FUZZ_CHECK(c.choice().choices_size() >= 1 && c.choice().choices_size() <= 256);
  FUZZ_CHECK(p.top_logprobs >= 0 && p.top_logprobs <= 20);
  FUZZ_CHECK(p.model.size() <= 256);
  for (int32_t id : p.prompt_ids) FUZZ_CHECK(id >= 0);
  FUZZ_CHECK(!p.prompt_ids.empty() || p.prompt.has_segments() || !p.prompt.text().empty());
}

// A refusal: INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for memory), a bounded printable message
// "param: what" that OpenAiError can take the param from.
int Refused(const absl::Status& s) {
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument || s.code() == absl::StatusCode::kResourceExhausted);
  std::string_view m(s.message().data(), s.message().size());
  FUZZ_CHECK(!m.empty() && m.size() <= 1024);
  for (char c : m) FUZZ_CHECK(c >= 0x20 && c < 0x7f);
  FUZZ_CHECK(m.find(": ") != std::string_view::npos);
  return s.code() == absl::StatusCode::kInvalidArgument ? 400 : 429;
}

int Decide(const http::request<http::string_body>& req) {
  std::string_view target(req.target().data(), req.target().size());
  target = target.substr(0, target.find('?'));
  const bool chat = target == "/v1/chat/completions", completions = target == "/v1/completions",
             tokenize = target == "/tokenize", detokenize = target == "/detokenize";
  if (!chat && !completions && !tokenize && !detokenize) return 404;
  if (req.method() != http::verb::post) return 405;
  static const phi::gateway::ChatmlOptions chatml;
  const std::string_view body = req.body();
  if (chat) {
    auto r = phi::gateway::ParseChatCompletionRequest(body, chatml);
    if (!r.ok()) return Refused(r.status());
    CheckParams(r->params);
    FUZZ_CHECK(r->params.prompt.has_segments() && r->params.prompt_ids.empty());
    FUZZ_CHECK(!r->include_usage || r->stream);
    return 200;
  }
  if (completions) {
    auto r = phi::gateway::ParseCompletionRequest(body);
    if (!r.ok()) return Refused(r.status());
    FUZZ_CHECK(!r->prompts.empty() && r->prompts.size() <= 256);
    FUZZ_CHECK(!r->score_only || r->echo);
    for (const GenerateParams& p : r->prompts) {
      CheckParams(p);
      FUZZ_CHECK(p.stopping.max_new_tokens() >= 1);
      FUZZ_CHECK(p.prompt_logprobs == (r->echo && p.logprobs));
    }
    return 200;
  }
  if (tokenize) {
    auto r = phi::gateway::ParseTokenizeRequest(body, chatml);
    return r.ok() ? 200 : Refused(r.status());
  }
  auto r = phi::gateway::ParseDetokenizeRequest(body);
  if (!r.ok()) return Refused(r.status());
  for (int32_t id : r->tokens) FUZZ_CHECK(id >= 0);
  return 200;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* p = reinterpret_cast<const char*>(data);
  size_t left = size;
  // Pipelined requests: each one parsed and decided in turn, as the server does.
  for (int requests = 0; requests < 16 && left > 0; ++requests) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(kBodyLimit);
    parser.eager(true);
    boost::beast::error_code ec;
    while (left > 0 && !parser.is_done()) {
      const size_t used = parser.put(boost::asio::const_buffer(p, left), ec);
      p += used;
      left -= used;
      // All the input is there: the parser must not be called again without more bytes
      // (Beast asserts on that), the message is cut short.
      if (ec == http::error::need_more) break;
      if (ec) return 0;  // 400 (or 413/431 for the limits), connection closed
    }
    if (!parser.is_done()) {
      parser.put_eof(ec);
      if (ec || !parser.is_done()) return 0;
    }
    http::request<http::string_body> req = parser.release();
    const int code = Decide(req);
    FUZZ_CHECK(code == 200 || code == 400 || code == 404 || code == 405 || code == 429);
    if (!req.keep_alive()) return 0;
  }
  return 0;
}
