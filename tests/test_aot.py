"""AOT: paper equations on hand examples, anchors, exact budgets, invariants, errors."""

import itertools

import numpy as np
import ot
import pytest
import torch

from anchor_ot import methods
from anchor_ot.methods.aot import AOT, allocate_anchors, paper_anchor_fraction
from anchor_ot.segment import uniform_segments as uniform_clips
from anchor_ot.types import VideoTokens


def _video(F, h, w, d=16, seed=0, dtype=torch.float32, scores=True):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(F, h * w, d, generator=g).to(dtype)
    if not scores:
        return VideoTokens(X, (h, w))
    return VideoTokens(X, (h, w), global_scores=torch.rand(F, h * w, generator=g),
                       local_scores=torch.rand(F, h * w, generator=g))


def test_eq11_single_anchor_by_hand():
    # one anchor, two unselected tokens: uniform marginals force T = [1/2, 1/2], m = 1
    X = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    v = VideoTokens(X, (1, 3), global_scores=torch.tensor([[3.0, 1.0, 2.0]]), local_scores=torch.tensor([[3.0, 1.0, 2.0]]))
    out = AOT(retention=1 / 3, anchor_fraction=1 / 3, windows=(1, 1))(v)
    expected = (X[0, 0] + 0.5 * X[0, 1] + 0.5 * X[0, 2]) / 2.0  # eq. 11, lambda = 1
    torch.testing.assert_close(out.tokens[0], expected)
    assert out.source_index.tolist() == [0]
    assert out.mass.tolist() == [3.0]
    # lambda_intra scales the context: lambda = 3 -> (x0 + 3 * mean) / (1 + 3)
    out3 = AOT(retention=1 / 3, anchor_fraction=1 / 3, windows=(1, 1), lambda_intra=3.0)(v)
    torch.testing.assert_close(out3.tokens[0], (X[0, 0] + 1.5 * (X[0, 1] + X[0, 2])) / 4.0)


def test_eq11_matches_pot_plan():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(1, 6, 5, generator=g, dtype=torch.float64)
    s = torch.tensor([[6.0, 5.0, 1.0, 1.0, 1.0, 1.0]])
    v = VideoTokens(X, (2, 3), global_scores=s, local_scores=s)
    red = AOT(retention=2 / 6, anchor_fraction=2 / 6, anchors="global", tol=1e-10, max_iter=10000)
    out = red(v)
    Xa, Xu = X[0, :2], X[0, 2:]
    C = 1 - torch.nn.functional.normalize(Xa, dim=-1) @ torch.nn.functional.normalize(Xu, dim=-1).T
    T = torch.from_numpy(ot.sinkhorn(np.full(2, 0.5), np.full(4, 0.25), C.numpy(), reg=0.1,
                                     method="sinkhorn_log", stopThr=1e-13, numItermax=100000))
    m = T.sum(1, keepdim=True)
    expected = (Xa + T @ Xu) / (1 + m)  # eq. 10-11
    torch.testing.assert_close(out.tokens, expected, atol=1e-7, rtol=1e-6)
    # hard assignment follows the plan argmax
    assert out.assignment[2:].tolist() == T.argmax(0).tolist()


def _two_frame_clip(seed=5):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(3, 4, generator=g, dtype=torch.float64)
    S = A + 0.1 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    S[2] = torch.randn(4, generator=g, dtype=torch.float64) * 3  # one token changes a lot
    return A, S, VideoTokens(torch.stack([A, S]), (1, 3))


def test_eq15_16_inter_merge_matches_pot():
    A, S, v = _two_frame_clip()
    red = AOT(retention=0.5, anchor_fraction=1.0, clip_length=2, eps=0.5, tol=1e-10, max_iter=10000)
    assert red.num_kept(2, (1, 3)) == 3  # the clip anchors only: all later tokens merge
    out = red(v)
    C = 1 - torch.nn.functional.normalize(S, dim=-1) @ torch.nn.functional.normalize(A, dim=-1).T
    T = torch.from_numpy(ot.sinkhorn(np.full(3, 1 / 3), np.full(3, 1 / 3), C.numpy(), reg=0.5,
                                     method="sinkhorn_log", stopThr=1e-13, numItermax=100000))
    p = T / T.sum(1, keepdim=True)  # eq. 15
    expected = (A + p.T @ S) / (1 + p.sum(0))[:, None]  # eq. 16, lambda_inter = 1
    torch.testing.assert_close(out.tokens, expected, atol=1e-7, rtol=1e-6)
    assert out.frame_index.tolist() == [0, 0, 0]
    assert out.mass.sum().item() == 6


