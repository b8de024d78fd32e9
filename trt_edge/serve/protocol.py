"""The KServe v2 inference request/response bodies: JSON tensors and Triton's binary extension.

Pure functions over bytes (no HTTP framework here):

- :func:`decode_body` undoes ``Content-Encoding: gzip|deflate`` with the size limit applied to the
  *decompressed* size, reading no more than the limit (a "zip bomb" costs at most the limit);
- :func:`parse_infer_request` splits the JSON header from the binary section
  (``Inference-Header-Content-Length``), checks every shape, size and nesting depth before it
  allocates, and returns typed tensors (binary inputs are zero-copy views of the body);
- :func:`encode_infer_response` writes the response JSON and, for outputs asked for as binary,
  the binary section (little-endian, row-major; BYTES as 4-byte little-endian length + bytes).

Every refusal is a :class:`ProtocolError` with the HTTP status Triton uses and a message that says
what to fix.
"""
from __future__ import annotations

import dataclasses
import json
import math
import struct
import zlib
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError

DEFAULT_MAX_INPUT_SIZE = 64 * 1024 * 1024    # Triton's --http-max-input-size default
MAX_JSON_DEPTH = 100                         # Triton's HTTP_MAX_JSON_NESTING_DEPTH
HEADER_LENGTH = "inference-header-content-length"

WIRE_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}


_WIRE_NAMES: dict[np.dtype, str] = {}


