"""``aot+``: exact budgets, planted structure with known answers, each option checked by value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anchor_ot import methods
from anchor_ot.methods import aot_plus
from anchor_ot.methods.aot_plus import (AOTPlus, group_budget, kcenter_anchors, kcenter_rounds, project, sketch_basis,
                                        static_positions, token_means)
from anchor_ot.types import VideoTokens


def planted(F=8, grid=(4, 4), d=16, k=3, noise=1e-3, seed=0, per_frame=False):
    """Tokens drawn from ``k`` orthogonal directions (per clip of 4 frames, or per frame).

    Returns the video and the label of every token (F, N).
    """
    g = torch.Generator().manual_seed(seed)
    N = grid[0] * grid[1]
    basis = torch.linalg.qr(torch.randn(d, d, generator=g))[0][:, : k * (F if per_frame else 1)].T * 5.0
    labels = torch.randint(0, k, (F, N), generator=g)
    labels[:, :k] = torch.arange(k)  # every cluster present in every frame
    offset = (torch.arange(F)[:, None] * k) if per_frame else 0
    x = basis[labels + offset] + noise * torch.randn(F, N, d, generator=g)
    return VideoTokens(x, grid=grid, global_scores=torch.rand(F, N, generator=g)), labels


def partition(assign: torch.Tensor) -> set:
    groups: dict[int, list[int]] = {}
    for i, a in enumerate(assign.tolist()):
        groups.setdefault(a, []).append(i)
    return {tuple(v) for v in groups.values()}


# -- exact budget ----------------------------------------------------------------------------

OPTIONS = [{}, {"assign": "ot"}, {"assign": "ot", "anchor_marginal": "uniform"}, {"init": "attention"},
           {"init": "grid"}, {"init": "random"}, {"static_tau": 0.5}, {"group": "frame"},
           {"group": "frame", "static_tau": 0.5}, {"clips": "dynamic"}, {"clip_length": 1},
           {"clip_length": 3}, {"budget": "tokens"}, {"output": "medoid"}, {"score_weight": 1.0},
           {"frame_penalty": 0.0}, {"frame_penalty": 5.0}, {"iters": 1}, {"cut_tau": 0.99},
           {"clip_rule": "divisor"}, {"sketch_dim": 3}, {"sketch_dim": 3, "sketch": "random"},
           {"sketch_dim": 3, "static_tau": 0.5}, {"sketch_dim": 3, "group": "frame"}, {"sketch_dim": None},
           # static-token stage (stop 16): runs across clips, their window, sketch cosines, mass-weighted k-center
           {"static_tau": 0.5, "static_span": "run"}, {"static_tau": 0.5, "static_span": "run", "static_window": 2},
           {"static_tau": 0.5, "static_span": "run", "clip_length": 3},
           {"static_tau": 0.5, "static_span": "run", "group": "frame"},
           {"static_tau": 0.5, "static_span": "run", "clips": "dynamic"},
           {"sketch_dim": 3, "static_tau": 0.5, "static_span": "run"},
           {"sketch_dim": 3, "static_tau": 0.5, "static_span": "run", "static_cos": "sketch"},
           {"sketch_dim": 3, "static_tau": 0.5, "static_cos": "sketch"},
           {"static_tau": 0.5, "mass_weight": 1.0}, {"static_tau": 0.5, "static_span": "run", "mass_weight": 2.0,
                                                     "init": "kcenter"}]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("F,grid", [(7, (5, 6)), (1, (3, 3))])
@pytest.mark.parametrize("retention", [0.01, 0.3])  # 1.0: test_identity_at_full_retention
def test_exact_budget_and_bookkeeping(opts, F, grid, retention):
    video, _ = planted(F=F, grid=grid, d=8, k=2, noise=0.3)
    red = methods.get("aot+", retention=retention, **opts)
    K = red.num_kept(F, grid)
    out = red(video)
    out.validate()
    assert out.num_tokens == K
    N = grid[0] * grid[1]
    assert K == max(round(retention * F * N), red.min_clips(F))
    assert int(out.mass.sum()) == F * N and bool((out.mass >= 1).all())
    assert out.source_index.unique().numel() == K
    if opts.get("output") != "medoid" and K < F * N:
        # every output token is the plain mean of the input tokens assigned to it (hard merge)
        x = video.tokens.reshape(F * N, -1)
        sums = torch.zeros_like(out.tokens).index_add_(0, out.assignment, x)
        torch.testing.assert_close(out.tokens, sums / out.mass[:, None], atol=1e-5, rtol=1e-5)
    if opts.get("output") == "medoid":
        torch.testing.assert_close(out.tokens, video.tokens.reshape(F * N, -1)[out.source_index])


def test_identity_at_full_retention():
    video, _ = planted()
    out = methods.get("aot+", retention=1.0)(video)
    torch.testing.assert_close(out.tokens, video.tokens.reshape(-1, video.dim))
    assert torch.equal(out.assignment, torch.arange(video.num_frames * video.tokens_per_frame))


# -- planted structure -------------------------------------------------------------------------

@pytest.mark.parametrize("sim_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("opts", [{}, {"assign": "ot"}, {"init": "random", "iters": 3}, {"frame_penalty": 0.0},
                                  {"sketch_dim": 4}, {"sketch_dim": 12, "sketch": "random"}, {"sketch_dim": None}])
def test_recovers_planted_clusters_per_clip(opts, sim_dtype):
    """k directions shared by all frames, K = k per clip and no frame penalty: each output token
    is exactly one planted cluster of its clip (whatever frame its tokens sit in). Both similarity
    dtypes, whatever ``"auto"`` picks on this CPU. From random anchors the assignment/barycentre
    alternation needs 3 rounds here (2, the default, recover the clusters only by luck of rounding)."""
    F, grid, k = 8, (4, 4), 3
    video, labels = planted(F=F, grid=grid, k=k)
    opts = {"frame_penalty": 0.0, "sim_dtype": sim_dtype, **opts}
    red = AOTPlus(retention=2 * k / (F * 16), clip_length=4, **opts)  # 2 clips x k anchors
    out = red(video)
    assert out.num_tokens == 2 * k
    clip = torch.arange(F).repeat_interleave(16) // 4
    truth = partition(clip * k + labels.reshape(-1))
    assert partition(out.assignment) == truth
    # each token is its cluster's mean: cosine ~1 with every member
    x = video.tokens.reshape(F * 16, -1)
    cos = torch.nn.functional.cosine_similarity(x, out.tokens[out.assignment], dim=-1)
    assert float(cos.min()) > 0.999


def test_frame_penalty_keeps_anchors_in_their_frame():
    """Per-frame planted directions with large cross-frame penalty: every output token stands only
    for tokens of its own frame; without the penalty a static video shares anchors across frames."""
    F, grid, k = 4, (4, 4), 2
    video, labels = planted(F=F, grid=grid, k=k, per_frame=True)
    out = AOTPlus(retention=F * k / (F * 16), clip_length=4, frame_penalty=5.0)(video)
    frame_of_token = torch.arange(F).repeat_interleave(16)
    assert torch.equal(out.frame_index[out.assignment], frame_of_token)
    assert partition(out.assignment) == partition(frame_of_token * k + labels.reshape(-1))
    # identical frames: with no penalty, k anchors suffice for the whole clip and absorb all frames
    same = VideoTokens(video.tokens[:1].expand(F, -1, -1).contiguous(), grid=grid)
    out0 = AOTPlus(retention=k / (F * 16), clip_length=4, frame_penalty=0.0)(same)
    assert out0.num_tokens == k and set(out0.mass.tolist()) == {float(F * int((labels[0] == j).sum()))
                                                                for j in range(k)}


def test_source_is_the_medoid():
    """An output token sits at the input token most similar to its mean."""
    video, _ = planted(F=4, noise=0.2, k=2)
    out = AOTPlus(retention=0.25)(video)
    x = torch.nn.functional.normalize(video.tokens.reshape(-1, video.dim), dim=-1)
    y = torch.nn.functional.normalize(out.tokens, dim=-1)
    cos = (x * y[out.assignment]).sum(-1)
    for j in range(out.num_tokens):
        members = (out.assignment == j).nonzero().squeeze(1)
        assert int(out.source_index[j]) == int(members[cos[members].argmax()])


# -- helpers against independent references ----------------------------------------------------

def test_kcenter_matches_a_plain_greedy_loop():
    g = torch.Generator().manual_seed(3)
    u = torch.nn.functional.normalize(torch.randn(3, 40, 8, generator=g, dtype=torch.float64), dim=-1)
    valid = torch.rand(3, 40, generator=g) > 0.2
    counts = torch.tensor([5, 9, 1])
    picks = kcenter_anchors(u, valid, counts)
    un = u.numpy()
    for b in range(3):
        ok = np.nonzero(valid[b].numpy())[0]
        mean = un[b][ok].sum(0)
        chosen = [int(ok[np.argmax(un[b][ok] @ mean)])]
        while len(chosen) < int(counts[b]):
            best = (un[b][ok] @ un[b][chosen].T).max(1)
            best[np.isin(ok, chosen)] = 2.0
            chosen.append(int(ok[np.argmin(best)]))
        assert picks[b, : int(counts[b])].tolist() == chosen


@pytest.mark.parametrize("counts", [[[3, 1, 2], [2, 2, 0]], [[6, 1, 1], [1, 6, 0]], [[3, 2, 4], [2, 3, 3]],
                                    [[2, 2, 2], [2, 2, 2]]],
                         ids=["some-done", "most-done", "all-then-some", "all-every-round"])
def test_kcenter_rounds_matches_a_plain_loop(counts):
    """Round 0 frame by frame, then one pick per frame per round from the gains at the round's start.
    The counts cover the rounds where every frame of every group picks (no masking of finished
    frames: a fast path) and those where some have finished."""
    g = torch.Generator().manual_seed(5)
    B, S, M, d = 2, 3, 12, 6
    u = torch.nn.functional.normalize(torch.randn(B, S, M, d, generator=g, dtype=torch.float64), dim=-1)
    valid = torch.ones(B, S, M, dtype=torch.bool)
    valid[1, 2, :5] = False
    counts = torch.tensor(counts)
    got = kcenter_rounds(u, valid, counts)
    for b in range(B):
        x = u[b].reshape(S * M, d).numpy()
        ok = valid[b].reshape(-1).numpy()
        chosen: list[int] = []

        def gain(sub):
            lo = sub * M
            best = (x[lo:lo + M] @ x[chosen].T).max(1) if chosen else np.full(M, -2.0)
            gn = np.clip(1 - best, 0, None)
            gn[~ok[lo:lo + M]] = -1
            gn[[i - lo for i in chosen if lo <= i < lo + M]] = -1
            return gn

        order = []
        for s in range(S):  # round 0
            if counts[b, s] == 0:
                continue
            if s == 0:
                m = x[:M][ok[:M]].sum(0)
                sims = np.where(ok[:M], x[:M] @ m, -np.inf)
                pick = int(np.argmax(sims))
            else:
                pick = s * M + int(np.argmax(gain(s)))
            chosen.append(pick)
            order.append(pick)
        for t in range(1, int(counts[b].max())):
            gains = {s: gain(s) for s in range(S) if counts[b, s] > t}
            picks = [s * M + int(np.argmax(gn)) for s, gn in gains.items()]
            chosen += picks
            order += picks
        assert got[b, : len(order)].tolist() == order


@pytest.mark.parametrize("counts", [[[6, 6, 5], [6, 5, 6]], [[6, 6, 6], [6, 6, 6]]], ids=["some-done", "all"])
def test_kcenter_rounds_picks_every_point_once_when_asked_for_all(counts):
    """Every frame holds each of its points twice and picks past its distinct points, so picks with
    gain 0 (duplicates, like an already chosen point) must come: each valid point is chosen once,
    every frame gives exactly its count. Catches a round that fails to block its picks (a point
    chosen twice) or to skip a finished frame (one pick too many)."""
    g = torch.Generator().manual_seed(13)
    B, S, M, d = 2, 3, 6, 4
    u = torch.nn.functional.normalize(torch.randn(B, S, M // 2, d, generator=g, dtype=torch.float64), dim=-1)
    u = torch.cat([u, u], 2)
    counts = torch.tensor(counts)
    got = kcenter_rounds(u, torch.ones(B, S, M, dtype=torch.bool), counts)
    for b in range(B):
        picks = got[b, : int(counts[b].sum())].tolist()
        assert len(set(picks)) == len(picks)
        assert [sum(p // M == s for p in picks) for s in range(S)] == counts[b].tolist()


def test_kcenter_penalty_prefers_own_frame_coverage():
    """Two identical frames: without penalty one copy of each direction suffices, so the second
    pick is the other direction; with a large penalty the other frame's copy is 'far'."""
    e = torch.eye(4, dtype=torch.float64)
    u = torch.stack([e[0], e[0] * 0.999 + e[1] * 0.045, e[0], e[0] * 0.999 + e[1] * 0.045])
    u = torch.nn.functional.normalize(u, dim=-1)[None]
    frame = torch.tensor([[0, 0, 1, 1]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    start = torch.tensor([0])
    no_pen = kcenter_anchors(u, valid, torch.tensor([2]), start=start)
    pen = kcenter_anchors(u, valid, torch.tensor([2]), start=start, frame=frame, penalty=1.0)
    assert no_pen[0].tolist() == [0, 1] or no_pen[0].tolist() == [0, 3]
    assert pen[0, 1].item() in (2, 3)


def test_static_positions_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 6, 5, generator=g)
    x[:, :3] = x[:1, :3] + 0.01 * torch.randn(7, 3, 5, generator=g)  # positions 0-2 static
    x[4, 1] = -x[4, 1]  # breaks position 1 in the clip holding frame 4
    clip_of = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    got = static_positions(x, clip_of, 3, 0.9)
    u = torch.nn.functional.normalize(x, dim=-1)
    for c in range(3):
        fr = (clip_of == c).nonzero().squeeze(1).tolist()
        for n in range(6):
            want = len(fr) > 1 and all(float(u[a, n] @ u[b, n]) > 0.9 for a, b in zip(fr, fr[1:]))
            assert bool(got[c, n]) == want, (c, n)
    assert got[0, :3].all() and not got[1, 1] and got[1, 0] and not got[2].any()


def test_group_budget_exact_and_capped():
    caps = torch.tensor([10, 0, 3, 50])
    out = group_budget(20, torch.tensor([10.0, 0.0, 3.0, 50.0]), caps)
    assert int(out.sum()) == 20 and out[1] == 0 and bool((out <= caps).all()) and bool((out[caps > 0] >= 1).all())
    # by hand: one each for the 3 non-empty groups, then 17 by weight 10:3:50 -> 2.70, 0.81, 13.49,
    # floors 2, 0, 13 and the 2 left to the largest remainders (0.81, 0.70)
    assert out.tolist() == [4, 0, 2, 14]


def test_static_merge_counts_a_static_position_once():
    """A static video (identical frames): with static merging, K = N/2 per clip of 4 frames keeps
    the clip's static points, each a mean of 4 tokens, so every output token has mass >= 4."""
    video, _ = planted(F=4, noise=0.0, k=3)
    same = VideoTokens(video.tokens[:1].expand(4, -1, -1).contiguous(), grid=video.grid)
    out = AOTPlus(retention=8 / 64, static_tau=0.9, frame_penalty=0.0, clip_length=4)(same)
    assert out.num_tokens == 8 and bool((out.mass >= 4).all())
    assert out.info["static_positions"] == 16


def test_ot_assignment_matches_pot_plan_argmax():
    """The 'ot' assignment is the argmax over anchors of the entropic plan, checked against POT."""
    ot = pytest.importorskip("ot")
    g = torch.Generator().manual_seed(1)
    cos = torch.rand(1, 4, 30, generator=g, dtype=torch.float64) * 2 - 1
    weight = torch.ones(1, 30, dtype=torch.float64)
    valid_a = torch.ones(1, 4, dtype=torch.bool)
    red = AOTPlus(assign="ot", anchor_marginal="uniform", eps=0.1, tol=1e-9, max_iter=5000)
    got = red._assign(cos.transpose(1, 2), valid_a, weight, {})
    plan = ot.sinkhorn(np.full(4, 0.25), np.full(30, 1 / 30), (1 - cos[0]).numpy(), 0.1, numItermax=5000,
                       stopThr=1e-12)
    assert got[0].tolist() == plan.argmax(0).tolist()
    # with the anchors' own nearest-assignment masses as marginal and small eps, the plan's argmax
    # is the nearest anchor (the nearest assignment is the exact transport plan for those masses)
    red = AOTPlus(assign="ot", anchor_marginal="mass", eps=0.005, tol=1e-9, max_iter=20000)
    assert torch.equal(red._assign(cos.transpose(1, 2), valid_a, weight, {}), cos.argmax(1))


def test_attention_init_misses_what_kcenter_covers():
    """4 directions x 4 tokens; the 4 top attention scores all sit on direction 0. With one step,
    attention anchors leave directions 1-3 without a token of their own; k-center covers all 4."""
    g = torch.Generator().manual_seed(0)
    e = torch.eye(8)
    x = (e[torch.arange(16) % 4] + 0.01 * torch.randn(16, 8, generator=g))[None] * 3.0
    scores = torch.where(torch.arange(16) % 4 == 0, 10.0, 1.0)[None] + 0.01 * torch.arange(16.0)
    v = VideoTokens(x, grid=(4, 4), global_scores=scores)

    def best_cos(out):
        y = torch.nn.functional.normalize(out.tokens, dim=-1)
        return (y @ e[:4].T).amax(0)  # best cosine of each direction to any output token

    att = AOTPlus(retention=4 / 16, init="attention", iters=1)(v)
    kc = AOTPlus(retention=4 / 16, init="kcenter", iters=1)(v)
    assert bool((best_cos(kc) > 0.99).all())
    assert float(best_cos(att)[1:].min()) < 0.9
    assert sorted((att.source_index % 4).tolist()).count(0) >= 3


def test_budget_option_points_vs_tokens():
    """budget='points' gives a clip with static positions fewer anchors than budget='tokens'."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, 8, generator=g)
    x[:4] = x[:1]  # first clip fully static
    v = VideoTokens(x, grid=(4, 4))
    pts = AOTPlus(retention=0.25, static_tau=0.9, budget="points", frame_penalty=0.0, clip_length=4)(v)
    tok = AOTPlus(retention=0.25, static_tau=0.9, budget="tokens", frame_penalty=0.0, clip_length=4)(v)
    first = lambda out: int((out.frame_index < 4).sum())  # noqa: E731
    assert first(pts) < first(tok) == 16


@pytest.mark.parametrize("bad", [{"clips": "x"}, {"clip_length": 0}, {"static_tau": 2.0}, {"budget": "y"},
                                 {"init": "z"}, {"iters": 0}, {"assign": "w"}, {"eps": 0.0},
                                 {"frame_penalty": -1.0}, {"group": "v"}, {"output": "u"}, {"score_weight": -1},
                                 {"clip_rule": "t"}, {"cut_tau": 1.5}, {"sketch_dim": 0}, {"sketch_dim": 2.5},
                                 {"sketch": "svd"}])
def test_bad_parameters_raise(bad):
    with pytest.raises((ValueError, TypeError)):
        AOTPlus(**bad)


def test_registered():
    assert "aot+" in methods.available()
    assert methods.get("aot+:ot").assign == "ot"


def test_cut_tau_splits_uniform_clips_at_scene_cuts():
    # frames 0-4 and 5-9 show two unrelated scenes: a cut between frames 4 and 5, inside the
    # second uniform clip of 4 frames ([4, 8)); frame means of adjacent frames agree elsewhere
    F, grid, d = 10, (3, 3), 12
    g = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(d, d, generator=g))[0].T
    scene = torch.tensor([0] * 5 + [1] * 5)
    x = basis[scene][:, None, :] * 4 + 0.05 * torch.randn(F, 9, d, generator=g)
    video = VideoTokens(x, grid=grid)
    plain = AOTPlus(retention=0.2, clip_length=4)
    cut = AOTPlus(retention=0.2, clip_length=4, cut_tau=0.5)
    assert plain.clips_for(video) == [(0, 4), (4, 8), (8, 10)]
    assert cut.clips_for(video) == [(0, 4), (4, 5), (5, 8), (8, 10)]
    # no output token mixes the two scenes with the split; without it one clip spans the cut
    out = cut(video)
    mixed = torch.zeros(out.num_tokens, 2).index_add_(0, out.assignment, torch.nn.functional.one_hot(
        scene.repeat_interleave(9), 2).float())
    assert int(((mixed > 0).sum(1) > 1).sum()) == 0
    # the budget is stated from the shape alone, with the worst case of F clips
    assert cut.num_kept(F, grid) == max(round(0.2 * F * 9), F) == out.num_tokens
    assert AOTPlus(retention=0.01, cut_tau=0.5).num_kept(F, grid) == F


def test_clip_rule_divisor_picks_equal_clips():
    # 0.4 / r = 2.67 at 15 %: "round" gives 3 (32 = 10 x 3 + 2), "divisor" the nearest divisor 2
    assert AOTPlus(retention=0.15).clip_frames(32) == 3
    assert AOTPlus(retention=0.15, clip_rule="divisor").clip_frames(32) == 2
    for r, L in [(0.25, 2), (0.1, 4), (0.05, 8)]:  # divisors already: unchanged
        assert AOTPlus(retention=r, clip_rule="divisor").clip_frames(32) == L == AOTPlus(retention=r).clip_frames(32)
    assert AOTPlus(retention=0.05, clip_rule="divisor").clip_frames(30) == 6  # divisors of 30 in [4, 16]: 5, 6, 10
    assert AOTPlus(retention=0.05, clip_rule="divisor").clip_frames(31) == 8  # prime: no divisor in range, round


def test_linear_penalty_sends_background_to_the_nearest_frame_in_time():
    # 8 frames of one near-constant background, 4 anchors for the clip: half the frames have no
    # anchor of their own. All cosines tie (to ~1e-6), so the cross-frame cost decides: with the
    # default linear cost every token joins an anchor of the nearest anchored frame; with the step
    # cost any other frame costs the same, and tokens go to far frames' anchors.
    F, grid, d = 8, (2, 2), 16
    g = torch.Generator().manual_seed(5)
    x = torch.ones(F, 4, d) + 1e-3 * torch.randn(F, 4, d, generator=g)
    video = VideoTokens(x, grid=grid)
    frame = torch.arange(F).repeat_interleave(4)

    def far(out):  # how many tokens sit farther in time from their anchor than from some anchor
        home = out.frame_index[out.assignment]
        nearest = (frame[:, None] - out.frame_index[None, :]).abs().min(1).values
        return int(((home - frame).abs() > nearest).sum())

    linear = AOTPlus(retention=4 / 32, clip_length=8)
    assert (linear.penalty_shape, linear.frame_penalty) == ("linear", 0.01)
    out = linear(video)
    assert out.num_tokens == 4 and far(out) == 0
    assert far(AOTPlus(retention=4 / 32, clip_length=8, penalty_shape="step", frame_penalty=0.015)(video)) > 0


# -- sketch (similarity steps on a k-dim projection; output means in full d) --------------------

def _low_rank(F=6, grid=(5, 6), d=40, rank=5, seed=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    coef = torch.randn(F, grid[0] * grid[1], rank, generator=g, dtype=dtype) + 2.0
    return VideoTokens(coef @ torch.randn(rank, d, generator=g, dtype=dtype), grid=grid)


def test_sketch_basis_pca_is_the_top_right_singular_subspace():
    """Against torch.linalg.svd of the unit-normalized sample (here every row: T <= PCA_SAMPLE)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(100, 30, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, 30, dtype=torch.float64)
    V = sketch_basis(x, 6, "pca")
    assert V.shape == (30, 6)
    torch.testing.assert_close(V.T @ V, torch.eye(6, dtype=torch.float64), atol=1e-10, rtol=0)
    s = torch.nn.functional.normalize(x, dim=-1)
    ref = torch.linalg.svd(s, full_matrices=False).Vh[:6].T
    torch.testing.assert_close(V @ V.T, ref @ ref.T, atol=1e-8, rtol=0)  # same subspace (projector)


def test_sketch_basis_random_is_fixed_and_scaled_orthonormal():
    x = torch.zeros(10, 50)
    V = sketch_basis(x, 8, "random", seed=3)
    torch.testing.assert_close(V.T @ V, torch.eye(8) * 50 / 8, atol=1e-4, rtol=0)
    assert torch.equal(V, sketch_basis(torch.ones(3, 50), 8, "random", seed=3))  # independent of the tokens
    assert not torch.equal(V, sketch_basis(x, 8, "random", seed=4))


def test_project_matches_a_plain_product():
    g = torch.Generator().manual_seed(6)
    x, b = torch.randn(3, 7, 11, generator=g), torch.randn(11, 4, generator=g)
    torch.testing.assert_close(project(x, b), (x.reshape(21, 11) @ b).reshape(3, 7, 4))


def test_project_in_bfloat16_blocks_matches_the_fp32_product():
    """The CPU bf16 path (blocks of frames) = the product of the bf16-rounded operands, rounded to
    bf16 (one unit roundoff, 2**-8 relative) and returned in fp32."""
    g = torch.Generator().manual_seed(7)
    x, b = torch.randn(9, 70, 33, generator=g), torch.randn(33, 5, generator=g)
    out = project(x, b, torch.bfloat16)
    assert out.dtype == torch.float32
    ref = (x.to(torch.bfloat16).float().reshape(-1, 33) @ b.to(torch.bfloat16).float()).reshape(9, 70, 5)
    assert float((out - ref).abs().max()) <= 2.0 ** -8 * float(ref.abs().max())
    assert not torch.equal(out, ref)  # really computed in bf16 (else the option does nothing)
    torch.testing.assert_close(out, project(x, b), atol=0.05 * float(ref.abs().max()), rtol=0)


def test_sketch_basis_gram_in_bfloat16_spans_nearly_the_same_subspace():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(300, 40, generator=g) * torch.linspace(4, 0.1, 40)
    V, Vb = sketch_basis(x, 5), sketch_basis(x, 5, gram_dtype=torch.bfloat16)
    assert Vb.dtype == torch.float32
    # principal angles: the projectors differ by little (bf16 Gram: ~3 significant digits)
    assert float(torch.linalg.matrix_norm(V @ V.T - Vb @ Vb.T, ord=2)) < 0.05


def test_token_means_against_index_add():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    a = torch.randint(0, 7, (50,), generator=g)
    a[:7] = torch.arange(7)  # every row has a token
    ref = torch.zeros(7, 6, dtype=torch.float64).index_add_(0, a, x) / torch.bincount(a)[:, None]
    torch.testing.assert_close(token_means(x, a, 7), ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_token_means_of_half_tokens_by_blocks_is_the_fp32_product_bit_for_bit(dtype):
    """Half tokens: the plan's diagonal blocks, each block of tokens upcast into one buffer, give the
    bits of the one product over the tokens converted first, as without the blocks."""
    g = torch.Generator().manual_seed(10)
    x = torch.randn(60, 37, generator=g).to(dtype)
    a = torch.cat([torch.randint(0, 4, (20,), generator=g), torch.randint(4, 9, (40,), generator=g)])
    a[:4], a[20:25] = torch.arange(4), torch.arange(4, 9)  # every row has a token
    out = token_means(x, a, 9, spans=[(0, 4, 0, 20), (4, 9, 20, 60)])
    assert out.dtype == torch.float32
    assert torch.equal(out, token_means(x.float(), a, 9))
    assert torch.equal(out, token_means(x, a, 9))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("low", [None, torch.bfloat16])
@pytest.mark.parametrize("block", [100, 240, 1])
def test_project_of_half_tokens_is_the_fp32_projection_bit_for_bit(dtype, low, block, monkeypatch):
    """Half tokens upcast block by block (fp32 product: ``UPCAST_BLOCK``; bf16: ``PROJECT_BLOCK``)
    give the bits of the projection of the whole converted video: 3 frames of 30 tokens per block
    (9 = 3 + 3 + 3), 8 (9 = 8 + 1: a partial last block), 1 (a frame per block). Catches a block
    written to the wrong rows of the sketch or norms, or a stale buffer tail read back."""
    monkeypatch.setattr(aot_plus, "PROJECT_BLOCK", block)
    monkeypatch.setattr(aot_plus, "UPCAST_BLOCK", block)
    g = torch.Generator().manual_seed(11)
    x, b = torch.randn(9, 30, 33, generator=g).to(dtype), torch.randn(33, 5, generator=g)
    z, n = project(x, b, low, with_norms=True)
    z32, n32 = project(x.float(), b, low, with_norms=True)
    assert z.dtype == n.dtype == torch.float32
    assert torch.equal(z, z32) and torch.equal(n, n32)
    assert torch.equal(n32, torch.linalg.vector_norm(x.float(), dim=-1))


def test_project_norms_taken_block_by_block_are_the_whole_tensor_norms(monkeypatch):
    """fp32 tokens, bf16 product: the norms come from the projection's blocks (partial last block
    here) and equal one norm pass over the whole tensor bit for bit; the sketch is unchanged."""
    monkeypatch.setattr(aot_plus, "PROJECT_BLOCK", 100)  # 3 frames of 30 tokens per block: 10 = 3 + 3 + 3 + 1
    g = torch.Generator().manual_seed(12)
    x, b = torch.randn(10, 30, 33, generator=g), torch.randn(33, 5, generator=g)
    z, n = project(x, b, torch.bfloat16, with_norms=True)
    assert torch.equal(n, torch.linalg.vector_norm(x, dim=-1))
    assert torch.equal(z, project(x, b, torch.bfloat16))


@pytest.mark.parametrize("opts", [{}, {"static_tau": 0.3}, {"group": "frame"}, {"init": "kcenter"}])
def test_pca_sketch_of_low_rank_tokens_equals_full_width(opts):
    """Tokens of rank 5: a width-5 PCA sketch keeps every inner product, so the whole reduction
    (anchors, assignment, placement, output means) equals the full-width one."""
    video = _low_rank()
    full = AOTPlus(retention=0.1, sim_dtype="float32", sketch_dim=None, **opts)(video)
    sk = AOTPlus(retention=0.1, sim_dtype="float32", sketch_dim=5, **opts)
    out = sk(video)
    assert out.info["sketch"] == ("pca", 5)
    assert torch.equal(out.assignment, full.assignment)
    assert torch.equal(out.source_index, full.source_index)
    torch.testing.assert_close(out.tokens, full.tokens, atol=1e-12, rtol=1e-12)


def test_sketch_at_least_as_wide_as_the_tokens_is_full_width():
    video = _low_rank(d=8)
    a = AOTPlus(retention=0.2, sketch_dim=None)(video)
    b = AOTPlus(retention=0.2, sketch_dim=8)(video)
    assert "sketch" not in b.info and AOTPlus(sketch_dim=8).sketch_width(8) is None
    assert torch.equal(a.assignment, b.assignment) and torch.equal(a.tokens, b.tokens)


def test_random_sketch_output_is_the_full_width_mean():
    """A narrow random sketch changes which tokens merge, never how: each output token is the
    plain full-d mean of the tokens assigned to it."""
    video = _low_rank(rank=20)
    out = AOTPlus(retention=0.1, sketch_dim=4, sketch="random")(video)
    assert out.info["sketch"] == ("random", 4)
    x = video.tokens.reshape(-1, video.dim)
    sums = torch.zeros_like(out.tokens).index_add_(0, out.assignment, x)
    torch.testing.assert_close(out.tokens, sums / out.mass[:, None], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("opts", [{"sketch_dim": 6}, {"sketch_dim": 6, "sketch": "random"}, {"sketch_dim": None},
                                  {"sketch_dim": 6, "static_tau": 0.3}, {"sketch_dim": 6, "sim_dtype": "float32"},
                                  {"sketch_dim": 6, "output": "medoid"}, {"sketch_dim": 6, "clip_length": 1}])
@pytest.mark.parametrize("blocks", ["default", "one-frame"])
def test_half_input_with_sketch_computes_in_float32(dtype, opts, blocks, monkeypatch):
    """As tests/test_half_precision.py: half input = the same values in float32, bit for bit; the
    sketch path converts half tokens block by block (issue 12), here also one frame / one clip per
    block (clips [0, 4) and [4, 6): uneven)."""
    if blocks == "one-frame":
        monkeypatch.setattr(aot_plus, "PROJECT_BLOCK", 1)
        monkeypatch.setattr(aot_plus, "UPCAST_BLOCK", 1)
        monkeypatch.setattr(aot_plus, "BLOCK_BYTES", 1)
    v32 = _low_rank(rank=12, dtype=torch.float32, d=24)
    vh = VideoTokens(v32.tokens.to(dtype), v32.grid)
    vr = VideoTokens(vh.tokens.float(), v32.grid)
    red = AOTPlus(retention=0.1, **opts)
    out_h, out_r = red(vh), red(vr)
    assert out_h.tokens.dtype == dtype
    assert torch.equal(out_h.source_index, out_r.source_index)
    assert torch.equal(out_h.assignment, out_r.assignment)
    assert torch.equal(out_h.tokens, out_r.tokens.to(dtype))


def test_default_sketch_is_pca_96_above_width_96():
    """The default (docs/aot.md, "Sketch"): tokens wider than 96 go through a 96-wide PCA sketch,
    with the exact count and full-width hard means; narrower tokens are used as they are."""
    video = _low_rank(F=4, grid=(6, 6), d=130, rank=110, dtype=torch.float32)
    red = AOTPlus(retention=0.1)
    assert (red.sketch_dim, red.sketch) == (96, "pca")
    out = red(video)
    assert out.info["sketch"] == ("pca", 96) and out.num_tokens == red.num_kept(4, (6, 6))
    x = video.tokens.reshape(-1, video.dim)
    sums = torch.zeros_like(out.tokens).index_add_(0, out.assignment, x)
    torch.testing.assert_close(out.tokens, sums / out.mass[:, None], atol=1e-4, rtol=1e-5)
    assert "sketch" not in AOTPlus(retention=0.1)(_low_rank(d=96, dtype=torch.float32)).info


def _greedy_reference(u, valid, k, s=None, start=None, frame=None, penalty=0.0, linear=False):
    """kcenter_anchors' rule written out for one group in numpy float64: start at the valid point
    most similar to the mean direction, then maximize (1 - max sim to the chosen) * s."""
    ok = valid.copy()
    if start is None:
        sims = u @ (u * valid[:, None]).sum(0)
        start = int(np.argmax(np.where(valid, sims, -np.inf)))
    chosen = [start]
    while len(chosen) < k:
        sim = u @ u[chosen].T  # (P, chosen)
        if penalty > 0 and frame is not None:
            fa, fp = frame[chosen][None, :], frame[:, None]
            dist = np.abs(fa - fp) if linear else (fa != fp).astype(float)
            sim = sim - penalty * dist * ((fa >= 0) & (fp >= 0))
        gain = np.maximum(1.0 - sim.max(1), 0.0) * (1.0 if s is None else s)
        gain[~ok] = -1.0
        gain[chosen] = -1.0
        chosen.append(int(np.argmax(gain)))
    return chosen


def test_kcenter_score_weighting_matches_the_formula_with_numpy():
    # found by mutation testing: the weighted rule (score / max) ** weight was checked by no test;
    # negative scores count as 0 (a tie at zero gain goes to the lower index, as np.argmax)
    g = torch.Generator().manual_seed(5)
    u = torch.nn.functional.normalize(torch.randn(2, 16, 6, generator=g, dtype=torch.float64), dim=-1)
    valid = torch.rand(2, 16, generator=g) > 0.25
    score = torch.rand(2, 16, generator=g, dtype=torch.float64) * torch.tensor([[1.0], [7.0]], dtype=torch.float64)
    score[:, :5] -= 2.0  # negative importance: clamped to 0
    counts = torch.tensor([6, 4])
    picks = kcenter_anchors(u, valid, counts, score, weight=1.5)
    for b in range(2):
        s = np.clip(score[b].numpy(), 0, None) * valid[b].numpy()
        ref = _greedy_reference(u[b].numpy(), valid[b].numpy(), int(counts[b]), s=(s / s.max()) ** 1.5)
        assert picks[b, :int(counts[b])].tolist() == ref


@pytest.mark.parametrize("linear", [False, True])
def test_kcenter_frame_penalty_matches_numpy_and_defaults_to_none(linear):
    g = torch.Generator().manual_seed(6)
    u = torch.nn.functional.normalize(torch.randn(1, 18, 5, generator=g, dtype=torch.float64), dim=-1)
    valid = torch.ones(1, 18, dtype=torch.bool)
    frame = torch.arange(18)[None] // 6
    frame[0, 4] = -1  # a static point: no penalty towards any frame
    counts = torch.tensor([7])
    pen = kcenter_anchors(u, valid, counts, frame=frame, penalty=0.3, linear=linear)
    ref = _greedy_reference(u[0].numpy(), valid[0].numpy(), 7, frame=frame[0].numpy(), penalty=0.3, linear=linear)
    assert pen[0].tolist() == ref
    # the default penalty is 0: passing frames alone changes nothing
    assert torch.equal(kcenter_anchors(u, valid, counts, frame=frame, linear=linear), kcenter_anchors(u, valid, counts))


def _static_video(s0, s1):
    """Two frames (one clip): position 0 holds the same token in both (static), the other
    positions orthogonal directions of their own; global scores 6 and 5.5 on positions 1 and 2 of
    frame 0, 1 elsewhere, and (s0, s1) on the static position."""
    e = torch.eye(8, dtype=torch.float64)
    x = torch.stack([e[[0, 1, 2, 3]], e[[0, 4, 5, 6]]]) * 2.0
    g = torch.ones(2, 4, dtype=torch.float64)
    g[0, 1], g[0, 2] = 6.0, 5.5
    g[:, 0] = torch.tensor([s0, s1], dtype=torch.float64)
    return VideoTokens(x, grid=(2, 2), global_scores=g)


def test_static_point_scores_its_clip_mean():
    # found by mutation testing: the score of a static point (the mean over its clip's frames)
    # was computed by no test. Moving its high score from frame 0 to frame 1 keeps the mean (5,
    # below 5.5): nothing changes; raising the mean to 10 makes it a seed and changes the output
    red = AOTPlus(retention=3 / 8, static_tau=0.9, frame_penalty=0.0, clip_length=2, iters=1,
                  sim_dtype="float32", init="attention")
    a, b, c = (red(_static_video(*s)) for s in [(10.0, 0.0), (0.0, 10.0), (10.0, 10.0)])
    assert a.info["static_positions"] == 1
    assert torch.equal(a.source_index, b.source_index) and torch.equal(a.assignment, b.assignment)
    assert not torch.equal(a.assignment, c.assignment)


def test_fallback_scores_are_reported_in_info():
    # found by mutation testing: the note naming the fallback score was checked by no test
    video, _ = planted(F=4)
    plain = VideoTokens(video.tokens, grid=video.grid)
    out = AOTPlus(retention=0.25, init="attention")(plain)
    assert out.info["scores"] == "fallback: distinctiveness 1 - cos(token, frame mean)"
    assert "scores" not in AOTPlus(retention=0.25, init="attention")(video).info


def test_float64_medoid_repinning_runs_in_float64():
    # found by mutation testing: the medoid re-pinning (iters >= 2) never ran on float64 tokens;
    # it must agree with the float32 run on the same values (well-separated clusters: no ties)
    video, _ = planted(F=8, noise=1e-2)
    red = AOTPlus(retention=0.1, iters=3, sim_dtype="float32")
    o64 = red(VideoTokens(video.tokens.double(), grid=video.grid, global_scores=video.global_scores))
    o32 = red(video)
    assert o64.tokens.dtype == torch.float64
    assert torch.equal(o64.source_index, o32.source_index) and torch.equal(o64.assignment, o32.assignment)
    torch.testing.assert_close(o64.tokens.float(), o32.tokens, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, match", [({"seg_c": 0}, r"^seg_c must be in \[1, inf\], got 0$"),
                                        ({"static_tau": -1.5}, r"^static_tau must be in \[-1\.0, 1\.0\], got -1\.5$")])
def test_lower_bounds_of_parameters_name_the_range(bad, match):
    # found by mutation testing: the lower bounds of seg_c and static_tau were never exercised
    with pytest.raises(ValueError, match=match):
        AOTPlus(**bad)


def test_ot_assignment_reports_its_sinkhorn_error():
    # found by mutation testing: the plan's marginal error in info was checked by no test
    video, _ = planted(F=4)
    out = AOTPlus(retention=0.25, assign="ot")(video)
    err = out.info["sinkhorn_marginal_error"]
    assert isinstance(err, float) and 0.0 <= err < 1e-3 and out.info["sinkhorn_converged"] is True
    capped = AOTPlus(retention=0.25, assign="ot", max_iter=1)(video).info
    assert capped["sinkhorn_marginal_error"] > 1e-3 and capped["sinkhorn_converged"] is False


@pytest.mark.parametrize("kw", [
    {},                                                        # default: sketch, no static points
    {"sketch_dim": None},                                      # full d, bf16 unit points built block by block
    {"sketch_dim": None, "sim_dtype": "float32"},              # full d, fp32 unit points kept
    {"static_tau": 0.0},                                       # sketch with static means (norms in full d)
    {"static_tau": 0.0, "sketch_dim": None},                   # full d, static means written in place
    {"static_tau": 0.0, "sketch_dim": None, "clip_length": 3},  # unequal clips: gathered copy of the points
    {"static_tau": 0.0, "group": "frame"},
])
def test_blocked_full_width_steps_match_one_block(monkeypatch, kw):
    """The full-d temporaries (static means, unit points, token-to-anchor cosines, same-position
    cosines) are built in blocks of ``BLOCK_BYTES`` to bound peak memory (issue 12); blocks of one
    row/clip/frame must give bit-identical outputs to one block holding everything."""
    import anchor_ot.methods.aot_plus as ap
    g = torch.Generator().manual_seed(3)
    F, grid, d = 10, (4, 4), 128
    base = torch.randn(1, 16, d, generator=g)
    x = base + 0.7 * torch.randn(F, 16, d, generator=g)  # same-position cosines around 0.6: some static
    video = VideoTokens(x, grid=grid, global_scores=torch.rand(F, 16, generator=g))
    red = AOTPlus(retention=0.2, sketch_dim=kw.pop("sketch_dim", 32), **kw)
    monkeypatch.setattr(ap, "BLOCK_BYTES", 1 << 40)
    whole = red(video)
    monkeypatch.setattr(ap, "BLOCK_BYTES", 1)
    blocked = red(video)
    if "static_tau" in kw:
        assert whole.info["static_positions"] > 0
    assert torch.equal(whole.tokens, blocked.tokens)
    assert torch.equal(whole.source_index, blocked.source_index)
    assert torch.equal(whole.assignment, blocked.assignment)


def test_static_positions_blocked_matches_one_block(monkeypatch):
    import anchor_ot.methods.aot_plus as ap
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 6, 5, generator=g)
    x[:, :3] = x[:1, :3] + 0.01 * torch.randn(9, 3, 5, generator=g)
    clip_of = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    monkeypatch.setattr(ap, "BLOCK_BYTES", 1 << 40)
    whole = static_positions(x, clip_of, 3, 0.9)
    monkeypatch.setattr(ap, "BLOCK_BYTES", 1)  # one frame pair per block
    assert torch.equal(static_positions(x, clip_of, 3, 0.9), whole) and bool(whole[:, :3].all())


# -- static-token stage over runs of frames (issue 11, stop 16) ------------------------------------

def test_adjacent_cosines_match_torch_cosine_similarity():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 7, 9, generator=g, dtype=torch.float64)
    want = torch.nn.functional.cosine_similarity(x[1:], x[:-1], dim=-1)
    torch.testing.assert_close(aot_plus.adjacent_cosines(x), want)


