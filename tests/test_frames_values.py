"""Shared per-frame helpers (methods/_frames.py) by value, from mutation survivors (docs/testing.md)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from anchor_ot import methods
from anchor_ot.methods._frames import check_per_frame_budget, distinctiveness, nearest_kept


def test_distinctiveness_by_numpy():
    g = torch.Generator().manual_seed(0)
    x = 0.1 * (torch.randn(3, 5, 4, generator=g, dtype=torch.float64) + 0.5)  # norms below 1 too
    X = x.numpy()
    mean = X.mean(1, keepdims=True)
    cos = (X * mean).sum(-1) / (np.linalg.norm(X, axis=-1) * np.linalg.norm(mean, axis=-1))
    np.testing.assert_allclose(distinctiveness(x).numpy(), 1 - cos, rtol=0, atol=1e-14)


def test_nearest_kept_needs_a_kept_token():
    with pytest.raises(ValueError, match="^nearest_kept needs at least one kept token$"):
        nearest_kept(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool))


def test_nearest_kept_ties_go_to_the_lower_index():
    # kept tokens 1, 3 and 4 of one frame are identical; every other token is closest to them,
    # so all map to the lowest kept index, 1
    x = torch.tensor([[[1.0, 0.1], [1.0, 0.0], [0.9, 0.2], [1.0, 0.0], [1.0, 0.0], [0.8, -0.1]]])
    keep = torch.tensor([[False, True, False, True, True, False]])
    assert nearest_kept(x, keep).tolist() == [1, 1, 1, 3, 4, 1]


def test_check_per_frame_budget_message_and_boundary():
    check_per_frame_budget("visionzip", 7, 7, (8, 12))  # K == F: one token per frame is feasible
    msg = ("visionzip keeps at least one token per frame, so it needs K >= F = 7 tokens, but the retention "
           "gives K = 3 of 672; use retention >= 1/N = 0.01042 for a 8x12 grid")
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        check_per_frame_budget("visionzip", 3, 7, (8, 12))


def test_visionzip_at_exactly_one_token_per_frame():
    red = methods.get("visionzip", retention=1 / 96)
    assert red.num_kept(7, (8, 12)) == 7
