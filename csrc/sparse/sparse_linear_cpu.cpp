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
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>

// Honoured with -fopenmp-simd (no OpenMP runtime involved), ignored otherwise.
#define TES_SIMD _Pragma("omp simd")

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

template <typename Body>
void parallel_rows(int64_t n, int64_t grain, int nt, Body&& body) {
  const std::function<void(int64_t, int64_t)> fn = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) body(i);
  };
  Pool::instance().parallel_for(n, grain, nt, fn);
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

// ---------------------------------------------------------------- CSR kernels
// batch 1: y[n] = b[n] + sum_j v[j] * x[col[j]]
template <typename P>
void csr_gemv(int64_t N, const int32_t* rp, const int32_t* ci, const typename P::T* val,
              const float* lut, const float* x, const float* b, typename P::T* y, int nt) {
  parallel_rows(N, 64, nt, [&](int64_t n) {
    const int32_t s = rp[n], e = rp[n + 1];
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
    int32_t j = s;
    for (; j + 4 <= e; j += 4) {
      a0 += P::load(val, j, lut) * x[ci[j]];
      a1 += P::load(val, j + 1, lut) * x[ci[j + 1]];
      a2 += P::load(val, j + 2, lut) * x[ci[j + 2]];
      a3 += P::load(val, j + 3, lut) * x[ci[j + 3]];
    }
    for (; j < e; ++j) a0 += P::load(val, j, lut) * x[ci[j]];
    P::store(y, n, b[n] + ((a0 + a1) + (a2 + a3)));
  });
}

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// FP32 batch 1 with hardware gathers: 16 (AVX-512) / 8 (AVX2) non-zeros per step, two
// accumulators to hide the FMA latency. ~1.5-2x the scalar loop on short rows.
inline float row_dot_simd(const int32_t* ci, const float* val, const float* x, int32_t s,
                          int32_t e) {
  int32_t j = s;
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (; j + 32 <= e; j += 32) {
    const __m512i i0 = _mm512_loadu_si512(ci + j), i1 = _mm512_loadu_si512(ci + j + 16);
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(val + j), _mm512_i32gather_ps(i0, x, 4), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(val + j + 16), _mm512_i32gather_ps(i1, x, 4), acc1);
  }
  for (; j < e; j += 16) {
    const int rem = e - j;
    const __mmask16 m = rem >= 16 ? static_cast<__mmask16>(0xffff)
                                  : static_cast<__mmask16>((1u << rem) - 1u);
    const __m512i i0 = _mm512_maskz_loadu_epi32(m, ci + j);
    const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, i0, x, 4);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, val + j), g, acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#else
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; j + 16 <= e; j += 16) {
    const __m256i i0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ci + j));
    const __m256i i1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ci + j + 8));
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(val + j), _mm256_i32gather_ps(x, i0, 4), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(val + j + 8), _mm256_i32gather_ps(x, i1, 4), acc1);
  }
  acc0 = _mm256_add_ps(acc0, acc1);
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  float sum = _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  for (; j < e; ++j) sum += val[j] * x[ci[j]];
  return sum;
#endif
}

template <>
void csr_gemv<F32>(int64_t N, const int32_t* rp, const int32_t* ci, const float* val,
                   const float*, const float* x, const float* b, float* y, int nt) {
  parallel_rows(N, 64, nt, [&](int64_t n) { y[n] = b[n] + row_dot_simd(ci, val, x, rp[n], rp[n + 1]); });
}
#endif

// batch > 1, tile width MT: xt is [K][Mp], Mp % MT == 0.
// MT floats in one SIMD value (GCC/clang vector extension: portable to x86 and ARM, and,
// unlike a float[MT] array, kept in registers across the non-zero loop).
template <int MT>
struct Lanes {
  typedef float V __attribute__((vector_size(MT * sizeof(float))));
};
// Out-parameter rather than a return value: returning a vector type from a function
// changes the ABI between SIMD levels (-Wpsabi) in portable builds.
template <int MT>
inline void load_lanes(typename Lanes<MT>::V& v, const float* p) {
  std::memcpy(&v, p, sizeof v);
}

