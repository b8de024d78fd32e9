// Standalone check of the calibration kernels (../abs_histogram.cpp) against naive references,
// for builds that Python cannot load: the aarch64 (Jetson CPU) build run under qemu-aarch64.
//   aarch64-linux-gnu-g++ -O3 -std=c++17 -fopenmp-simd -static csrc/calib/abs_histogram.cpp
//   csrc/calib/tests/check_kernels.cpp -o check && qemu-aarch64 ./check
// The references are the formulas of trt_edge.quant.methods written as plain loops (float32 binning
// as NumPy does it, float64 sums in index order, std::log, std::nearbyint). What must match how:
//   histogram counts, max |x|: exactly (the same float32 arithmetic);
//   channel sums, MSE errors: 1e-12 relative (only the summation order differs);
//   entropy level terms: 1e-12 relative (the summation order and the last bit of a log).
// Prints one line per kernel and "calib: N/N checks passed"; exit status 1 on any failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

extern "C" {
int tec_abi_version();
int tec_abs_histogram_f32(const float* x, int64_t n, float inv_width, int64_t* counts, int64_t nbins);
int tec_abs_max_channel_sums_f32(const float* x, int64_t lead, int64_t channels, int64_t inner, double* sums,
                                 float* amax_out);
int tec_entropy_level_terms(const double* csum, const double* cnz, int64_t nb, int64_t levels, int64_t start,
                            int64_t n, const double* outliers, double* term_out);
int tec_mse_errors(const double* centres, const double* weights, int64_t nc, const double* thresholds, int64_t nt,
                   int64_t levels, double* err_out);
}

