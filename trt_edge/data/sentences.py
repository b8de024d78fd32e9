"""Sentence-similarity data from gensim's test set (the Lee corpus).

``lee.cor`` holds 50 news documents; ``similarities0-1.txt`` the mean human
similarity of every pair (upper triangle of a 50x50 matrix). The metric for a
sentence encoder is the Pearson correlation between the cosine similarity of
its embeddings and these human scores. ``lee_background.cor`` (300 other
documents) is the calibration text: disjoint from the evaluation set.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._locate import package_dir


def _test_data() -> Path:
    return package_dir("gensim") / "test" / "test_data"


def _read_lines(name: str) -> list[str]:
    text = (_test_data() / name).read_text(encoding="utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def lee_documents() -> list[str]:
    return _read_lines("lee.cor")


def similarity_pairs() -> tuple[list[str], np.ndarray, np.ndarray]:
    """(documents, pairs [P, 2] of indices, human scores [P]) for all 1,225 pairs."""
    docs = lee_documents()
    matrix = np.loadtxt(_test_data() / "similarities0-1.txt", dtype=np.float64)
    if matrix.shape != (len(docs), len(docs)):
        raise ValueError(f"similarity matrix {matrix.shape} does not match {len(docs)} documents")
    i, j = np.triu_indices(len(docs), k=1)
    return docs, np.stack([i, j], axis=1), matrix[i, j]


def calibration_sentences(n: int = 128, seed: int = 0) -> list[str]:
    """``n`` background documents (not in the evaluation set), in a seeded random order."""
    lines = _read_lines("lee_background.cor")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lines))[:n]
    return [lines[k] for k in order]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def similarity_correlation(embeddings: np.ndarray, pairs: np.ndarray, human: np.ndarray) -> float:
    """Pearson correlation of embedding cosine similarity with the human scores."""
    e = np.asarray(embeddings, np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    cos = np.sum(e[pairs[:, 0]] * e[pairs[:, 1]], axis=1)
    return pearson(cos, human)
