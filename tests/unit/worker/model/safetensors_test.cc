#include "services/worker/model/safetensors.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "services/worker/model/dtype.h"
#include "tests/unit/worker/model/safetensors_writer.h"

namespace phi::worker::model {
namespace {

using testing::F32Tensor;
using testing::HeaderFor;
using testing::RawTensor;
using testing::WriteRaw;
using testing::WriteSafetensors;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("phi_st_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "model.safetensors").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::vector<RawTensor> Two() {
    return {F32Tensor("a", {2, 3}, {1, 2, 3, 4, 5, 6}), F32Tensor("b", {2}, {7, 8})};
  }
  // Opens path_ and expects a refusal whose message contains every string of `needles`.
  void ExpectRefused(std::initializer_list<std::string> needles) {
    auto f = SafetensorsFile::Open(path_);
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
    for (const auto& n : needles) EXPECT_NE(f.status().message().find(n), std::string::npos) << f.status() << " lacks " << n;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(SafetensorsTest, ReadsTensorsInPlace) {
  WriteSafetensors(path_, Two());
  auto f = SafetensorsFile::Open(path_);
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorInfo* a = (*f)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  float v[6];
  std::memcpy(v, (*f)->Data(*a), sizeof(v));
  EXPECT_EQ(v[5], 6.0f);
  const TensorInfo* b = (*f)->Find("b");
  ASSERT_NE(b, nullptr);
  std::memcpy(v, (*f)->Data(*b), 8);
  EXPECT_EQ(v[1], 8.0f);
  EXPECT_EQ((*f)->Find("c"), nullptr);
}

TEST_F(SafetensorsTest, ReadsMetadata) {
  auto t = Two();
  auto h = HeaderFor(t);
  h["__metadata__"] = {{"format", "pt"}};
  WriteRaw(path_, h.dump(), t);
  auto f = SafetensorsFile::Open(path_);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  auto f = SafetensorsFile::Open(path_ + ".nope");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("model.safetensors.nope"), std::string::npos);
}

TEST_F(SafetensorsTest, RefusesFileShorterThanHeaderLength) {
  WriteRaw(path_, "", {}, /*truncate_to=*/5);
  ExpectRefused({path_, "truncated"});
}

TEST_F(SafetensorsTest, RefusesHeaderLengthPastEnd) {
  auto t = Two();
  WriteRaw(path_, HeaderFor(t).dump(), t, /*truncate_to=*/40);
  ExpectRefused({path_, "header length"});
}

TEST_F(SafetensorsTest, RefusesBadJson) {
  WriteRaw(path_, "{\"a\": {\"dtype\": ", {});
  ExpectRefused({path_, "JSON"});
}

TEST_F(SafetensorsTest, RefusesTruncatedData) {
  auto t = Two();
  const std::string h = HeaderFor(t).dump();
  WriteRaw(path_, h, t, /*truncate_to=*/static_cast<int64_t>(8 + h.size() + 20));
  ExpectRefused({path_, "'a'", "past the data section"});
}

TEST_F(SafetensorsTest, RefusesOffsetsOutsideData) {
  auto t = Two();
  auto h = HeaderFor(t);
  h["b"]["data_offsets"] = {24, 400};
  WriteRaw(path_, h.dump(), t);
  ExpectRefused({path_, "'b'", "past the data section"});
}

TEST_F(SafetensorsTest, RefusesOverlappingTensors) {
  auto t = Two();
  t.push_back(F32Tensor("c", {2}, {9, 10}));
  auto h = HeaderFor(t);
  h["c"]["data_offsets"] = {20, 28};  // inside 'a' [0, 24)
  WriteRaw(path_, h.dump(), t);
  ExpectRefused({path_, "overlap", "'a'", "'c'"});
}

TEST_F(SafetensorsTest, RefusesSizeThatDisagreesWithShape) {
  auto t = Two();
  auto h = HeaderFor(t);
  h["a"]["shape"] = {3, 3};
  WriteRaw(path_, h.dump(), t);
  ExpectRefused({path_, "'a'", "[3, 3]"});
}

TEST_F(SafetensorsTest, RefusesUnknownDtype) {
  auto t = Two();
  auto h = HeaderFor(t);
  h["b"]["dtype"] = "F8_E9";
  WriteRaw(path_, h.dump(), t);
  ExpectRefused({path_, "'b'", "F8_E9"});
}

TEST_F(SafetensorsTest, RefusesMissingFields) {
  auto t = Two();
  auto h = HeaderFor(t);
  h["a"].erase("data_offsets");
  WriteRaw(path_, h.dump(), t);
  ExpectRefused({path_, "'a'", "data_offsets"});
}

TEST_F(SafetensorsTest, RefusesEndBeforeBegin) {
  auto t = Two();
  auto h = HeaderFor(t);
  h["b"]["data_offsets"] = {32, 24};
  WriteRaw(path_, h.dump(), t);
  ExpectRefused({path_, "'b'", "end before begin"});
}

TEST_F(SafetensorsTest, RefusesNegativeShape) {
  auto t = Two();
  auto h = HeaderFor(t);
  h["b"]["shape"] = {-2};
  WriteRaw(path_, h.dump(), t);
  ExpectRefused({path_, "'b'", "shape"});
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToF32(0x3f80), 1.0f);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(F32ToBf16(1.00390625f), 0x3f80);
  // 1 + 3*2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even).
  EXPECT_EQ(F32ToBf16(1.01171875f), 0x3f82);
  EXPECT_EQ(F32ToBf16(-2.5f), 0xc020);
}

TEST(DTypeTest, F16Conversion) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x0001), 5.9604644775390625e-8f);  // smallest subnormal
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
}

}  // namespace
}  // namespace phi::worker::model
