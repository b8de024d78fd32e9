// CUDA kernels of SparseLinear (see sparse_linear.h).
//
// Work split (memory-bound regime, batch 1..64):
// * one warp per output row (CSR) or block row (BSR); its lanes stride over the row's
//   non-zeros, so value/index loads of a warp are contiguous (coalesced);
// * each lane keeps MT batch accumulators (x per non-zero is a gather from a small,
//   L1/L2-resident activation matrix); grid.y tiles the batch in MT rows, so W is
//   streamed from DRAM once per tile and served from L2 for the others;
// * a butterfly shuffle reduces each accumulator across the warp; lane i writes batch
//   row m0 + i.
// BSR blocks give each lane br*bc values from one 4/8/16/32-byte contiguous load and bc
// consecutive x values, with 1/bc (or 1/(br*bc)) of the index traffic of CSR.
// FP16: values/x/bias are __half in memory, accumulation is FP32.
#include "sparse_linear.h"

namespace trt_edge {
namespace sparse {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ float toFloat(float v) { return v; }
__device__ __forceinline__ float toFloat(__half v) { return __half2float(v); }
template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v) { return __float2half_rn(v); }

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, int MT>
__global__ void __launch_bounds__(kWarp* kWarpsPerBlock)
    csrLinearKernel(int64_t M, int32_t N, int32_t K, const int32_t* __restrict__ rowPtr,
                    const int32_t* __restrict__ colIdx, const T* __restrict__ values,
                    const T* __restrict__ bias, const T* __restrict__ x, T* __restrict__ y) {
  const int lane = threadIdx.x % kWarp;
  const int32_t n = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarp;
  if (n >= N) return;  // whole warp exits together: the shuffles below stay full-warp
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * MT;
  const int mcount = static_cast<int>(min(static_cast<int64_t>(MT), M - m0));
  const T* xTile = x + m0 * K;

  float acc[MT];
#pragma unroll
  for (int i = 0; i < MT; ++i) acc[i] = 0.f;

  const int32_t s = __ldg(rowPtr + n), e = __ldg(rowPtr + n + 1);
  for (int32_t j = s + lane; j < e; j += kWarp) {
    const float v = toFloat(__ldg(values + j));
    const int32_t k = __ldg(colIdx + j);
#pragma unroll
    for (int i = 0; i < MT; ++i)
      if (i < mcount) acc[i] += v * toFloat(__ldg(xTile + static_cast<int64_t>(i) * K + k));
  }
  const float b = bias ? toFloat(__ldg(bias + n)) : 0.f;
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    const float sum = warpSum(acc[i]);
    if (lane == i && i < mcount) y[(m0 + i) * N + n] = fromFloat<T>(sum + b);
  }
}

// Loads BR*BC consecutive values of one block (16-byte vector loads where the block size
// allows; blocks are stored back to back, so block j starts at j*BR*BC elements and the
// base pointer from cudaMalloc is 256-byte aligned).
template <typename T, int NV>
__device__ __forceinline__ void loadBlock(const T* __restrict__ p, float (&v)[NV]) {
  constexpr int kVec = 16 / sizeof(T);
  if constexpr (NV % kVec == 0) {
    const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
    for (int c = 0; c < NV / kVec; ++c) {
      const uint4 raw = __ldg(q + c);
      const T* t = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int u = 0; u < kVec; ++u) v[c * kVec + u] = toFloat(t[u]);
    }
  } else {
#pragma unroll
    for (int c = 0; c < NV; ++c) v[c] = toFloat(__ldg(p + c));
  }
}

