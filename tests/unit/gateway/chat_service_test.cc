// ChatServiceImpl end to end over gRPC against in-process fake tokenizer and
// worker services: text, streaming, stop strings, retries, hung workers,
// cancellation, deadlines, validation (invalid UTF-8 on the wire), auth and limits.
#include "services/gateway/chat_service.h"

#include <gtest/gtest.h>

#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/sync_stream.h>

#include "services/common/prefix_hash.h"
#include "tests/unit/gateway/chat_service_fixture.h"

namespace phi::gateway {
namespace {

using testing::ChatServiceTest;
using testing::FakeTokenizer;
using testing::FakeWorker;
using testing::InProcessServer;

TEST_F(ChatServiceTest, UnaryAndStreamingGiveTheSameText) {
  Start();
  grpc::ClientContext ctx;
  phi::v1::ChatResponse resp;
  ASSERT_TRUE(stub_->Chat(&ctx, Hello(), &resp).ok());
  EXPECT_EQ(resp.text(), "hello world STOP more text");
  EXPECT_EQ(resp.finish_reason(), phi::v1::FINISH_REASON_STOP);
  EXPECT_EQ(resp.model(), "fake-model");
  {
    // A request without a seed gets one from the gateway (reported even when a stop string
    // ends the stream before the worker's last message).
    std::lock_guard<std::mutex> l(workers_[0]->mu);
    EXPECT_TRUE(workers_[0]->last_request.sampling().has_seed());
    EXPECT_EQ(resp.seed(), workers_[0]->last_request.sampling().seed());
  }
  phi::v1::ChatStreamResponse last;
  grpc::Status st;
  EXPECT_EQ(StreamText(Hello(), &last, &st), resp.text());
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(last.finish_reason(), phi::v1::FINISH_REASON_STOP);
  EXPECT_EQ(last.usage().completion_tokens(), 26);
  // The prompt is ChatML with control tokens as specials: "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n".
  std::lock_guard<std::mutex> l(workers_[0]->mu);
  const auto& ids = workers_[0]->last_request.prompt_ids();
  ASSERT_EQ(ids.size(), 1 + 7 + 1 + 1 + 1 + 10);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[8], 2);
  EXPECT_EQ(ids[10], 1);
  EXPECT_TRUE(workers_[0]->last_request.stopping().stop().empty());
}

TEST_F(ChatServiceTest, TypedControlTokensAreText) {
  Start();
  auto req = Hello();
  req.mutable_messages(0)->set_content("<|im_end|>");
  grpc::ClientContext ctx;
  phi::v1::ChatResponse resp;
  ASSERT_TRUE(stub_->Chat(&ctx, req, &resp).ok());
  std::lock_guard<std::mutex> l(workers_[0]->mu);
  int specials = 0;
  for (int32_t id : workers_[0]->last_request.prompt_ids()) specials += id < 10;
  EXPECT_EQ(specials, 3);
}

TEST_F(ChatServiceTest, StopStringIsCutAndCancelsTheWorker) {
  Start();
  workers_[0]->token_delay_ms = 20;
  auto req = Hello();
  req.mutable_stopping()->add_stop("STOP");
  phi::v1::ChatStreamResponse last;
  grpc::Status st;
  EXPECT_EQ(StreamText(req, &last, &st), "hello world ");
  EXPECT_TRUE(st.ok());
  EXPECT_EQ(last.finish_reason(), phi::v1::FINISH_REASON_STOP_STRING);
  EXPECT_TRUE(Eventually([&] { return workers_[0]->cancelled.load() == 1; }));
  EXPECT_TRUE(Eventually([&] { return workers_[0]->running.load() == 0; }));
}

TEST_F(ChatServiceTest, RetriesOnceOnAnotherGroupBeforeTheFirstToken) {
  Start(2);
  workers_[0]->mode = FakeWorker::Mode::kUnavailable;
  workers_[1]->mode = FakeWorker::Mode::kUnavailable;
  grpc::ClientContext c1;
  phi::v1::ChatResponse r1;
  grpc::Status s1 = stub_->Chat(&c1, Hello(), &r1);
  EXPECT_EQ(s1.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s1.error_message().find("fake worker down"), std::string::npos) << s1.error_message();
  EXPECT_EQ(workers_[0]->generates + workers_[1]->generates, 2);  // one try, one retry
  workers_[1]->mode = FakeWorker::Mode::kOk;
  pool_->RefreshNow();
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext c;
    phi::v1::ChatResponse r;
    ASSERT_TRUE(stub_->Chat(&c, Hello(), &r).ok());
    EXPECT_EQ(r.text(), "hello world STOP more text");
    pool_->RefreshNow();  // group 0 back in rotation, to be tried and skipped again
  }
}

