// CPU implementation of SparseLinear (see sparse_linear_cpu.h for layouts).
//
// Why it is shaped this way:
// * batch 1 (the robot case) is a sparse matrix-vector product: per output row a
//   gather-dot over the row's non-zeros, four independent accumulators so the
//   FMA latency chain does not bound it, rows split across threads.
// * batch > 1: X is transposed once into xt[K][Mp] (Mp = M rounded up to the
//   tile width MT), so each non-zero w[n,k] updates MT batch entries with one
//   contiguous, vectorisable multiply-add over xt[k, m0:m0+MT]. W is read once
//   per MT batch rows instead of once per batch row.
// * BSR blocks (br x bc) load bc consecutive x values per block and keep br
//   output rows in registers; fast paths are compiled for the common shapes.
// * FP16 is storage only: values/x/bias are widened to FP32 (a 64 Ki-entry
//   table), products are accumulated in FP32, the output is rounded once.
// No exception escapes an extern "C" entry point: every one is wrapped.
#include "sparse_linear_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <type_traits>
#include <cctype>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#define TES_X86 1
#include <immintrin.h>
#endif

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>


namespace {

// ---------------------------------------------------------------- FP16 <-> FP32
float half_bits_to_float_slow(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --e;
      }
      mant &= 0x3ffu;
      bits = sign | (static_cast<uint32_t>(e + 112) << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

const float* half_table() {
  // Built once, thread-safe (C++11 magic statics).
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t i = 0; i < 65536; ++i) t[i] = half_bits_to_float_slow(static_cast<uint16_t>(i));
    return t;
  }();
  return table.data();
}

uint16_t float_to_half_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN / Inf
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: overflow to Inf
  if (x < 0x38800000u) {                         // below 2^-14: half subnormal (or zero)
    const float a = std::fabs(f) * 16777216.0f;  // exact scaling by 2^24
    return sign | static_cast<uint16_t>(std::nearbyint(a));  // round-to-nearest-even
  }
  x += 0xfffu + ((x >> 13) & 1u);  // round to nearest, ties to even
  return sign | static_cast<uint16_t>((x - 0x38000000u) >> 13);
}

// ---------------------------------------------------------------- value access
struct F32 {
  using T = float;
  static inline float load(const float* p, int64_t i, const float*) { return p[i]; }
  static inline void store(float* p, int64_t i, float v) { p[i] = v; }
};
struct F16 {
  using T = uint16_t;
  static inline float load(const uint16_t* p, int64_t i, const float* lut) { return lut[p[i]]; }
  static inline void store(uint16_t* p, int64_t i, float v) { p[i] = float_to_half_bits(v); }
};