template <typename P, int MT>
void csr_gemm(int64_t M, int64_t N, int64_t Mp, const int32_t* rp, const int32_t* ci,
              const typename P::T* val, const float* lut, const float* xt, const float* b,
              typename P::T* y, int nt) {
  using V = typename Lanes<MT>::V;
  parallel_rows(N, 16, nt, [&](int64_t n) {
    const int32_t s = rp[n], e = rp[n + 1];
    for (int64_t m0 = 0; m0 < M; m0 += MT) {
      // Vectorised across the batch tile (not across non-zeros, which would gather).
      V acc0 = {}, acc1 = {}, x0, x1;
      int32_t j = s;
      for (; j + 2 <= e; j += 2) {
        load_lanes<MT>(x0, xt + static_cast<int64_t>(ci[j]) * Mp + m0);
        load_lanes<MT>(x1, xt + static_cast<int64_t>(ci[j + 1]) * Mp + m0);
        acc0 += P::load(val, j, lut) * x0;
        acc1 += P::load(val, j + 1, lut) * x1;
      }
      if (j < e) {
        load_lanes<MT>(x0, xt + static_cast<int64_t>(ci[j]) * Mp + m0);
        acc0 += P::load(val, j, lut) * x0;
      }
      float acc[MT];
      const V sum = acc0 + acc1;
      std::memcpy(acc, &sum, sizeof acc);
      const int64_t w = std::min<int64_t>(MT, M - m0);
      for (int64_t i = 0; i < w; ++i) P::store(y, (m0 + i) * N + n, acc[i] + b[n]);
    }
  });
}