def test_inter_keeps_lowest_q_token():
    A, S, v = _two_frame_clip()
    out = AOT(retention=4 / 6, anchor_fraction=1.0, clip_length=2, eps=0.5, tol=1e-10, max_iter=10000)(v)
    C = 1 - torch.nn.functional.normalize(S, dim=-1) @ torch.nn.functional.normalize(A, dim=-1).T
    T = torch.from_numpy(ot.sinkhorn(np.full(3, 1 / 3), np.full(3, 1 / 3), C.numpy(), reg=0.5,
                                     method="sinkhorn_log", stopThr=1e-13, numItermax=100000))
    q = (T / T.sum(1, keepdim=True)).amax(1)  # eq. 15
    # room for one later-frame token: the lowest-q one (eq. 15), kept unmerged
    assert out.source_index.tolist() == [0, 1, 2, 3 + int(q.argmin())]
    torch.testing.assert_close(out.tokens[3], S[int(q.argmin())])
    assert out.mass[3].item() == 1.0


def test_balanced_marginals_hide_the_changed_token_from_q():
    # NOTES 9: with uniform marginals on a square problem, mass conservation forces the changed
    # token onto the last free anchor, so its q is high; ranking by max cosine finds it.
    A, S, v = _two_frame_clip()
    by_plan = AOT(retention=4 / 6, anchor_fraction=1.0, clip_length=2)(v)
    by_cos = AOT(retention=4 / 6, anchor_fraction=1.0, clip_length=2, inter_ranking="cosine")(v)
    assert by_cos.source_index.tolist() == [0, 1, 2, 5]
    torch.testing.assert_close(by_cos.tokens[3], S[2])
    assert by_plan.source_index.tolist() != [0, 1, 2, 5]