def wire_name(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    name = _WIRE_NAMES.get(dtype)
    if name is not None:
        return name
    if dtype == object or dtype.kind in "SU":
        name = "BYTES"
    else:
        name = next((n for n, d in WIRE_DTYPES.items() if d != object and d == dtype.newbyteorder("<")), "")
        if not name:
            raise InvalidInputError(f"numpy dtype {dtype} has no KServe v2 datatype.")
    _WIRE_NAMES[dtype] = name
    return name


class ProtocolError(InvalidInputError):
    """A request the protocol refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
    max_input_size: int = DEFAULT_MAX_INPUT_SIZE
    max_json_depth: int = MAX_JSON_DEPTH


@dataclasses.dataclass(frozen=True)
class RequestInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclasses.dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclasses.dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: tuple[RequestInput, ...]
    outputs: tuple[RequestedOutput, ...] | None   # None: all outputs
    binary_output: bool                           # "binary_data_output" default for outputs
    parameters: dict[str, Any]


# ---- body ----------------------------------------------------------------------------------------

def decode_body(raw: bytes, content_encoding: str | None, limits: Limits) -> bytes:
    """The request body after undoing ``Content-Encoding`` (identity, gzip or deflate)."""
    enc = (content_encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        if len(raw) > limits.max_input_size:
            raise _too_large(len(raw), limits)
        return raw
    if enc not in ("gzip", "deflate"):
        raise ProtocolError(f"Unsupported Content-Encoding '{content_encoding}': send the body "
                            "uncompressed, gzip or deflate.", status=501)
    # wbits 32+15: zlib or gzip header, detected (clients differ in what "deflate" means).
    d = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS if enc == "deflate" else 16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, limits.max_input_size + 1)
        if len(out) > limits.max_input_size or d.unconsumed_tail:
            raise _too_large(len(out), limits, decompressed=True)
        out += d.flush()
    except zlib.error as exc:
        raise ProtocolError(f"The {enc} request body could not be decompressed ({exc}); send a "
                            f"complete {enc} stream or an uncompressed body.") from None
    if not d.eof:
        raise ProtocolError(f"The {enc} request body is truncated (the stream has no end); send the "
                            "whole compressed body.")
    if len(out) > limits.max_input_size:
        raise _too_large(len(out), limits, decompressed=True)
    return out


def _too_large(size: int, limits: Limits, decompressed: bool = False) -> ProtocolError:
    what = "decompressed request body" if decompressed else "request body"
    more = "more than " if decompressed else ""
    return ProtocolError(f"The {what} is {more}{size} bytes, which exceeds the maximum allowed input size "
                         f"of {limits.max_input_size} bytes. Use --http-max-input-size to increase the "
                         "limit.")


def _json_depth_ok(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return False
        children = value.values() if type(value) is dict else value
        nested = [v for v in children if type(v) is list or type(v) is dict]
        if nested:
            if depth + 1 > limit:
                return False
            stack += [(v, depth + 1) for v in nested]
    return True


def parse_json(text: bytes, limits: Limits) -> Any:
    try:
        obj = json.loads(text)
    except RecursionError:
        obj = None
        deep = True
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"failed to parse the request JSON buffer: {exc}. Send a valid JSON "
                            "object.") from None
    else:
        # Depth <= the number of opening brackets: a cheap bound that settles most headers.
        opened = text.count(b"[") + text.count(b"{") if isinstance(text, bytes) else limits.max_json_depth + 1
        deep = opened > limits.max_json_depth and not _json_depth_ok(obj, limits.max_json_depth)
    if deep:
        raise ProtocolError(f"JSON nesting depth exceeds maximum allowed limit ({limits.max_json_depth}).")
    return obj


def header_length(value: str | None, body_length: int) -> int | None:
    """Parse ``Inference-Header-Content-Length`` (None when absent)."""
    if value is None:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        raise ProtocolError(f"Unable to parse Inference-Header-Content-Length, got: {value!r}; give "
                            "the byte length of the JSON header as a decimal integer.") from None
    if not -2**31 <= n < 2**31:
        raise ProtocolError("Unable to parse Inference-Header-Content-Length, value is out of range "
                            f"[ {-2**31}, {2**31 - 1} ], got: {value}")
    if n < 0 or n > body_length:
        raise ProtocolError(f"inference header size should be in range (0, {body_length}), got: {value}")
    return n


# ---- request -------------------------------------------------------------------------------------

def _shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise ProtocolError(f"input '{name}': 'shape' must be a list of integers, got {value!r}.")
    if any(d < 0 for d in value):
        raise ProtocolError(f"input '{name}': shape {value} has a negative dimension; every dimension "
                            "must be >= 0.")
    return tuple(value)


def _element_count(shape: tuple[int, ...], name: str, itemsize: int, limits: Limits) -> int:
    count = 1
    for d in shape:  # stop as soon as it passes the limit: no overflow, no allocation
        count *= d
        if count * itemsize > limits.max_input_size:
            raise ProtocolError(f"input '{name}' with shape {list(shape)} would take more than the maximum "
                                f"allowed input size of {limits.max_input_size} bytes. Use "
                                "--http-max-input-size to increase the limit.")
    return count


def _bytes_elements(buf: memoryview, count: int, name: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    pos, n = 0, len(buf)
    for i in range(count):
        if pos + 4 > n:
            raise ProtocolError(f"input '{name}': BYTES data ends after {i} of {count} elements; each "
                                "element is a 4-byte little-endian length followed by that many bytes.")
        (length,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + length > n:
            raise ProtocolError(f"input '{name}': BYTES element {i} claims {length} bytes but only "
                                f"{n - pos} remain.")
        out[i] = bytes(buf[pos:pos + length])
        pos += length
    if pos != n:
        raise ProtocolError(f"input '{name}': {n - pos} bytes left over after {count} BYTES elements; "
                            "binary_data_size must cover exactly the elements of the shape.")
    return out


def _json_tensor(data: Any, name: str, datatype: str, shape: tuple[int, ...], count: int) -> np.ndarray:
    dtype = WIRE_DTYPES[datatype]
    if not isinstance(data, list):
        data = [data]
    try:
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=object).reshape(-1)
            arr = np.empty(flat.size, dtype=object)
            for i, v in enumerate(flat):
                if not isinstance(v, str):
                    raise ValueError(f"element {i} is {type(v).__name__}, not a string")
                arr[i] = v.encode("utf-8")
        else:
            arr = np.asarray(data, dtype=dtype).reshape(-1)
            if datatype != "BOOL" and dtype.kind in "iu":
                ref = np.asarray(data, dtype=np.float64).reshape(-1)
                if not np.array_equal(ref, arr):
                    raise ValueError("values are not integers in the datatype's range")
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(f"input '{name}': 'data' cannot be read as {datatype} ({exc}); give a flat or "
                            "nested list of values of that type.") from None
    if arr.size != count:
        raise ProtocolError(f"unexpected number of elements for input '{name}': shape {list(shape)} needs "
                            f"{count}, 'data' has {arr.size}.")
    return arr.reshape(shape)


def parse_infer_request(body: bytes, header_len: int | None, limits: Limits) -> InferRequest:
    """Parse an inference request body (JSON, or JSON + binary section)."""
    if header_len == 0:
        raise ProtocolError("Inference-Header-Content-Length: 0 (a raw binary request without a JSON "
                            "header) is not supported; send the JSON header with binary_data_size.")
    json_part = body if header_len is None else body[:header_len]
    req = parse_json(json_part, limits)
    if not isinstance(req, dict):
        raise ProtocolError("The request body must be a JSON object with an 'inputs' list.")
    inputs_json = req.get("inputs")
    if not isinstance(inputs_json, list) or not inputs_json:
        raise ProtocolError("The request has no 'inputs' list; give one entry per model input.")
    binary = memoryview(body)[len(json_part):] if header_len is not None else memoryview(b"")
    offset = 0
    inputs: list[RequestInput] = []
    seen: set[str] = set()
    for entry in inputs_json:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ProtocolError("Each entry of 'inputs' must be an object with 'name', 'shape' and "
                                "'datatype'.")
        name = entry["name"]
        if name in seen:
            raise ProtocolError(f"input '{name}' is given more than once; give each input once.")
        seen.add(name)
        datatype = entry.get("datatype")
        if datatype not in WIRE_DTYPES:
            raise ProtocolError(f"input '{name}': datatype {datatype!r} is not supported; use one of "
                                f"{', '.join(WIRE_DTYPES)}.")
        shape = _shape(entry.get("shape"), name)
        itemsize = 1 if datatype == "BYTES" else WIRE_DTYPES[datatype].itemsize
        count = _element_count(shape, name, itemsize, limits)
        params = entry.get("parameters") or {}
        if not isinstance(params, dict):
            raise ProtocolError(f"input '{name}': 'parameters' must be an object.")
        size = params.get("binary_data_size")
        if size is not None:
            if header_len is None:
                raise ProtocolError(f"input '{name}' has binary_data_size but the request has no "
                                    "Inference-Header-Content-Length header; send it with the byte "
                                    "length of the JSON part.")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"input '{name}': binary_data_size must be an integer >= 0, got {size!r}.")
            if offset + size > len(binary):
                raise ProtocolError(f"unexpected size for input '{name}', expecting {size} bytes but only "
                                    f"{len(binary) - offset} remain in the binary section.")
            chunk = binary[offset:offset + size]
            offset += size
            if datatype == "BYTES":
                arr = _bytes_elements(chunk, count, name).reshape(shape)
            else:
                want = count * itemsize
                if size != want:
                    raise ProtocolError(f"unexpected size for input '{name}', expecting {want} bytes for "
                                        f"shape {list(shape)} of {datatype}, got binary_data_size {size}.")
                arr = np.frombuffer(chunk, dtype=WIRE_DTYPES[datatype]).reshape(shape)
        else:
            if "data" not in entry:
                raise ProtocolError(f"input '{name}' has neither 'data' nor binary_data_size.")
            arr = _json_tensor(entry["data"], name, datatype, shape, count)
        inputs.append(RequestInput(name, datatype, shape, arr))
    if offset != len(binary):
        raise ProtocolError(f"unexpected additional input data: {len(binary) - offset} bytes after the "
                            "inputs' binary_data_size; sizes must add up to the binary section.")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("'parameters' must be an object.")
    binary_output = bool(params.get("binary_data_output", False))
    outputs = None
    if req.get("outputs") is not None:
        if not isinstance(req["outputs"], list):
            raise ProtocolError("'outputs' must be a list of objects with a 'name'.")
        outs, names = [], set()
        for o in req["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise ProtocolError("Each entry of 'outputs' must be an object with a 'name'.")
            if o["name"] in names:
                raise ProtocolError(f"output '{o['name']}' is requested more than once; ask for each "
                                    "output once.")
            names.add(o["name"])
            op = o.get("parameters") or {}
            if not isinstance(op, dict):
                raise ProtocolError(f"output '{o['name']}': 'parameters' must be an object.")
            if op.get("classification"):
                raise ProtocolError(f"output '{o['name']}': the classification extension is not "
                                    "supported by trt-edge serve; request the raw output.")
            outs.append(RequestedOutput(o["name"], bool(op.get("binary_data", binary_output))))
        outputs = tuple(outs)
    rid = req.get("id")
    return InferRequest(id=None if rid is None else str(rid), inputs=tuple(inputs), outputs=outputs,
                        binary_output=binary_output, parameters=params)


# ---- response ------------------------------------------------------------------------------------

def _bytes_payload(arr: np.ndarray) -> bytes:
    parts = []
    for v in arr.reshape(-1):
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def _json_values(arr: np.ndarray) -> list[Any]:
    flat = arr.reshape(-1)
    if flat.dtype == object or flat.dtype.kind in "SU":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return [None if not math.isfinite(v) else v for v in flat.tolist()]  # JSON has no NaN/inf
    return flat.tolist()


def encode_infer_response(model_name: str, model_version: str, request_id: str | None,
                          outputs: Sequence[tuple[str, np.ndarray, bool]]) -> tuple[bytes, int | None]:
    """Body and, when any output is binary, the JSON header length for
    ``Inference-Header-Content-Length`` (None: plain JSON)."""
    entries, chunks = [], []
    for name, arr, binary in outputs:
        entry: dict[str, Any] = {"name": name, "datatype": wire_name(arr.dtype), "shape": list(arr.shape)}
        if binary:
            if arr.dtype == object or arr.dtype.kind in "SU":
                payload = _bytes_payload(arr)
            else:
                payload = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(payload)}
            chunks.append(payload)
        else:
            entry["data"] = _json_values(arr)
        entries.append(entry)
    head: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        head["id"] = request_id
    head["outputs"] = entries
    header = json.dumps(head, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
