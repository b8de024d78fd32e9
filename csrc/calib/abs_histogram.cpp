// Streaming |x| histogram binning for INT8 calibration (trt_edge.quant.methods.AbsHistogram).
//
// The NumPy path bins ~2 ns per value; on a 2-core machine that work competes with
// ONNX Runtime's forward pass for the cores, so it sets the calibration speed. This
// kernel computes the *same* counts (float32 |x| * inv_width, truncated toward zero,
// values at or past the last bin folded into it: identical float32 arithmetic, so the
// histograms are bit-for-bit those of the NumPy path) at ~1 ns per value.
//
// Plain C ABI, loaded with ctypes (no Python headers); no threads of its own: the caller
// already runs it on a worker thread beside ONNX Runtime.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#define TEC_API extern "C" __attribute__((visibility("default")))

namespace {
constexpr int kAbiVersion = 3;
// Sub-histograms, interleaved by position: runs of one value (the zeros after a ReLU, an
// image's constant background) would otherwise serialise on one counter's
// store-to-load dependency.
constexpr int kLanes = 8;
// Indices are computed for a block at a time (a loop the compiler vectorises), then counted.
constexpr int64_t kBlock = 1024;
// uint32 sub-counts keep the lanes cache-resident; flushed into the int64 totals well
// before they could overflow.
constexpr int64_t kFlushEvery = int64_t(1) << 30;
}  // namespace

TEC_API int tec_abi_version() { return kAbiVersion; }

// counts[min(trunc(|x[k]| * inv_width), nbins - 1)] += 1 for k in [0, n).
// x: n finite float32 values (the caller filters NaN/inf); counts: nbins int64, added to.
// Returns 0, or 1 for invalid arguments (nothing is written then).
TEC_API int tec_abs_histogram_f32(const float* x, int64_t n, float inv_width, int64_t* counts,
                                  int64_t nbins) {
    if (nbins <= 0 || nbins > (int64_t(1) << 30) || n < 0 || (n > 0 && (x == nullptr || counts == nullptr)) ||
        !(inv_width >= 0.0f) || std::isinf(inv_width)) {
        return 1;
    }
    std::vector<uint32_t> sub(static_cast<size_t>(kLanes) * static_cast<size_t>(nbins), 0u);
    const float top = static_cast<float>(nbins);
    const int32_t last = static_cast<int32_t>(nbins - 1);
    alignas(64) int32_t idx[kBlock];
    int64_t pending = 0;
    auto flush = [&]() {
        for (int l = 0; l < kLanes; ++l) {
            uint32_t* s = sub.data() + static_cast<size_t>(l) * nbins;
            for (int64_t b = 0; b < nbins; ++b) {
                counts[b] += s[b];
                s[b] = 0;
            }
        }
        pending = 0;
    };
    for (int64_t k0 = 0; k0 < n; k0 += kBlock) {
        const int64_t m = (n - k0) < kBlock ? (n - k0) : kBlock;
        const float* p = x + k0;
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) {
            const float a = std::fabs(p[j]) * inv_width;  // one float32 multiply, as NumPy
            idx[j] = a < top ? static_cast<int32_t>(a) : last;  // truncation toward zero (a >= 0)
        }
        int64_t j = 0;
        for (; j + kLanes <= m; j += kLanes) {
            for (int l = 0; l < kLanes; ++l) {
                sub[static_cast<size_t>(l) * nbins + idx[j + l]] += 1u;
            }
        }
        for (; j < m; ++j) sub[idx[j]] += 1u;
        pending += m;
        if (pending >= kFlushEvery) flush();
    }
    flush();
    return 0;
}

