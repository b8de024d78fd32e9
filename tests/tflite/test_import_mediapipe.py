"""Every MediaPipe model LiteRT can run imports and matches LiteRT; the others fail clearly."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from trt_edge.errors import ModelImportError, RunnerError
from trt_edge.tflite import ImportOptions, import_tflite
from trt_edge.tflite.verify import FLOAT_REL_TOLERANCE, litert_interpreter, run_litert

from tflite_helpers import photo

MEDIAPIPE = ["face_detection_full_range_sparse", "face_detection_short_range", "face_landmark",
             "face_landmark_with_attention", "hand_landmark_full", "hand_landmark_lite", "hand_recrop",
             "iris_landmark", "palm_detection_full", "palm_detection_lite", "pose_detection",
             "pose_landmark_full", "selfie_segmentation", "selfie_segmentation_landscape"]


def test_the_wheel_ships_the_fourteen_models(mp_models):
    assert sorted(mp_models) == sorted(MEDIAPIPE)


@pytest.mark.parametrize("name", MEDIAPIPE)
def test_mediapipe_model_imports_and_matches_litert(mp_models, name):
    path = mp_models[name]
    try:
        litert_interpreter(path)
    except RunnerError:
        # LiteRT itself cannot run it (MediaPipe-only custom ops): the importer must refuse by name.
        with pytest.raises(ModelImportError, match="custom op '(Landmarks2TransformMatrix|TransformLandmarks"
                                                   "|TransformTensorBilinear)'"):
            import_tflite(path, None)
        assert name == "face_landmark_with_attention"
        return
    res = import_tflite(path, None)
    assert res.verified and len(res.verification) == 2
    onnx.checker.check_model(res.model, full_check=True)
    for v in res.verification:
        for out in v.report.outputs:
            assert out.violations == 0 and out.max_abs_error <= v.tolerances[out.name].atol, (name, out)
    # NHWC interface kept: the ONNX inputs are exactly LiteRT's
    interp = litert_interpreter(path)
    want = {d["name"]: tuple(int(s) for s in d["shape"]) for d in interp.get_input_details()}
    got = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in res.model.graph.input}
    assert got == want


@pytest.mark.parametrize("name", ["selfie_segmentation", "palm_detection_lite", "pose_landmark_full"])
def test_real_photo_agrees_within_1e4_of_the_output_scale(mp_models, name):
    """On a real photo the plain rule holds: max |onnx - litert| <= 1e-4 * max |litert|."""
    interp = litert_interpreter(mp_models[name])
    d = interp.get_input_details()[0]
    feed = {d["name"]: photo(tuple(int(s) for s in d["shape"][1:3]))}
    ref = run_litert(interp, feed)
    res = import_tflite(mp_models[name], None, feeds=[feed])
    for out in res.verification[0].report.outputs:
        scale = float(np.abs(ref[out.name]).max())
        if name == "pose_landmark_full" and out.name == "Identity_2":
            # its segmentation logits (to ~1700): LiteRT's XNNPACK and builtin kernels differ by more
            # than 1e-4 of that scale, so the import rule is 2x LiteRT's own disagreement there.
            assert out.max_abs_error <= 2 * res.verification[0].litert_noise[out.name]
            continue
        assert out.max_abs_error <= FLOAT_REL_TOLERANCE * scale, (out, scale)
    if name == "selfie_segmentation":
        assert scale > 0.5 and res.verification[0].report.outputs[0].sqnr_db > 60  # a real mask


def test_nchw_interface_drops_the_boundary_transposes(mp_models):
    path = mp_models["face_detection_short_range"]
    nhwc = import_tflite(path, None)
    nchw = import_tflite(path, None, ImportOptions(nchw=True))
    assert nchw.verified and nchw.layout == "nchw"
    dims = [d.dim_value for d in nchw.model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 128, 128]
    assert nchw.onnx_ops.get("Transpose", 0) == nhwc.onnx_ops.get("Transpose", 0) - 1


def test_sparse_weights_are_densified_like_litert(mp_models):
    """DENSIFY: our NumPy densification equals LiteRT's own DENSIFY output for every sparse weight."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from trt_edge.tflite.reader import read_model
    path = mp_models["face_detection_full_range_sparse"]
    tfl = read_model(path)
    interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    interp.set_tensor(d["index"], np.zeros(d["shape"], np.float32))
    interp.invoke()
    densify = [op for op in tfl.operators if op.opcode == "DENSIFY"]
    assert len(densify) == 46
    for op in densify:
        ours = tfl.tensors[op.inputs[0]].data
        theirs = interp.get_tensor(op.outputs[0])
        np.testing.assert_array_equal(ours, theirs)
        assert np.count_nonzero(theirs) < theirs.size  # really sparse


def test_output_tolerance_rules():
    from trt_edge.tflite.reader import TflModel
    from trt_edge.tflite.verify import output_tolerances
    empty = TflModel(None, 3, "", [], [], [], [], 1)
    ref = {"a": np.array([0.5, -200.0]), "b": np.full(3, 1e-9), "c": np.array([1.0, 2.0])}
    tols = output_tolerances(empty, ref, {"c": 0.01})
    assert tols["a"].atol == pytest.approx(0.02) and tols["a"].rtol == 0  # 1e-4 of max |ref|
    assert tols["b"].atol == pytest.approx(1e-6)                          # absolute floor
    assert tols["c"].atol == pytest.approx(0.02)                          # 2x LiteRT's own noise
