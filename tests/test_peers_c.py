"""Value tests of HoliTom, EVS and VidCom2 against hand-computed cases and naive numpy
re-implementations of the reference algorithms (the authors' code for HoliTom, vLLM's
``video_prune/{evs,vidcom2}.py`` for EVS and VidCom2), plus exact-budget checks."""

import math

import numpy as np
import pytest
import torch

from anchor_ot import methods
from anchor_ot.methods.holitom import fit_counts, select_windows, static_runs, window_gains
from anchor_ot.types import VideoTokens

NAMES = ["holitom", "evs", "vidcom2"]


def video(F, h, w, d=16, seed=0, scores=True, noise=0.6, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, h * w, d, generator=g, dtype=torch.float64)
    x = (base + noise * torch.randn(F, h * w, d, generator=g, dtype=torch.float64)).to(dtype)
    s = torch.rand(F, h * w, generator=g, dtype=torch.float64).to(dtype) if scores else None
    return VideoTokens(x, (h, w), global_scores=s)


def kept_mask(out, F, N):
    m = np.zeros(F * N, dtype=bool)
    m[out.source_index.numpy()] = True
    return m


# =============================================================== budgets (all three)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("F, grid", [(1, (14, 14)), (3, (5, 7)), (8, (6, 6)), (20, (1, 1))])
@pytest.mark.parametrize("r", [0.01, 0.1, 0.3, 0.7, 1.0])
def test_budget_stated_before_features_is_kept(name, F, grid, r):
    m = methods.get(name, retention=r)
    k = m.num_kept(F, grid)  # before any token exists
    out = m(video(F, *grid, seed=F + int(100 * r))).validate()
    assert out.num_tokens == k
    assert float(out.mass.sum()) == F * grid[0] * grid[1]


def _vllm_evs_count(N, F, q):      # vLLM's compute_retained_tokens_count, written out
    return max(N, int(N * F * (1 - q)))


def _vllm_vidcom2_count(N, F, q):
    return max(F, min(int(N * F * (1.0 - q)), N * F))


@pytest.mark.parametrize("F, N", [(32, 196), (16, 100), (7, 13), (1, 729), (20, 1), (3, 10)])
@pytest.mark.parametrize("q", [0.0, 0.5, 0.7, 0.75, 0.9, 0.95, 0.99])
def test_vllm_counts(F, N, q):
    grid = (1, N)
    r = 1 - q
    assert methods.get("evs", retention=r).num_kept(F, grid) == _vllm_evs_count(N, F, q)
    assert methods.get("vidcom2", retention=r).num_kept(F, grid) == _vllm_vidcom2_count(N, F, q)


def test_vllm_counts_truncate_not_round():
    # 1 - (1 - 0.1) = 0.09999999999999998: vLLM keeps int(20 * that) = 1, not 2
    assert methods.get("vidcom2", retention=0.1).num_kept(20, (1, 1)) == 1 + 19  # floor F: one per frame
    assert methods.get("evs", retention=0.1).num_kept(20, (1, 1)) == 1           # floor: one frame
    assert methods.get("evs", retention=0.1).num_kept(20, (2, 1)) == 3           # int(3.9999...) = 3
    assert methods.get("vidcom2", retention=0.1).num_kept(32, (14, 14)) == 627   # round would give 627 too
    assert methods.get("evs", retention=0.05).num_kept(32, (14, 14)) == 313      # 313.6 -> 313 (round: 314)
    assert methods.get("evs", retention=0.1).num_kept(4, (14, 14)) == 196        # whole first frame


# =============================================================== EVS
def numpy_evs(x, q):
    """vLLM's EVS retention mask, literally: 255 for frame 0, 1 - cos elsewhere, stable descending sort."""
    T, N, _ = x.shape
    diss = np.empty((T, N))
    diss[0] = 255.0
    for t in range(1, T):
        for n in range(N):
            a, b = x[t, n], x[t - 1, n]
            diss[t, n] = 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    k = _vllm_evs_count(N, T, q)
    order = sorted(range(T * N), key=lambda i: -diss.reshape(-1)[i])  # stable
    mask = np.zeros(T * N, dtype=bool)
    mask[order[:k]] = True
    return mask


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("q", [0.5, 0.75, 0.9])
def test_evs_matches_numpy_reference(seed, q):
    v = video(6, 3, 4, d=8, seed=seed, noise=0.4, dtype=torch.float64)
    out = methods.get("evs", retention=1 - q)(v)
    ref = numpy_evs(v.tokens.numpy(), q)
    assert np.array_equal(kept_mask(out, 6, 12), ref)
    # kept tokens are the input rows, bit for bit
    assert torch.equal(out.tokens, v.tokens.reshape(-1, 8)[out.source_index])


