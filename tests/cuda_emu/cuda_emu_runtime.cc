// The emulator's scheduler: a kernel launch runs its blocks one after another; a block's
// threads are fibers that run until they reach __syncthreads, a warp collective or their end,
// then the scheduler releases whatever barrier or collective is complete.
#include <vector_functions.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/cuda_emu/cuda_emu.h"
#include "tests/cuda_emu/cuda_emu_internal.h"

// Fiber switch (x86-64 System V): saves the callee-saved registers on the current stack,
// stores the stack pointer in *save and continues on `next`. ucontext's swapcontext makes a
// signal-mask system call per switch, which made the emulated GEMV tests ~10x slower.
extern "C" void cuda_emu_switch(void** save, void* next);
asm(R"(
  .text
  .globl cuda_emu_switch
  .type cuda_emu_switch, @function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emu_switch, .-cuda_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN 1
#endif

namespace cuda_emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxDynamicShared = 48 * 1024;  // without cudaFuncSetAttribute's opt-in

enum class Wait { kRunnable, kBarrier, kWarp, kDone };
enum class WarpOp { kShuffle, kBallot, kMatchAny, kMma };

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while not running
  char* stack = nullptr;
  void* asan_fake_stack = nullptr;
  ThreadIndex index;
  int rank = 0;  // linear thread index in the block
  Wait wait = Wait::kRunnable;
  // The warp collective this thread waits in, and what it brought.
  WarpOp op = WarpOp::kShuffle;
  ShuffleKind shuffle = ShuffleKind::kIndex;
  unsigned mask = 0;
  uint64_t bits = 0;
  int operand = 0;
  int width = 32;
  uint32_t a[4] = {};
  uint32_t b[2] = {};
  float acc[4] = {};
  uint64_t result = 0;
};

struct BlockRun {
  std::vector<Fiber> fibers;
  void* scheduler_sp = nullptr;
  // AddressSanitizer is told about every stack switch (else it reports false errors on the
  // fiber stacks): the scheduler's stack as the first fiber switch found it.
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
  void* scheduler_fake_stack = nullptr;
  Fiber* current = nullptr;
  const std::function<void()>* body = nullptr;
  std::vector<unsigned char> dynamic_shared;
  std::vector<const void*> poisoned_static_shared;  // by this block (PoisonStaticShared)
  size_t static_shared_bytes = 0;                    // their sizes
  uint3 block_idx;  // the block being run, for messages
};

thread_local BlockRun* t_run = nullptr;
thread_local std::vector<std::unique_ptr<char[]>> t_stacks;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "cuda_emu: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Concatenates its arguments (streams them; GCC 12 warns falsely on chains of string +).
template <typename... Parts>
std::string Cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

bool ReverseOrder() {
  static const bool reverse = [] {
    const char* v = std::getenv("CUDA_EMU_ORDER");
    return v != nullptr && std::strcmp(v, "reverse") == 0;
  }();
  return reverse;
}

// Stack-switch notices for AddressSanitizer (no-ops without it). `dying`: the fiber leaves
// for good.
void EnterFiber(BlockRun& run, Fiber& f) {
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(&run.scheduler_fake_stack, f.stack, kStackBytes);
#else
  (void)run;
  (void)f;
#endif
}
void BackInScheduler(BlockRun& run) {
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(run.scheduler_fake_stack, nullptr, nullptr);
#else
  (void)run;
#endif
}
void LeaveFiber(BlockRun& run, Fiber& f, bool dying) {
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(dying ? nullptr : &f.asan_fake_stack, run.scheduler_stack_bottom,
                                 run.scheduler_stack_size);
#else
  (void)run;
  (void)f;
  (void)dying;
#endif
}
void BackInFiber(BlockRun& run, Fiber& f) {
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, &run.scheduler_stack_bottom,
                                  &run.scheduler_stack_size);
#else
  (void)run;
  (void)f;
#endif
}

// First frame of every fiber; never returns (a finished fiber is never switched to again).
void FiberMain() {
  BlockRun* run = t_run;
  Fiber* self = run->current;
  BackInFiber(*run, *self);
  (*run->body)();
  self->wait = Wait::kDone;
  LeaveFiber(*run, *self, /*dying=*/true);
  cuda_emu_switch(&self->sp, run->scheduler_sp);
  __builtin_unreachable();
}

// A stack whose first switch "returns" into FiberMain with the ABI's alignment: the six
// callee-saved registers popped by cuda_emu_switch, then FiberMain's address for its `ret`,
// then a null return address for FiberMain itself.
void* InitialStack(char* base, size_t bytes) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(base) + bytes) & ~uintptr_t{15};
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(&FiberMain);
  for (int i = 0; i < 6; ++i) *--sp = nullptr;
  return sp;
}

