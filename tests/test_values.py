"""Value tests against independent references for options the default-only tests left unchecked.

Each test here was written against a bug planted on purpose (issue 13) and checked to fail with
it: eq. 16 ignoring ``lambda_inter``, ``ot-mass`` losing its per-frame mass factor, ``cosine``
aggregation with ``abs`` instead of ``relu``, stable later-frame tokens joining the plan's argmin,
per-frame budgets giving the remainder to the first frames. The references are hand-computed
small cases or POT plans in float64, never the code under test.
"""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F_

from anchor_ot import methods
from anchor_ot.methods._frames import spread_counts
from anchor_ot.methods.aot import AOT
from anchor_ot.types import VideoTokens

EXACT = dict(tol=1e-10, max_iter=10000)  # Sinkhorn run to convergence, to compare with POT's plan


def _pot_plan(C: torch.Tensor, a, b, reg: float) -> torch.Tensor:
    return torch.from_numpy(ot.sinkhorn(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                                        C.numpy(), reg=reg, method="sinkhorn_log", stopThr=1e-13,
                                        numItermax=100000))


def _cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F_.normalize(x, dim=-1) @ F_.normalize(y, dim=-1).T


def _clip(seed=5):
    """Two frames of three tokens; the second frame drifts a little, its last token a lot."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(3, 4, generator=g, dtype=torch.float64)
    S = A + 0.1 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    S[2] = torch.randn(4, generator=g, dtype=torch.float64) * 3
    return A, S, VideoTokens(torch.stack([A, S]), (1, 3))


# -- eq. 16: lambda_inter -------------------------------------------------------------------------

@pytest.mark.parametrize("lam", [0.0, 0.4, 2.5])
def test_eq16_lambda_inter_matches_pot(lam):
    A, S, v = _clip()
    out = AOT(retention=0.5, anchor_fraction=1.0, clip_length=2, eps=0.5, lambda_inter=lam, **EXACT)(v)
    p = _pot_plan(1 - _cos(S, A), np.full(3, 1 / 3), np.full(3, 1 / 3), 0.5)
    p = p / p.sum(1, keepdim=True)  # eq. 15
    expected = (A + lam * p.T @ S) / (1 + lam * p.sum(0))[:, None]  # eq. 16
    torch.testing.assert_close(out.tokens, expected, atol=1e-7, rtol=1e-6)
    if lam == 0.0:  # no weight on the later frame: the clip anchors come out unchanged
        torch.testing.assert_close(out.tokens, A, atol=0, rtol=0)


def test_eq16_applied_frame_by_frame_in_clip_order():
    # three frames in one clip: eq. 16 folds frame 2 into A^(1), then frame 3 into the result
    # (Algorithm 2); every later token is merged (budget = the clip anchors only)
    g = torch.Generator().manual_seed(11)
    A = torch.randn(3, 4, generator=g, dtype=torch.float64)
    S2 = A + 0.2 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    S3 = A + 0.2 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    v = VideoTokens(torch.stack([A, S2, S3]), (1, 3))
    lam = 1.7
    out = AOT(retention=3 / 9, anchor_fraction=1.0, clip_length=3, eps=0.5, lambda_inter=lam, **EXACT)(v)
    cur = A.clone()
    for S in (S2, S3):
        p = _pot_plan(1 - _cos(S, A), np.full(3, 1 / 3), np.full(3, 1 / 3), 0.5)  # q against A^(1)
        p = p / p.sum(1, keepdim=True)
        cur = (cur + lam * p.T @ S) / (1 + lam * p.sum(0))[:, None]
    torch.testing.assert_close(out.tokens, cur, atol=1e-7, rtol=1e-6)


# -- eq. 11 variants: ot-mass and cosine ------------------------------------------------------------

def _one_anchor_frame():
    X = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    s = torch.tensor([[3.0, 1.0, 2.0]])
    return X, VideoTokens(X, (1, 3), global_scores=s, local_scores=s)


def test_ot_mass_scales_the_plan_by_the_unselected_count_by_hand():
    # one anchor, two unselected tokens: T = [1/2, 1/2]; "ot-mass" makes each carry one unit,
    # P = 2 T = [1, 1], so the anchor becomes the plain mean of all three (lambda = 1)
    X, v = _one_anchor_frame()
    out = AOT(retention=1 / 3, anchor_fraction=1 / 3, windows=(1, 1), aggregation="ot-mass")(v)
    torch.testing.assert_close(out.tokens[0], X[0].mean(0))
    plain = AOT(retention=1 / 3, anchor_fraction=1 / 3, windows=(1, 1), aggregation="ot")(v)
    torch.testing.assert_close(plain.tokens[0], (X[0, 0] + 0.5 * X[0, 1] + 0.5 * X[0, 2]) / 2)


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_ot_mass_matches_pot_plan(lam):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(1, 6, 5, generator=g, dtype=torch.float64)
    s = torch.tensor([[6.0, 5.0, 1.0, 1.0, 1.0, 1.0]])
    v = VideoTokens(X, (2, 3), global_scores=s, local_scores=s)
    out = AOT(retention=2 / 6, anchor_fraction=2 / 6, anchors="global", aggregation="ot-mass",
              lambda_intra=lam, **EXACT)(v)
    Xa, Xu = X[0, :2], X[0, 2:]
    T = _pot_plan(1 - _cos(Xa, Xu), np.full(2, 0.5), np.full(4, 0.25), 0.1)
    P = 4 * T  # U = 4 unselected tokens, one unit each
    expected = (Xa + lam * P @ Xu) / (1 + lam * P.sum(1, keepdim=True))
    torch.testing.assert_close(out.tokens, expected, atol=1e-7, rtol=1e-6)


def test_ot_mass_factor_is_per_frame():
    # two frames with different unselected counts (budget adjustment gives 2 and 3 anchors of 6):
    # each frame's plan is scaled by its own U_f (4 and 3)
    g = torch.Generator().manual_seed(8)
    X = torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    s = torch.arange(6, 0, -1, dtype=torch.float64).expand(2, 6).clone()
    v = VideoTokens(X, (1, 6), global_scores=s, local_scores=s)
    red = AOT(retention=5 / 12, anchor_fraction=0.5, anchors="global", inter=False, aggregation="ot-mass", **EXACT)
    out = red(v)
    ks = torch.bincount(out.frame_index, minlength=2).tolist()
    assert ks == [2, 3]  # spread_counts(5, 2): the extra one goes to the last frame
    rows = []
    for f, m in enumerate(ks):
        Xa, Xu = X[f, :m], X[f, m:]
        u = 6 - m
        T = _pot_plan(1 - _cos(Xa, Xu), np.full(m, 1 / m), np.full(u, 1 / u), 0.1)
        rows.append((Xa + u * T @ Xu) / (1 + u * T.sum(1, keepdim=True)))
    torch.testing.assert_close(out.tokens, torch.cat(rows), atol=1e-7, rtol=1e-6)


def test_cosine_intra_spreads_by_relu_cos_by_hand():
    # anchors e1, e2; unselected u1 = (1, -1): cos +0.71 / -0.71 -> relu sends all of it to e1
    # (abs would split it); u2 = (1, 2): cos 1/sqrt5, 2/sqrt5 -> shares 1/3, 2/3
    X = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, -1.0], [1.0, 2.0]]], dtype=torch.float64)
    s = torch.tensor([[4.0, 3.0, 1.0, 1.0]])
    v = VideoTokens(X, (1, 4), global_scores=s, local_scores=s)
    out = AOT(retention=0.5, anchor_fraction=0.5, anchors="global", aggregation="cosine")(v)
    e1, e2, u1, u2 = X[0]
    a1 = (e1 + u1 + u2 / 3) / (1 + 1 + 1 / 3)
    a2 = (e2 + 2 * u2 / 3) / (1 + 2 / 3)
    torch.testing.assert_close(out.tokens, torch.stack([a1, a2]))
    assert out.mass.tolist() == [2.0, 2.0]  # hard assignment: each token to its most similar anchor
    assert out.assignment.tolist() == [0, 1, 0, 1]


def test_cosine_inter_spreads_by_relu_cos_against_numpy():
    # one clip of two frames, every token an anchor; frame 2 is merged into frame 1's anchors
    # with weights relu(cos) normalized per token (eq. 16 with cosine weights)
    A = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    S = np.array([[1.0, -0.8, 0.1], [-0.3, 1.0, 0.5], [0.2, 0.4, -1.0]])
    v = VideoTokens(torch.from_numpy(np.stack([A, S])), (1, 3))
    out = AOT(retention=0.5, anchor_fraction=1.0, clip_length=2, aggregation="cosine", lambda_inter=1.5)(v)
    cos = (S / np.linalg.norm(S, axis=1, keepdims=True)) @ (A / np.linalg.norm(A, axis=1, keepdims=True)).T
    W = np.maximum(cos, 0)
    W = W / W.sum(1, keepdims=True)
    expected = (A + 1.5 * W.T @ S) / (1 + 1.5 * W.sum(0))[:, None]
    np.testing.assert_allclose(out.tokens.numpy(), expected, rtol=1e-12, atol=1e-12)


# -- stable later-frame tokens join the anchor of the plan's argmax ----------------------------------

def test_stable_tokens_join_plan_argmax_anchor_at_defaults():
    A, S, v = _clip()
    out = AOT(retention=0.5, anchor_fraction=1.0, clip_length=2, eps=0.5, **EXACT)(v)
    p = _pot_plan(1 - _cos(S, A), np.full(3, 1 / 3), np.full(3, 1 / 3), 0.5)
    target = p.argmax(1)
    assert target.tolist() != p.argmin(1).tolist()  # the case separates argmax from argmin
    assert out.assignment.tolist() == [0, 1, 2] + target.tolist()
    assert out.mass.tolist() == torch.bincount(torch.cat([torch.arange(3), target]), minlength=3).float().tolist()


def test_hard_inter_merges_into_plan_argmax_anchor_by_value():
    # "hard": each stable token is averaged into the anchor of its plan argmax, weighted by mass
    A, S, v = _clip(seed=9)
    out = AOT(retention=0.5, anchor_fraction=1.0, clip_length=2, eps=0.5, aggregation="hard", **EXACT)(v)
    p = _pot_plan(1 - _cos(S, A), np.full(3, 1 / 3), np.full(3, 1 / 3), 0.5)
    target = p.argmax(1)
    expected = A.clone()
    for j in range(3):
        members = S[target == j]
        expected[j] = (A[j] + members.sum(0)) / (1 + members.shape[0])
    torch.testing.assert_close(out.tokens, expected, atol=1e-12, rtol=1e-12)


# -- per-frame budgets spread the remainder evenly ------------------------------------------------

@pytest.mark.parametrize("total,parts,expected", [
    (10, 4, [2, 3, 2, 3]),
    (13, 4, [3, 3, 3, 4]),
    (7, 7, [1] * 7),
    (3, 5, [0, 1, 0, 1, 1]),
    (38, 4, [9, 10, 9, 10]),
    (0, 3, [0, 0, 0]),
])
def test_spread_counts_by_hand(total, parts, expected):
    assert spread_counts(total, parts).tolist() == expected


@pytest.mark.parametrize("name", ["pool", "random", "visionzip"])
def test_per_frame_methods_spread_the_remainder(name):
    # K = 38 over F = 4 frames of 4x4: 9 each plus 2 extra, to frames 1 and 3 (not 0 and 1)
    F, h, w = 4, 4, 4
    g = torch.Generator().manual_seed(0)
    v = VideoTokens(torch.randn(F, h * w, 8, generator=g), (h, w), global_scores=torch.rand(F, h * w, generator=g))
    red = methods.get(name, retention=38 / 64)
    out = red(v)
    assert torch.bincount(out.frame_index, minlength=F).tolist() == [9, 10, 9, 10]


def test_visionzip_split_by_hand():
    red = methods.get("visionzip", retention=38 / 64)
    dominant, contextual = red.split(4, (4, 4))
    # floor(54/64 * k) dominant of k = 9, 10, 9, 10
    assert dominant.tolist() == [7, 8, 7, 8]
    assert contextual.tolist() == [2, 2, 2, 2]


def test_eq11_with_a_frame_kept_whole_and_one_unselected_token_by_hand():
    # K = 5 of 2 x 3 without the inter step: anchors per frame spread_counts(5, 2) = [2, 3], so
    # frame 1 is kept whole (no unselected token: its plan must be ignored) and frame 0 has one
    # unselected token, which the marginals force to split 1/2 : 1/2 over its two anchors:
    # A_j = (x_j + x_u / 2) / (1 + 1/2) (eq. 10-11, lambda = 1)
    g = torch.Generator().manual_seed(4)
    X = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    s = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    v = VideoTokens(X, (1, 3), global_scores=s, local_scores=s)
    out = AOT(retention=5 / 6, anchors="global", inter=False, tol=1e-12, max_iter=1000)(v)
    expected = torch.cat([(X[0, :2] + X[0, 2] / 2) / 1.5, X[1]])
    torch.testing.assert_close(out.tokens, expected, atol=1e-12, rtol=1e-12)
    assert out.source_index.tolist() == [0, 1, 3, 4, 5]
    assert out.mass.tolist() == [2.0, 1.0, 1.0, 1.0, 1.0] or out.mass.tolist() == [1.0, 2.0, 1.0, 1.0, 1.0]


def test_intra_sinkhorn_settings_and_diagnostics_are_passed_through():
    # eps and max_iter reach the intra-frame solve (a cap of 3 iterations is hit), the solve is
    # quiet (diagnostics go to info, no SinkhornNotConverged warning), and info reports it
    import warnings

    g = torch.Generator().manual_seed(3)
    X = torch.randn(1, 6, 5, generator=g, dtype=torch.float64)
    s = torch.tensor([[6.0, 5.0, 1.0, 1.0, 1.0, 1.0]])
    v = VideoTokens(X, (2, 3), global_scores=s, local_scores=s)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = AOT(retention=2 / 6, anchor_fraction=2 / 6, anchors="global", eps=0.02, max_iter=3, tol=1e-12)(v)
    assert out.info["intra_sinkhorn_iters"] == 3
    assert out.info["intra_converged"] is False
    assert out.info["intra_method"] in ("scaling", "log")
    Xa, Xu = X[0, :2], X[0, 2:]
    from anchor_ot.ot import sinkhorn
    ref = sinkhorn((1 - _cos(Xa, Xu))[None], eps=0.02, max_iter=3, tol=1e-12, warn=False)
    assert out.info["intra_marginal_error"] == pytest.approx(float(ref.marginal_error.max()), rel=1e-9)
    T = ref.plan[0]
    torch.testing.assert_close(out.tokens, (Xa + T @ Xu) / (1 + T.sum(1, keepdim=True)), atol=1e-12, rtol=1e-10)


def test_hard_intra_merges_by_plan_argmax_not_nearest_anchor():
    # "hard" follows the plan: with uniform marginals and two anchors, the balanced plan sends
    # some tokens to the anchor that is NOT their nearest; hard merging must follow the plan
    g = torch.Generator().manual_seed(12)
    X = torch.randn(1, 8, 3, generator=g, dtype=torch.float64)
    X[0, 2:] = X[0, 0] + 0.3 * torch.randn(6, 3, generator=g, dtype=torch.float64)  # all near anchor 0
    s = torch.tensor([[8.0, 7.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    v = VideoTokens(X, (1, 8), global_scores=s, local_scores=s)
    out = AOT(retention=2 / 8, anchor_fraction=2 / 8, anchors="global", aggregation="hard", **EXACT)(v)
    Xa, Xu = X[0, :2], X[0, 2:]
    T = _pot_plan(1 - _cos(Xa, Xu), np.full(2, 0.5), np.full(6, 1 / 6), 0.1)
    target = T.argmax(0)
    assert target.tolist() != _cos(Xa, Xu).argmax(0).tolist()  # the plan and the nearest anchor differ
    expected = torch.stack([(Xa[j] + Xu[target == j].sum(0)) / (1 + int((target == j).sum())) for j in range(2)])
    torch.testing.assert_close(out.tokens, expected, atol=1e-12, rtol=1e-10)