// One read of a batch's activation for what calibration needs before binning it:
// max |x| (the histogram's range) and, when `sums` is given, the per-channel sums that bias
// correction needs. x is [lead, channels, inner] in C order (the channel axis in the middle);
// sums[c] (double, channels of them) is added to. NumPy took three passes for this (max, min,
// a float64 sum over the other axes): ~2 ns a value on MobileNetV2, more than the binning.
// Returns 0, 2 if x holds a NaN or inf (then *amax_out and sums are not meaningful: the caller
// filters and redoes the work in NumPy), or 1 for invalid arguments (nothing is written).
TEC_API int tec_abs_max_channel_sums_f32(const float* x, int64_t lead, int64_t channels, int64_t inner,
                                         double* sums, float* amax_out) {
    if (lead < 0 || channels < 0 || inner < 0 || amax_out == nullptr ||
        (lead * channels * inner > 0 && x == nullptr)) {
        return 1;
    }
    float amax = 0.0f;
    bool finite = true;
    if (sums == nullptr) {  // max |x| only: float maths, a flag for NaN/inf (no double sum)
        const int64_t n = lead * channels * inner;
        int bad = 0;
#pragma omp simd reduction(max : amax) reduction(| : bad)
        for (int64_t k = 0; k < n; ++k) {
            const float a = std::fabs(x[k]);
            amax = a > amax ? a : amax;
            bad |= !(a <= std::numeric_limits<float>::max());  // true for inf and NaN
        }
        *amax_out = amax;
        return bad ? 2 : 0;
    }
    for (int64_t l = 0; l < lead; ++l) {
        for (int64_t c = 0; c < channels; ++c) {
            const float* p = x + (l * channels + c) * inner;
            float m = 0.0f;
            double total = 0.0;
            // `omp simd` reductions let the compiler reassociate (vector max and adds); a NaN in
            // the max lanes may be lost, but NaN and inf always reach the sum (checked below)
#pragma omp simd reduction(max : m) reduction(+ : total)
            for (int64_t k = 0; k < inner; ++k) {
                const float a = std::fabs(p[k]);
                m = a > m ? a : m;
                total += static_cast<double>(p[k]);
            }
            if (!std::isfinite(total)) finite = false;  // inf + finite = inf; NaN propagates
            amax = m > amax ? m : amax;
            if (sums != nullptr) sums[c] += total;
        }
    }
    *amax_out = amax;
    return finite ? 0 : 2;
}

// The MSE range search of `trt_edge.quant.methods`, natively: `auto` runs it on every calibrated
// tensor (~2-3 ms each in NumPy, 0.1-0.2 s of CPU on MiniLM and MobileNetV2, between the
// forward pass and the method selection; ~5x faster here). Same formula and inputs; only the
// summation order differs (last-ulp differences, tested to choose the same thresholds).
// (Entropy's KL sweep is not here: its cost is one log per level and candidate, which NumPy's
// vectorised log already does about as fast as a scalar C loop: 3.4 vs 4 ms a tensor.)

// For each candidate threshold t[k] (already clipped to the histogram's amax): the weighted
// squared error of symmetric fake quantization of the bin centres c (weights w),
//   sum_b w_b (clip(rint(c_b / s), 0, levels) s - c_b)^2, s = t / levels,
// as `_mse_errors` computes it (rint: round half to even, NumPy's np.round). Returns 0, or 1.
TEC_API int tec_mse_errors(const double* centres, const double* weights, int64_t nc, const double* thresholds,
                           int64_t nt, int64_t levels, double* err_out) {
    if (nc < 0 || nt < 0 || levels <= 0 || (nc > 0 && (centres == nullptr || weights == nullptr)) ||
        (nt > 0 && (thresholds == nullptr || err_out == nullptr))) {
        return 1;
    }
    const double top = static_cast<double>(levels);
    for (int64_t k = 0; k < nt; ++k) {
        const double s = thresholds[k] / top;
        double total = 0.0;
#pragma omp simd reduction(+ : total)
        for (int64_t b = 0; b < nc; ++b) {
            double q = std::nearbyint(centres[b] / s);
            q = q < 0.0 ? 0.0 : (q > top ? top : q);
            const double e = q * s - centres[b];
            total += e * e * weights[b];
        }
        err_out[k] = total;
    }
    return 0;
}