Fiber& Self() {
  if (t_run == nullptr || t_run->current == nullptr) {
    Fail("a device built-in was used outside a kernel launch");
  }
  return *t_run->current;
}

void Yield(Fiber& f) {
  LeaveFiber(*t_run, f, /*dying=*/false);
  cuda_emu_switch(&f.sp, t_run->scheduler_sp);
  BackInFiber(*t_run, f);
}

void Mma(std::vector<Fiber*>& lanes) {
  if (lanes.size() != 32) Fail("mma.sync needs all 32 lanes of the warp");
  auto bf = [](uint32_t reg, int half) {
    const uint32_t bits = half ? (reg & 0xffff0000u) : (reg << 16);
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  };
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const Fiber& f = *lanes[l];
    const int g = l >> 2, t = l & 3;
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = bf(f.a[0], h);
      A[g + 8][2 * t + h] = bf(f.a[1], h);
      A[g][2 * t + 8 + h] = bf(f.a[2], h);
      A[g + 8][2 * t + 8 + h] = bf(f.a[3], h);
      B[2 * t + h][g] = bf(f.b[0], h);
      B[2 * t + 8 + h][g] = bf(f.b[1], h);
    }
    C[g][2 * t] = f.acc[0];
    C[g][2 * t + 1] = f.acc[1];
    C[g + 8][2 * t] = f.acc[2];
    C[g + 8][2 * t + 1] = f.acc[3];
  }
  for (int l = 0; l < 32; ++l) {
    Fiber& f = *lanes[l];
    const int g = l >> 2, t = l & 3;
    const int rows[4] = {g, g, g + 8, g + 8};
    const int cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int i = 0; i < 4; ++i) {
      float s = C[rows[i]][cols[i]];
      for (int k = 0; k < 16; ++k) s += A[rows[i]][k] * B[k][cols[i]];
      f.acc[i] = s;
    }
  }
}

// Completes the collective of `lanes` (indexed by lane, null where a lane does not take part).
void Complete(Fiber* by_lane[32], unsigned mask) {
  const Fiber& first = *by_lane[__builtin_ctz(mask)];
  switch (first.op) {
    case WarpOp::kShuffle:
      for (int l = 0; l < 32; ++l) {
        if (!(mask >> l & 1)) continue;
        Fiber& f = *by_lane[l];
        const int width = f.width;
        const int base = l / width * width;
        int src = l;
        switch (f.shuffle) {
          case ShuffleKind::kIndex: src = base + ((f.operand % width) + width) % width; break;
          case ShuffleKind::kUp: src = l - f.operand >= base ? l - f.operand : l; break;
          case ShuffleKind::kDown: src = l + f.operand < base + width ? l + f.operand : l; break;
          case ShuffleKind::kXor: src = (l ^ f.operand) < base + width ? (l ^ f.operand) : l; break;
        }
        f.result = (mask >> src & 1) ? by_lane[src]->bits : f.bits;
      }
      break;
    case WarpOp::kBallot: {
      unsigned ballot = 0;
      for (int l = 0; l < 32; ++l) {
        if ((mask >> l & 1) && by_lane[l]->bits) ballot |= 1u << l;
      }
      for (int l = 0; l < 32; ++l) {
        if (mask >> l & 1) by_lane[l]->result = ballot;
      }
      break;
    }
    case WarpOp::kMatchAny:
      for (int l = 0; l < 32; ++l) {
        if (!(mask >> l & 1)) continue;
        unsigned same = 0;
        for (int o = 0; o < 32; ++o) {
          if ((mask >> o & 1) && by_lane[o]->bits == by_lane[l]->bits) same |= 1u << o;
        }
        by_lane[l]->result = same;
      }
      break;
    case WarpOp::kMma: {
      std::vector<Fiber*> lanes(by_lane, by_lane + 32);
      Mma(lanes);
      break;
    }
  }
  for (int l = 0; l < 32; ++l) {
    if (mask >> l & 1) by_lane[l]->wait = Wait::kRunnable;
  }
}

std::string Where(const BlockRun& run) {
  return Cat("block (", run.block_idx.x, ",", run.block_idx.y, ",", run.block_idx.z, ")");
}