def _runs_loop(adj, tau, W):
    """Plain loop reference of static_runs' rep and length for a fixed window W."""
    F, N = adj.shape[0] + 1, adj.shape[1]
    rep = torch.empty(F, N, dtype=torch.long)
    for n in range(N):
        first = 0
        for f in range(F):
            if f == 0 or f % W == 0 or not adj[f - 1, n] > tau:
                first = f
            rep[f, n] = first * N + n
    length = torch.zeros(F * N, dtype=torch.long)
    for r in rep.reshape(-1).tolist():
        length[r] += 1
    return rep, length.view(F, N)


def test_static_runs_match_a_loop_and_respect_the_window():
    """Catches: a run not broken where one consecutive cosine is low (a cut in the middle of the
    video), a run crossing a window boundary, lengths counted at the wrong token."""
    adj = torch.tensor([[0.99, 0.10, 0.99], [0.99, 0.99, 0.50], [0.20, 0.99, 0.99],
                        [0.99, 0.99, 0.99], [0.99, 0.30, 0.99]])  # (F - 1 = 5, N = 3)
    for window, W in [(None, 6), (4, 4), (2, 2), (1, 1)]:
        rep, length, used = aot_plus.static_runs(adj, 0.9, window)
        assert used == W
        want_rep, want_len = _runs_loop(adj, 0.9, W)
        assert torch.equal(rep, want_rep) and torch.equal(length, want_len)
    rep, length, _ = aot_plus.static_runs(adj, 0.9)
    # position 0: frames 0-2 one run (mass 3), frames 3-5 another (mass 3)
    assert rep[:, 0].tolist() == [0, 0, 0, 9, 9, 9] and length[:, 0].tolist() == [3, 0, 0, 3, 0, 0]