template <typename T, int BR, int BC, int MT>
__global__ void __launch_bounds__(kWarp* kWarpsPerBlock)
    bsrLinearKernel(int64_t M, int32_t N, int32_t K, const int32_t* __restrict__ blockRowPtr,
                    const int32_t* __restrict__ blockColIdx, const T* __restrict__ values,
                    const T* __restrict__ bias, const T* __restrict__ x, T* __restrict__ y) {
  const int lane = threadIdx.x % kWarp;
  const int32_t nbr = (N + BR - 1) / BR;
  const int32_t rb = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarp;
  if (rb >= nbr) return;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * MT;
  const int mcount = static_cast<int>(min(static_cast<int64_t>(MT), M - m0));
  const T* xTile = x + m0 * K;

  float acc[BR][MT];
#pragma unroll
  for (int r = 0; r < BR; ++r)
#pragma unroll
    for (int i = 0; i < MT; ++i) acc[r][i] = 0.f;

  const int32_t s = __ldg(blockRowPtr + rb), e = __ldg(blockRowPtr + rb + 1);
  for (int32_t j = s + lane; j < e; j += kWarp) {
    float v[BR * BC];
    loadBlock<T, BR * BC>(values + static_cast<int64_t>(j) * (BR * BC), v);
    const int32_t c0 = __ldg(blockColIdx + j) * BC;
    const bool full = c0 + BC <= K;  // only the last block column can overhang K
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      if (i >= mcount) continue;
      const T* xr = xTile + static_cast<int64_t>(i) * K + c0;
      float xv[BC];
#pragma unroll
      for (int c = 0; c < BC; ++c) xv[c] = (full || c0 + c < K) ? toFloat(__ldg(xr + c)) : 0.f;
#pragma unroll
      for (int r = 0; r < BR; ++r)
#pragma unroll
        for (int c = 0; c < BC; ++c) acc[r][i] += v[r * BC + c] * xv[c];
    }
  }
#pragma unroll
  for (int r = 0; r < BR; ++r) {
    const int32_t n = rb * BR + r;
    const float b = (bias && n < N) ? toFloat(__ldg(bias + n)) : 0.f;
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      const float sum = warpSum(acc[r][i]);
      if (lane == i && i < mcount && n < N) y[(m0 + i) * N + n] = fromFloat<T>(sum + b);
    }
  }
}

bool validSizes(int64_t M, int32_t N, int32_t K) { return M >= 0 && N >= 0 && K >= 0; }

// Batch tile: enough accumulators to reuse each loaded non-zero, few enough to stay in
// registers (<= 16 per lane for BSR, <= 8 for CSR).
int pickTile(int64_t M, int cap) {
  int mt = 1;
  while (mt < cap && mt < M) mt *= 2;
  return mt;
}

template <typename T, int MT>
cudaError_t launchCsrTile(int64_t M, int32_t N, int32_t K, const int32_t* rowPtr,
                          const int32_t* colIdx, const T* values, const T* bias, const T* x,
                          T* y, cudaStream_t stream) {
  const dim3 block(kWarp * kWarpsPerBlock);
  const int64_t tiles = (M + MT - 1) / MT;
  if (tiles > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid((N + kWarpsPerBlock - 1) / kWarpsPerBlock, static_cast<unsigned>(tiles));
  csrLinearKernel<T, MT><<<grid, block, 0, stream>>>(M, N, K, rowPtr, colIdx, values, bias, x, y);
  return cudaGetLastError();
}

template <typename T, int BR, int BC, int MT>
cudaError_t launchBsrTile(int64_t M, int32_t N, int32_t K, const int32_t* blockRowPtr,
                          const int32_t* blockColIdx, const T* values, const T* bias, const T* x,
                          T* y, cudaStream_t stream) {
  const dim3 block(kWarp * kWarpsPerBlock);
  const int64_t tiles = (M + MT - 1) / MT;
  if (tiles > 65535) return cudaErrorInvalidConfiguration;
  const int32_t nbr = (N + BR - 1) / BR;
  const dim3 grid((nbr + kWarpsPerBlock - 1) / kWarpsPerBlock, static_cast<unsigned>(tiles));
  bsrLinearKernel<T, BR, BC, MT>
      <<<grid, block, 0, stream>>>(M, N, K, blockRowPtr, blockColIdx, values, bias, x, y);
  return cudaGetLastError();
}

template <typename T, int BR, int BC>
cudaError_t launchBsrShape(int64_t M, int32_t N, int32_t K, const int32_t* rp, const int32_t* ci,
                           const T* v, const T* b, const T* x, T* y, cudaStream_t s) {
  constexpr int kCap = (16 / BR) < 8 ? (16 / BR) : 8;
  switch (pickTile(M, kCap)) {
    case 1: return launchBsrTile<T, BR, BC, 1>(M, N, K, rp, ci, v, b, x, y, s);
    case 2: return launchBsrTile<T, BR, BC, (kCap >= 2 ? 2 : 1)>(M, N, K, rp, ci, v, b, x, y, s);
    case 4: return launchBsrTile<T, BR, BC, (kCap >= 4 ? 4 : 1)>(M, N, K, rp, ci, v, b, x, y, s);
    default: return launchBsrTile<T, BR, BC, kCap>(M, N, K, rp, ci, v, b, x, y, s);
  }
}

}  // namespace