// ---------------------------------------------------------------- thread pool
// Why not OpenMP: an OpenMP parallel region ends in a barrier that waits for every team
// thread, so on a loaded machine (a robot's computer runs other processes) a worker that
// is not scheduled stalls the call for a whole scheduler tick (4-10 ms, measured). Here
// the caller takes chunks from a shared counter itself and only waits for chunks that a
// worker has actually started; a late worker finds nothing left and goes back to sleep.
class Pool {
 public:
  static Pool& instance() {
    static Pool* pool = new Pool();  // never destroyed: workers may outlive static dtors
    return *pool;
  }
  int max_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) for consecutive chunks covering [0, n), on up to `threads`
  // threads (the caller included). Returns when every chunk is done.
  void parallel_for(int64_t n, int64_t grain, int threads,
                    const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(1, grain);
    std::unique_lock<std::mutex> submit(submit_mutex_, std::try_to_lock);
    if (threads <= 1 || workers_.empty() || n <= grain || !submit.owns_lock()) {
      fn(0, n);  // serial; also when another caller is using the pool (no nesting, no waiting)
      return;
    }
    Job job{&fn, n, grain};
    {
      std::lock_guard<std::mutex> lk(mutex_);
      job_ = &job;
      helpers_wanted_ = std::min<int>(threads - 1, static_cast<int>(workers_.size()));
      ++generation_;
    }
    cv_.notify_all();
    work(job);
    {
      std::unique_lock<std::mutex> lk(mutex_);
      job_ = nullptr;  // late workers see no job
      done_cv_.wait(lk, [&] { return job.active == 0; });
    }
  }

 private:
  struct Job {
    const std::function<void(int64_t, int64_t)>* fn;
    int64_t n, grain;
    std::atomic<int64_t> next{0};
    int active = 0;  // workers inside this job (guarded by mutex_)
    Job(const std::function<void(int64_t, int64_t)>* f, int64_t n_, int64_t g)
        : fn(f), n(n_), grain(g) {}
  };

  Pool() {
    int hw = static_cast<int>(std::thread::hardware_concurrency());
    if (const char* env = std::getenv("TES_NUM_THREADS")) hw = std::atoi(env);
    hw = std::max(1, std::min(hw, 256));
    for (int i = 0; i + 1 < hw; ++i) {
      try {
        workers_.emplace_back([this] { loop(); });
        workers_.back().detach();
      } catch (...) {
        break;  // fewer threads than asked: still correct
      }
    }
  }

  static void work(Job& job) {
    for (;;) {
      const int64_t b = job.next.fetch_add(job.grain, std::memory_order_relaxed);
      if (b >= job.n) return;
      (*job.fn)(b, std::min(job.n, b + job.grain));
    }
  }

  void loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lk(mutex_);
    for (;;) {
      cv_.wait(lk, [&] { return generation_ != seen; });
      seen = generation_;
      if (!job_ || helpers_wanted_ <= 0) continue;
      --helpers_wanted_;
      Job* job = job_;
      ++job->active;
      lk.unlock();
      work(*job);
      lk.lock();
      if (--job->active == 0) done_cv_.notify_all();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex submit_mutex_, mutex_;
  std::condition_variable cv_, done_cv_;
  Job* job_ = nullptr;
  int helpers_wanted_ = 0;
  uint64_t generation_ = 0;
};

int resolve_threads(int requested) {
  const int max = Pool::instance().max_threads();
  return requested > 0 ? std::min(requested, max) : max;
}

// Default thread count for `work` multiply-adds: waking a thread costs microseconds, so
// small layers run on the calling thread only.
int threads_for_work(int requested, int64_t work) {
  const int nt = resolve_threads(requested);
  if (requested > 0) return nt;
  constexpr int64_t kMinWorkPerThread = 1 << 16;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, work / kMinWorkPerThread)));
}

// ---------------------------------------------------------------- activations
// Widen (f16) / transpose (M > 1) / zero-pad (K to Kp, M to Mp) x into xt[Kp][Mp].
// Returns a pointer to x itself when no copy is needed (f32, M == 1, Kp == K).
template <typename P>
const float* prepare_x(const typename P::T* x, int64_t M, int64_t K, int64_t Kp, int64_t Mp,
                       const float* lut, std::vector<float>& buf) {
  if (Mp == 1) {
    if (std::is_same<P, F32>::value && Kp == K) return reinterpret_cast<const float*>(x);
    buf.assign(static_cast<size_t>(Kp), 0.0f);
    for (int64_t k = 0; k < K; ++k) buf[k] = P::load(x, k, lut);
    return buf.data();
  }
  buf.assign(static_cast<size_t>(Kp * Mp), 0.0f);
  float* xt = buf.data();
  // Transpose in 32x32 tiles so both sides stay in cache.
  const int64_t T = 32;
  for (int64_t m0 = 0; m0 < M; m0 += T)
    for (int64_t k0 = 0; k0 < K; k0 += T) {
      const int64_t m1 = std::min(M, m0 + T), k1 = std::min(K, k0 + T);
      for (int64_t m = m0; m < m1; ++m)
        for (int64_t k = k0; k < k1; ++k) xt[k * Mp + m] = P::load(x, m * K + k, lut);
    }
  return xt;
}

