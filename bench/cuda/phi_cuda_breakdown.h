// phi_cuda_bench --breakdown (phi_cuda_breakdown.cc).
#ifndef PHI_BENCH_CUDA_PHI_CUDA_BREAKDOWN_H_
#define PHI_BENCH_CUDA_PHI_CUDA_BREAKDOWN_H_

namespace phi::bench {

// Prints the per-op table at decode shapes; `bw` is the measured copy bandwidth in bytes/s.
void Breakdown(double bw);

}  // namespace phi::bench

#endif  // PHI_BENCH_CUDA_PHI_CUDA_BREAKDOWN_H_