def test_static_runs_halve_the_window_until_enough_points_remain():
    """A still video: one run per position would leave N points; with min_points > N the window
    halves (32 -> 16 -> 8 ...) until the runs leave at least that many points."""
    F, N = 32, 5
    adj = torch.ones(F - 1, N)
    _, length, W = aot_plus.static_runs(adj, 0.9, None, min_points=N)
    assert W == 32 and int((length > 0).sum()) == N
    _, length, W = aot_plus.static_runs(adj, 0.9, None, min_points=3 * N)
    assert W == 8 and int((length > 0).sum()) == 4 * N  # 16 gives 2 N < 3 N points; 8 gives 4 N
    _, length, W = aot_plus.static_runs(adj, 0.9, None, min_points=F * N)
    assert W == 1 and bool((length == 1).all())  # nothing can merge


def _still_background_video(F=8, grid=(3, 4), d=12, seed=0):
    """Positions 0-5 hold one fixed token each for the whole video (a still background); the other
    positions change completely every frame."""
    g = torch.Generator().manual_seed(seed)
    N = grid[0] * grid[1]
    x = torch.randn(F, N, d, generator=g, dtype=torch.float64)
    x[:, :6] = torch.randn(1, 6, d, generator=g, dtype=torch.float64)
    return VideoTokens(x, grid)