template <typename P>
void prepare_bias(const typename P::T* bias, int64_t N, const float* lut, std::vector<float>& out) {
  out.assign(static_cast<size_t>(N), 0.0f);
  if (bias)
    for (int64_t n = 0; n < N; ++n) out[n] = P::load(bias, n, lut);
}

// ---------------------------------------------------------------- validation
int check_common(int64_t M, int64_t N, int64_t K, const void* rp, const void* x, const void* y) {
  if (M < 0 || N < 0 || K < 0) return TES_ERR_BAD_SHAPE;
  if (M > 0 && N > 0 && (!rp || !y)) return TES_ERR_NULL_POINTER;
  if (M > 0 && K > 0 && N > 0 && !x) return TES_ERR_NULL_POINTER;
  if (N > INT32_MAX || K > INT32_MAX) return TES_ERR_BAD_SHAPE;
  return TES_OK;
}

int check_compressed(int64_t rows, int64_t cols, const int32_t* rp, const int32_t* ci,
                     const void* val) {
  if (rp[0] != 0) return TES_ERR_BAD_INDEX;
  for (int64_t r = 0; r < rows; ++r)
    if (rp[r + 1] < rp[r]) return TES_ERR_BAD_INDEX;
  const int32_t nnz = rp[rows];
  if (nnz > 0 && (!ci || !val)) return TES_ERR_NULL_POINTER;
  for (int32_t j = 0; j < nnz; ++j)
    if (ci[j] < 0 || ci[j] >= cols) return TES_ERR_BAD_INDEX;
  return TES_OK;
}

// Packed CSR: row_ptr [P][N+1] chained across panels, indices inside their panel.
int check_panels(int64_t N, int64_t K, int64_t T, int64_t P, const int32_t* rp, const uint16_t* ci,
                 const void* val) {
  if (rp[0] != 0) return TES_ERR_BAD_INDEX;
  for (int64_t p = 0; p < P; ++p) {
    const int32_t* r = rp + p * (N + 1);
    if (p > 0 && r[0] != r[-1]) return TES_ERR_BAD_INDEX;
    for (int64_t n = 0; n < N; ++n)
      if (r[n + 1] < r[n]) return TES_ERR_BAD_INDEX;
    const int64_t width = std::min<int64_t>(T, K - p * T);
    if (r[N] > r[0] && (!ci || !val)) return TES_ERR_NULL_POINTER;
    for (int32_t j = r[0]; j < r[N]; ++j)
      if (ci[j] >= width) return TES_ERR_BAD_INDEX;
  }
  return TES_OK;
}

// The entry points one SIMD level provides (sparse_linear_cpu_kernels.inc fills one each).
struct KernelTable {
  int (*csr_f32)(int64_t, int64_t, int64_t, const int32_t*, const int32_t*, const float*,
                 const float*, const float*, float*, int, int);
  int (*csr_f16)(int64_t, int64_t, int64_t, const int32_t*, const int32_t*, const uint16_t*,
                 const uint16_t*, const uint16_t*, uint16_t*, int, int);
  int (*bsr_f32)(int64_t, int64_t, int64_t, int32_t, int32_t, const int32_t*, const int32_t*,
                 const float*, const float*, const float*, float*, int, int);
  int (*bsr_f16)(int64_t, int64_t, int64_t, int32_t, int32_t, const int32_t*, const int32_t*,
                 const uint16_t*, const uint16_t*, const uint16_t*, uint16_t*, int, int);
  int (*pcsr_f32)(int64_t, int64_t, int64_t, int32_t, const int32_t*, const uint16_t*, const void*,
                  int, const float*, const float*, float*, int, int, int);
  uint64_t (*stream_read)(const unsigned char*, int64_t, int, int);
};

}  // namespace

