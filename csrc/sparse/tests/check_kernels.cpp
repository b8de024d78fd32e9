// Standalone check of the CPU kernels against a naive float64 reference, for builds that
// Python cannot load (e.g. the aarch64/NEON build run under qemu-aarch64):
//   aarch64-linux-gnu-g++ -O3 -std=c++17 -pthread -fopenmp-simd -static -Icsrc/sparse
//   csrc/sparse/sparse_linear_cpu.cpp csrc/sparse/tests/check_kernels.cpp -o check && qemu-aarch64 ./check
// Runs CSR, BSR 1x4 and packed CSR (both loops, 7-column panels) on odd shapes, poisoned outputs.
#include "sparse_linear_cpu.h"
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>
int main() {
  std::mt19937 rng(1234);
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<float> ud;
  int fails = 0, runs = 0;
  const int shapes[][3] = {{1, 1, 1}, {7, 5, 1}, {33, 17, 3}, {130, 257, 17}, {96, 64, 64}, {70, 300, 1}};
  for (auto& sh : shapes) {
    const int N = sh[0], K = sh[1], M = sh[2];
    std::vector<float> W(N * K), x(M * K), b(N);
    for (auto& v : W) v = ud(rng) < 0.2f ? nd(rng) : 0.f;
    for (auto& v : x) v = nd(rng);
    for (auto& v : b) v = nd(rng);
    std::vector<double> ref(M * N), scale(M * N);
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        double s = b[n], a = std::fabs(b[n]);
        for (int k = 0; k < K; ++k) { s += double(W[n * K + k]) * x[m * K + k]; a += std::fabs(double(W[n * K + k]) * x[m * K + k]); }
        ref[m * N + n] = s; scale[m * N + n] = a;
      }
    // CSR
    std::vector<int32_t> rp(N + 1, 0), ci; std::vector<float> v;
    for (int n = 0; n < N; ++n) { for (int k = 0; k < K; ++k) if (W[n * K + k] != 0.f) { ci.push_back(k); v.push_back(W[n * K + k]); } rp[n + 1] = ci.size(); }
    // packed, panel 7 (several panels)
    const int T = 7, P = (K + T - 1) / T;
    std::vector<int32_t> prp(P * (N + 1)); std::vector<uint16_t> pci; std::vector<float> pv;
    for (int p = 0; p < P; ++p) for (int n = 0; n < N; ++n) {
      prp[p * (N + 1) + n] = pci.size();
      for (int k = p * T; k < std::min(K, (p + 1) * T); ++k) if (W[n * K + k] != 0.f) { pci.push_back(k - p * T); pv.push_back(W[n * K + k]); }
      if (n == N - 1) prp[p * (N + 1) + N] = pci.size();
    }
    // BSR 1x4
    const int bc = 4, nbc = (K + bc - 1) / bc;
    std::vector<int32_t> brp(N + 1, 0), bci; std::vector<float> bv;
    for (int n = 0; n < N; ++n) { for (int c = 0; c < nbc; ++c) { bool any = false; for (int j = 0; j < bc; ++j) if (c * bc + j < K && W[n * K + c * bc + j] != 0.f) any = true;
        if (any) { bci.push_back(c); for (int j = 0; j < bc; ++j) bv.push_back(c * bc + j < K ? W[n * K + c * bc + j] : 0.f); } } brp[n + 1] = bci.size(); }
    for (int kind = 0; kind < 4; ++kind) {
      std::vector<float> y(M * N, NAN);
      int st;
      if (kind == 0) st = tes_linear_csr_f32(M, N, K, rp.data(), ci.data(), v.data(), b.data(), x.data(), y.data(), 1, 1);
      else if (kind == 1) st = tes_linear_bsr_f32(M, N, K, 1, 4, brp.data(), bci.data(), bv.data(), b.data(), x.data(), y.data(), 2, 1);
      else st = tes_linear_pcsr_f32(M, N, K, T, prp.data(), pci.data(), pv.data(), 0, b.data(), x.data(), y.data(), 1, kind == 2 ? TES_PCSR_GATHER : TES_PCSR_LOADS, 1);
      ++runs;
      bool ok = st == 0;
      for (int i = 0; ok && i < M * N; ++i) ok = std::isfinite(y[i]) && std::fabs(y[i] - ref[i]) <= 1e-5 * scale[i] + 1e-6;
      if (!ok) { ++fails; std::printf("FAIL kind %d shape %dx%d M %d status %d\n", kind, N, K, M, st); }
    }
  }
  std::printf("%s: %d/%d kernel runs match the reference; %s\n", tes_isa(), runs - fails, runs, tes_build_info());
  return fails != 0;
}
