#include "services/common/config.h"

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace phi::common {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

absl::Status ParseArgs(FlagSet& flags, std::vector<const char*> args, const EnvLookup& env) {
  args.insert(args.begin(), "prog");
  return flags.Parse(static_cast<int>(args.size()), args.data(), env);
}

struct Fixture {
  int64_t port = 50052;
  std::string model = "/models/default";
  double grace = 30;
  bool verbose = false;
  std::string level = "info";
  FlagSet flags{"prog", "test program"};
  Fixture() {
    flags.AddInt("port", "PHI_PORT", &port, 1, 65535, "port");
    flags.AddString("model", "PHI_MODEL", &model, "model dir");
    flags.AddDouble("grace", "PHI_GRACE", &grace, 0, 60, "grace");
    flags.AddBool("verbose", "PHI_VERBOSE", &verbose, "verbose");
    flags.AddChoice("log-level", "PHI_LOG_LEVEL", &level, {"debug", "info"}, "level");
  }
};

TEST(FlagSet, DefaultsWhenNothingIsGiven) {
  Fixture f;
  ASSERT_TRUE(ParseArgs(f.flags, {}, FakeEnv({})).ok());
  EXPECT_EQ(f.port, 50052);
  EXPECT_EQ(f.model, "/models/default");
}

TEST(FlagSet, EnvironmentOverridesDefault) {
  Fixture f;
  ASSERT_TRUE(ParseArgs(f.flags, {}, FakeEnv({{"PHI_PORT", "6000"}, {"PHI_VERBOSE", "true"}})).ok());
  EXPECT_EQ(f.port, 6000);
  EXPECT_TRUE(f.verbose);
}

TEST(FlagSet, FlagWinsOverEnvironment) {
  Fixture f;
  ASSERT_TRUE(ParseArgs(f.flags, {"--port=7000", "--model", "/m"}, FakeEnv({{"PHI_PORT", "6000"},
                                                                             {"PHI_MODEL", "/env"}}))
                  .ok());
  EXPECT_EQ(f.port, 7000);
  EXPECT_EQ(f.model, "/m");
}

TEST(FlagSet, BoolForms) {
  Fixture f;
  ASSERT_TRUE(ParseArgs(f.flags, {"--verbose"}, FakeEnv({})).ok());
  EXPECT_TRUE(f.verbose);
  ASSERT_TRUE(ParseArgs(f.flags, {"--noverbose"}, FakeEnv({})).ok());
  EXPECT_FALSE(f.verbose);
  ASSERT_TRUE(ParseArgs(f.flags, {"--verbose=true"}, FakeEnv({})).ok());
  EXPECT_TRUE(f.verbose);
  ASSERT_TRUE(ParseArgs(f.flags, {"--no-verbose"}, FakeEnv({})).ok());
  EXPECT_FALSE(f.verbose);
}

TEST(FlagSet, StringListRepeatsAndReplacesTheEnvironment) {
  std::vector<std::string> loras;
  FlagSet flags("prog", "test program");
  flags.AddStringList("lora", "PHI_LORAS", &loras, "adapters");
  ASSERT_TRUE(ParseArgs(flags, {}, FakeEnv({{"PHI_LORAS", "a=/x,,b=/y"}})).ok());
  EXPECT_EQ(loras, (std::vector<std::string>{"a=/x", "b=/y"}));
  ASSERT_TRUE(ParseArgs(flags, {"--lora", "c=/z", "--lora=d=/w"}, FakeEnv({{"PHI_LORAS", "a=/x"}})).ok());
  EXPECT_EQ(loras, (std::vector<std::string>{"c=/z", "d=/w"}));
  EXPECT_NE(flags.Usage().find("repeatable"), std::string::npos);
}

TEST(FlagSet, UnknownFlagIsNamed) {
  Fixture f;
  absl::Status s = ParseArgs(f.flags, {"--prot=1"}, FakeEnv({}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("unknown flag --prot"), std::string::npos) << s;
}

TEST(FlagSet, OutOfRangeValueNamesFlagAndRange) {
  Fixture f;
  absl::Status s = ParseArgs(f.flags, {"--port=70000"}, FakeEnv({}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--port"), std::string::npos) << s;
  EXPECT_NE(s.message().find("[1, 65535]"), std::string::npos) << s;
  s = ParseArgs(f.flags, {"--grace=abc"}, FakeEnv({}));
  EXPECT_NE(s.message().find("a number in [0, 60]"), std::string::npos) << s;
  s = ParseArgs(f.flags, {"--log-level=loud"}, FakeEnv({}));
  EXPECT_NE(s.message().find("one of: debug, info"), std::string::npos) << s;
}

TEST(FlagSet, BadEnvironmentValueNamesTheVariable) {
  Fixture f;
  absl::Status s = ParseArgs(f.flags, {}, FakeEnv({{"PHI_PORT", "http"}}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("PHI_PORT"), std::string::npos) << s;
}

TEST(FlagSet, MissingValueIsAnError) {
  Fixture f;
  absl::Status s = ParseArgs(f.flags, {"--port"}, FakeEnv({}));
  EXPECT_NE(s.message().find("needs a value"), std::string::npos) << s;
}

TEST(FlagSet, HelpAndPositionals) {
  Fixture f;
  ASSERT_TRUE(ParseArgs(f.flags, {"--help", "extra", "--", "--port=1"}, FakeEnv({})).ok());
  EXPECT_TRUE(f.flags.help_requested());
  EXPECT_EQ(f.flags.positional(), (std::vector<std::string>{"extra", "--port=1"}));
  EXPECT_EQ(f.port, 50052);
  const std::string usage = f.flags.Usage();
  EXPECT_NE(usage.find("--port"), std::string::npos);
  EXPECT_NE(usage.find("env PHI_PORT"), std::string::npos);
}

TEST(FlagSetDeathTest, ParseFlagsOrExitExitsWithTwo) {
  Fixture f;
  char prog[] = "prog", bad[] = "--port=0";
  char* argv[] = {prog, bad, nullptr};
  EXPECT_EXIT(ParseFlagsOrExit(f.flags, 2, argv), testing::ExitedWithCode(2), "--port");
}

}  // namespace
}  // namespace phi::common