// ---------------------------------------------------------------- the kernels, once per level
// Each inclusion compiles the same kernels for one SIMD level into its own namespace; the
// target pragmas raise the instruction set of every function defined inside, so the
// library itself is built for the baseline and runs on any CPU of its architecture.
#if defined(TES_X86) && (defined(__GNUC__) || defined(__clang__))
#define TES_MULTI_ISA 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2")
#endif
namespace tes_avx512 {
namespace {
#define TES_ISA_AVX512 1
#include "sparse_linear_cpu_kernels.inc"
#undef TES_ISA_AVX512
}  // namespace
}  // namespace tes_avx512
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#endif
namespace tes_avx2 {
namespace {
#define TES_ISA_AVX2 1
#include "sparse_linear_cpu_kernels.inc"
#undef TES_ISA_AVX2
}  // namespace
}  // namespace tes_avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // TES_X86

namespace tes_base {
namespace {
#define TES_ISA_BASE 1
#include "sparse_linear_cpu_kernels.inc"
#undef TES_ISA_BASE
}  // namespace
}  // namespace tes_base

namespace {

// ---------------------------------------------------------------- dispatch
enum Isa { kBase = 0, kAvx2 = 1, kAvx512 = 2 };
const char* const kIsaNames[] = {"baseline", "avx2", "avx512"};

bool cpu_has(Isa isa) {
  if (isa == kBase) return true;
#if defined(TES_MULTI_ISA)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
  if (isa == kAvx2) return avx2;
  return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

const KernelTable* table_for(Isa isa) {
#if defined(TES_MULTI_ISA)
  if (isa == kAvx512) return &tes_avx512::kTable;
  if (isa == kAvx2) return &tes_avx2::kTable;
#endif
  (void)isa;
  return &tes_base::kTable;
}

Isa best_isa() { return cpu_has(kAvx512) ? kAvx512 : (cpu_has(kAvx2) ? kAvx2 : kBase); }

// Returns -1 for an unknown name.
int parse_isa(const char* name) {
  if (!name) return -1;
  std::string s(name);
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "auto" || s.empty()) return best_isa();
  if (s == "baseline" || s == "scalar" || s == "base" || s == "portable") return kBase;
  if (s == "avx2") return kAvx2;
  if (s == "avx512" || s == "avx512f" || s == "avx-512") return kAvx512;
  return -1;
}

struct Dispatch {
  std::atomic<int> isa{kBase};
  int env_status = TES_OK;
  Dispatch() {
    int chosen = best_isa();
    const char* env = std::getenv("TRT_EDGE_SPARSE_ISA");
    if (env && *env) {
      const int want = parse_isa(env);
      if (want < 0) env_status = TES_ERR_BAD_SHAPE;
      else if (!cpu_has(static_cast<Isa>(want))) env_status = TES_ERR_UNSUPPORTED_ISA;
      else chosen = want;
    }
    isa.store(chosen);
  }
  static Dispatch& instance() {
    static Dispatch d;
    return d;
  }
  const KernelTable* table() const { return table_for(static_cast<Isa>(isa.load(std::memory_order_relaxed))); }
};

const KernelTable* kernels() { return Dispatch::instance().table(); }

template <typename F>
int guarded(F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return TES_ERR_OUT_OF_MEMORY;
  } catch (...) {
    return TES_ERR_INTERNAL;
  }
}

}  // namespace

