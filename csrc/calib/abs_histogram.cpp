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
#include <cstring>
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

// The range searches of `trt_edge.quant.methods`, natively: `auto` runs entropy and MSE on every
// calibrated tensor (~4-5 ms and ~2-3 ms each in NumPy: 0.3 s of CPU on MiniLM, 0.5 s on
// MobileNetV2, between the forward pass and the method selection). Same formulas and inputs
// (entropy's prefix sums come from NumPy); the summation order and the last bit of a log differ
// (tested to choose the same thresholds).

namespace {
// log(x) for finite x > 0 (no zero, subnormal, inf or NaN reaches it), written so that a simd
// loop vectorises it (no calls, no branches): x = 2^k m with m in [sqrt(1/2), sqrt(2)),
// log(m) = f - f^2/2 + s (f^2/2 + R(s^2)), f = m - 1, s = f / (2 + f), with the minimax
// polynomial R of the classic fdlibm/Sun log (coefficients below), k ln2 in two parts. Under 1 ulp
// off the correctly rounded value in fdlibm's analysis; glibc's scalar log is correctly rounded
// and NumPy's vector log within 1-4 ulp, so the KL curves agree to ~1e-13 relative.
inline double log_positive(double x) {
    constexpr double kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
    constexpr double kLg1 = 6.666666666666735130e-01, kLg2 = 3.999999999940941908e-01;
    constexpr double kLg3 = 2.857142874366239149e-01, kLg4 = 2.222219843214978396e-01;
    constexpr double kLg5 = 1.818357216161805012e-01, kLg6 = 1.531383769920937332e-01;
    constexpr double kLg7 = 1.479819860511658591e-01;
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    int64_t k = static_cast<int64_t>((bits >> 52) & 0x7ff) - 1023;
    const uint64_t mbits = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;  // m in [1, 2)
    double m;
    std::memcpy(&m, &mbits, sizeof m);
    const bool high = m > 1.4142135623730951;
    m = high ? m * 0.5 : m;
    k = high ? k + 1 : k;
    const double f = m - 1.0;
    const double hfsq = 0.5 * f * f;
    const double s = f / (2.0 + f);
    const double z = s * s, w = z * z;
    const double r = w * (kLg2 + w * (kLg4 + w * kLg6)) + z * (kLg1 + w * (kLg3 + w * (kLg5 + w * kLg7)));
    const double dk = static_cast<double>(k);
    return dk * kLn2Hi - ((hfsq - (s * (hfsq + r) + dk * kLn2Lo)) - f);
}
}  // namespace

// For each slice length i in [start, start + n): entropy_kl_curve's level term
//   sum_j q_j log(q_j / n_j) + outliers_i log(q_{L-1} / n_{L-1}),
// level j of L covering bins [ceil(j i / L), ceil((j + 1) i / L)): q_j its count (csum
// differences), n_j its non-empty bins (cnz differences); log(q / n) is 0 where q == 0 (as NumPy's
// where= gives). csum, cnz: nb + 1 prefix sums; outliers, term_out: n values. Returns 0, or 1 for
// invalid arguments (nothing written).
TEC_API int tec_entropy_level_terms(const double* csum, const double* cnz, int64_t nb, int64_t levels,
                                    int64_t start, int64_t n, const double* outliers, double* term_out) {
    if (levels <= 0 || start < 1 || n < 0 || start + n - 1 > nb || csum == nullptr || cnz == nullptr ||
        (n > 0 && (outliers == nullptr || term_out == nullptr))) {
        return 1;
    }
    std::vector<double> q(static_cast<size_t>(levels)), cnt(static_cast<size_t>(levels));
    std::vector<double> gs(static_cast<size_t>(levels) + 1), gn(static_cast<size_t>(levels) + 1);
    std::vector<int64_t> bound(static_cast<size_t>(levels) + 1);
    int shift = -1;  // L a power of two (128 for int8): the bounds by a shift, vectorised
    for (int b = 0; b < 62; ++b) {
        if ((int64_t(1) << b) == levels) shift = b;
    }
    int64_t* bp = bound.data();
    for (int64_t c = 0; c < n; ++c) {
        const int64_t i = start + c;
        if (shift >= 0) {
#pragma omp simd
            for (int64_t j = 0; j <= levels; ++j) bp[j] = (j * i + levels - 1) >> shift;  // ceil(j i / L)
        } else {
            for (int64_t j = 0; j <= levels; ++j) bp[j] = (j * i + levels - 1) / levels;
        }
        double* gsp = gs.data();
        double* gnp = gn.data();
#pragma omp simd
        for (int64_t j = 0; j <= levels; ++j) {
            gsp[j] = csum[bp[j]];
            gnp[j] = cnz[bp[j]];
        }
        double* qw = q.data();
        double* cw = cnt.data();
#pragma omp simd
        for (int64_t j = 0; j < levels; ++j) {
            qw[j] = gsp[j + 1] - gsp[j];
            cw[j] = gnp[j + 1] - gnp[j];
        }
        double total = 0.0;
        const double* qp = q.data();
        const double* np_ = cnt.data();
        // an empty level adds 0 (its q is 0; log of 1 stands in for the undefined 0 / 0)
#pragma omp simd reduction(+ : total)
        for (int64_t j = 0; j < levels; ++j) total += qp[j] * log_positive(qp[j] > 0.0 ? qp[j] / np_[j] : 1.0);
        const double last = qp[levels - 1] > 0.0 ? qp[levels - 1] / np_[levels - 1] : 1.0;
        term_out[c] = total + outliers[c] * log_positive(last);
    }
    return 0;
}

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