// Releases every collective of the warp starting at thread `warp_first` whose named lanes
// have all arrived; true if one was.
bool ReleaseWarp(BlockRun& run, int warp_first) {
  bool released = false;
  const int n = static_cast<int>(run.fibers.size());
  Fiber* by_lane[32] = {};
  unsigned existing = 0;
  for (int l = 0; l < 32 && warp_first + l < n; ++l) {
    by_lane[l] = &run.fibers[warp_first + l];
    existing |= 1u << l;
  }
  for (int l = 0; l < 32; ++l) {
    Fiber* f = by_lane[l];
    if (f == nullptr || f->wait != Wait::kWarp) continue;
    if (!(f->mask >> l & 1)) {
      Fail(Cat(Where(run), ": thread ", f->rank,
               " calls a warp collective with a mask that does not name its own lane"));
    }
    const unsigned mask = f->mask & existing;
    bool ready = true;
    for (int o = 0; o < 32 && ready; ++o) {
      if (!(mask >> o & 1)) continue;
      const Fiber& other = *by_lane[o];
      if (other.wait == Wait::kDone) {
        Fail(Cat(Where(run), ": thread ", other.rank,
                 " exited but is named in the mask of a warp collective of thread ", f->rank));
      }
      if (other.wait != Wait::kWarp) {
        ready = false;
      } else if (other.mask != f->mask || other.op != f->op) {
        Fail(Cat(Where(run), ": threads ", f->rank, " and ", other.rank,
                 " are in different warp collectives"));
      }
    }
    if (ready) {
      Complete(by_lane, mask);
      released = true;
    }
  }
  return released;
}

void RunBlock(BlockRun& run, const uint3& block_idx, dim3 grid, dim3 block) {
  const int n = static_cast<int>(block.x * block.y * block.z);
  while (static_cast<int>(t_stacks.size()) < n) {
    t_stacks.emplace_back(new char[kStackBytes]);
  }
  run.block_idx = block_idx;
  run.fibers.assign(n, Fiber{});
  for (int i = 0; i < n; ++i) {
    Fiber& f = run.fibers[i];
    f.rank = i;
    f.index.thread_idx = make_uint3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
    f.index.block_idx = block_idx;
    f.index.block_dim = block;
    f.index.grid_dim = grid;
    f.stack = t_stacks[i].get();
    f.sp = InitialStack(f.stack, kStackBytes);
  }
  if (!run.dynamic_shared.empty()) {  // never zero: a read before any write shows
    std::memset(run.dynamic_shared.data(), kPoisonByte, run.dynamic_shared.size());
  }
  run.poisoned_static_shared.clear();
  run.static_shared_bytes = 0;
  // One warp at a time, as far as it can go (to a block barrier, its end, or a collective
  // that waits on another warp), before the next: the most skew between warps that the
  // barriers allow, so a missing __syncthreads shows as a read of stale shared memory. Lanes of
  // a warp stay in step between collectives. CUDA_EMU_ORDER=reverse starts from the last warp
  // and runs lanes from the last, which exposes the races of the other direction.
  const bool reverse = ReverseOrder();
  const int warps = (n + 31) / 32;
  for (;;) {
    for (int wi = 0; wi < warps; ++wi) {
      const int warp_first = 32 * (reverse ? warps - 1 - wi : wi);
      const int lanes = std::min(32, n - warp_first);
      do {
        for (int l = 0; l < lanes; ++l) {
          Fiber& f = run.fibers[warp_first + (reverse ? lanes - 1 - l : l)];
          if (f.wait != Wait::kRunnable) continue;
          run.current = &f;
          EnterFiber(run, f);
          cuda_emu_switch(&run.scheduler_sp, f.sp);
          BackInScheduler(run);
          run.current = nullptr;
        }
      } while (ReleaseWarp(run, warp_first));
    }
    int done = 0, at_barrier = 0;
    for (const Fiber& f : run.fibers) {
      done += f.wait == Wait::kDone;
      at_barrier += f.wait == Wait::kBarrier;
    }
    if (done == n) return;
    if (done + at_barrier == n) {
      for (Fiber& f : run.fibers) {
        if (f.wait == Wait::kBarrier) f.wait = Wait::kRunnable;
      }
      continue;
    }
    std::ostringstream states;
    for (const Fiber& f : run.fibers) {
      if (f.wait == Wait::kDone) continue;
      states << " " << f.rank << (f.wait == Wait::kBarrier ? ":syncthreads" : ":warp");
    }
    Fail(Cat(Where(run), ": deadlock, threads waiting where others never arrive:",
             states.str()));
  }
}

void RunGrid(dim3 grid, dim3 block, size_t dynamic_shared, const std::function<void()>& body) {
  if (t_run != nullptr) Fail("a kernel launched from inside a kernel");
  BlockRun run;
  run.body = &body;
  run.dynamic_shared.assign(dynamic_shared, 0);
  t_run = &run;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) RunBlock(run, make_uint3(x, y, z), grid, block);
    }
  }
  t_run = nullptr;
}

}  // namespace

const ThreadIndex& Current() { return Self().index; }

void SyncThreads() {
  Fiber& f = Self();
  f.wait = Wait::kBarrier;
  Yield(f);
}

uint64_t WarpShuffle(ShuffleKind kind, unsigned mask, uint64_t bits, int operand, int width) {
  Fiber& f = Self();
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
    Fail(Cat("shuffle width must be a power of two in [1, 32], got ", width));
  }
  f.op = WarpOp::kShuffle;
  f.shuffle = kind;
  f.mask = mask;
  f.bits = bits;
  f.operand = operand;
  f.width = width;
  f.wait = Wait::kWarp;
  Yield(f);
  return f.result;
}

