"""Format choice by measured speed (trt_edge.sparse.select)."""
from __future__ import annotations

import numpy as np
import pytest

from trt_edge.errors import InvalidInputError
from trt_edge.sparse import formats
from trt_edge.sparse.select import SelectOptions, choose_format

from sparse_helpers import random_sparse


def test_choice_follows_the_timer(fresh_rng):
    """The fastest measured candidate wins; candidates with poor block fill are not timed."""
    w = random_sparse(fresh_rng, 64, 64, 0.2, block=(4, 4))  # 4x4-block structured
    fake_seconds = {"csr": 3.0, (1, 4): 2.0, (4, 4): 1.0, "dense": 5.0}
    timed = []

    def timer(weight, x, dense):  # stands in for the clock only; the weights are real conversions
        if weight is None:
            key = "dense"
        else:
            key = "csr" if weight.format == "csr" else weight.block
            assert np.array_equal(formats.to_dense(weight), w)
        timed.append(key)
        return fake_seconds.get(key, 4.0)

    choice = choose_format(w, SelectOptions(blocks=[(1, 4), (4, 4), (8, 8)], min_fill=0.9), timer=timer)
    assert (choice.format, choice.block, choice.label) == ("bsr", (4, 4), "bsr4x4")
    assert "bsr8x8" in choice.skipped and (8, 8) not in timed  # 8x8 blocks would be mostly zeros
    assert set(choice.seconds) == {"csr", "bsr1x4", "bsr4x4", "dense"}


def test_dense_wins_when_faster(fresh_rng):
    w = random_sparse(fresh_rng, 16, 16, 0.9)
    choice = choose_format(w, SelectOptions(blocks=[]), timer=lambda wt, x, d: 1.0 if wt is None else 2.0)
    assert choice.format == "dense"


def test_real_timer_on_block_pruned_matrix(sparse_cpu, fresh_rng):
    """With the native kernel's real timings a 4x4-block matrix at 90% never picks a block shape
    that mostly stores zeros, and every timing is positive."""
    w = random_sparse(fresh_rng, 512, 512, 0.1, block=(4, 4))
    choice = choose_format(w, SelectOptions(batch=4, repeats=3, blocks=(*formats.BLOCK_SHAPES, (8, 8))))
    assert all(t > 0 for t in choice.seconds.values())
    assert choice.format in ("csr", "bsr", "dense")
    for label in ("bsr1x4", "bsr4x1", "bsr4x4", "bsr2x2", "bsr2x4"):
        assert label in choice.seconds  # full-fill shapes are all timed
    assert "bsr8x8" in choice.skipped  # an 8x8 block would hold ~70% zeros


def test_options_validate():
    with pytest.raises(InvalidInputError):
        SelectOptions(batch=0)
    with pytest.raises(InvalidInputError):
        SelectOptions(min_fill=2.0)
