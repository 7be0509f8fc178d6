#include "services/gateway/auth.h"

#include <cstdio>
#include <fstream>

#include <gtest/gtest.h>

namespace phi::gateway {
namespace {

TEST(Auth, NoKeysAdmitsEveryone) {
  auto a = Auth::Create("", "", 0);
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE((*a)->enabled());
  EXPECT_TRUE((*a)->Admit("").ok());
}

TEST(Auth, KeysFromFileAndEnv) {
  std::string path = ::testing::TempDir() + "/keys.txt";
  std::ofstream(path) << "# comment\n  file-key  \n\n";
  auto a = Auth::Create(path, "env1, env2", 0);
  ASSERT_TRUE(a.ok()) << a.status();
  for (const char* k : {"Bearer file-key", "Bearer env1", "bearer env2"}) EXPECT_TRUE((*a)->Check(k).ok()) << k;
  EXPECT_EQ((*a)->Check("").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*a)->Check("Bearer x").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*a)->Check("env1").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Auth::Create("/nonexistent/keys", "", 0).status().code(), absl::StatusCode::kNotFound);
}

TEST(Auth, PerKeyConcurrency) {
  auto a = Auth::Create("", "k1,k2", 2);
  ASSERT_TRUE(a.ok());
  {
    auto l1 = (*a)->Admit("Bearer k1");
    auto l2 = (*a)->Admit("Bearer k1");
    ASSERT_TRUE(l1.ok() && l2.ok());
    auto l3 = (*a)->Admit("Bearer k1");
    EXPECT_EQ(l3.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE((*a)->Admit("Bearer k2").ok());
  }
  EXPECT_TRUE((*a)->Admit("Bearer k1").ok());  // slots came back
}

}  // namespace
}  // namespace phi::gateway