namespace {
// Waits in a ballot or match (`bits`: the predicate or the value) and returns its mask.
unsigned WarpVote(WarpOp op, unsigned mask, uint64_t bits) {
  Fiber& f = Self();
  f.op = op;
  f.mask = mask;
  f.bits = bits;
  f.wait = Wait::kWarp;
  Yield(f);
  return static_cast<unsigned>(f.result);
}
}  // namespace

unsigned WarpBallot(unsigned mask, bool predicate) {
  return WarpVote(WarpOp::kBallot, mask, predicate);
}

unsigned WarpMatchAny(unsigned mask, uint64_t bits) {
  return WarpVote(WarpOp::kMatchAny, mask, bits);
}

void WarpMmaBf16M16N8K16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  Fiber& f = Self();
  f.op = WarpOp::kMma;
  f.mask = 0xffffffffu;
  std::memcpy(f.a, a, sizeof(f.a));
  f.b[0] = b0;
  f.b[1] = b1;
  std::memcpy(f.acc, d, sizeof(f.acc));
  f.wait = Wait::kWarp;
  Yield(f);
  std::memcpy(d, f.acc, sizeof(f.acc));
}

void PoisonStaticShared(void* variable, size_t bytes) {
  Self();
  std::vector<const void*>& done = t_run->poisoned_static_shared;
  if (std::find(done.begin(), done.end(), variable) != done.end()) return;
  done.push_back(variable);
  std::memset(variable, kPoisonByte, bytes);
  // The block's static and dynamic shared memory share the SM's: the driver refuses a launch
  // whose sum exceeds the opt-in limit (seen here as the declarations are passed).
  t_run->static_shared_bytes += bytes;
  if (t_run->static_shared_bytes + t_run->dynamic_shared.size() > kMaxDynamicSharedOptIn) {
    Fail(Cat(Where(*t_run), ": ", t_run->static_shared_bytes, " bytes of static and ",
             t_run->dynamic_shared.size(), " of dynamic shared memory exceed the device's ",
             kMaxDynamicSharedOptIn, " per block"));
  }
}

void CheckLaunchBounds(long long max_threads) {
  const ThreadIndex& i = Self().index;
  const long long threads = static_cast<long long>(i.block_dim.x) * i.block_dim.y * i.block_dim.z;
  if (threads > max_threads) {
    Fail(Cat(Where(*t_run), ": a block of ", threads,
             " threads launched for a kernel whose __launch_bounds__ allows ", max_threads,
             " (the driver refuses this launch)"));
  }
}

unsigned char* DynamicShared() {
  Self();
  return t_run->dynamic_shared.data();
}

namespace {
std::mutex g_shared_limits_mu;
std::map<const void*, size_t>& SharedLimits() {
  static auto* limits = new std::map<const void*, size_t>;
  return *limits;
}
}  // namespace

size_t KernelDynamicSharedLimit(const void* kernel) {
  std::lock_guard<std::mutex> lock(g_shared_limits_mu);
  auto it = SharedLimits().find(kernel);
  return it != SharedLimits().end() && it->second > kMaxDynamicShared ? it->second
                                                                      : kMaxDynamicShared;
}

void SetKernelDynamicSharedLimit(const void* kernel, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_shared_limits_mu);
  SharedLimits()[kernel] = bytes;
}

cudaError_t Launch(dim3 grid, dim3 block, size_t dynamic_shared_bytes, cudaStream_t stream,
                   std::function<void()> body, const void* kernel) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  const bool ok = threads >= 1 && threads <= kMaxThreadsPerBlock && block.z <= 64 &&
                  grid.x >= 1 && grid.x <= 0x7fffffffu && grid.y >= 1 && grid.y <= 65535 &&
                  grid.z >= 1 && grid.z <= 65535 &&
                  dynamic_shared_bytes <= KernelDynamicSharedLimit(kernel);
  if (!ok) {
    std::fprintf(stderr, "cuda_emu: launch refused: grid (%u,%u,%u) block (%u,%u,%u) shared %zu\n",
                 grid.x, grid.y, grid.z, block.x, block.y, block.z, dynamic_shared_bytes);
    return RecordError(cudaErrorInvalidConfiguration);
  }
  return Enqueue(stream, [grid, block, dynamic_shared_bytes, body = std::move(body)] {
    RunGrid(grid, block, dynamic_shared_bytes, body);
  });
}

int MultiprocessorCount() {
  static const int sms = [] {
    const char* v = std::getenv("CUDA_EMU_SMS");
    const int n = v ? std::atoi(v) : 0;
    return n > 0 ? n : 4;
  }();
  return sms;
}

}  // namespace cuda_emu