def test_static_runs_merge_a_still_position_across_clips_into_one_output():
    """A position still for the whole video becomes ONE point across its 4 clips (mass F): its F
    tokens all go to the same output token; the per-clip rule keeps one point per clip, so they
    spread over 4 outputs. Catches a follower mapped to the point of its own clip or of the wrong
    position (flat_cq / rep_cq), and the cross-clip output placement."""
    video = _still_background_video()
    F, N = 8, 12
    kw = dict(retention=40 / (F * N), static_tau=0.95, clip_length=2, frame_penalty=0.0, sketch_dim=None)
    run = AOTPlus(static_span="run", **kw)(video)
    clip = AOTPlus(**kw)(video)
    assert run.info["static_window"] == F and run.info["static_points"] == 6
    assert run.info["static_tokens"] == 6 * F
    a = run.assignment.view(F, N)
    for n in range(6):
        assert a[:, n].unique().numel() == 1  # one output for the whole run
    assert clip.assignment.view(F, N)[:, 0].unique().numel() == 4  # one per clip of 2 frames
    # every output is the plain mean of its tokens (the merged run included)
    x = video.tokens.reshape(F * N, -1)
    sums = torch.zeros_like(run.tokens).index_add_(0, run.assignment, x)
    torch.testing.assert_close(run.tokens, sums / run.mass[:, None])
    assert run.num_tokens == 40


