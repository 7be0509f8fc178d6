// Helpers shared by phi_cuda_bench's files: fail loudly, medians, host time, the time of one
// launch inside a captured CUDA graph, and of a model's decode graph replayed alone.
#ifndef PHI_BENCH_CUDA_BENCH_UTIL_H_
#define PHI_BENCH_CUDA_BENCH_UTIL_H_

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "services/worker/backends/cuda/cuda_status.h"

namespace phi::bench {

using phi::worker::cuda::CudaStatus;

[[noreturn]] inline void Die(const std::string& what) {
  std::fprintf(stderr, "phi_cuda_bench: %s\n", what.c_str());
  std::exit(1);
}
inline void Check(const CudaStatus& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.message());
}
inline void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) Die(std::string(what) + ": " + cudaGetErrorString(e));
}

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

inline double NowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Time of one launch of `op(i)` inside a captured graph of `reps` launches (i = 0..reps-1),
// in microseconds: the cost it adds to a decode graph, node gap included.
template <typename Op>
double GraphUs(Op op, int reps = 96) {
  cudaStream_t s;
  Check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  for (int i = 0; i < 8; ++i) Check(op(i, s), "warm-up");
  Check(cudaStreamSynchronize(s), "sync");
  cudaGraph_t g;
  cudaGraphExec_t ge;
  Check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "capture");
  for (int i = 0; i < reps; ++i) Check(op(i, s), "op");
  Check(cudaStreamEndCapture(s, &g), "end capture");
  Check(cudaGraphInstantiate(&ge, g, 0), "instantiate");
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> t;
  for (int i = 0; i < 7; ++i) {
    cudaEventRecord(e0, s);
    Check(cudaGraphLaunch(ge, s), "launch");
    cudaEventRecord(e1, s);
    Check(cudaEventSynchronize(e1), "sync");
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i > 0) t.push_back(ms * 1e3 / reps);
  }
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  return Median(t);
}

// GPU time per replay of an instantiated graph (PhiCudaModelAccess::DecodeGraph) replayed `reps`
// times back to back after one warm replay, in microseconds; false when there is no graph,
// so a decode step's time splits into the graph's and the host's (metadata, copies, sync).
inline bool TimeGraphReplay(cudaGraphExec_t graph, cudaStream_t stream, int reps, double* us) {
  if (graph == nullptr || reps <= 0) return false;
  cudaEvent_t e0, e1;
  Check(cudaEventCreate(&e0), "event");
  Check(cudaEventCreate(&e1), "event");
  Check(cudaGraphLaunch(graph, stream), "graph launch");  // warm
  Check(cudaEventRecord(e0, stream), "event record");
  for (int i = 0; i < reps; ++i) Check(cudaGraphLaunch(graph, stream), "graph launch");
  Check(cudaEventRecord(e1, stream), "event record");
  Check(cudaEventSynchronize(e1), "event sync");
  float ms = 0.0f;
  Check(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  *us = 1e3 * ms / reps;
  return true;
}

}  // namespace phi::bench

#endif  // PHI_BENCH_CUDA_BENCH_UTIL_H_
