#include "services/worker/model/safetensors_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "services/worker/model/dtype.h"
#include "services/worker/model/safetensors.h"

namespace phi::worker::model {
namespace {

class SafetensorsWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("phi_stw_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "out.safetensors").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(SafetensorsWriterTest, RoundTripsThroughTheReader) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  const std::vector<uint8_t> h = EncodeFloats({0.5f, -2.0f, 3.0f}, DType::kF16);
  const std::vector<uint8_t> b = EncodeFloats({1.5f, -0.25f}, DType::kBF16);
  const std::vector<uint8_t> empty;
  // Written 2-byte tensors first, so the layout (4-byte tensors first) differs from the call's order.
  ASSERT_TRUE(WriteSafetensors(path_,
                               {{"h", DType::kF16, {3}, h.data(), h.size()},
                                {"b", DType::kBF16, {1, 2}, b.data(), b.size()},
                                {"a", DType::kF32, {2, 3}, a.data(), a.size() * 4},
                                {"none", DType::kF32, {0, 4}, empty.data(), 0}},
                               {{"format", "pt"}})
                  .ok());
  auto f = SafetensorsFile::Open(path_);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors().size(), 4u);
  EXPECT_EQ((*f)->metadata().at("format"), "pt");

  const TensorInfo* ta = (*f)->Find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->dtype, DType::kF32);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ta->begin, 0u);  // the F32 tensor comes first
  std::vector<float> got(6);
  std::memcpy(got.data(), (*f)->Data(*ta), 24);
  EXPECT_EQ(got, a);

  const TensorInfo* tb = (*f)->Find("b");
  ASSERT_NE(tb, nullptr);
  EXPECT_EQ(tb->dtype, DType::kBF16);
  EXPECT_EQ(tb->shape, (std::vector<int64_t>{1, 2}));
  uint16_t v[3];
  std::memcpy(v, (*f)->Data(*tb), 4);
  EXPECT_EQ(Bf16ToF32(v[0]), 1.5f);
  EXPECT_EQ(Bf16ToF32(v[1]), -0.25f);

  const TensorInfo* th = (*f)->Find("h");
  ASSERT_NE(th, nullptr);
  EXPECT_EQ(th->dtype, DType::kF16);
  std::memcpy(v, (*f)->Data(*th), 6);
  EXPECT_EQ(F16ToF32(v[0]), 0.5f);
  EXPECT_EQ(F16ToF32(v[1]), -2.0f);
  EXPECT_EQ(F16ToF32(v[2]), 3.0f);
  // Layout: a [0, 24), none [24, 24), then the 2-byte tensors by name: b [24, 28), h [28, 34).
  EXPECT_EQ(tb->begin, 24u);
  EXPECT_EQ(th->begin, 28u);

  const TensorInfo* tn = (*f)->Find("none");
  ASSERT_NE(tn, nullptr);
  EXPECT_EQ(tn->begin, tn->end);
}

TEST_F(SafetensorsWriterTest, HeaderIsPaddedToEightBytes) {
  const std::vector<float> a = {1};
  for (const char* name : {"x", "xy", "xyz", "xyzw", "a.b.c.d.e"}) {
    auto bytes = SerializeSafetensors({{name, DType::kF32, {1}, a.data(), 4}});
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<uint8_t>((*bytes)[i])) << (8 * i);
    EXPECT_EQ(n % 8, 0u) << name;
    EXPECT_EQ(bytes->size(), 8 + n + 4) << name;
  }
}

TEST_F(SafetensorsWriterTest, RefusesInconsistentTensors) {
  const std::vector<float> a = {1, 2};
  auto expect_refused = [&](const std::vector<TensorToWrite>& tensors, const std::string& needle) {
    absl::Status s = WriteSafetensors(path_, tensors);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s << " lacks " << needle;
    EXPECT_FALSE(std::filesystem::exists(path_));
  };
  expect_refused({{"a", DType::kF32, {3}, a.data(), 8}}, "has 8 bytes, its shape of F32 needs 12");
  expect_refused({{"a", DType::kF32, {2}, a.data(), 8}, {"a", DType::kF32, {2}, a.data(), 8}}, "is named twice");
  expect_refused({{"__metadata__", DType::kF32, {2}, a.data(), 8}}, "not a usable tensor name");
  expect_refused({{"", DType::kF32, {2}, a.data(), 8}}, "not a usable tensor name");
  expect_refused({{"a", DType::kF32, {-2}, a.data(), 8}}, "negative dimension");
  EXPECT_TRUE(std::filesystem::is_empty(dir_));  // no temporary file left behind
}

TEST(F32ToF16Test, RoundsToNearestEven) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xc000);
  EXPECT_EQ(F32ToF16(0.0f), 0x0000);
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(65519.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);  // the tie rounds up to infinity (0x7bff is odd)
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(F32ToF16(1.0f + 0x1p-11f), 0x3c00);        // tie between 0x3c00 and 0x3c01: even
  EXPECT_EQ(F32ToF16(1.0f + 3 * 0x1p-11f), 0x3c02);    // tie between 0x3c01 and 0x3c02: even
  EXPECT_EQ(F32ToF16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
  EXPECT_EQ(F32ToF16(0x1p-14f), 0x0400);  // smallest normal
  EXPECT_EQ(F32ToF16(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(F32ToF16(0x1p-25f), 0x0000);  // tie with zero: even
  EXPECT_EQ(F32ToF16(1.5f * 0x1p-25f), 0x0001);
  EXPECT_EQ(F32ToF16(3 * 0x1p-25f), 0x0002);  // tie between 1 and 2 units: even
  EXPECT_EQ(F32ToF16(0x1p-15f + 0x1p-25f), 0x0200);  // subnormal tie 512/513: even
  // Every finite half converts back to itself.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00u) == 0x7c00u) continue;
    ASSERT_EQ(F32ToF16(F16ToF32(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

TEST(EncodeFloatsTest, EncodesEachDtype) {
  const std::vector<float> v = {1.0f, -3.5f, 0.1f};
  const auto f32 = EncodeFloats(v, DType::kF32);
  ASSERT_EQ(f32.size(), 12u);
  float back[3];
  std::memcpy(back, f32.data(), 12);
  EXPECT_EQ(back[2], 0.1f);
  const auto bf = EncodeFloats(v, DType::kBF16);
  ASSERT_EQ(bf.size(), 6u);
  uint16_t u;
  std::memcpy(&u, bf.data() + 4, 2);
  EXPECT_EQ(u, F32ToBf16(0.1f));
  const auto h = EncodeFloats(v, DType::kF16);
  ASSERT_EQ(h.size(), 6u);
  std::memcpy(&u, h.data() + 2, 2);
  EXPECT_EQ(F16ToF32(u), -3.5f);
  EXPECT_TRUE(EncodeFloats(v, DType::kI32).empty());
}

}  // namespace
}  // namespace phi::worker::model