def test_static_cos_sketch_of_low_rank_tokens_equals_full_cosines():
    """Tokens of rank 5 in d = 40: a width-5 PCA sketch keeps every cosine and norm, so the sketch
    static test and the estimated static-mean norms give the full-d result (per clip and per run).
    Catches a wrong norm estimate (ratio upside down, sketch norm of the mean instead of the mean of
    norms) and a static test on unnormalized sketches."""
    g = torch.Generator().manual_seed(2)
    base = _low_rank(F=6, rank=5, seed=4).tokens
    x = base.clone()
    x[:, :10] = base[:1, :10] * (1 + 0.01 * torch.rand(6, 10, 1, generator=g, dtype=base.dtype))  # 10 still
    video = VideoTokens(x, (5, 6))
    for span in ("clip", "run"):
        kw = dict(retention=0.2, static_tau=0.99, static_span=span, sim_dtype="float32", sketch_dim=5)
        full = AOTPlus(static_cos="full", **kw)(video)
        sk = AOTPlus(static_cos="sketch", **kw)(video)
        assert full.info.get("static_positions", full.info.get("static_points")) > 0
        assert torch.equal(sk.assignment, full.assignment) and torch.equal(sk.source_index, full.source_index)
        torch.testing.assert_close(sk.tokens, full.tokens, atol=1e-10, rtol=1e-10)