def _moving_object_video():
    """Static background of four flat regions; a 2x2 object moves right with a new look each frame."""
    g = torch.Generator().manual_seed(0)
    F, h, w, d = 8, 8, 8, 32
    protos = torch.randn(4, d, generator=g)
    quad = ((torch.arange(h)[:, None] // 4) * 2 + torch.arange(w)[None] // 4).reshape(-1)
    X = protos[quad].expand(F, h * w, d).clone() + 0.05 * torch.randn(F, h * w, d, generator=g)
    moving = torch.zeros(F, h, w, dtype=torch.bool)
    for f in range(F):
        moving[f, 3:5, f:f + 2] = True
    moving = moving.reshape(F, h * w)
    X[moving] = torch.randn(int(moving.sum()), d, generator=g) * 2
    return VideoTokens(X, (h, w)), moving


@pytest.mark.parametrize("aggregation", ["hard", "none", "cosine"])
def test_keeps_changing_region_merges_static_background(aggregation):
    v, moving = _moving_object_video()
    # 2 clips x 16 anchors + 12 high-change tokens: room for half the object's later-frame tokens
    red = AOT(retention=44 / 512, anchor_fraction=0.25, clip_length=4, inter_ranking="cosine",
              aggregation=aggregation)
    out = red(v)
    later = out.frame_index % 4 != 0
    kept_later = out.source_index[later]
    assert kept_later.numel() == 12
    assert bool(moving.reshape(-1)[kept_later].all())  # every high-change token is the object
    bg_later = ~moving
    bg_later[[0, 4]] = False
    absorber_frame = out.frame_index[out.assignment.reshape(8, 64)[bg_later]]
    assert bool((absorber_frame % 4 == 0).all())  # background merged into the clip anchors


def test_paper_q_ranking_keeps_the_lowest_eq15_q_tokens():
    # Documented weakness (NOTES 9, docs/benchmarks.md): with uniform marginals the plan's row
    # maxima hardly track change. Checked as a value, not as "does badly": every anchor is kept
    # (anchor_fraction 1, so the intra step is a no-op), q is recomputed with POT for each later
    # frame against its clip's first frame (eq. 15), and the 12 kept later-frame tokens must be
    # 12 lowest-q ones (up to ties); the cosine ranking finds the object, the plan ranking less of it.
    v, moving = _moving_object_video()
    v = VideoTokens(v.tokens.double(), v.grid)  # float64, so that the plans converge to 1e-9
    F, N = 8, 64
    red = AOT(retention=(2 * N + 12) / (F * N), anchor_fraction=1.0, clip_length=4, tol=1e-9, max_iter=20000)
    out = red(v)
    X = v.tokens.double()
    q = torch.full((F, N), float("inf"), dtype=torch.float64)
    for f in range(F):
        if f % 4:
            C = 1 - torch.nn.functional.normalize(X[f], dim=-1) @ torch.nn.functional.normalize(X[f - f % 4], dim=-1).T
            T = torch.from_numpy(ot.sinkhorn(np.full(N, 1 / N), np.full(N, 1 / N), C.numpy(), reg=0.1,
                                             method="sinkhorn", stopThr=1e-9, numItermax=100000))
            q[f] = (T / T.sum(1, keepdim=True)).amax(1)
    later = out.frame_index % 4 != 0
    kept = torch.zeros(F * N, dtype=torch.bool)
    kept[out.source_index[later]] = True
    q = q.reshape(-1)
    assert int(kept.sum()) == 12
    assert float(q[kept].max()) <= float(q[~kept].min()) + 1e-6
    by_cos = AOT(retention=(2 * N + 12) / (F * N), anchor_fraction=1.0, clip_length=4, inter_ranking="cosine")(v)
    cos_kept = by_cos.source_index[by_cos.frame_index % 4 != 0]
    assert bool(moving.reshape(-1)[cos_kept].all())
    assert int(moving.reshape(-1)[kept].sum()) < 12


def _brute_force_anchors(ls, gs, h, w, M, share, windows):
    """Eq. 7-8 by explicit loops: top-k per window by local score, then top-k global of the rest."""
    N = h * w
    n_local = M - round(M * share)
    wh, ww = min(windows[0], h), min(windows[1], w)
    win = [(r * wh // h) * ww + (c * ww // w) for r in range(h) for c in range(w)]
    W = wh * ww
    quota = [n_local // W + (k < n_local % W) for k in range(W)]
    chosen = set()
    for k in range(W):
        members = sorted([i for i in range(N) if win[i] == k], key=lambda i: (-ls[i], i))
        chosen.update(members[:quota[k]])
    rest = sorted([i for i in range(N) if i not in chosen], key=lambda i: (-gs[i], i))
    chosen.update(rest[:M - len(chosen)])
    return sorted(chosen)


@pytest.mark.parametrize("h,w,M,windows", [(6, 6, 18, (3, 3)), (14, 14, 34, (3, 3)), (8, 12, 11, (2, 4)), (5, 5, 4, (3, 3))])
def test_anchor_selection_equals_eq7_8(h, w, M, windows):
    v = _video(3, h, w)
    red = AOT(retention=1.0, anchor_fraction=M / (h * w), windows=windows, inter=False)
    F = 3
    mask, _ = red._select_anchors(v, torch.full((F,), M), torch.float32)
    for f in range(F):
        ref = _brute_force_anchors(v.local_scores[f].tolist(), v.global_scores[f].tolist(), h, w, M, 0.5, windows)
        assert torch.nonzero(mask[f]).squeeze(1).tolist() == ref


def test_local_anchors_cover_every_window():
    v = _video(2, 9, 9)
    # global scores concentrated in one corner: global-only anchors miss the other windows
    gs = torch.zeros(2, 81)
    gs[:, :10] = 10
    v = VideoTokens(v.tokens, (9, 9), global_scores=gs, local_scores=torch.rand(2, 81))
    win = torch.tensor([(r // 3) * 3 + c // 3 for r in range(9) for c in range(9)])
    loc = AOT(retention=1.0, anchor_fraction=18 / 81, inter=False, anchors="local")
    glb = AOT(retention=1.0, anchor_fraction=18 / 81, inter=False, anchors="global")
    m_loc, _ = loc._select_anchors(v, torch.tensor([18, 18]), torch.float32)
    m_glb, _ = glb._select_anchors(v, torch.tensor([18, 18]), torch.float32)
    assert torch.bincount(win[m_loc[0]], minlength=9).tolist() == [2] * 9
    assert torch.bincount(win[m_glb[0]], minlength=9).min().item() == 0


CASES = [c for c in itertools.product([1, 2, 7, 32], [(14, 14), (13, 13), (8, 12)], [0.01, 0.05, 0.1, 0.25, 0.6, 1.0], [1, 4, 5])
         if c[0] != 32 or (c[1] == (8, 12) and c[3] == 4)]


@pytest.mark.parametrize("F,grid,r,L", CASES)
def test_exact_count_and_invariants(F, grid, r, L):
    v = _video(F, *grid, d=8, seed=F)
    red = AOT(retention=r, clip_length=L)
    k = red.num_kept(F, grid)
    out = red(v).validate()
    assert out.num_tokens == k
    clips = len(uniform_clips(F, L))
    assert k == max(round(r * F * grid[0] * grid[1]), clips)
    assert float(out.mass.sum()) == F * grid[0] * grid[1]
    if r == 1.0:
        torch.testing.assert_close(out.tokens, v.tokens.reshape(-1, 8), atol=0, rtol=0)
        assert out.source_index.tolist() == list(range(F * grid[0] * grid[1]))


@pytest.mark.parametrize("option", [
    dict(aggregation="ot"), dict(aggregation="ot-mass"), dict(aggregation="hard"), dict(aggregation="cosine"),
    dict(aggregation="none"), dict(inter_ranking="cosine"), dict(anchors="local"), dict(anchors="global"),
    dict(anchors="random", seed=3), dict(intra=False), dict(inter=False), dict(eps=0.01),
    dict(anchor_fraction=0.05), dict(anchor_fraction=0.9),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_options_keep_contract(option, dtype):
    v = _video(9, 14, 14, d=24, dtype=dtype)
    red = AOT(retention=0.1, **option)
    out = red(v).validate()
    assert out.num_tokens == red.num_kept(9, (14, 14))
    assert out.tokens.dtype == dtype
    assert bool(torch.isfinite(out.tokens.float()).all())
    again = red(v)
    assert torch.equal(out.tokens, again.tokens) and torch.equal(out.assignment, again.assignment)


def test_options_change_the_output():
    v = _video(8, 14, 14, d=24)
    base = AOT(retention=0.1)(v)
    for option in [dict(aggregation="hard"), dict(aggregation="none"), dict(anchors="random"),
                   dict(inter_ranking="cosine"), dict(inter=False)]:
        other = AOT(retention=0.1, **option)(v)
        assert not (torch.equal(other.tokens, base.tokens) and torch.equal(other.source_index, base.source_index)), option


def test_none_aggregation_is_pure_selection():
    v = _video(8, 14, 14)
    out = AOT(retention=0.1, aggregation="none")(v)
    torch.testing.assert_close(out.tokens, v.tokens.reshape(-1, 16)[out.source_index], atol=0, rtol=0)


def test_fallback_scores_reported():
    out = AOT(retention=0.1)(_video(4, 14, 14, scores=False))
    assert out.info["scores"].startswith("fallback")
    assert AOT(retention=0.1)(_video(4, 14, 14)).info["scores"] == "given"


def test_registry_and_paper_schedule():
    assert isinstance(methods.get("aot", retention=0.2), AOT)
    assert round(paper_anchor_fraction(0.10) * 729) == 126
    assert round(paper_anchor_fraction(0.25) * 729) == 205
    assert paper_anchor_fraction(1.0) == 1.0
    # LLaVA-OV setting: 34 anchors of 196 at 10%, 627 tokens out of 32 x 196
    red = AOT(retention=0.1)
    assert red.anchors_per_frame(196) == 34
    assert red.num_kept(32, (14, 14)) == 627


def test_allocate_anchors_meets_budget():
    for F, L, N, M in itertools.product([1, 3, 8, 32], [1, 2, 4], [12, 196], [1, 5, 34]):
        clips = uniform_clips(F, L)
        for K in sorted({len(clips), F, F * M, F * N, (F * N) // 3, len(clips) * M}):
            if not len(clips) <= K <= F * N:
                continue
            per, keep, _ = allocate_anchors(K, clips, N, min(M, N))
            assert sum(per[s] for s, _ in clips) + keep == K
            assert all(1 <= m <= N for m in per)
            assert keep <= sum(per) - sum(per[s] for s, _ in clips)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(retention=0.0), ValueError), (dict(retention=1.5), ValueError), (dict(retention=float("nan")), ValueError),
    (dict(retention="0.1"), TypeError), (dict(aggregation="mean"), ValueError), (dict(anchors="top"), ValueError),
    (dict(eps=-1.0), ValueError), (dict(clip_length=0), ValueError), (dict(windows=(0, 3)), ValueError),
    (dict(windows=3), TypeError), (dict(global_share=1.5), ValueError), (dict(inter="yes"), TypeError),
    (dict(anchor_fraction=0.0), ValueError),
])
def test_bad_parameters(kwargs, exc):
    with pytest.raises(exc):
        AOT(**kwargs)


def test_bad_inputs():
    red = AOT()
    with pytest.raises(TypeError, match="VideoTokens"):
        red(torch.randn(2, 196, 8))
    with pytest.raises(ValueError, match="grid"):
        VideoTokens(torch.randn(2, 196, 8), (13, 13))
    with pytest.raises(ValueError, match="NaN"):
        VideoTokens(torch.full((2, 4, 8), float("nan")), (2, 2))
    for dtype in (torch.float16, torch.float32, torch.float64):
        x = torch.ones(2, 4, 8, dtype=dtype)
        x[1, 3, 7] = float("inf")
        with pytest.raises(ValueError, match="inf"):
            VideoTokens(x, (2, 2))
    big = torch.full((2, 4, 8), 1e308, dtype=torch.float64)  # finite, but its sum overflows
    assert VideoTokens(big, (2, 2)).num_frames == 2
    with pytest.raises(ValueError, match="shape"):
        VideoTokens(torch.randn(196, 8), (14, 14))
    with pytest.raises(TypeError, match="floating"):
        VideoTokens(torch.ones(1, 4, 8, dtype=torch.long), (2, 2))
    with pytest.raises(ValueError, match="global_scores"):
        VideoTokens(torch.randn(2, 4, 8), (2, 2), global_scores=torch.rand(2, 5))
    with pytest.raises(ValueError, match="num_frames"):
        red.num_kept(0, (14, 14))


def test_zero_vectors_do_not_produce_nan():
    v = _video(4, 6, 6)
    X = v.tokens.clone()
    X[:, :10] = 0
    out = AOT(retention=0.2)(VideoTokens(X, (6, 6), v.global_scores, v.local_scores)).validate()
    assert bool(torch.isfinite(out.tokens).all())


def test_paper_ablation_variants():
    v = _video(8, 14, 14)
    base = methods.get("aot", retention=0.1)
    assert methods.get("aot:no-merging", retention=0.1).aggregation == "none"
    assert methods.get("aot:ot-wo-inter-frame").inter is False
    assert methods.get("aot:random-anchors", seed=4).seed == 4
    for name in AOT.variants:
        red = methods.get(f"aot:{name}", retention=0.1)
        out = red(v).validate()
        assert out.num_tokens == base.num_kept(8, (14, 14))
    names = [row[0] for row in methods.describe()]
    assert "aot:wo-local-anchors" in names
    with pytest.raises(ValueError, match="variant"):
        methods.get("aot:nope")
    with pytest.raises(ValueError, match="known parameters"):
        methods.get("aot", alpha=1)


def test_every_token_an_anchor_runs_no_intra_solve():
    # found by mutation testing: with anchor_fraction 1 no token is left to transport, so AOT must
    # keep the tokens as they are and skip the intra-frame Sinkhorn (no intra_* diagnostics)
    v = _video(2, 3, 3)
    out = AOT(retention=1.0, anchor_fraction=1.0, inter=False)(v)
    torch.testing.assert_close(out.tokens, v.tokens.reshape(-1, v.tokens.shape[-1]), rtol=0, atol=0)
    assert not any(k.startswith("intra_") for k in out.info)