extern "C" {

int tes_linear_csr_f32(int64_t M, int64_t N, int64_t K, const int32_t* row_ptr,
                       const int32_t* col_idx, const float* values, const float* bias,
                       const float* x, float* y, int num_threads, int check_indices) {
  return guarded([&] {
    return kernels()->csr_f32(M, N, K, row_ptr, col_idx, values, bias, x, y, num_threads, check_indices);
  });
}

int tes_linear_csr_f16(int64_t M, int64_t N, int64_t K, const int32_t* row_ptr,
                       const int32_t* col_idx, const uint16_t* values, const uint16_t* bias,
                       const uint16_t* x, uint16_t* y, int num_threads, int check_indices) {
  return guarded([&] {
    return kernels()->csr_f16(M, N, K, row_ptr, col_idx, values, bias, x, y, num_threads, check_indices);
  });
}

int tes_linear_bsr_f32(int64_t M, int64_t N, int64_t K, int32_t br, int32_t bc,
                       const int32_t* block_row_ptr, const int32_t* block_col_idx,
                       const float* values, const float* bias, const float* x, float* y,
                       int num_threads, int check_indices) {
  return guarded([&] {
    return kernels()->bsr_f32(M, N, K, br, bc, block_row_ptr, block_col_idx, values, bias, x, y,
                        num_threads, check_indices);
  });
}

int tes_linear_bsr_f16(int64_t M, int64_t N, int64_t K, int32_t br, int32_t bc,
                       const int32_t* block_row_ptr, const int32_t* block_col_idx,
                       const uint16_t* values, const uint16_t* bias, const uint16_t* x,
                       uint16_t* y, int num_threads, int check_indices) {
  return guarded([&] {
    return kernels()->bsr_f16(M, N, K, br, bc, block_row_ptr, block_col_idx, values, bias, x, y,
                        num_threads, check_indices);
  });
}

int tes_linear_pcsr_f32(int64_t M, int64_t N, int64_t K, int32_t panel_cols, const int32_t* row_ptr,
                        const uint16_t* col_idx, const void* values, int values_f16,
                        const float* bias, const float* x, float* y, int num_threads, int variant,
                        int check_indices) {
  return guarded([&] {
    return kernels()->pcsr_f32(M, N, K, panel_cols, row_ptr, col_idx, values, values_f16, bias, x, y,
                               num_threads, variant, check_indices);
  });
}

uint64_t tes_stream_read(const void* data, int64_t bytes, int num_threads, int prefetch) {
  if (!data || bytes <= 0) return 0;
  try {
    return kernels()->stream_read(static_cast<const unsigned char*>(data), bytes, resolve_threads(num_threads), prefetch);
  } catch (...) {
    return 0;
  }
}

const char* tes_isa(void) {
  return kIsaNames[Dispatch::instance().isa.load()];
}

int tes_isa_supported(const char* name) {
  const int isa = parse_isa(name);
  return isa >= 0 && cpu_has(static_cast<Isa>(isa)) ? 1 : 0;
}

int tes_set_isa(const char* name) {
  const int isa = parse_isa(name);
  if (isa < 0 || !cpu_has(static_cast<Isa>(isa))) return TES_ERR_UNSUPPORTED_ISA;
  Dispatch::instance().isa.store(isa);
  return TES_OK;
}

int tes_isa_env_status(void) { return Dispatch::instance().env_status; }

const char* tes_status_string(int status) {
  switch (status) {
    case TES_OK: return "ok";
    case TES_ERR_NULL_POINTER: return "a required array pointer is NULL";
    case TES_ERR_BAD_SHAPE: return "bad shape (negative size, size > INT32_MAX, or block dims outside 1..32)";
    case TES_ERR_BAD_INDEX: return "bad sparse index arrays (row_ptr not monotone from 0, or a column index out of range)";
    case TES_ERR_OUT_OF_MEMORY: return "out of memory for the activation workspace";
    case TES_ERR_INTERNAL: return "internal error (unexpected exception)";
    case TES_ERR_UNSUPPORTED_ISA: return "SIMD level unknown or not supported by this CPU/build (use avx512, avx2, baseline or auto)";
    default: return "unknown status";
  }
}

const char* tes_build_info(void) {
  return "trt_edge sparse CPU kernels; compiler: "
#if defined(__clang__)
         "clang " __clang_version__
#elif defined(__GNUC__)
         "gcc " __VERSION__
#else
         "unknown"
#endif
         "; threads: own pool (per call: num_threads, default min(work, pool size))"
#if defined(TES_MULTI_ISA)
         "; simd levels: avx512, avx2, baseline (x86-64 SSE2), chosen at run time"
#elif defined(__ARM_NEON)
         "; simd levels: baseline (NEON)"
#else
         "; simd levels: baseline (compiler-vectorised)"
#endif
      ;
}

int tes_default_threads(void) { return resolve_threads(0); }

int tes_abi_version(void) { return TES_ABI_VERSION; }

}  // extern "C"