bool isSupportedBlock(int32_t br, int32_t bc) {
  return (br == 1 && (bc == 4 || bc == 8)) || (br == 2 && (bc == 2 || bc == 4)) ||
         (br == 4 && (bc == 1 || bc == 4)) || (br == 8 && bc == 1);
}

template <typename T>
cudaError_t launchCsrLinear(int64_t M, int32_t N, int32_t K, const int32_t* rowPtr,
                            const int32_t* colIdx, const T* values, const T* bias, const T* x,
                            T* y, cudaStream_t stream) {
  if (!validSizes(M, N, K)) return cudaErrorInvalidValue;
  if (M == 0 || N == 0) return cudaSuccess;
  if (!rowPtr || !y || (K > 0 && !x)) return cudaErrorInvalidValue;
  switch (pickTile(M, 8)) {
    case 1: return launchCsrTile<T, 1>(M, N, K, rowPtr, colIdx, values, bias, x, y, stream);
    case 2: return launchCsrTile<T, 2>(M, N, K, rowPtr, colIdx, values, bias, x, y, stream);
    case 4: return launchCsrTile<T, 4>(M, N, K, rowPtr, colIdx, values, bias, x, y, stream);
    default: return launchCsrTile<T, 8>(M, N, K, rowPtr, colIdx, values, bias, x, y, stream);
  }
}

template <typename T>
cudaError_t launchBsrLinear(int64_t M, int32_t N, int32_t K, int32_t br, int32_t bc,
                            const int32_t* rp, const int32_t* ci, const T* v, const T* b,
                            const T* x, T* y, cudaStream_t s) {
  if (!validSizes(M, N, K) || !isSupportedBlock(br, bc)) return cudaErrorInvalidValue;
  if (M == 0 || N == 0) return cudaSuccess;
  if (!rp || !y || (K > 0 && !x)) return cudaErrorInvalidValue;
  // Blocks are read with 16-byte vector loads (loadBlock): the values array must be 16-byte
  // aligned, as cudaMalloc and TensorRT allocations are.
  if (reinterpret_cast<uintptr_t>(v) % 16 != 0) return cudaErrorMisalignedAddress;
  if (br == 1 && bc == 4) return launchBsrShape<T, 1, 4>(M, N, K, rp, ci, v, b, x, y, s);
  if (br == 1 && bc == 8) return launchBsrShape<T, 1, 8>(M, N, K, rp, ci, v, b, x, y, s);
  if (br == 2 && bc == 2) return launchBsrShape<T, 2, 2>(M, N, K, rp, ci, v, b, x, y, s);
  if (br == 2 && bc == 4) return launchBsrShape<T, 2, 4>(M, N, K, rp, ci, v, b, x, y, s);
  if (br == 4 && bc == 1) return launchBsrShape<T, 4, 1>(M, N, K, rp, ci, v, b, x, y, s);
  if (br == 4 && bc == 4) return launchBsrShape<T, 4, 4>(M, N, K, rp, ci, v, b, x, y, s);
  return launchBsrShape<T, 8, 1>(M, N, K, rp, ci, v, b, x, y, s);
}

// Explicit instantiations: FP32 and FP16.
template cudaError_t launchCsrLinear<float>(int64_t, int32_t, int32_t, const int32_t*,
                                            const int32_t*, const float*, const float*,
                                            const float*, float*, cudaStream_t);
template cudaError_t launchCsrLinear<__half>(int64_t, int32_t, int32_t, const int32_t*,
                                             const int32_t*, const __half*, const __half*,
                                             const __half*, __half*, cudaStream_t);
template cudaError_t launchBsrLinear<float>(int64_t, int32_t, int32_t, int32_t, int32_t,
                                            const int32_t*, const int32_t*, const float*,
                                            const float*, const float*, float*, cudaStream_t);
template cudaError_t launchBsrLinear<__half>(int64_t, int32_t, int32_t, int32_t, int32_t,
                                             const int32_t*, const int32_t*, const __half*,
                                             const __half*, const __half*, __half*,
                                             cudaStream_t);

}  // namespace sparse
}  // namespace trt_edge

