// CUDA launchers of SparseLinear: Y = X @ W^T + b with a constant sparse W.
//
// Plain C++ (no TensorRT): the TensorRT plugin, the Python loader used by the GPU
// benchmark and any other host code call these. Layouts are those of
// sparse_linear_cpu.h (row-major x [M, K], y [M, N]; CSR over the N output rows; BSR
// with br x bc blocks stored row-major, overhanging blocks zero-padded). All pointers
// are device pointers; the launch is asynchronous on `stream`.
//
// Types: float (FP32) and __half (FP16 storage, FP32 accumulation). Any batch M >= 0
// works; M in 1..64 is the tuned range (memory-bound: each non-zero is read once per
// tile of up to 8 batch rows).
// BSR block shapes with instantiated kernels: 1x4, 1x8, 2x2, 2x4, 4x1, 4x4, 8x1; any
// other shape returns cudaErrorInvalidValue (the CPU library accepts any shape <= 32x32).
#ifndef TRT_EDGE_SPARSE_LINEAR_H
#define TRT_EDGE_SPARSE_LINEAR_H

#include <cstdint>

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace trt_edge {
namespace sparse {

// Returns cudaErrorInvalidValue for bad sizes/null pointers/unsupported blocks and (BSR)
// cudaErrorMisalignedAddress when `values` is not 16-byte aligned, all checked on the host
// before any launch; else the launch status (cudaGetLastError after the launch).
template <typename T>
cudaError_t launchCsrLinear(int64_t M, int32_t N, int32_t K, const int32_t* rowPtr,
                            const int32_t* colIdx, const T* values, const T* bias, const T* x,
                            T* y, cudaStream_t stream);

template <typename T>
cudaError_t launchBsrLinear(int64_t M, int32_t N, int32_t K, int32_t blockRows, int32_t blockCols,
                            const int32_t* blockRowPtr, const int32_t* blockColIdx,
                            const T* values, const T* bias, const T* x, T* y,
                            cudaStream_t stream);

// True if launchBsrLinear has a kernel for this block shape.
bool isSupportedBlock(int32_t blockRows, int32_t blockCols);

}  // namespace sparse
}  // namespace trt_edge

// C entry points (same semantics) for ctypes callers such as the GPU benchmark.
// Return the cudaError_t as int.
extern "C" {
int tes_cuda_linear_csr_f32(int64_t M, int32_t N, int32_t K, const int32_t* rowPtr,
                            const int32_t* colIdx, const float* values, const float* bias,
                            const float* x, float* y, void* stream);
int tes_cuda_linear_csr_f16(int64_t M, int32_t N, int32_t K, const int32_t* rowPtr,
                            const int32_t* colIdx, const __half* values, const __half* bias,
                            const __half* x, __half* y, void* stream);
int tes_cuda_linear_bsr_f32(int64_t M, int32_t N, int32_t K, int32_t br, int32_t bc,
                            const int32_t* blockRowPtr, const int32_t* blockColIdx,
                            const float* values, const float* bias, const float* x, float* y,
                            void* stream);
int tes_cuda_linear_bsr_f16(int64_t M, int32_t N, int32_t K, int32_t br, int32_t bc,
                            const int32_t* blockRowPtr, const int32_t* blockColIdx,
                            const __half* values, const __half* bias, const __half* x, __half* y,
                            void* stream);
const char* tes_cuda_error_string(int status);
}

#endif  // TRT_EDGE_SPARSE_LINEAR_H
