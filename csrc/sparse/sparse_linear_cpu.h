// CPU implementation of SparseLinear: Y = X @ W^T + b with a constant sparse W.
//
// A plain C ABI (no C++ types, no Python API) so that the same shared library
// is loadable by ctypes, by an ONNX Runtime custom op host and by the tests
// that compare it with the CUDA kernels.
//
// Layouts (all row-major, all arrays contiguous):
//   x      [M, K]                       activations, M = batch (any M >= 0)
//   y      [M, N]                       output, fully written by every call
//   W      [N, K]                       logical weight (out_features x in_features,
//                                       the layout of torch.nn.Linear.weight)
//   CSR    row_ptr [N + 1], col_idx [nnz], values [nnz]
//   BSR    block_row_ptr [ceil(N/br) + 1], block_col_idx [nnzb],
//          values [nnzb, br, bc] (row-major inside a block). Blocks that
//          overhang N or K (when N % br or K % bc != 0) hold zeros there.
//   bias   [N] or NULL
// FP16 variants take IEEE binary16 bit patterns (uint16_t) and accumulate in FP32.
#ifndef TRT_EDGE_SPARSE_LINEAR_CPU_H
#define TRT_EDGE_SPARSE_LINEAR_CPU_H

#include <stdint.h>

#if defined(_WIN32)
#define TES_API __declspec(dllexport)
#else
#define TES_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

// Status codes (0 = success). Errors are user errors: the arguments are checked
// before any memory is touched, so a bad call never corrupts `y`'s neighbours.
#define TES_OK 0
#define TES_ERR_NULL_POINTER 1
#define TES_ERR_BAD_SHAPE 2
#define TES_ERR_BAD_INDEX 3
#define TES_ERR_OUT_OF_MEMORY 4
#define TES_ERR_INTERNAL 5
#define TES_ERR_UNSUPPORTED_ISA 6

// `num_threads` <= 0: the library decides (1 thread for small work, else all pool threads;
// the pool has hardware_concurrency threads, or TES_NUM_THREADS).
// `check_indices` != 0 validates row_ptr/col_idx first (O(nnz)); pass 0 for
// arrays produced by trt_edge.sparse.formats, which are validated once.
TES_API int tes_linear_csr_f32(int64_t M, int64_t N, int64_t K, const int32_t* row_ptr,
                       const int32_t* col_idx, const float* values, const float* bias,
                       const float* x, float* y, int num_threads, int check_indices);
TES_API int tes_linear_csr_f16(int64_t M, int64_t N, int64_t K, const int32_t* row_ptr,
                       const int32_t* col_idx, const uint16_t* values, const uint16_t* bias,
                       const uint16_t* x, uint16_t* y, int num_threads, int check_indices);
TES_API int tes_linear_bsr_f32(int64_t M, int64_t N, int64_t K, int32_t br, int32_t bc,
                       const int32_t* block_row_ptr, const int32_t* block_col_idx,
                       const float* values, const float* bias, const float* x, float* y,
                       int num_threads, int check_indices);
TES_API int tes_linear_bsr_f16(int64_t M, int64_t N, int64_t K, int32_t br, int32_t bc,
                       const int32_t* block_row_ptr, const int32_t* block_col_idx,
                       const uint16_t* values, const uint16_t* bias, const uint16_t* x,
                       uint16_t* y, int num_threads, int check_indices);

// Packed CSR (CPU-only layout, built by trt_edge.sparse.formats.to_packed_csr): the columns
// are cut into P = ceil(K / panel_cols) panels of panel_cols <= 65536 columns; panel p holds
// the entries of columns [p*panel_cols, (p+1)*panel_cols) as CSR with uint16 column indices
// relative to the panel. row_ptr is [P][N+1] with global offsets into col_idx/values
// (row_ptr[0] == 0, each panel starts where the previous one ended). values are FP32, or
// FP16 bits when values_f16 != 0; x, bias (may be NULL) and y are FP32.
// `variant` (batch 1 only): TES_PCSR_AUTO, TES_PCSR_GATHER (hardware gather where the
// active SIMD level has one), TES_PCSR_LOADS (scalar loads, no gather).
#define TES_PCSR_AUTO 0
#define TES_PCSR_GATHER 1
#define TES_PCSR_LOADS 2
TES_API int tes_linear_pcsr_f32(int64_t M, int64_t N, int64_t K, int32_t panel_cols,
                        const int32_t* row_ptr, const uint16_t* col_idx, const void* values,
                        int values_f16, const float* bias, const float* x, float* y,
                        int num_threads, int variant, int check_indices);

// Read-bandwidth probe: reads `bytes` bytes at `data` once, sequentially, with the active
// SIMD level's widest loads (prefetch != 0: plus the kernels' software prefetch), on up to
// num_threads threads (<= 0: all pool threads); returns a checksum of the bytes.
// Benchmarks time it for the byte count a kernel must read.
TES_API uint64_t tes_stream_read(const void* data, int64_t bytes, int num_threads, int prefetch);

// Run-time SIMD dispatch. One library holds the kernels compiled for every level
// ("avx512", "avx2", "baseline"; on aarch64 only "baseline", which is NEON there); the
// best level this CPU supports is chosen at load time, unless the environment variable
// TRT_EDGE_SPARSE_ISA names one (avx512|avx2|baseline|scalar|auto; "scalar" = "baseline").
// An unknown or unsupported value in the variable is ignored (tes_isa_env_status says so).
TES_API const char* tes_isa(void);                     // active level
TES_API int tes_isa_supported(const char* name);       // 1 if this CPU and build can run it
TES_API int tes_set_isa(const char* name);             // TES_OK or TES_ERR_UNSUPPORTED_ISA
TES_API int tes_isa_env_status(void);                  // TES_OK, or why the variable was ignored

// Human-readable description of a status code (static storage).
TES_API const char* tes_status_string(int status);
// Build facts: compiler, threading, SIMD target (static storage).
TES_API const char* tes_build_info(void);
// Threads a call with num_threads <= 0 uses.
TES_API int tes_default_threads(void);
// ABI version of this header; the Python loader refuses a mismatch.
TES_API int tes_abi_version(void);
#define TES_ABI_VERSION 2

#ifdef __cplusplus
}
#endif

#endif  // TRT_EDGE_SPARSE_LINEAR_CPU_H
