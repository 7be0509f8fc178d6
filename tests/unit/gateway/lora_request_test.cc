// vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter bodies: fields, types and bounds,
// errors naming the field as sent.
#include "services/gateway/lora_request.h"

#include <gtest/gtest.h>

namespace phi::gateway {
namespace {

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST(LoraRequest, LoadTakesANameAndAPath) {
  auto r = ParseLoadLoraAdapterRequest(R"({"lora_name": "phi-1_5-dpo", "lora_path": "/adapters/dpo"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->lora_name(), "phi-1_5-dpo");
  EXPECT_EQ(r->lora_path(), "/adapters/dpo");
}

TEST(LoraRequest, LoadRefusalsNameTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"lora_path": "/a"})", "lora_name: required, 1 to 128 bytes of [A-Za-z0-9._-]"},
      {R"({"lora_name": "x"})", "lora_path: required, the adapter's folder on the workers (1 to 4096 bytes)"},
      {R"({"lora_name": null, "lora_path": "/a"})", "lora_name: required, 1 to 128 bytes of [A-Za-z0-9._-]"},
      {R"({"lora_name": 7, "lora_path": "/a"})", "lora_name: "},
      {R"({"lora_name": "x", "lora_path": ["/a"]})", "lora_path: "},
      {R"({"lora_name": "x/y", "lora_path": "/a"})", "lora_name: 'x/y' has '/' at byte 1"},
      {R"({"lora_name": "x", "lora_path": "/a", "lora_int_id": 1})", "lora_int_id: unknown parameter"},
      {R"({"lora_name": "x", "lora_name": "y", "lora_path": "/a"})", "lora_name: "},
      {R"({"lora_name": "x", "lora_path": "/a\u0000b"})", "lora_path: contains a NUL byte"},
      {R"(["x"])", ""},
  };
  for (const auto& [body, prefix] : cases) {
    auto r = ParseLoadLoraAdapterRequest(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
    EXPECT_EQ(Msg(r.status()).substr(0, std::string_view(prefix).size()), prefix) << body << " -> " << r.status();
  }
  const std::string long_name = R"({"lora_name": ")" + std::string(129, 'a') + R"(", "lora_path": "/a"})";
  EXPECT_EQ(Msg(ParseLoadLoraAdapterRequest(long_name).status()),
            "lora_name: must be a string of at most 128 bytes, got 129");
  const std::string long_path = R"({"lora_name": "a", "lora_path": ")" + std::string(4097, 'p') + R"("})";
  EXPECT_EQ(Msg(ParseLoadLoraAdapterRequest(long_path).status()),
            "lora_path: must be a string of at most 4096 bytes, got 4097");
}

TEST(LoraRequest, UnloadTakesOnlyAName) {
  auto r = ParseUnloadLoraAdapterRequest(R"({"lora_name": "dpo"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->lora_name(), "dpo");
  EXPECT_EQ(Msg(ParseUnloadLoraAdapterRequest(R"({})").status()).substr(0, 19), "lora_name: required");
  EXPECT_EQ(Msg(ParseUnloadLoraAdapterRequest(R"({"lora_name": "dpo", "lora_path": "/a"})").status()),
            "lora_path: unknown parameter");
}

}  // namespace
}  // namespace phi::gateway