def test_evs_hand_case_and_assignment():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    x = torch.tensor([[e1, e2],                 # frame 0: kept whole
                      [e1, [0.0, -1.0]],        # pos 1 flips: dissimilarity 2
                      [[1.0, 0.1], [0.0, -1.0]]], dtype=torch.float64)  # pos 0 turns a little
    out = methods.get("evs", retention=0.5)(VideoTokens(x, (1, 2)))  # K = max(2, int(3.0)) = 3
    assert out.source_index.tolist() == [0, 1, 3]
    # dropped (1,0) -> (0,0); dropped (2,0) -> (1,0) dropped -> (0,0); dropped (2,1) -> kept (1,1)
    assert out.assignment.tolist() == [0, 1, 0, 2, 0, 2]
    assert out.mass.tolist() == [3.0, 1.0, 2.0]


def test_evs_one_frame_keeps_everything():
    v = video(1, 4, 4)
    out = methods.get("evs", retention=0.1)(v)
    assert torch.equal(out.tokens, v.tokens[0])


# =============================================================== VidCom2
_ALPHAS = [2.0 ** k for k in range(-3, 2)]


def numpy_vidcom2(x, q):
    """vLLM's VidCom2 retention mask, written out with loops and direct formulas."""
    T, N, C = x.shape
    flat = x.reshape(T * N, C)
    var = flat.var(axis=0)                                   # population variance
    kc = max(1, int(C * 0.5))
    ch = np.argsort(var, kind="stable")[:kc]
    sel = flat[:, ch]
    sel = sel / np.linalg.norm(sel, axis=1, keepdims=True)
    frames = sel.reshape(T, N, kc)
    vc = frames.reshape(-1, kc).mean(0)
    v = np.zeros((T, N))
    f = np.zeros((T, N))
    for t in range(T):
        fc = frames[t].mean(0)
        for n in range(N):
            dv = ((frames[t, n] - vc) ** 2).sum()
            df = ((frames[t, n] - fc) ** 2).sum()
            v[t, n] = sum(math.exp(-dv / (2 * a)) for a in _ALPHAS)
            f[t, n] = sum(math.exp(-df / (2 * a)) for a in _ALPHAS)
    sim = v + f
    base = 1.0 - q
    fs = -v.mean(1)
    e = np.exp((fs - fs.max()) / 0.01)
    p = e / e.sum()
    scales = np.minimum(base * (1 + p - p.mean()), 1.0)
    ks = np.clip(np.round(scales * N).astype(int), 1, N)     # numpy rounds half to even, as torch
    mask = np.zeros((T, N), dtype=bool)
    for t in range(T):
        mask[t, np.argsort(sim[t], kind="stable")[: ks[t]]] = True
    mask = mask.reshape(-1)
    target = _vllm_vidcom2_count(N, T, q)
    cur = mask.sum()
    s = sim.reshape(-1)
    if cur > target:
        idx = np.nonzero(mask)[0]
        mask[idx[np.argsort(-s[idx], kind="stable")[: cur - target]]] = False
    elif cur < target:
        idx = np.nonzero(~mask)[0]
        mask[idx[np.argsort(s[idx], kind="stable")[: target - cur]]] = True
    return mask, ks


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("q", [0.5, 0.8, 0.9, 0.97])
def test_vidcom2_matches_numpy_reference(seed, q):
    g = torch.Generator().manual_seed(seed)
    # frames of different spread, so the softmax budget is not uniform
    x = torch.randn(5, 12, 10, generator=g, dtype=torch.float64) * torch.linspace(0.3, 2.0, 5).view(5, 1, 1).double()
    x = x + torch.randn(1, 1, 10, generator=g, dtype=torch.float64)
    out = methods.get("vidcom2", retention=1 - q)(VideoTokens(x, (3, 4)))
    ref, ks = numpy_vidcom2(x.numpy(), q)
    assert out.info["frame_budgets"] == ks.tolist()
    assert np.array_equal(kept_mask(out, 5, 12), ref)
    assert torch.equal(out.tokens, x.reshape(-1, 10)[out.source_index])