// ---------------------------------------------------------------- BSR kernels
// BR_/BC_ > 0: compile-time block shape (fast paths); 0: runtime br/bc (<= 32).
template <typename P, int BR_, int BC_, int MT>
void bsr_kernel(int64_t M, int64_t N, int64_t Mp, int32_t br_rt, int32_t bc_rt,
                const int32_t* brp, const int32_t* bci, const typename P::T* val, const float* lut,
                const float* xt, const float* b, typename P::T* y, int nt) {
  const int br = BR_ > 0 ? BR_ : br_rt;
  const int bc = BC_ > 0 ? BC_ : bc_rt;
  constexpr int BRMAX = BR_ > 0 ? BR_ : 32;
  const int64_t nbr = (N + br - 1) / br;
  parallel_rows(nbr, 8, nt, [&](int64_t rb) {
    const int32_t s = brp[rb], e = brp[rb + 1];
    const int64_t n0 = rb * br;
    const int64_t rows = std::min<int64_t>(br, N - n0);
    for (int64_t m0 = 0; m0 < M; m0 += MT) {
      float acc[BRMAX][MT];
      if constexpr (MT == 1) {
        for (int r = 0; r < br; ++r) acc[r][0] = 0.f;
        for (int32_t blk = s; blk < e; ++blk) {
          const float* xr = xt + static_cast<int64_t>(bci[blk]) * bc;
          const int64_t vbase = static_cast<int64_t>(blk) * br * bc;
          for (int r = 0; r < br; ++r) {
            float a = 0.f;
            for (int c = 0; c < bc; ++c) a += P::load(val, vbase + r * bc + c, lut) * xr[c];
            acc[r][0] += a;
          }
        }
      } else {
        using V = typename Lanes<MT>::V;
        V vacc[BRMAX];
        for (int r = 0; r < br; ++r) vacc[r] = V{};
        for (int32_t blk = s; blk < e; ++blk) {
          const int64_t c0 = static_cast<int64_t>(bci[blk]) * bc;
          const int64_t vbase = static_cast<int64_t>(blk) * br * bc;
          for (int c = 0; c < bc; ++c) {
            V xv;
            load_lanes<MT>(xv, xt + (c0 + c) * Mp + m0);
            for (int r = 0; r < br; ++r) vacc[r] += P::load(val, vbase + r * bc + c, lut) * xv;
          }
        }
        for (int r = 0; r < br; ++r) std::memcpy(acc[r], &vacc[r], sizeof acc[r]);
      }
      const int64_t w = std::min<int64_t>(MT, M - m0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < w; ++i) P::store(y, (m0 + i) * N + n0 + r, acc[r][i] + b[n0 + r]);
    }
  });
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

template <typename P>
int run_csr(int64_t M, int64_t N, int64_t K, const int32_t* rp, const int32_t* ci,
            const typename P::T* val, const typename P::T* bias, const typename P::T* x,
            typename P::T* y, int num_threads, int check) {
  int st = check_common(M, N, K, rp, x, y);
  if (st != TES_OK) return st;
  if (M == 0 || N == 0) return TES_OK;
  if (check && (st = check_compressed(N, K, rp, ci, val)) != TES_OK) return st;
  const int nt = threads_for_work(num_threads, static_cast<int64_t>(rp[N]) * M);
  const float* lut = std::is_same<P, F16>::value ? half_table() : nullptr;
  std::vector<float> bf, xbuf;
  prepare_bias<P>(bias, N, lut, bf);
  if (M == 1) {
    const float* xf = prepare_x<P>(x, 1, K, K, 1, lut, xbuf);
    csr_gemv<P>(N, rp, ci, val, lut, xf, bf.data(), y, nt);
    return TES_OK;
  }
  const int mt = M <= 4 ? 4 : (M <= 8 ? 8 : 16);
  const int64_t Mp = (M + mt - 1) / mt * mt;
  const float* xt = prepare_x<P>(x, M, K, K, Mp, lut, xbuf);
  if (mt == 4) csr_gemm<P, 4>(M, N, Mp, rp, ci, val, lut, xt, bf.data(), y, nt);
  else if (mt == 8) csr_gemm<P, 8>(M, N, Mp, rp, ci, val, lut, xt, bf.data(), y, nt);
  else csr_gemm<P, 16>(M, N, Mp, rp, ci, val, lut, xt, bf.data(), y, nt);
  return TES_OK;
}

template <typename P, int BR, int BC>
void bsr_dispatch_mt(int64_t M, int64_t N, int64_t Mp, int mt, int32_t br, int32_t bc,
                     const int32_t* brp, const int32_t* bci, const typename P::T* val,
                     const float* lut, const float* xt, const float* b, typename P::T* y, int nt) {
  switch (mt) {
    case 1: bsr_kernel<P, BR, BC, 1>(M, N, Mp, br, bc, brp, bci, val, lut, xt, b, y, nt); break;
    case 4: bsr_kernel<P, BR, BC, 4>(M, N, Mp, br, bc, brp, bci, val, lut, xt, b, y, nt); break;
    case 8: bsr_kernel<P, BR, BC, 8>(M, N, Mp, br, bc, brp, bci, val, lut, xt, b, y, nt); break;
    default: bsr_kernel<P, BR, BC, 16>(M, N, Mp, br, bc, brp, bci, val, lut, xt, b, y, nt); break;
  }
}

template <typename P>
int run_bsr(int64_t M, int64_t N, int64_t K, int32_t br, int32_t bc, const int32_t* brp,
            const int32_t* bci, const typename P::T* val, const typename P::T* bias,
            const typename P::T* x, typename P::T* y, int num_threads, int check) {
  if (br < 1 || bc < 1 || br > 32 || bc > 32) return TES_ERR_BAD_SHAPE;
  int st = check_common(M, N, K, brp, x, y);
  if (st != TES_OK) return st;
  if (M == 0 || N == 0) return TES_OK;
  const int64_t nbr = (N + br - 1) / br, nbc = (K + bc - 1) / bc;
  if (check && (st = check_compressed(nbr, nbc, brp, bci, val)) != TES_OK) return st;
  const int nt = threads_for_work(num_threads, static_cast<int64_t>(brp[nbr]) * br * bc * M);
  const float* lut = std::is_same<P, F16>::value ? half_table() : nullptr;
  std::vector<float> bf, xbuf;
  prepare_bias<P>(bias, N, lut, bf);
  // Large M tiles with tall blocks would spill registers: keep br * mt <= 64.
  int mt = M == 1 ? 1 : (M <= 4 ? 4 : (M <= 8 ? 8 : 16));
  while (mt > 4 && br * mt > 64) mt /= 2;
  const int64_t Mp = (M + mt - 1) / mt * mt;
  const int64_t Kp = nbc * bc;
  const float* xt = prepare_x<P>(x, M, K, Kp, Mp, lut, xbuf);
  const float* b = bf.data();
#define TES_BSR_CASE(R, C)                                                                    \
  if (br == R && bc == C) {                                                                    \
    bsr_dispatch_mt<P, R, C>(M, N, Mp, mt, br, bc, brp, bci, val, lut, xt, b, y, nt);          \
    return TES_OK;                                                                             \
  }
  TES_BSR_CASE(1, 4)
  TES_BSR_CASE(1, 8)
  TES_BSR_CASE(2, 2)
  TES_BSR_CASE(2, 4)
  TES_BSR_CASE(4, 1)
  TES_BSR_CASE(4, 4)
  TES_BSR_CASE(8, 1)
  TES_BSR_CASE(1, 1)
#undef TES_BSR_CASE
  bsr_dispatch_mt<P, 0, 0>(M, N, Mp, mt, br, bc, brp, bci, val, lut, xt, b, y, nt);
  return TES_OK;
}

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
    return run_csr<F32>(M, N, K, row_ptr, col_idx, values, bias, x, y, num_threads, check_indices);
  });
}