namespace {
int g_runs = 0, g_fails = 0;

void check(bool ok, const char* what, long long detail = 0) {
    ++g_runs;
    if (!ok) {
        ++g_fails;
        std::printf("FAIL %s (%lld)\n", what, detail);
    }
}

bool close_rel(double a, double b, double rel) {
    return std::fabs(a - b) <= rel * std::fmax(std::fabs(a), std::fabs(b)) + 1e-300;
}

void histogram_checks(std::mt19937& rng) {
    std::normal_distribution<float> nd;
    std::uniform_real_distribution<float> ud;
    // sizes around the kernel's 1024-value blocks and 8 interleaved lanes; bin counts incl. 1
    const int64_t sizes[] = {0, 1, 7, 8, 9, 1023, 1024, 1025, 5000, 70001};
    const int64_t bins[] = {1, 3, 128, 2048};
    for (int64_t n : sizes) {
        for (int64_t nb : bins) {
            std::vector<float> x(static_cast<size_t>(n));
            for (int64_t k = 0; k < n; ++k) {
                const float u = ud(rng);
                // runs of zeros (a ReLU's), values past the top bin, and exact bin edges
                x[k] = u < 0.3f ? 0.0f : (u < 0.35f ? 9.0f * nd(rng) : (u < 0.4f ? float(k % nb) / 2.0f : nd(rng)));
            }
            const float inv_width = float(nb) / 2.0f;  // the range [0, 2): some values fold into the last bin
            std::vector<int64_t> got(static_cast<size_t>(nb), 5), want(static_cast<size_t>(nb), 5);  // added to
            const int rc = tec_abs_histogram_f32(x.data(), n, inv_width, got.data(), nb);
            for (int64_t k = 0; k < n; ++k) {
                const float a = std::fabs(x[k]) * inv_width;
                want[a < float(nb) ? static_cast<int64_t>(a) : nb - 1] += 1;
            }
            check(rc == 0 && got == want, "abs_histogram counts", n * 10000 + nb);
        }
    }
    int64_t c[4] = {0, 0, 0, 0};
    const float v[2] = {1.0f, 2.0f};
    check(tec_abs_histogram_f32(v, 2, 1.0f, c, 0) == 1, "abs_histogram rejects 0 bins");
    check(tec_abs_histogram_f32(v, 2, -1.0f, c, 4) == 1, "abs_histogram rejects a negative width");
    check(tec_abs_histogram_f32(v, 2, std::numeric_limits<float>::infinity(), c, 4) == 1,
          "abs_histogram rejects an infinite width");
    check(c[0] == 0 && c[1] == 0 && c[2] == 0 && c[3] == 0, "abs_histogram writes nothing when it refuses");
    std::printf("abs_histogram: %d checks\n", g_runs);
}

void channel_sum_checks(std::mt19937& rng) {
    const int before = g_runs;
    std::normal_distribution<float> nd(0.5f, 3.0f);
    const int64_t shapes[][3] = {{1, 1, 1}, {2, 3, 5}, {1, 32, 12544}, {4, 17, 63}, {3, 1, 1000}};
    for (auto& sh : shapes) {
        const int64_t lead = sh[0], ch = sh[1], inner = sh[2], n = lead * ch * inner;
        std::vector<float> x(static_cast<size_t>(n));
        for (auto& v : x) v = nd(rng);
        std::vector<double> sums(static_cast<size_t>(ch), 1.0), want(static_cast<size_t>(ch), 1.0);  // added to
        float amax = -1.0f, want_max = 0.0f;
        const int rc = tec_abs_max_channel_sums_f32(x.data(), lead, ch, inner, sums.data(), &amax);
        for (int64_t l = 0; l < lead; ++l)
            for (int64_t c = 0; c < ch; ++c)
                for (int64_t k = 0; k < inner; ++k) {
                    const float v = x[(l * ch + c) * inner + k];
                    want[c] += double(v);
                    want_max = std::fabs(v) > want_max ? std::fabs(v) : want_max;
                }
        bool ok = rc == 0 && amax == want_max;
        for (int64_t c = 0; c < ch; ++c) ok = ok && close_rel(sums[c], want[c], 1e-12);
        check(ok, "abs_max_channel_sums", n);
        float only_max = -1.0f;
        check(tec_abs_max_channel_sums_f32(x.data(), lead, ch, inner, nullptr, &only_max) == 0 && only_max == want_max,
              "abs_max (no sums)", n);
        x[static_cast<size_t>(n / 2)] = std::numeric_limits<float>::quiet_NaN();
        check(tec_abs_max_channel_sums_f32(x.data(), lead, ch, inner, sums.data(), &amax) == 2, "NaN reported", n);
        check(tec_abs_max_channel_sums_f32(x.data(), lead, ch, inner, nullptr, &amax) == 2, "NaN reported (max)", n);
        x[static_cast<size_t>(n / 2)] = std::numeric_limits<float>::infinity();
        check(tec_abs_max_channel_sums_f32(x.data(), lead, ch, inner, nullptr, &amax) == 2, "inf reported (max)", n);
    }
    float amax = 0.0f;
    check(tec_abs_max_channel_sums_f32(nullptr, -1, 1, 1, nullptr, &amax) == 1, "channel sums reject a bad shape");
    std::printf("abs_max_channel_sums: %d checks\n", g_runs - before);
}

// entropy_kl_curve's level term for one slice length i, as plain loops (std::log)
double level_term(const std::vector<double>& csum, const std::vector<double>& cnz, int64_t levels, int64_t i,
                  double outliers) {
    double total = 0.0, last = 1.0;
    for (int64_t j = 0; j < levels; ++j) {
        const int64_t lo = (j * i + levels - 1) / levels, hi = ((j + 1) * i + levels - 1) / levels;
        const double q = csum[hi] - csum[lo], nz = cnz[hi] - cnz[lo];
        const double r = q > 0.0 ? q / nz : 1.0;
        total += q * std::log(r);
        if (j == levels - 1) last = r;
    }
    return total + outliers * std::log(last);
}

void entropy_checks(std::mt19937& rng) {
    const int before = g_runs;
    std::uniform_real_distribution<double> ud;
    std::exponential_distribution<double> ed(0.01);
    const int64_t nbs[] = {128, 300, 2048};
    const int64_t levels_set[] = {128, 100, 1, 7};  // 128: the power-of-two (shift) path
    for (int64_t nb : nbs) {
        std::vector<double> hist(static_cast<size_t>(nb));
        for (auto& h : hist) h = ud(rng) < 0.25 ? 0.0 : std::floor(ed(rng));  // empty bins and spikes
        std::vector<double> csum(static_cast<size_t>(nb) + 1, 0.0), cnz(static_cast<size_t>(nb) + 1, 0.0);
        for (int64_t b = 0; b < nb; ++b) {
            csum[b + 1] = csum[b] + hist[b];
            cnz[b + 1] = cnz[b] + (hist[b] > 0.0 ? 1.0 : 0.0);
        }
        for (int64_t levels : levels_set) {
            const int64_t start = levels, n = nb - start + 1;
            if (n <= 0) continue;
            std::vector<double> outl(static_cast<size_t>(n)), got(static_cast<size_t>(n), 0.0);
            for (int64_t c = 0; c < n; ++c) outl[c] = csum[nb] - csum[start + c];
            const int rc = tec_entropy_level_terms(csum.data(), cnz.data(), nb, levels, start, n, outl.data(), got.data());
            bool ok = rc == 0;
            for (int64_t c = 0; c < n && ok; ++c) {
                ok = close_rel(got[c], level_term(csum, cnz, levels, start + c, outl[c]), 1e-12);
                if (!ok) std::printf("  entropy nb %lld levels %lld i %lld: %.17g\n", (long long)nb,
                                     (long long)levels, (long long)(start + c), got[c]);
            }
            check(ok, "entropy_level_terms", nb * 1000 + levels);
        }
    }
    double d[3] = {0, 0, 0}, out[2] = {0, 0};
    check(tec_entropy_level_terms(d, d, 2, 2, 0, 1, d, out) == 1, "entropy rejects start 0");
    check(tec_entropy_level_terms(d, d, 2, 2, 2, 2, d, out) == 1, "entropy rejects slices past the histogram");
    std::printf("entropy_level_terms: %d checks\n", g_runs - before);
}

void mse_checks(std::mt19937& rng) {
    const int before = g_runs;
    std::uniform_real_distribution<double> ud;
    const int64_t ncs[] = {1, 16, 2048, 4097};
    for (int64_t nc : ncs) {
        std::vector<double> centres(static_cast<size_t>(nc)), weights(static_cast<size_t>(nc));
        const double width = 7.0 / double(nc);
        for (int64_t b = 0; b < nc; ++b) {
            centres[b] = (double(b) + 0.5) * width;
            weights[b] = ud(rng) < 0.3 ? 0.0 : std::floor(1000.0 * ud(rng));
        }
        std::vector<double> th;
        for (int k = 1; k <= 64; ++k) th.push_back(7.0 * k / 64.0);
        th.push_back(centres[0] * 127.0 / 2.5);  // a centre exactly half-way between two levels: rint to even
        std::vector<double> got(th.size(), -1.0);
        const int levels = 127;
        const int rc = tec_mse_errors(centres.data(), weights.data(), nc, th.data(), int64_t(th.size()), levels,
                                      got.data());
        bool ok = rc == 0;
        for (size_t k = 0; k < th.size() && ok; ++k) {
            const double s = th[k] / levels;
            double want = 0.0;
            for (int64_t b = 0; b < nc; ++b) {
                double q = std::nearbyint(centres[b] / s);
                q = q < 0.0 ? 0.0 : (q > levels ? double(levels) : q);
                want += (q * s - centres[b]) * (q * s - centres[b]) * weights[b];
            }
            ok = close_rel(got[k], want, 1e-12);
        }
        check(ok, "mse_errors", nc);
    }
    // exact values: s = 31.75 / 127 = 0.25; 0.625 and 1.125 sit half-way between levels (error 0.125,
    // whichever way a tie rounds), 0.5 on one, 40 is clipped to the top level 31.75 (error 8.25)
    const double hc[4] = {0.625, 1.125, 0.5, 40.0}, hw[4] = {1.0, 2.0, 3.0, 1.0}, ht[1] = {31.75};
    double herr[1] = {-1.0};
    check(tec_mse_errors(hc, hw, 4, ht, 1, 127, herr) == 0 && herr[0] == 3 * 0.125 * 0.125 + 8.25 * 8.25,
          "mse exact values");
    double d[1] = {1.0}, out[1] = {0.0};
    check(tec_mse_errors(d, d, 1, d, 1, 0, out) == 1, "mse rejects 0 levels");
    std::printf("mse_errors: %d checks\n", g_runs - before);
}
}  // namespace

int main() {
    std::mt19937 rng(20261201);
    const int abi = tec_abi_version();
    histogram_checks(rng);
    channel_sum_checks(rng);
    entropy_checks(rng);
    mse_checks(rng);
#if defined(__aarch64__)
    const char* arch = "aarch64";
#elif defined(__x86_64__)
    const char* arch = "x86-64";
#else
    const char* arch = "other";
#endif
    std::printf("calib (ABI %d, %s): %d/%d checks passed\n", abi, arch, g_runs - g_fails, g_runs);
    return g_fails == 0 ? 0 : 1;
}