def test_mass_weight_prefers_the_heavy_point_as_next_anchor():
    """Two candidates equally far from the first anchor: without a boost the first in index order
    wins the tie; with the heavy candidate's boost it is picked (catches a boost that is ignored or
    applied to the chosen anchors' similarities instead of the gains)."""
    u = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    start = torch.tensor([0])
    plain = kcenter_anchors(u, valid, torch.tensor([2]), start=start)
    heavy = kcenter_anchors(u, valid, torch.tensor([2]), start=start, boost=torch.tensor([[1.0, 1.0, 4.0]]))
    assert plain[0].tolist() == [0, 1] and heavy[0].tolist() == [0, 2]
    # rounds: one subgroup of 3 points, 2 picks
    r_plain = kcenter_rounds(u.view(1, 1, 3, 3), valid.view(1, 1, 3), torch.tensor([[2]]))
    r_heavy = kcenter_rounds(u.view(1, 1, 3, 3), valid.view(1, 1, 3), torch.tensor([[2]]),
                             boost=torch.tensor([[1.0, 1.0, 4.0]]))
    assert r_plain[0].tolist() == [0, 1] and r_heavy[0].tolist() == [0, 2]  # first pick: nearest the mean (tie: 0)


def test_static_runs_with_half_input_equal_float32():
    v32 = _still_background_video()
    v32 = VideoTokens(v32.tokens.float(), v32.grid)
    vh = VideoTokens(v32.tokens.to(torch.bfloat16), v32.grid)
    v = VideoTokens(vh.tokens.float(), v32.grid)
    for kw in ({"sketch_dim": 6}, {"sketch_dim": None}, {"sketch_dim": 6, "static_cos": "sketch"}):
        red = AOTPlus(retention=0.3, static_tau=0.95, static_span="run", clip_length=2, **kw)
        a, b = red(vh), red(v)
        assert a.info["static_points"] > 0
        assert torch.equal(a.assignment, b.assignment) and torch.equal(a.source_index, b.source_index)
        assert torch.equal(a.tokens, b.tokens.to(torch.bfloat16))