int tes_linear_csr_f16(int64_t M, int64_t N, int64_t K, const int32_t* row_ptr,
                       const int32_t* col_idx, const uint16_t* values, const uint16_t* bias,
                       const uint16_t* x, uint16_t* y, int num_threads, int check_indices) {
  return guarded([&] {
    return run_csr<F16>(M, N, K, row_ptr, col_idx, values, bias, x, y, num_threads, check_indices);
  });
}

int tes_linear_bsr_f32(int64_t M, int64_t N, int64_t K, int32_t br, int32_t bc,
                       const int32_t* block_row_ptr, const int32_t* block_col_idx,
                       const float* values, const float* bias, const float* x, float* y,
                       int num_threads, int check_indices) {
  return guarded([&] {
    return run_bsr<F32>(M, N, K, br, bc, block_row_ptr, block_col_idx, values, bias, x, y,
                        num_threads, check_indices);
  });
}

int tes_linear_bsr_f16(int64_t M, int64_t N, int64_t K, int32_t br, int32_t bc,
                       const int32_t* block_row_ptr, const int32_t* block_col_idx,
                       const uint16_t* values, const uint16_t* bias, const uint16_t* x,
                       uint16_t* y, int num_threads, int check_indices) {
  return guarded([&] {
    return run_bsr<F16>(M, N, K, br, bc, block_row_ptr, block_col_idx, values, bias, x, y,
                        num_threads, check_indices);
  });
}

const char* tes_status_string(int status) {
  switch (status) {
    case TES_OK: return "ok";
    case TES_ERR_NULL_POINTER: return "a required array pointer is NULL";
    case TES_ERR_BAD_SHAPE: return "bad shape (negative size, size > INT32_MAX, or block dims outside 1..32)";
    case TES_ERR_BAD_INDEX: return "bad sparse index arrays (row_ptr not monotone from 0, or a column index out of range)";
    case TES_ERR_OUT_OF_MEMORY: return "out of memory for the activation workspace";
    case TES_ERR_INTERNAL: return "internal error (unexpected exception)";
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
         "; threads: own pool"
         "; simd: "
#if defined(__AVX512F__)
         "avx512f"
#elif defined(__AVX2__)
         "avx2"
#elif defined(__ARM_NEON)
         "neon"
#else
         "baseline"
#endif
      ;
}

int tes_default_threads(void) { return resolve_threads(0); }

int tes_abi_version(void) { return TES_ABI_VERSION; }

}  // extern "C"