def test_vidcom2_distinct_frame_gets_the_bigger_budget():
    # 4 near-identical frames and one far from the video centre: the softmax gives it the extra share
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 16, 8, generator=g)
    x = base + 0.05 * torch.randn(5, 16, 8, generator=g)
    x[3] = torch.randn(16, 8, generator=g)
    out = methods.get("vidcom2", retention=0.25)(VideoTokens(x, (4, 4)))
    ks = out.info["frame_budgets"]
    assert ks[3] == max(ks) and ks[3] > sorted(ks)[-2]


# =============================================================== HoliTom helpers
def numpy_holitom_windows(sim, tau, max_window=1024):
    """The authors' select_static_windows, written out (cumprod table, then the DP)."""
    T = sim.shape[0] + 1
    count = np.zeros((T, T))
    for s in range(T - 1):
        cum = np.cumprod(sim[s:] > tau, axis=0)
        for j, row in enumerate(cum):
            count[s, s + 1 + j] = row.sum()
    gain = np.array([[max(e - s, 0) * count[s, e] for e in range(T)] for s in range(T)])
    dp = np.zeros(T)
    prev = np.zeros(T, dtype=int)
    for i in range(T):
        best = dp[i - 1] if i > 0 else 0
        bj = i
        for ws in range(2, min(i + 1, max_window) + 1):
            j = i - ws
            val = (dp[j] if j >= 0 else 0) + gain[j + 1, i]
            if val > best:
                best, bj = val, j + 1
        dp[i], prev[i] = best, bj
    out, i = [], T - 1
    while i >= 0:
        out.append((int(prev[i]), i + 1))
        i = prev[i] - 1
    return out[::-1], int(dp[-1])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_window", [1024, 3])
def test_holitom_windows_match_authors_dp(seed, max_window):
    rng = np.random.default_rng(seed)
    T, N = 9, 7
    sim = rng.uniform(0.3, 1.0, size=(T - 1, N))
    sim[rng.integers(0, T - 1)] = 0.1           # a scene cut
    ok = torch.from_numpy(sim > 0.7)
    got = select_windows(window_gains(static_runs(ok)), max_window)
    assert got == numpy_holitom_windows(sim, 0.7, max_window)


def test_holitom_dp_hand_case():
    # position 0 static over all 3 transitions, position 1 only over the first
    ok = torch.tensor([[True, True], [True, False], [True, False]])
    run = static_runs(ok)
    assert run.tolist() == [[3, 1], [2, 0], [1, 0], [0, 0]]
    gain = window_gains(run)
    assert gain[0].tolist() == [0, 2, 2, 3] and gain[1].tolist() == [0, 0, 1, 2]
    # dp = [0, 2, 2, 3]: frames 0-1 together (saves 2), frames 2-3 together (saves 1)
    assert select_windows(gain) == ([(0, 2), (2, 4)], 3)
    assert select_windows(gain, max_window=1) == ([(0, 1), (1, 2), (2, 3), (3, 4)], 0)


def test_fit_counts_moves_the_most_favoured_groups():
    counts = torch.tensor([3, 3, 3, 1])
    ideal = torch.tensor([2.5, 2.9, 2.5, 1.0], dtype=torch.float64)
    caps = torch.tensor([10, 10, 10, 10])
    out = fit_counts(counts, ideal, caps, 8)          # two too many: groups 0 and 2 gave +0.5
    assert out.tolist() == [2, 3, 2, 1]
    out = fit_counts(torch.tensor([0, 2]), torch.tensor([0.4, 1.9], dtype=torch.float64),
                     torch.tensor([1, 2]), 3)         # short by one, group 1 is full
    assert out.tolist() == [1, 2]


# =============================================================== HoliTom end to end
def _hand_video():
    # 2 frames x 4 positions: positions 0, 1 identical in both frames (static), 2, 3 turn 90 degrees
    f0 = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 1.0]]
    f1 = [[1.0, 0.0], [0.0, 1.0], [1.0, -1.0], [-1.0, -1.0]]
    x = torch.tensor([f0, f1], dtype=torch.float64)
    s = torch.tensor([[0.0, 0.0, 0.1, 0.9], [0.0, 0.0, 0.8, 0.2]], dtype=torch.float64)
    return VideoTokens(x, (2, 2), global_scores=s)