@pytest.mark.parametrize("place", ["spread", "frame"])
def test_static_place_spread_puts_position_n_in_frame_n_mod_L(place):
    """K = the number of points: every point is its own output, so a static position's output sits
    where its point sits: frame n mod L of the clip with "spread"/"frame" (every frame keeps a share
    of the background), whereas "first" keeps them all in the clip's first frame's slot (any frame
    for its placement). Catches a slot computed from the wrong length, followers not mapped to the
    slot, and the placement ignoring the slot."""
    video = _still_background_video(F=8)
    F, N, L = 8, 12, 4
    K = F * N - 2 * 6 * (L - 1)  # 6 static positions, 2 clips of 4 frames
    out = AOTPlus(retention=K / (F * N), static_tau=0.95, clip_length=L, static_place=place, frame_penalty=0.0,
                  sketch_dim=None)(video)
    assert out.num_tokens == K and out.info["static_positions"] == 12
    a = out.assignment.view(F, N)
    for c in range(2):
        for n in range(6):
            row = a[c * L:(c + 1) * L, n]
            assert row.unique().numel() == 1
            assert int(out.source_index[row[0]]) == (c * L + n % L) * N + n


# -- similarity dtype: bf16 kernels or not ---------------------------------------------------------

def test_native_bf16_matmul_is_torchs_own_test():
    assert aot_plus.native_bf16_matmul() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@pytest.mark.parametrize("native", [True, False], ids=["torch-bf16", "fp32-rounded"])
