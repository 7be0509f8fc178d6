#include "services/common/request_limits.h"

#include <gtest/gtest.h>

#include <string>

#include "phi/v1/worker.pb.h"

namespace phi::common {
namespace {

// A GenerateRequest with every field at the largest value the bounds allow, ids at the largest
// int32 (the most varint bytes a valid id can take).
phi::v1::GenerateRequest LargestRequest(int context_tokens) {
  phi::v1::GenerateRequest r;
  r.set_request_id(std::string(kMaxRequestIdBytes, 'r'));
  for (int i = 0; i < context_tokens; ++i) r.add_prompt_ids(0x7fffffff);
  auto* s = r.mutable_sampling();
  s->set_temperature(kMaxTemperature);
  s->set_top_p(kMaxTopP);
  s->set_top_k(0x7fffffff);
  s->set_min_p(kMaxMinP);
  s->set_repetition_penalty(kMaxRepetitionPenalty);
  s->set_presence_penalty(-kMaxAbsPenalty);
  s->set_frequency_penalty(-kMaxAbsPenalty);
  s->set_seed(~uint64_t{0});
  for (size_t i = 0; i < kMaxLogitBias; ++i) (*s->mutable_logit_bias())[0x7fffffff - static_cast<int>(i)] = -kMaxAbsLogitBias;
  for (size_t i = 0; i < kMaxConstraintChoices; ++i) {
    s->mutable_constraint()->mutable_choice()->add_choices(std::string(kMaxConstraintBytes, 'c'));
  }
  auto* st = r.mutable_stopping();
  st->set_max_new_tokens(0x7fffffff);
  st->set_min_new_tokens(0x7fffffff);
  for (size_t i = 0; i < kMaxStopStrings; ++i) st->add_stop(std::string(kMaxStopStringBytes, 's'));
  for (size_t i = 0; i < kMaxStopTokenIds; ++i) st->add_stop_token_ids(0x7fffffff);
  st->set_ignore_eos(true);
  st->set_include_stop_str_in_output(true);
  r.set_logprobs(true);
  r.set_top_logprobs(kMaxTopLogprobs);
  r.set_prompt_logprobs(true);
  r.set_priority(-kMaxAbsPriority);
  r.set_adapter(std::string(256, 'a'));
  return r;
}

TEST(MaxGenerateRequestBytes, FitsTheLargestValidRequest) {
  for (int context : {1, 2048, 32768}) {
    const int64_t largest = static_cast<int64_t>(LargestRequest(context).ByteSizeLong());
    EXPECT_LE(largest, MaxGenerateRequestBytes(context)) << context;
    // Tight enough to matter: within 128 KiB of the largest valid request, not a round 64 MiB.
    EXPECT_LE(MaxGenerateRequestBytes(context) - largest, int64_t{128} << 10) << context;
  }
}

TEST(MaxGenerateRequestBytes, GrowsWithTheContext) {
  EXPECT_EQ(MaxGenerateRequestBytes(4096) - MaxGenerateRequestBytes(2048), 2048 * 5);
  EXPECT_LT(MaxGenerateRequestBytes(2048), int64_t{20} << 20);  // Phi-1.5: a 60 MB request is refused
}

}  // namespace
}  // namespace phi::common
