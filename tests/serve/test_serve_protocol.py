"""The request/response bodies without HTTP: binary extension, BYTES, limits, decompression."""
from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

from trt_edge.serve.protocol import (Limits, ProtocolError, decode_body, encode_infer_response, header_length,
                                     parse_infer_request)

LIMITS = Limits(max_input_size=1 << 20)


def _binary(entries, payloads):
    head = json.dumps({"inputs": entries}).encode()
    return head + b"".join(payloads), len(head)


def test_binary_inputs_are_little_endian_views_and_bytes_are_length_prefixed():
    x = np.arange(6, dtype="<i4").reshape(2, 3)
    words = [b"robot", b"", "äbc".encode()]
    packed = b"".join(struct.pack("<I", len(w)) + w for w in words)
    body, hl = _binary([{"name": "x", "shape": [2, 3], "datatype": "INT32", "parameters": {"binary_data_size": 24}},
                        {"name": "s", "shape": [3], "datatype": "BYTES",
                         "parameters": {"binary_data_size": len(packed)}}], [x.tobytes(), packed])
    req = parse_infer_request(body, hl, LIMITS)
    np.testing.assert_array_equal(req.inputs[0].data, x)
    assert list(req.inputs[1].data) == words and req.outputs is None


def test_response_round_trips_binary_and_json_outputs():
    y = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    s = np.array([b"a", b"bcd"], dtype=object)
    body, hl = encode_infer_response("m", "1", "id1", [("y", y, True), ("s", s, True), ("j", y, False)])
    head = json.loads(body[:hl])
    assert head["id"] == "id1" and head["outputs"][0]["parameters"]["binary_data_size"] == 24
    assert np.array_equal(np.frombuffer(body[hl:hl + 24], "<f4").reshape(2, 3), y)
    assert body[hl + 24:] == struct.pack("<I", 1) + b"a" + struct.pack("<I", 3) + b"bcd"
    np.testing.assert_allclose(head["outputs"][2]["data"], y.reshape(-1), rtol=1e-7)
    plain, none = encode_infer_response("m", "1", None, [("y", y, False)])
    assert none is None and "id" not in json.loads(plain)


@pytest.mark.parametrize("value, match", [("12x", "Unable to parse"), (str(2**31), "out of range"),
                                          ("-1", "should be in range"), ("101", "should be in range")])
def test_header_length_is_checked(value, match):
    with pytest.raises(ProtocolError, match=match):
        header_length(value, 100)
    assert header_length(None, 100) is None and header_length("100", 100) == 100


def test_decompression_stops_at_the_limit_without_inflating_the_rest():
    bomb = gzip.compress(b"\0" * (50 << 20), 1)
    with pytest.raises(ProtocolError, match="exceeds the maximum allowed input size"):
        decode_body(bomb, "gzip", LIMITS)
    assert decode_body(gzip.compress(b"{}"), "gzip", LIMITS) == b"{}"
    with pytest.raises(ProtocolError) as e:
        decode_body(b"{}", "zstd", LIMITS)
    assert e.value.status == 501


@pytest.mark.parametrize("entry, match", [
    ({"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 300]}, "cannot be read as INT8"),
    ({"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2.5]}, "cannot be read as INT32"),
    ({"name": "x", "shape": [1], "datatype": "BF16", "data": [1]}, "not supported"),
    ({"name": "x", "shape": [2, "a"], "datatype": "FP32", "data": [1]}, "list of integers"),
    ({"name": "x", "shape": [1 << 40, 1 << 40], "datatype": "FP32", "data": [1]}, "maximum allowed input size"),
    ({"name": "x", "shape": [2], "datatype": "BYTES", "data": ["a", 3]}, "not a string"),
])
def test_json_tensors_are_checked_before_use(entry, match):
    with pytest.raises(ProtocolError, match=match):
        parse_infer_request(json.dumps({"inputs": [entry]}).encode(), None, LIMITS)


def test_bytes_elements_must_fill_their_binary_size_exactly():
    packed = struct.pack("<I", 10) + b"short"
    body, hl = _binary([{"name": "s", "shape": [1], "datatype": "BYTES",
                         "parameters": {"binary_data_size": len(packed)}}], [packed])
    with pytest.raises(ProtocolError, match="claims 10 bytes"):
        parse_infer_request(body, hl, LIMITS)