def test_holitom_hand_case():
    # one window (saves 2 of 8), r' = 0.375 / (6/8) = 0.5: static round(2 * .5) = 1 cluster,
    # each frame ceil(2 * .5) = 1 dynamic token; the authors' count 3 = K = round(0.375 * 8)
    out = methods.get("holitom", retention=0.375)(_hand_video())
    assert out.info["windows"] == [(0, 2)]
    assert out.info["official_counts"] == 3
    assert out.info["retention_after_static"] == 0.5
    # static centre (position 0, density tie -> lower index) absorbs position 1: .6 c + .4 m
    assert out.source_index.tolist() == [0, 3, 6]
    expect = torch.tensor([[0.6, 0.4], [-1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    assert torch.allclose(out.tokens, expect, atol=1e-12)
    # static positions of both frames -> cluster; dropped (0,2) -> static cluster (cos .98);
    # dropped (1,3) -> frame 1's kept token (cos 0 beats the cluster's -.98)
    assert out.assignment.tolist() == [0, 0, 0, 1, 0, 0, 2, 2]


def test_holitom_no_beta_variant_is_plain_mean():
    out = methods.get("holitom:no-beta", retention=0.375)(_hand_video())
    assert torch.allclose(out.tokens[0], torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_holitom_exact_budget_trims_the_rounding():
    # no static position (frames unrelated): 3 frames of 10, r = 0.25 -> authors keep ceil(2.5) = 3
    # per frame (9); K = round(7.5) = 8: one frame gives one back, each frame keeps its top scores
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 64, generator=g)
    s = torch.rand(3, 10, generator=g)
    out = methods.get("holitom", retention=0.25)(VideoTokens(x, (2, 5), global_scores=s))
    assert out.info["windows"] == [(0, 1), (1, 2), (2, 3)]
    assert out.info["official_counts"] == 9 and out.num_tokens == 8
    per_frame = torch.bincount(out.frame_index, minlength=3)
    assert sorted(per_frame.tolist()) == [2, 3, 3]
    for f in range(3):
        kept = (out.source_index[out.frame_index == f] % 10).tolist()
        assert set(kept) == set(torch.topk(s[f], int(per_frame[f])).indices.tolist())
        assert torch.equal(out.tokens[out.frame_index == f], x[f, kept])


def test_holitom_budget_above_static_capacity_demotes():
    # 4 identical frames: everything static; retention 0.5 needs 8 of 16 but averaging leaves 4
    x = torch.randn(1, 4, 8).expand(4, 4, 8).contiguous()
    out = methods.get("holitom", retention=0.5)(VideoTokens(x, (2, 2)))
    assert out.num_tokens == 8 and out.info["demoted"] >= 1
    out.validate()


@pytest.mark.parametrize("r", [0.25, 0.15])
def test_holitom_matches_numpy_reference_when_counts_agree(r):
    """A naive numpy port of the authors' outer stage (D = 0, beta on) on a video with two
    static stretches; seed chosen so that the authors' count equals K (no budget fitting)."""
    g = torch.Generator().manual_seed(21)
    F, N, d = 6, 16, 12
    base = torch.randn(1, N, d, generator=g, dtype=torch.float64)
    x = base + 0.15 * torch.randn(F, N, d, generator=g, dtype=torch.float64)
    x[3:, 8:] = torch.randn(3, 8, d, generator=g, dtype=torch.float64)   # a cut in half the grid
    x[4:, :4] += 2.0 * torch.randn(2, 4, d, generator=g, dtype=torch.float64)
    s = torch.rand(F, N, generator=g, dtype=torch.float64)
    ref_tokens, ref_src = numpy_holitom(x.numpy(), s.numpy(), r=r, tau=0.8, beta=0.6, K=7)
    assert len(ref_src) == round(r * F * N), "test case must have the authors' count equal K"
    out = methods.get("holitom", retention=r)(VideoTokens(x, (4, 4), global_scores=s))
    assert out.info["windows"] == [(0, 3), (3, 6)]
    assert out.source_index.tolist() == ref_src
    assert np.allclose(out.tokens.numpy(), ref_tokens, atol=1e-12)


def numpy_holitom(x, s, r, tau, beta, K):
    T, N, d = x.shape
    u = x / np.linalg.norm(x, axis=-1, keepdims=True)
    sim = (u[1:] * u[:-1]).sum(-1)
    windows, reduced = numpy_holitom_windows(sim, tau)
    total = T * N
    ratio = min(r / ((total - reduced) / total), 1)
    rows = []
    for a, b in windows:
        if b - a > 1:
            mask = np.all(sim[a:b - 1] > tau, axis=0)
        else:
            mask = np.zeros(N, dtype=bool)
        dyn = np.nonzero(~mask)[0]
        for f in range(a, b):
            c = math.ceil(len(dyn) * ratio)
            top = dyn[np.argsort(-s[f, dyn], kind="stable")[:c]]
            rows += [(f * N + n, x[f, n]) for n in top]
        st = np.nonzero(mask)[0]
        c = round(len(st) * ratio)
        if len(st) == 0 or c == 0:
            continue
        feat = x[a:b, st].mean(0)
        dist = np.sqrt(((feat[:, None] - feat[None]) ** 2).sum(-1)) / math.sqrt(d)
        k = min(K, c)
        rho = np.exp(-(np.sort(dist, axis=1)[:, :k] ** 2).mean(1))
        n_st = len(st)
        delta = np.empty(n_st)
        for i in range(n_st):
            higher = [j for j in range(n_st) if rho[j] > rho[i] or (rho[j] == rho[i] and j < i)]
            delta[i] = min(dist[i, higher]) if higher else dist.max()
        score = rho * delta
        centres = sorted(np.argsort(-score, kind="stable")[:c])
        assign = {i: min(centres, key=lambda cc: (dist[i, cc], centres.index(cc))) for i in range(n_st)
                  if i not in centres}
        for cc in centres:
            mem = [i for i, o in assign.items() if o == cc]
            tok = beta * feat[cc] + (1 - beta) * feat[mem].mean(0) if mem else feat[cc]
            rows.append((a * N + st[cc], tok))
    rows.sort(key=lambda t: t[0])
    return np.stack([t for _, t in rows]), [i for i, _ in rows]


# =============================================================== FastVID: the official split
def _scored_video(F, h, w, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(F, h * w, d, generator=g, dtype=torch.float64)
    s = torch.rand(F, h * w, generator=g, dtype=torch.float64)
    return VideoTokens(x, (h, w), global_scores=s)


def test_fastvid_official_split_single_frame_clips():
    # K = F * int(196 * r) = 3 x 19: the authors keep 19 per frame, 12 salient by attention
    # (19 - int(19 * 0.4)) and 7 density-peak context tokens. 3 < c frames: every frame is a clip.
    v = _scored_video(3, 14, 14)
    m = methods.get("fastvid", retention=19 / 196)
    assert m.num_kept(3, (14, 14)) == 57
    out = m(v)
    assert out.info["segments"] == [(0, 1), (1, 2), (2, 3)]
    assert out.info["num_salient"] == 36 and out.info["num_context"] == 21
    for f in range(3):
        rows = (out.frame_index == f).nonzero().squeeze(1)
        assert rows.numel() == 19
        top12 = set(torch.topk(v.global_scores[f], 12).indices.tolist())
        pos = (out.source_index[rows] % 196).tolist()
        assert top12 <= set(pos)
        sal = [i for i, p in zip(rows.tolist(), pos) if p in top12]
        assert torch.equal(out.tokens[sal], v.tokens[f, [p for p in pos if p in top12]])  # unchanged


def test_fastvid_official_split_multi_frame_clip():
    # one clip of 5 frames (c = 1, tau = -1: no cut), p = 4: anchor frames 0 and 4 (counted from
    # the end); the clip's context is 5 x 7 = 35: the authors give each anchor 35 // 2 = 17 and
    # lose one, we give it to the earliest anchor. Salient: 12 in every frame.
    v = _scored_video(5, 14, 14, seed=1)
    out = methods.get("fastvid", retention=19 / 196, c=1, tau=-1.0)(v)
    assert out.info["segments"] == [(0, 5)]
    assert torch.bincount(out.frame_index, minlength=5).tolist() == [12 + 18, 12, 12, 12, 12 + 17]
    for f in range(5):
        pos = set((out.source_index[out.frame_index == f] % 196).tolist())
        assert set(torch.topk(v.global_scores[f], 12).indices.tolist()) <= pos


def test_fastvid_budget_split_rule():
    m = methods.get("fastvid", retention=0.1)
    # K = 627 over 32 frames of 196: shares 19 or 20; salient 19 - 7 = 12 and 20 - 8 = 12
    sal, ctx = m.budget_split(627, 32, 196, [(f, f + 1) for f in range(32)])
    assert sal.tolist() == [12] * 32 and int(ctx.sum()) == 627 - 384
    assert sorted(set(ctx.tolist())) == [7, 8]
    # high retention: 2 frames of 10 in one clip, p = 4: one anchor (frame 1) cannot hold
    # int(10 * .4) * 2 = 8 context tokens next to its 6 salient ones -> 4 context, 4 more salient
    sal, ctx = m.budget_split(20, 2, 10, [(0, 2)])
    assert ctx.tolist() == [0, 4] and sal.tolist() == [10, 6]


# =============================================================== PruneVid: small groups stay whole
def test_prunevid_leaves_groups_of_14_or_fewer_unclustered():
    # 2 frames of 6 x 6 in one window: 24 static positions (the same token in both frames) and
    # 12 dynamic ones per frame. The authors cluster the 24 static tokens to int(24 * .5) = 12
    # and keep each frame's 12 (<= 14) dynamic tokens as they are: 36 = K at retention 0.5.
    g = torch.Generator().manual_seed(0)
    N, d = 36, 16
    x = torch.randn(2, N, d, generator=g, dtype=torch.float64)
    dyn = torch.arange(24, 36)
    x[1, :24] = x[0, :24]
    x[1, dyn] = torch.randn(12, d, generator=g, dtype=torch.float64)   # unrelated: cos ~ 0 < 0.8
    out = methods.get("prunevid", retention=0.5)(VideoTokens(x, (6, 6)))
    assert out.info["windows"] == [(0, 2)]
    assert out.num_tokens == 36
    for f in range(2):
        rows = (out.source_index // N == f) & (out.source_index % N >= 24)
        assert torch.equal(out.tokens[rows], x[f, dyn])                # every dynamic token, unchanged
        assert torch.equal(out.mass[rows], torch.ones(12))
    static_rows = out.source_index % N < 24
    assert int(static_rows.sum()) == 12 and float(out.mass[static_rows].sum()) == 48.0


# =============================================================== fast helpers vs plain torch
def test_consecutive_cosine_and_channel_variance_match_plain_formulas():
    from anchor_ot.methods._frames import consecutive_cosine
    from anchor_ot.methods.vidcom2 import channel_variance
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, 9, generator=g, dtype=torch.float64) * torch.rand(9, generator=g, dtype=torch.float64) + 3.0
    ref = torch.nn.functional.cosine_similarity(x[1:], x[:-1], dim=-1)
    assert torch.allclose(consecutive_cosine(x), ref, atol=1e-12)
    assert consecutive_cosine(x[:1]).shape == (0, 7)
    flat = x.reshape(-1, 9)
    assert torch.allclose(channel_variance(flat, block=4), flat.var(0, unbiased=False), rtol=1e-10)


def test_self_distance_is_exactly_zero_so_k1_density_ties_break_by_index():
    # HoliTom clusters with k = min(7, clusters): one cluster means k = 1, every point's only
    # neighbour is itself, all densities tie; the lowest index must then be the centre.
    from anchor_ot.methods._density import dpc_knn_scores, pairwise_dist
    g = torch.Generator().manual_seed(0)
    x = 3.0 + torch.randn(1, 40, 64, generator=g)
    dist = pairwise_dist(x)
    assert torch.equal(torch.diagonal(dist[0]), torch.zeros(40))
    score = dpc_knn_scores(dist, torch.ones(1, 40, dtype=torch.bool), 1)
    assert int(score.argmax()) == 0


def test_holitom_edge_cases_found_by_mutation_testing():
    # no frames: no windows and nothing saved; beta is a convex weight, so above 1 is refused
    assert select_windows(torch.zeros(0, 0, dtype=torch.long)) == ([], 0)
    with pytest.raises(ValueError, match=r"^beta must be in \[0\.0, 1\.0\], got 1\.5$"):
        methods.get("holitom", beta=1.5)
