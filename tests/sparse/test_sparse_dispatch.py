"""Run-time SIMD dispatch of the native CPU kernels, and the packed CSR layout.

The library holds every kernel for AVX-512, AVX2 and the baseline (SSE2 on x86-64, NEON on
aarch64). These tests check that the level picked by default is one this CPU runs, and that
every level this CPU can run, forced one after the other in the same process, matches the
NumPy reference on fresh random inputs with poisoned outputs and edge shapes. A level the
CPU lacks is skipped with the reason (an AVX2-only machine runs the avx2 and baseline cases).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from trt_edge.errors import InvalidInputError
from trt_edge.sparse import formats
from trt_edge.sparse.reference import abs_sum, sparse_linear_reference

from sparse_helpers import random_sparse

# (N, K, M): 1x1, odd sizes, one column, batch 0, K = 0, larger than a batch tile, batch 64
CASES = [(1, 1, 1), (7, 5, 1), (33, 17, 3), (13, 29, 20), (5, 1, 4), (40, 37, 0), (6, 0, 3),
         (130, 257, 17), (96, 64, 64), (70, 300, 1)]
LEVELS = ("avx512", "avx2", "baseline")


def _packed_dense(w: formats.PackedCsrWeight) -> np.ndarray:
    """Packed CSR to dense float64 by its own expansion (independent of formats.packed_to_csr)."""
    n, k = w.shape
    out = np.zeros((n, k), np.float64)
    for p in range(w.row_ptr.shape[0]):  # per panel: its rows' runs, expanded explicitly
        counts = np.diff(w.row_ptr[p])
        s = int(w.row_ptr[p, 0])
        rows = np.repeat(np.arange(n), counts)
        cols = p * w.panel_cols + w.col_idx[s:s + rows.size].astype(np.int64)
        out[rows, cols] = w.values[s:s + rows.size]
    return out


def _packed_reference(x, weight, bias):
    w64 = _packed_dense(weight)
    ref = x.astype(np.float64) @ w64.T + (0 if bias is None else bias.astype(np.float64))
    scale = np.abs(x).astype(np.float64) @ np.abs(w64).T + (0 if bias is None else np.abs(bias))
    return ref, scale


def _check(cpu, x, weight, bias, *, variant="auto", threads=1, reference=None):
    n = weight.shape[0]
    act = cpu.activation_dtype(weight)
    out = np.full((x.shape[0], n), np.nan, dtype=act)  # poison: an unwritten output fails
    y = cpu.sparse_linear(x.astype(act), weight, None if bias is None else bias.astype(act), out=out,
                          num_threads=threads, check=True, variant=variant)
    assert y is out and np.all(np.isfinite(y)), "kernel left outputs unwritten"
    xs = x.astype(act)
    if isinstance(weight, formats.PackedCsrWeight):
        ref, scale = reference if reference is not None else _packed_reference(xs, weight, bias)
        out_rtol = 0.0
    else:
        b = None if bias is None else bias.astype(act)
        ref = sparse_linear_reference(xs, weight, b)
        scale = abs_sum(xs, weight, b)
        out_rtol = 4.8828125e-4 if act == np.float16 else 0.0
    bound = 1e-5 * scale + out_rtol * np.abs(ref) + 1e-6  # spec tolerances (sparse_linear.json)
    err = np.abs(y.astype(np.float64) - ref)
    assert np.all(err <= bound), f"max err {err.max():.3g}"


@pytest.fixture(params=LEVELS)
def level(request, sparse_cpu):
    if request.param not in sparse_cpu.supported_isas():
        pytest.skip(f"this CPU cannot run the {request.param} kernels "
                    f"(it runs {', '.join(sparse_cpu.supported_isas())})")
    with sparse_cpu.forced_isa(request.param) as active:
        assert active == request.param
        yield request.param


def test_default_level_is_the_best_this_cpu_runs(sparse_cpu, fresh_rng):
    supported = sparse_cpu.supported_isas()
    assert supported[-1] == "baseline" and set(supported) <= set(LEVELS)
    if os.environ.get(sparse_cpu.ISA_ENV, "auto") in ("", "auto"):
        assert sparse_cpu.isa() == supported[0]
    w = random_sparse(fresh_rng, 50, 70, 0.2)
    _check(sparse_cpu, fresh_rng.standard_normal((1, 70)).astype(np.float32), formats.to_csr(w), None)
    assert sparse_cpu.isa() in sparse_cpu.build_info() or "run time" in sparse_cpu.build_info()


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_forced_level_matches_reference_csr_bsr(sparse_cpu, level, fresh_rng, dtype):
    for fmt, block in [("csr", None), ("bsr", (1, 4)), ("bsr", (4, 4)), ("bsr", (8, 1)), ("bsr", (3, 5))]:
        for n, k, m in CASES:
            w = random_sparse(fresh_rng, n, k, 0.2, dtype, block or (1, 1))
            if n > 2:
                w[n // 2] = 0  # an empty row
            weight = formats.convert(w, fmt, block)
            x = fresh_rng.standard_normal((m, k)).astype(dtype)
            bias = fresh_rng.standard_normal(n).astype(dtype)
            _check(sparse_cpu, x, weight, bias)
            _check(sparse_cpu, x, weight, None)


@pytest.mark.parametrize("value_dtype", [np.float32, np.float16], ids=["fp32-values", "fp16-values"])
def test_forced_level_matches_reference_packed(sparse_cpu, level, fresh_rng, value_dtype):
    for n, k, m in CASES:
        for density in (0.0, 0.2, 1.0):
            w = random_sparse(fresh_rng, n, k, density)
            if n > 2:
                w[n // 2] = 0
            csr = formats.to_csr(w)
            bias = fresh_rng.standard_normal(n).astype(np.float32)
            x = fresh_rng.standard_normal((m, k)).astype(np.float32)
            # one panel, and narrow panels (several per row, a partial last one)
            for panel in (None, 7):
                packed = formats.to_packed_csr(csr, panel_cols=panel, value_dtype=value_dtype)
                b = bias if density else None
                reference = _packed_reference(x, packed, b)
                for variant in ("auto", "gather", "loads"):
                    _check(sparse_cpu, x, packed, b, variant=variant, reference=reference)


def test_threads_agree_at_every_level(sparse_cpu, level, fresh_rng):
    w = random_sparse(fresh_rng, 300, 200, 0.2)
    packed = formats.to_packed_csr(formats.to_csr(w), panel_cols=64)
    for m in (1, 9):
        x = fresh_rng.standard_normal((m, 200)).astype(np.float32)
        for threads in (1, 3):
            _check(sparse_cpu, x, packed, None, threads=threads)


def test_stream_read_reads_every_byte(sparse_cpu, level, fresh_rng):
    for size in (0, 1, 255, 1000, 70_001):
        buf = fresh_rng.integers(0, 256, size, dtype=np.uint8)
        for prefetch in (False, True):
            assert sparse_cpu.stream_read(buf, 1, prefetch=prefetch) == _stream_checksum(buf, level), size


def _stream_checksum(buf: np.ndarray, level: str) -> int:
    """What the one-thread probe returns: the uint64 words of the part read in steps of four
    vectors, plus the remaining bytes one by one (mod 2**64)."""
    step = {"avx512": 64, "avx2": 32}.get(level, 16) * 4
    body = buf.size - buf.size % step
    words = int(buf[:body].view(np.uint64).sum(dtype=np.uint64)) if body else 0
    return (words + int(buf[body:].sum(dtype=np.uint64))) % (1 << 64)


def test_set_isa_refuses_unknown_levels_and_restores(sparse_cpu):
    before = sparse_cpu.isa()
    with pytest.raises(InvalidInputError, match="not available"):
        sparse_cpu.set_isa("sse9")
    with sparse_cpu.forced_isa("baseline"):
        assert sparse_cpu.isa() == "baseline"
    assert sparse_cpu.isa() == before


def _isa_in_subprocess(value: str) -> subprocess.CompletedProcess:
    code = ("from trt_edge.sparse import cpu\n"
            "try:\n    print(cpu.isa())\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    env = {**os.environ, "TRT_EDGE_SPARSE_ISA": value}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_env_variable_forces_a_level_and_bad_values_are_reported(sparse_cpu):
    assert _isa_in_subprocess("scalar").stdout.strip() == "baseline"
    bad = _isa_in_subprocess("avx9000").stdout
    assert "InvalidInputError" in bad and "TRT_EDGE_SPARSE_ISA" in bad and "baseline" in bad


def test_packed_layout_round_trips_and_validates(fresh_rng):
    w = random_sparse(fresh_rng, 37, 100, 0.3)
    w[5] = 0
    csr = formats.to_csr(w)
    for panel in (1, 7, 64, 100, 65536):
        packed = formats.to_packed_csr(csr, panel_cols=panel)
        assert packed.col_idx.dtype == np.uint16 and packed.row_ptr.shape == (-(-100 // panel), 38)
        if packed.num_panels == 1:  # one panel: 6 bytes per non-zero instead of 8
            assert packed.nbytes == csr.nbytes - 2 * csr.nnz
        back = formats.packed_to_csr(packed)
        assert np.array_equal(formats.to_dense(back), w)
        assert np.array_equal(_packed_dense(packed), w.astype(np.float64))
    bad_col = formats.PackedCsrWeight(packed.shape, 8, formats.to_packed_csr(csr, 8).row_ptr,
                                      np.full(csr.nnz, 9, np.uint16), csr.values)
    with pytest.raises(InvalidInputError, match="outside its panel"):
        formats.validate_packed(bad_col)
    with pytest.raises(InvalidInputError, match="panel_cols"):
        formats.to_packed_csr(csr, panel_cols=70000)
    with pytest.raises(InvalidInputError, match="FP16 range"):
        formats.to_packed_csr(formats.to_csr(np.array([[1e6, 0.0]], np.float32)), value_dtype=np.float16)


def test_native_check_rejects_bad_packed_indices(sparse_cpu):
    lib = sparse_cpu.load_library()
    rp = np.array([[0, 1, 2]], np.int32)
    ci = np.array([0, 5], np.uint16)  # 5 >= K = 4
    v = np.ones(2, np.float32)
    x = np.ones(4, np.float32)
    y = np.zeros(2, np.float32)
    st = lib.tes_linear_pcsr_f32(1, 2, 4, 4, rp.ctypes.data, ci.ctypes.data, v.ctypes.data, 0, None,
                                 x.ctypes.data, y.ctypes.data, 1, 0, 1)
    assert st == 3
    assert lib.tes_linear_pcsr_f32(1, 2, 4, 0, rp.ctypes.data, ci.ctypes.data, v.ctypes.data, 0, None,
                                   x.ctypes.data, y.ctypes.data, 1, 0, 1) == 2  # panel_cols 0


def test_choose_format_times_packed_layouts_only_when_asked(fresh_rng):
    from trt_edge.sparse.select import SelectOptions, choose_format
    w = random_sparse(fresh_rng, 64, 64, 0.1)
    timed = []

    def timer(weight, x, dense, variant="auto"):  # the clock only; the weights are real conversions
        if weight is None:
            return 9.0
        key = weight.format if weight.format != "pcsr" else f"pcsr-{variant}-{weight.values.dtype}"
        timed.append(key)
        if weight.format == "pcsr":
            assert np.array_equal(formats.to_dense(formats.packed_to_csr(weight)).astype(np.float32),
                                  w.astype(weight.values.dtype).astype(np.float32))
        return {"csr": 3.0, "pcsr-gather-float32": 2.0, "pcsr-loads-float32": 1.0,
                "pcsr-gather-float16": 0.5, "pcsr-loads-float16": 0.7}[key]

    plain = choose_format(w, SelectOptions(blocks=()), timer=timer)
    assert plain.format == "csr" and not any(t.startswith("pcsr") for t in timed)  # ONNX-safe default
    packed = choose_format(w, SelectOptions(blocks=(), cpu_layouts=True), timer=timer)
    assert (packed.format, packed.variant, packed.value_dtype, packed.label) == \
        ("pcsr", "loads", "float32", "pcsr-loads")
    f16 = choose_format(w, SelectOptions(blocks=(), cpu_layouts=True, fp16_values=True), timer=timer)
    assert f16.label == "pcsr-gather-f16" and set(f16.seconds) >= {"pcsr-loads", "pcsr-gather-f16"}
    with pytest.raises(InvalidInputError, match="cpu_layouts"):
        SelectOptions(fp16_values=True)


def test_choose_format_real_timer_with_packed_layouts(sparse_cpu, fresh_rng):
    from trt_edge.sparse.select import SelectOptions, choose_format
    w = random_sparse(fresh_rng, 256, 256, 0.1)
    choice = choose_format(w, SelectOptions(blocks=(), repeats=3, cpu_layouts=True, num_threads=1))
    assert {"csr", "pcsr-gather", "pcsr-loads", "dense"} <= set(choice.seconds)
    assert all(t > 0 for t in choice.seconds.values())
    assert choice.seconds[choice.label] == min(choice.seconds.values())
