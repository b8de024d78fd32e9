"""Weight sharing: k-means codebooks per layer, codebook fine-tuning, bit-packed storage.

Each Conv/Linear weight is clustered (1-D k-means, linearly initialised over [min, max], which
Han et al. 2016 found best for keeping the rare large weights) into ``2**bits`` centroids and
replaced by ``codebook[index]``. :func:`finetune_codebooks` then trains the centroids: the
weight is re-parametrised as ``codebook[index]``, so the gradient of each centroid is the sum
of the gradients of the weights that share it (autograd's gather backward), and the indices
stay fixed.

:func:`pack_model` / :func:`save_packed` store a model for over-the-air updates as bit-packed
indices plus float32 codebooks (other tensors, e.g. biases and BatchNorm, as raw float32);
:func:`unpack_state` returns exactly (bit for bit) the dense weights the engine is built from.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._lazy import require
from ..artifacts import atomic_write_bytes
from ..errors import ArtifactError, InvalidInputError
from ._train import TrainOptions, cross_entropy, train

log = logging.getLogger(__name__)
MAGIC = b"TEWS"
FORMAT_VERSION = 1


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(codebook float32 [k], index uint8 [n]) of 1-D k-means with linear initialisation."""
    x = np.asarray(values, np.float64).ravel()
    if x.size == 0:
        raise InvalidInputError("kmeans_1d needs values.")
    lo, hi = float(x.min()), float(x.max())
    centres = np.linspace(lo, hi, k) if hi > lo else np.full(k, lo)
    for _ in range(iterations):
        order = np.argsort(centres, kind="stable")
        c = centres[order]
        idx = order[np.searchsorted((c[1:] + c[:-1]) / 2, x)]
        sums = np.bincount(idx, weights=x, minlength=k)
        counts = np.bincount(idx, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        if np.allclose(new, centres, rtol=0, atol=1e-12):
            break
        centres = new
    codebook = centres.astype(np.float32)
    order = np.argsort(codebook, kind="stable")
    c = codebook[order].astype(np.float64)
    idx = order[np.searchsorted((c[1:] + c[:-1]) / 2, x)]
    return codebook, idx.astype(np.uint8)


def pack_bits(index: np.ndarray, bits: int) -> bytes:
    """Pack ``index`` (values < 2**bits) into ``bits`` bits each, little-endian bit order."""
    if not 1 <= bits <= 8:
        raise InvalidInputError(f"bits must be in 1..8, got {bits}.")
    idx = np.asarray(index, np.uint8).ravel()
    if idx.size and int(idx.max()) >= 1 << bits:
        raise InvalidInputError(f"an index {int(idx.max())} does not fit in {bits} bits.")
    planes = np.unpackbits(idx[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`."""
    flat = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[:count * bits]
    if flat.size != count * bits:
        raise ArtifactError(f"packed data holds {flat.size // max(bits, 1)} indices, {count} expected.")
    planes = np.zeros((count, 8), np.uint8)
    planes[:, :bits] = flat.reshape(count, bits)
    return np.packbits(planes, axis=1, bitorder="little").ravel()


@dataclasses.dataclass
class SharedLayer:
    name: str            # module name (its ``.weight`` is shared)
    shape: tuple[int, ...]
    bits: int
    codebook: np.ndarray  # float32 [2**bits]
    index: np.ndarray     # uint8, weight.size entries

    def dense(self) -> np.ndarray:
        return self.codebook[self.index.astype(np.int64)].reshape(self.shape)


def _targets(model: Any, include: Sequence[str]) -> list[tuple[str, Any]]:
    torch = require("torch")
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))
            and (not include or n in include)]


def share_weights(model: Any, bits: int = 4, include: Sequence[str] = ()) -> list[SharedLayer]:
    """Cluster every Conv/Linear weight of ``model`` (or those named in ``include``) in place."""
    torch = require("torch", "weight sharing")
    if not 1 <= bits <= 8:
        raise InvalidInputError(f"bits must be in 1..8, got {bits}.")
    layers = []
    with torch.no_grad():
        for name, m in _targets(model, include):
            w = m.weight.detach().cpu().numpy()
            codebook, idx = kmeans_1d(w, 1 << bits)
            layer = SharedLayer(name, tuple(w.shape), bits, codebook, idx)
            m.weight.copy_(torch.from_numpy(layer.dense()))
            layers.append(layer)
    if not layers:
        raise InvalidInputError("No Conv/Linear layer matched; nothing to share.")
    return layers


def _codebook_module(layer: SharedLayer) -> Any:
    torch = require("torch")

    class CodebookWeight(torch.nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.codebook = torch.nn.Parameter(torch.from_numpy(layer.codebook.copy()))
            self.register_buffer("index", torch.from_numpy(layer.index.astype(np.int64)).reshape(layer.shape))

        def forward(self, original: Any) -> Any:  # the stored weight is ignored: codebook[index]
            return self.codebook[self.index]

    return CodebookWeight()


def finetune_codebooks(model: Any, layers: list[SharedLayer], loader: Any,
                       options: TrainOptions = TrainOptions(epochs=1, lr=1e-4),
                       loss_fn: Any = cross_entropy, train_others: bool = True) -> float:
    """Train the codebooks (indices fixed) and, with ``train_others``, the unshared parameters
    (biases, BatchNorm); updates ``layers``' codebooks and the model's weights in place."""
    torch = require("torch", "weight sharing")
    parametrize = torch.nn.utils.parametrize
    mods = dict(model.named_modules())
    for layer in layers:
        parametrize.register_parametrization(mods[layer.name], "weight", _codebook_module(layer), unsafe=True)
    try:
        books = [mods[l.name].parametrizations.weight[0].codebook for l in layers]
        shared_ids = {id(mods[l.name].parametrizations.weight.original) for l in layers}
        others = [p for p in model.parameters() if id(p) not in shared_ids and
                  all(p is not b for b in books)] if train_others else []
        for layer in layers:
            mods[layer.name].parametrizations.weight.original.requires_grad_(False)
        loss = train(model, loader, loss_fn, options, parameters=books + others,
                     description="codebook fine-tuning")
        for layer, book in zip(layers, books):
            layer.codebook = book.detach().cpu().numpy().astype(np.float32).copy()
    finally:
        for layer in layers:
            parametrize.remove_parametrizations(mods[layer.name], "weight", leave_parametrized=True)
    with torch.no_grad():  # the dense weights are exactly codebook[index]
        for layer in layers:
            mods[layer.name].weight.requires_grad_(True)
            mods[layer.name].weight.copy_(torch.from_numpy(layer.dense()))
    return loss


# ------------------------------------------------------------------ storage
def pack_model(model: Any, layers: list[SharedLayer]) -> bytes:
    """The model's state as ``TEWS`` bytes: a JSON header then, per tensor, either bit-packed
    indices + float32 codebook (shared weights) or raw little-endian float32 (everything else)."""
    shared = {f"{l.name}.weight": l for l in layers}
    header: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    offset = 0
    for key, tensor in model.state_dict().items():
        arr = tensor.detach().cpu().numpy()
        if key in shared:
            l = shared[key]
            if not np.array_equal(l.dense(), arr):
                raise InvalidInputError(f"'{key}' is no longer codebook[index] (trained after sharing?); "
                                        "re-run share_weights/finetune_codebooks before packing.")
            data = l.codebook.astype("<f4").tobytes() + pack_bits(l.index, l.bits)
            header.append({"name": key, "kind": "shared", "shape": list(arr.shape), "bits": l.bits,
                           "offset": offset, "nbytes": len(data)})
        else:
            data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
            header.append({"name": key, "kind": "raw", "dtype": arr.dtype.str.lstrip("<>|="),
                           "shape": list(arr.shape), "offset": offset, "nbytes": len(data)})
        blobs.append(data)
        offset += len(data)
    head = json.dumps({"version": FORMAT_VERSION, "tensors": header}, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(blobs)


def unpack_state(data: bytes) -> dict[str, np.ndarray]:
    """Dense NumPy state dict from :func:`pack_model` bytes (exact)."""
    if data[:4] != MAGIC:
        raise ArtifactError("Not a trt-edge weight-sharing file (bad magic); create one with save_packed().")
    (n,) = struct.unpack("<I", data[4:8])
    try:
        head = json.loads(data[8:8 + n])
    except ValueError as exc:
        raise ArtifactError(f"Damaged weight-sharing header: {exc}") from exc
    if head.get("version", 0) > FORMAT_VERSION:
        raise ArtifactError(f"Weight-sharing format {head['version']} is newer than this trt-edge reads.")
    base = 8 + n
    out = {}
    for t in head["tensors"]:
        blob = data[base + t["offset"]: base + t["offset"] + t["nbytes"]]
        if len(blob) != t["nbytes"]:
            raise ArtifactError(f"Truncated weight-sharing file at tensor '{t['name']}'.")
        shape = tuple(t["shape"])
        if t["kind"] == "shared":
            k = 1 << t["bits"]
            codebook = np.frombuffer(blob[:4 * k], "<f4").astype(np.float32)
            idx = unpack_bits(blob[4 * k:], t["bits"], int(np.prod(shape)))
            out[t["name"]] = codebook[idx.astype(np.int64)].reshape(shape)
        else:
            out[t["name"]] = np.frombuffer(blob, np.dtype(t["dtype"]).newbyteorder("<")).reshape(shape).copy()
    return out


def save_packed(model: Any, layers: list[SharedLayer], path: str | os.PathLike[str]) -> Path:
    """Write :func:`pack_model` bytes atomically; returns the path."""
    return atomic_write_bytes(path, pack_model(model, layers))


def load_packed(model: Any, path: str | os.PathLike[str]) -> Any:
    """Load a packed file into ``model`` (same architecture); returns the model."""
    torch = require("torch")
    state = unpack_state(Path(path).read_bytes())
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model


def dense_fp32_bytes(model: Any) -> int:
    """Bytes of the model's floating-point state stored as float32 (the baseline of the ratio)."""
    return int(sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point()))
