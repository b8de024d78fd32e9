"""Buffer planning maths of the pycuda runtime (pure Python, CPU tier)."""
from __future__ import annotations

import numpy as np
import pytest

from trt_edge.errors import InvalidInputError
from trt_edge.runtime.cuda import (TENSOR_ALIGNMENT, TensorBinding, align_up, max_shape, plan_buffers,
                                   volume)


def test_volume_align_max_shape():
    assert volume((8, 3, 224, 224)) == 8 * 3 * 224 * 224 and volume(()) == 1 and volume((0, 4)) == 0
    with pytest.raises(InvalidInputError, match="dynamic"):
        volume((-1, 3))
    assert [align_up(n) for n in (0, 1, 256, 257)] == [0, 256, 256, 512]
    assert align_up(5, 4) == 8
    with pytest.raises(InvalidInputError):
        align_up(5, 3)
    assert max_shape([(1, 10), (4, 2), (2, 7)]) == (4, 10)
    with pytest.raises(InvalidInputError):
        max_shape([(1, 2), (1, 2, 3)])


def test_plan_buffers_sizes_at_profile_maximum():
    f32, f16, i64 = np.dtype("float32"), np.dtype("float16"), np.dtype("int64")
    plan = plan_buffers([
        TensorBinding("input", f32, True, (32, 3, 224, 224)),
        TensorBinding("ids", i64, True, (4, 7)),           # 224 bytes -> one 256-byte slot
        TensorBinding("logits", f16, False, (32, 1000)),
        TensorBinding("empty", f32, False, (0, 5)),        # zero-size output still gets an address
        TensorBinding("boxes", f32, False, None),          # data-dependent: allocator's job
    ])
    assert plan.nbytes["input"] == 32 * 3 * 224 * 224 * 4
    assert plan.nbytes["ids"] == 256 and plan.nbytes["empty"] == TENSOR_ALIGNMENT
    assert plan.nbytes["logits"] == align_up(32 * 1000 * 2)
    assert "boxes" not in plan.nbytes and plan.data_dependent_outputs == ["boxes"]
    assert all(n % TENSOR_ALIGNMENT == 0 for n in plan.nbytes.values())
    assert plan.total_device_bytes == sum(plan.nbytes.values())
    # the check the runner does before set_input_shape
    assert plan.check_fits("input", (8, 3, 224, 224)) == 8 * 3 * 224 * 224 * 4
    with pytest.raises(InvalidInputError, match="largest profile"):
        plan.check_fits("input", (64, 3, 224, 224))


def test_plan_buffers_rejects_bad_bindings():
    f32 = np.dtype("float32")
    with pytest.raises(InvalidInputError, match="twice"):
        plan_buffers([TensorBinding("x", f32, True, (1,)), TensorBinding("x", f32, False, (1,))])
    with pytest.raises(InvalidInputError, match="optimization profile"):
        plan_buffers([TensorBinding("x", f32, True, None)])


def _loadable(name: str) -> bool:
    import ctypes

    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_loadable("libcuda.so.1"), reason="an NVIDIA driver is present: gpu tier covers graphs")
def test_cuda_graphs_without_a_driver_fail_clearly():
    from trt_edge.errors import RunnerError
    from trt_edge.runtime.cuda import _LibCuda

    with pytest.raises(RunnerError, match="CUDA graphs need an NVIDIA driver"):
        _LibCuda.get()


def test_pycuda_resources_without_pycuda_name_the_extra(monkeypatch):
    import sys

    from trt_edge.errors import MissingDependencyError
    from trt_edge.runtime.cuda import CudaContext, DeviceBuffer, HostBuffer, Stream

    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    for make in (lambda: DeviceBuffer(16), lambda: HostBuffer(16), Stream, CudaContext):
        with pytest.raises(MissingDependencyError, match=r"trt-edge\[tensorrt\]"):
            make()
