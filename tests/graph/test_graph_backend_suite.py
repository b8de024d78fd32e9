"""``optimize`` with default options on a sample of ONNX's own backend test models.

Done-criterion of issue 13: on the models ONNX Runtime passes, optimize changes no
result and refuses at most 1% of them. The full suite runs as a script
(benchmarks/bench_backend_suite.py, figures in docs/benchmarks/graph.md); this test
checks a fixed, spread-out sample (every Nth model), bounded in time.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_backend_suite as suite  # noqa: E402

# Also the control-flow, sequence, optional, string, index and low-precision models that
# the verifier used to refuse (issue 13), by name.
NAMED = ("test_if_seq", "test_loop11", "test_scan9_sum", "test_sequence_map_add_2_sequences",
         "test_optional_get_element_tensor", "test_identity_opt", "test_strnorm_model_monday_empty_output",
         "test_gather_elements_1", "test_cumsum_1d_reverse_exclusive", "test_reflect_pad",
         "test_col2im", "test_affine_grid_2d", "test_split_variable_parts_2d_opset18",
         "test_reshape_reordered_all_dims", "test_cast_FLOAT_to_BFLOAT16",
         "test_cast_FLOAT_to_FLOAT8E4M3FN", "test_dequantizelinear_int4", "test_quantizelinear_uint4",
         "test_label_encoder_tensor_mapping", "test_ai_onnx_ml_label_encoder_tensor_mapping",
         "test_nllloss_NCd1d2_reduction_sum", "test_resize_upsample_scales_linear",
         "test_topk", "test_onehot_with_axis", "test_range_float_type_positive_delta")
EVERY = 50


def _sample():
    picked = []
    for i, case in enumerate(suite.iter_cases(("node", "simple", "pytorch-operator"))):
        if i % EVERY == 0 or case[1] in NAMED:
            picked.append(case)
    return picked


def test_backend_suite_sample_unchanged_and_hardly_refused():
    counts = {"kept": 0, "changed": 0, "refused": 0}
    problems = []
    for _, name, model, sets in _sample():
        refs = suite.ort_passes(model, sets)
        if refs is None:
            continue  # not a model ONNX Runtime passes
        status, detail, _ = suite.run_case(model, sets, refs)
        counts[status] += 1
        if status != "kept":
            problems.append(f"{name}: {status}: {detail}")
    total = sum(counts.values())
    assert total >= 40, counts
    assert counts["changed"] == 0, problems
    assert counts["refused"] <= max(1, total // 100), problems


@pytest.mark.slow
def test_backend_suite_in_full():
    assert suite.main(["--suites", ",".join(suite.SUITES)]) == 0