def test_lowp_matmul_is_a_bf16_gemm_on_both_paths(native, monkeypatch):
    """Either path: bf16 operands, fp32 accumulation, one bf16 rounding of the result, i.e. within one
    bf16 unit (2**-8 relative) of the exact product of the bf16 values; the emulated path is that
    product rounded once, bit for bit."""
    monkeypatch.setattr(aot_plus, "native_bf16_matmul", lambda: native)
    g = torch.Generator().manual_seed(40)
    a, b = torch.randn(3, 20, 64, generator=g).bfloat16(), torch.randn(3, 64, 7, generator=g).bfloat16()
    out = aot_plus.lowp_matmul(a, b)
    assert out.dtype == torch.bfloat16 and out.shape == (3, 20, 7)
    exact = torch.matmul(a.double(), b.double())
    assert float(((out.double() - exact).abs() / exact.abs().clamp_min(1e-3)).max()) <= 2.0 ** -8 + 1e-3
    if not native:
        assert torch.equal(out, torch.matmul(a.float(), b.float()).bfloat16())
    # 2-D operands (the Gram matrix) and other dtypes: plain matmul
    assert torch.equal(aot_plus.lowp_matmul(a[0], a[0].T), aot_plus.lowp_matmul(a[:1], a[:1].transpose(1, 2))[0])
    x, y = a.float(), b.float()
    assert torch.equal(aot_plus.lowp_matmul(x, y), torch.matmul(x, y))


@pytest.mark.parametrize("native", [True, False], ids=["torch-bf16", "fp32-rounded"])
def test_lowp_operand_converted_once_gives_the_same_products(native, monkeypatch):
    """A reused right operand converted up front by lowp_operand: where products are emulated it is
    the exact fp32 copy in the same layout (so the same GEMM runs), elsewhere the tensor itself; the
    products equal those of the unconverted operand bit for bit."""
    monkeypatch.setattr(aot_plus, "native_bf16_matmul", lambda: native)
    g = torch.Generator().manual_seed(41)
    u = torch.randn(2, 30, 16, generator=g).bfloat16()
    ut = u.transpose(1, 2)
    op = aot_plus.lowp_operand(ut)
    if native:
        assert op is ut
    else:
        assert op.dtype == torch.float32 and op.stride() == ut.stride() and torch.equal(op, ut.float())
    q = u[:, :5]
    assert torch.equal(aot_plus.lowp_matmul(q, op), aot_plus.lowp_matmul(q, ut))
    f = torch.randn(3, 4, generator=g)
    assert aot_plus.lowp_operand(f) is f  # fp32 tensors are never copied


@pytest.mark.parametrize("native", [True, False])
def test_sim_dtype_auto_resolves_by_device_and_cpu(native, monkeypatch):
    monkeypatch.setattr(aot_plus, "native_bf16_matmul", lambda: native)
    auto, f32, bf16 = (AOTPlus(retention=0.1, sim_dtype=s) for s in ("auto", "float32", "bfloat16"))
    assert auto.similarity_dtype("cpu") == (torch.bfloat16 if native else None)
    assert auto.similarity_dtype("cuda") == torch.bfloat16  # GPUs have bf16 GEMMs
    assert f32.similarity_dtype("cuda") is None and bf16.similarity_dtype("cpu") == torch.bfloat16
    video, _ = planted()
    out = auto(video)
    assert out.info["sim_dtype"] == ("bfloat16" if native else "float32")
    same = bf16(video) if native else f32(video)  # "auto" is exactly the dtype it resolves to
    assert torch.equal(out.tokens, same.tokens) and torch.equal(out.assignment, same.assignment)
    assert f32(VideoTokens(video.tokens.double(), video.grid)).info["sim_dtype"] == "float64"


def test_sim_dtype_rejects_unknown_names():
    with pytest.raises(ValueError, match="sim_dtype"):
        AOTPlus(retention=0.1, sim_dtype="float16")