extern "C" {

int tes_cuda_linear_csr_f32(int64_t M, int32_t N, int32_t K, const int32_t* rp, const int32_t* ci,
                            const float* v, const float* b, const float* x, float* y,
                            void* stream) {
  return trt_edge::sparse::launchCsrLinear<float>(M, N, K, rp, ci, v, b, x, y,
                                                  static_cast<cudaStream_t>(stream));
}
int tes_cuda_linear_csr_f16(int64_t M, int32_t N, int32_t K, const int32_t* rp, const int32_t* ci,
                            const __half* v, const __half* b, const __half* x, __half* y,
                            void* stream) {
  return trt_edge::sparse::launchCsrLinear<__half>(M, N, K, rp, ci, v, b, x, y,
                                                   static_cast<cudaStream_t>(stream));
}
int tes_cuda_linear_bsr_f32(int64_t M, int32_t N, int32_t K, int32_t br, int32_t bc,
                            const int32_t* rp, const int32_t* ci, const float* v, const float* b,
                            const float* x, float* y, void* stream) {
  return trt_edge::sparse::launchBsrLinear<float>(M, N, K, br, bc, rp, ci, v, b, x, y,
                                                  static_cast<cudaStream_t>(stream));
}
int tes_cuda_linear_bsr_f16(int64_t M, int32_t N, int32_t K, int32_t br, int32_t bc,
                            const int32_t* rp, const int32_t* ci, const __half* v,
                            const __half* b, const __half* x, __half* y, void* stream) {
  return trt_edge::sparse::launchBsrLinear<__half>(M, N, K, br, bc, rp, ci, v, b, x, y,
                                                   static_cast<cudaStream_t>(stream));
}
const char* tes_cuda_error_string(int status) {
  return cudaGetErrorString(static_cast<cudaError_t>(status));
}

}  // extern "C"

// ------------------------------------------------------------------------------------------
// Host helpers for ctypes callers (tests and the GPU benchmark's loader) that have no CUDA
// runtime binding of their own. They use the same (statically linked) runtime as the kernels.
extern "C" {

int tes_cuda_malloc(void** ptr, size_t bytes) { return cudaMalloc(ptr, bytes); }
int tes_cuda_free(void* ptr) { return cudaFree(ptr); }
int tes_cuda_memcpy_h2d(void* dst, const void* src, size_t bytes) {
  return cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
}
int tes_cuda_memcpy_d2h(void* dst, const void* src, size_t bytes) {
  return cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
}
int tes_cuda_memcpy_d2d(void* dst, const void* src, size_t bytes, void* stream) {
  return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                         static_cast<cudaStream_t>(stream));
}
int tes_cuda_memset(void* dst, int value, size_t bytes) { return cudaMemset(dst, value, bytes); }
int tes_cuda_synchronize(void) { return cudaDeviceSynchronize(); }
int tes_cuda_event_create(void** event) {
  return cudaEventCreate(reinterpret_cast<cudaEvent_t*>(event));
}
int tes_cuda_event_destroy(void* event) { return cudaEventDestroy(static_cast<cudaEvent_t>(event)); }
int tes_cuda_event_record(void* event, void* stream) {
  return cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream));
}
int tes_cuda_event_elapsed_ms(void* start, void* stop, float* ms) {
  const cudaError_t st = cudaEventSynchronize(static_cast<cudaEvent_t>(stop));
  if (st != cudaSuccess) return st;
  return cudaEventElapsedTime(ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(stop));
}
// Device name and SM count of the current device.
int tes_cuda_device_name(char* buf, int len, int* sm_count) {
  int dev = 0;
  cudaError_t st = cudaGetDevice(&dev);
  if (st != cudaSuccess) return st;
  cudaDeviceProp prop;
  st = cudaGetDeviceProperties(&prop, dev);
  if (st != cudaSuccess) return st;
  if (len > 0) {
    int i = 0;
    for (; i < len - 1 && prop.name[i]; ++i) buf[i] = prop.name[i];
    buf[i] = 0;
  }
  if (sm_count) *sm_count = prop.multiProcessorCount;
  return cudaSuccess;
}

}  // extern "C"