TEST_F(ChatServiceTest, FailureAfterFirstTokenIsUnavailableWithReason) {
  Start(2);
  for (auto& w : workers_) w->mode = FakeWorker::Mode::kFailAfterFirst;
  phi::v1::ChatStreamResponse last;
  grpc::Status st;
  StreamText(Hello(), &last, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(st.error_message().find("failed after 1 tokens"), std::string::npos) << st.error_message();
  EXPECT_EQ(workers_[0]->generates + workers_[1]->generates, 1);  // no retry once text went out
}

TEST_F(ChatServiceTest, ClientCancelReachesTheWorker) {
  Start();
  workers_[0]->token_delay_ms = 50;
  grpc::ClientContext ctx;
  auto reader = stub_->ChatStream(&ctx, Hello());
  phi::v1::ChatStreamResponse m;
  ASSERT_TRUE(reader->Read(&m));
  EXPECT_EQ(workers_[0]->running.load(), 1);
  ctx.TryCancel();
  reader->Finish();
  EXPECT_TRUE(Eventually([&] { return workers_[0]->running.load() == 0; }));
  EXPECT_EQ(workers_[0]->cancelled.load(), 1);
}

TEST_F(ChatServiceTest, DeadlinePropagatesToTheWorker) {
  Start();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  phi::v1::ChatResponse resp;
  ASSERT_TRUE(stub_->Chat(&ctx, Hello(), &resp).ok());
  EXPECT_GT(workers_[0]->last_deadline_ms.load(), 3000);
  EXPECT_LE(workers_[0]->last_deadline_ms.load(), 5100);  // grpc-timeout rounds up slightly
  // A deadline shorter than the generation: DEADLINE_EXCEEDED.
  workers_[0]->token_delay_ms = 20;
  grpc::ClientContext short_ctx;
  short_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  EXPECT_EQ(stub_->Chat(&short_ctx, Hello(), &resp).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(ChatServiceTest, InvalidRequestsNameTheField) {
  Start();
  auto expect = [&](phi::v1::ChatRequest req, const std::string& needle) {
    grpc::ClientContext ctx;
    phi::v1::ChatResponse resp;
    grpc::Status s = stub_->Chat(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << needle;
    EXPECT_NE(s.error_message().find(needle), std::string::npos) << s.error_message();
  };
  auto r = Hello();
  r.mutable_sampling()->set_temperature(-1);
  expect(r, "sampling.temperature");
  r = Hello();
  r.mutable_sampling()->set_top_p(1.5);
  expect(r, "sampling.top_p");
  r = Hello();
  r.mutable_messages(0)->set_role(phi::v1::ROLE_ASSISTANT);
  expect(r, "role user");
  r = Hello();
  r.mutable_stopping()->set_max_new_tokens(1000);
  expect(r, "stopping.max_new_tokens: 1000");
  r = Hello();
  r.set_top_logprobs(21);
  expect(r, "top_logprobs");
  r = Hello();
  for (int i = 0; i < 17; ++i) r.mutable_stopping()->add_stop("x");
  expect(r, "stopping.stop");
  r = Hello();
  r.set_model("other");
  grpc::ClientContext ctx;
  phi::v1::ChatResponse resp;
  EXPECT_EQ(stub_->Chat(&ctx, r, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ChatServiceTest, ApiKeysAndPerKeyLimit) {
  Start(1, {}, "k1,k2", 1);
  workers_[0]->token_delay_ms = 30;
  {
    grpc::ClientContext ctx;
    phi::v1::ChatResponse resp;
    EXPECT_EQ(stub_->Chat(&ctx, Hello(), &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer nope");
    phi::v1::ChatResponse resp;
    EXPECT_EQ(stub_->Chat(&ctx, Hello(), &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  grpc::ClientContext stream_ctx;
  stream_ctx.AddMetadata("authorization", "Bearer k1");
  auto reader = stub_->ChatStream(&stream_ctx, Hello());
  phi::v1::ChatStreamResponse m;
  ASSERT_TRUE(reader->Read(&m));  // k1's one slot is taken
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer k1");
    phi::v1::ChatResponse resp;
    EXPECT_EQ(stub_->Chat(&ctx, Hello(), &resp).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer k2");
    phi::v1::ChatResponse resp;
    EXPECT_TRUE(stub_->Chat(&ctx, Hello(), &resp).ok());
  }
  while (reader->Read(&m)) {
  }
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(ChatServiceTest, TokenizerFailover) {
  Start(1, {"127.0.0.1:1"});  // nothing listens on port 1
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    phi::v1::ChatResponse resp;
    grpc::Status s = stub_->Chat(&ctx, Hello(), &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.text(), "hello world STOP more text");
  }
}

TEST_F(ChatServiceTest, DecodeStreamFailsOverMidStream) {
  FakeTokenizer dying;
  dying.fail_decode_after = 3;
  InProcessServer dying_server(&dying);
  Start(1, {dying_server.address()});
  for (int i = 0; i < 4; ++i) {  // sessions alternate between the two tokenizers
    phi::v1::ChatStreamResponse last;
    grpc::Status st;
    EXPECT_EQ(StreamText(Hello(), &last, &st), "hello world STOP more text");
    EXPECT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_GT(dying.decode_streams.load(), 0);  // some sessions did start on the dying one
}

TEST_F(ChatServiceTest, CompleteWithEchoAndPromptLogprobs) {
  Start();
  phi::v1::CompleteRequest req;
  req.set_prompt("abc");
  req.set_echo(true);
  req.set_prompt_logprobs(true);
  req.set_logprobs(true);
  req.mutable_stopping()->set_max_new_tokens(5);
  grpc::ClientContext ctx;
  phi::v1::CompleteResponse resp;
  ASSERT_TRUE(stub_->Complete(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.text(), "abchello");
  EXPECT_EQ(resp.finish_reason(), phi::v1::FINISH_REASON_LENGTH);
  ASSERT_EQ(resp.prompt_logprobs_size(), 2);
  EXPECT_EQ(resp.prompt_logprobs(0).token().text(), "b");
  ASSERT_EQ(resp.logprobs_size(), 5);
  EXPECT_EQ(resp.logprobs(4).token().text(), "o");
}

// More prompt tokens (and alternatives) than one Decode may carry: texts come in batches, and a
// padded output row among the alternatives has the empty text.
TEST_F(ChatServiceTest, CompletePromptLogprobsPastTheTokenizersBatchLimit) {
  Start();
  tokenizer_.max_batch = 8;
  std::string prompt;
  for (int i = 0; i < 250; ++i) prompt += static_cast<char>('a' + (i * 7) % 26);
  phi::v1::CompleteRequest req;
  req.set_prompt(prompt);
  req.set_echo(true);
  req.set_prompt_logprobs(true);
  req.set_top_logprobs(3);
  req.mutable_stopping()->set_max_new_tokens(1);
  grpc::ClientContext ctx;
  phi::v1::CompleteResponse resp;
  grpc::Status st = stub_->Complete(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.prompt_logprobs_size(), 249);
  std::string texts;
  for (const auto& p : resp.prompt_logprobs()) {
    texts += p.token().text();
    ASSERT_EQ(p.top_size(), 3);
    EXPECT_EQ(p.top(0).text(), "");  // id 300 + k % 7: past the tokenizer's 300 ids
    EXPECT_EQ(p.top(1).text(), FakeTokenizer::Text(p.top(1).token_id()));
  }
  EXPECT_EQ(texts, prompt.substr(1));
  EXPECT_LE(tokenizer_.most_sequences.load(), 8);
  // 26 letters, each decoded once: 4 calls of at most 8 (the generated token's text is cached too).
  EXPECT_EQ(tokenizer_.decodes.load(), 4);
}

TEST_F(ChatServiceTest, PrefersTheGroupHoldingTheCachedPrefix) {
  Start(3);
  // The prompt's ids as the fake tokenizer gives them; 21 ids = one full block of 16.
  std::vector<int32_t> ids = {1};
  for (unsigned char c : std::string("user\nhi")) ids.push_back(testing::ByteId(c));
  ids.push_back(2);
  ids.push_back(testing::ByteId('\n'));
  ids.push_back(1);
  for (unsigned char c : std::string("assistant\n")) ids.push_back(testing::ByteId(c));
  ASSERT_EQ(ids.size(), 21u);
  {
    std::lock_guard<std::mutex> l(workers_[2]->mu);
    workers_[2]->cached_hashes = phi::common::PrefixBlockHashes(ids, 16, 1);
  }
  pool_->RefreshNow();
  for (int i = 0; i < 6; ++i) {
    grpc::ClientContext ctx;
    phi::v1::ChatResponse resp;
    ASSERT_TRUE(stub_->Chat(&ctx, Hello(), &resp).ok());
  }
  EXPECT_EQ(workers_[2]->generates.load(), 6);
  EXPECT_EQ(workers_[0]->generates + workers_[1]->generates, 0);
  // Without a cached prefix, load spreads round robin over equally idle groups.
  {
    std::lock_guard<std::mutex> l(workers_[2]->mu);
    workers_[2]->cached_hashes.clear();
  }
  pool_->RefreshNow();
  for (int i = 0; i < 6; ++i) {
    grpc::ClientContext ctx;
    phi::v1::ChatResponse resp;
    ASSERT_TRUE(stub_->Chat(&ctx, Hello(), &resp).ok());
  }
  EXPECT_GT(workers_[0]->generates.load(), 0);
  EXPECT_GT(workers_[1]->generates.load(), 0);
}

TEST(WorkerPoolDns, ResolvesANameToEveryAddress) {
  FakeWorker worker;
  InProcessServer server(&worker);
  metrics::Registry registry;
  WorkerPoolOptions po;
  po.workers = "dns:///localhost:" + std::to_string(server.port);
  auto pool = WorkerPool::Create(po, &registry);
  ASSERT_TRUE(pool.ok()) << pool.status();
  auto models = (*pool)->Models();
  ASSERT_EQ(models.size(), 1u) << (*pool)->Describe();
  EXPECT_GE(models[0].ready_groups, 1);
  EXPECT_NE((*pool)->Describe().find("127.0.0.1:" + std::to_string(server.port) + "=ready"), std::string::npos)
      << (*pool)->Describe();
  po.workers = "dns:///no-port";
  EXPECT_EQ(WorkerPool::Create(po, &registry).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ChatServiceTest, ListModelsAndMetrics) {
  Start(2);
  grpc::ClientContext ctx;
  phi::v1::ListModelsResponse resp;
  ASSERT_TRUE(stub_->ListModels(&ctx, {}, &resp).ok());
  ASSERT_EQ(resp.models_size(), 1);
  EXPECT_EQ(resp.models(0).name(), "fake-model");
  EXPECT_EQ(resp.models(0).ready_worker_groups(), 2);
  grpc::ClientContext c2;
  phi::v1::ChatResponse r;
  ASSERT_TRUE(stub_->Chat(&c2, Hello(), &r).ok());
  std::string text = registry_.Serialize();
  for (const char* name :
       {"phi_gateway_requests_total{route=\"chat\",code=\"OK\",model=\"fake-model\"} 1",
        "phi_gateway_time_to_first_token_seconds_count{model=\"fake-model\"} 1",
        "phi_gateway_inter_token_latency_seconds_count{model=\"fake-model\"} 25",
        "phi_gateway_e2e_latency_seconds_count{model=\"fake-model\"} 1",
        "phi_gateway_tokenizer_duration_seconds_count 1", "phi_gateway_prompt_tokens_total{model=\"fake-model\"} 21",
        "phi_gateway_completion_tokens_total{model=\"fake-model\"} 26", "phi_gateway_requests_in_flight 0",
        "phi_gateway_worker_groups{state=\"ready\"} 2"}) {
    EXPECT_NE(text.find(name), std::string::npos) << name << "\n" << text;
  }
}

TEST_F(ChatServiceTest, HungWorkerIsAbandonedAtTheFirstTokenTimeoutAndRetried) {
  gen_options_.first_token_timeout_seconds = 0.3;
  Start(2);
  for (auto& w : workers_) w->mode = FakeWorker::Mode::kHang;
  // Both groups hang: one try, one retry, then UNAVAILABLE naming the reason.
  const auto t0 = std::chrono::steady_clock::now();
  grpc::ClientContext c1;
  phi::v1::ChatResponse r1;
  grpc::Status s1 = stub_->Chat(&c1, Hello(), &r1);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(s1.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s1.error_message().find("no token within 0.3 s (--first-token-timeout-seconds)"), std::string::npos)
      << s1.error_message();
  EXPECT_GE(took, 0.55);
  EXPECT_LT(took, 3.0);
  EXPECT_EQ(workers_[0]->generates + workers_[1]->generates, 2);
  EXPECT_TRUE(Eventually([&] { return workers_[0]->cancelled + workers_[1]->cancelled == 2; }));
  EXPECT_EQ(Metric("phi_gateway_worker_hung_attempts_total"), 2);

  // Group 1 recovers: every request succeeds, through a retry when it tried group 0 first.
  workers_[1]->mode = FakeWorker::Mode::kOk;
  pool_->RefreshNow();
  for (int i = 0; i < 4; ++i) {
    phi::v1::ChatStreamResponse last;
    grpc::Status st;
    EXPECT_EQ(StreamText(Hello(), &last, &st), "hello world STOP more text");
    EXPECT_TRUE(st.ok()) << st.error_message();
    pool_->RefreshNow();  // group 0 answers GetStatus: back in rotation, to be tried again
  }
  EXPECT_GE(workers_[0]->generates.load(), 2);
  // Every attempt on group 0 hung, and group 1's one in the first request.
  EXPECT_EQ(Metric("phi_gateway_worker_hung_attempts_total"), workers_[0]->generates.load() + 1);
}

TEST_F(ChatServiceTest, FirstTokenTimeoutSparesSlowButLiveStreams) {
  gen_options_.first_token_timeout_seconds = 0.3;
  Start(1);
  workers_[0]->token_delay_ms = 100;  // 2.6 s in all, the first token after 0.1 s
  phi::v1::ChatStreamResponse last;
  grpc::Status st;
  EXPECT_EQ(StreamText(Hello(), &last, &st), "hello world STOP more text");
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(Metric("phi_gateway_worker_hung_attempts_total"), 0);
}

TEST_F(ChatServiceTest, GroupWhoseStatusDoesNotAnswerLeavesRotation) {
  status_timeout_seconds_ = 0.2;
  Start(2);
  const std::string hung = worker_servers_[0]->address();
  workers_[0]->status_delay_ms = 60000;
  EXPECT_TRUE(Eventually([&] { return pool_->Describe().find(hung + "=unreachable") != std::string::npos; }, 1000))
      << pool_->Describe();
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext c;
    phi::v1::ChatResponse r;
    ASSERT_TRUE(stub_->Chat(&c, Hello(), &r).ok());
  }
  EXPECT_EQ(workers_[0]->generates.load(), 0);
  workers_[0]->status_delay_ms = 0;
  EXPECT_TRUE(Eventually([&] { return pool_->Describe().find(hung + "=ready") != std::string::npos; }, 1000))
      << pool_->Describe();
}

TEST_F(ChatServiceTest, InvalidUtf8NamesTheFieldAndByte) {
  Start();
  // Valid requests with a placeholder, then the placeholder's bytes swapped for bad UTF-8 on
  // the wire (protobuf's C++ API would refuse to serialize such a string field).
  auto corrupt = [](const google::protobuf::Message& m, const std::string& bad) {
    std::string bytes = m.SerializeAsString();
    size_t at = bytes.find("@@");
    EXPECT_NE(at, std::string::npos);
    return bytes.replace(at, 2, bad);
  };
  auto expect = [&](const std::string& method, const std::string& bytes, const std::string& message) {
    grpc::Status s = SendRaw(method, bytes);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method << ": " << s.error_message();
    EXPECT_EQ(s.error_message(), message) << method;
  };
  phi::v1::ChatRequest chat = Hello();
  auto* m = chat.add_messages();
  m->set_role(phi::v1::ROLE_ASSISTANT);
  m->set_content("seventeen bytes: @@ and more");
  auto* u = chat.add_messages();
  u->set_role(phi::v1::ROLE_USER);
  u->set_content("ok");
  for (const char* method : {"Chat", "ChatStream"}) {
    expect(method, corrupt(chat, "\xc3\x28"), "messages[1].content: not valid UTF-8 at byte 17");
    expect(method, corrupt(chat, "\xed\xa0"), "messages[1].content: not valid UTF-8 at byte 17");  // surrogate
    expect(method, corrupt(chat, "\xc0\xaf"), "messages[1].content: not valid UTF-8 at byte 17");  // overlong
  }
  phi::v1::ChatRequest stops = Hello();
  stops.mutable_stopping()->add_stop("fine");
  stops.mutable_stopping()->add_stop("x@@");
  expect("Chat", corrupt(stops, "\xff!"), "stopping.stop[1]: not valid UTF-8 at byte 1");
  phi::v1::ChatRequest id = Hello();
  id.set_request_id("@@");
  expect("ChatStream", corrupt(id, "\xe2\x82"), "request_id: not valid UTF-8 at byte 0");

  phi::v1::CompleteRequest complete;
  complete.set_prompt("\xe2\x82\xac @@");  // a valid euro sign first: offsets are bytes
  for (const char* method : {"Complete", "CompleteStream"}) {
    expect(method, corrupt(complete, "\xf4\x90"), "prompt: not valid UTF-8 at byte 4");  // above U+10FFFF
  }
  complete.set_model("@@");
  expect("Complete", corrupt(complete, "\x80\x80"), "model: not valid UTF-8 at byte 0");

  expect("Chat", std::string("\x1a\x05\x12\x02", 4),
         "request: not a valid phi.v1.ChatRequest (malformed protobuf encoding)");
  EXPECT_EQ(workers_[0]->generates.load(), 0);

  // Valid UTF-8 of every width still passes, sent the same way.
  phi::v1::ChatRequest good = Hello();
  good.mutable_messages(0)->set_content("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 @@");
  EXPECT_TRUE(SendRaw("Chat", corrupt(good, "ok")).ok());
  EXPECT_EQ(workers_[0]->generates.load(), 1);
}

}  // namespace
}  // namespace phi::gateway
