// The NCCL communicator on this machine's GPU: a group of one (one GPU cannot hold two
// NCCL ranks) through the real rendezvous store, every collective on device buffers in
// f32 and bf16, and the bounded init when a peer never comes. Skips without a GPU.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/worker/parallel/kv_client.h"
#include "services/worker/parallel/nccl_communicator.h"
#include "services/worker/parallel/rendezvous_server.h"

namespace phi::worker::parallel {
namespace {

using namespace std::chrono_literals;

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      GTEST_SKIP() << "no CUDA device: NCCL tests skipped";
    }
    auto server = RendezvousServer::Start("127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    store_ = std::make_unique<KvClient>("127.0.0.1:" + std::to_string(server_->port()), 5s);
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::unique_ptr<RendezvousServer> server_;
  std::unique_ptr<KvClient> store_;
  cudaStream_t stream_ = nullptr;
};

TEST_F(NcclTest, GroupOfOneCollectivesOnDeviceBuffers) {
  NcclOptions options;
  options.stream = stream_;
  auto comm = NcclCommunicator::Create(store_.get(), 0, 1, options);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->name(), "nccl");

  const size_t n = 4099;  // odd, not a multiple of any NCCL chunk
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>((i * 2654435761u) % 2001) - 1000.0f;
  float* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, n * sizeof(float) * 2), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dev, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE((*comm)->AllReduceSum(dev, n, DataType::kFloat32).ok());
  ASSERT_TRUE((*comm)->AllReduceSum(dev, n / 2, DataType::kBFloat16).ok());  // same bytes, bf16 view
  ASSERT_TRUE((*comm)->Broadcast(dev, n * sizeof(float), 0).ok());
  ASSERT_TRUE((*comm)->AllGather(dev, dev + n, n * sizeof(float)).ok());
  ASSERT_TRUE((*comm)->Barrier().ok());
  std::vector<float> back(2 * n);
  ASSERT_EQ(cudaMemcpy(back.data(), dev, 2 * n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(back[i], host[i]) << i;
    ASSERT_EQ(back[n + i], host[i]) << i;
  }
  EXPECT_EQ((*comm)->Broadcast(dev, 4, 1).code(), absl::StatusCode::kInvalidArgument);
  cudaFree(dev);
}

TEST_F(NcclTest, EnqueueOnlyThenSynchronize) {
  NcclOptions options;
  options.stream = stream_;
  options.wait_each_operation = false;
  auto comm = NcclCommunicator::Create(store_.get(), 0, 1, options);
  ASSERT_TRUE(comm.ok()) << comm.status();
  float* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, 2048 * 24 * sizeof(float)), cudaSuccess);
  for (int layer = 0; layer < 24; ++layer) {
    ASSERT_TRUE((*comm)->AllReduceSum(dev + layer * 2048, 2048, DataType::kFloat32).ok());
  }
  EXPECT_TRUE((*comm)->Synchronize().ok());
  cudaFree(dev);
}

TEST_F(NcclTest, MissingPeerFailsInitWithinTheTimeout) {
  NcclOptions options;
  options.stream = stream_;
  options.timeout = 3s;
  const auto t0 = std::chrono::steady_clock::now();
  auto comm = NcclCommunicator::Create(store_.get(), 0, 2, options);  // rank 1 never comes
  EXPECT_FALSE(comm.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 15s);
}

TEST_F(NcclTest, FollowerWithoutUniqueIdTimesOut) {
  NcclOptions options;
  options.timeout = 500ms;
  auto comm = NcclCommunicator::Create(store_.get(), 1, 2, options);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(comm.status().message(), ::testing::HasSubstr("nccl/unique_id"));
}

}  // namespace
}  // namespace phi::worker::parallel
