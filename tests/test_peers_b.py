"""Behaviour tests of FastVID, PruneVid and OTT-Vid (planted structure), plus their helpers."""

import pytest
import torch

from anchor_ot import methods
from anchor_ot.methods._density import dpc_knn_scores, pairwise_dist, split_budget
from anchor_ot.methods.fastvid import anchor_frames
from anchor_ot.methods.ottvid import coverage_select, loo_mass, pair_budgets
from anchor_ot.methods.prunevid import temporal_windows
from anchor_ot.types import VideoTokens

NAMES = ["fastvid", "prunevid", "ottvid"]


def video(F, h, w, d=16, seed=0, scores=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, h * w, d, generator=g)
    x = (base + 0.6 * torch.randn(F, h * w, d, generator=g)).to(dtype)
    s = torch.rand(F, h * w, generator=g) if scores else None
    return VideoTokens(x, (h, w), global_scores=s)


# ---------------------------------------------------------------- all three methods
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("F, grid", [(1, (14, 14)), (2, (13, 13)), (7, (8, 12)), (16, (6, 6))])
@pytest.mark.parametrize("r", [0.02, 0.1, 0.35, 1.0])
def test_exact_count_and_contract(name, F, grid, r):
    v = video(F, *grid, seed=F, scores=F % 2 == 0)
    m = methods.get(name, retention=r)
    out = m(v).validate()
    assert out.num_tokens == m.num_kept(F, grid)
    assert out.tokens.dtype == v.tokens.dtype
    if r == 1.0:  # keeping everything returns the input exactly
        assert torch.equal(out.tokens, v.tokens.reshape(-1, v.dim))
        assert torch.equal(out.assignment, torch.arange(F * grid[0] * grid[1]))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    v = video(12, 7, 7, scores=True, seed=3)
    a, b = methods.get(name, retention=0.15)(v), methods.get(name, retention=0.15)(v)
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.source_index, b.source_index)
    assert torch.equal(a.assignment, b.assignment)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(name, dtype):
    v32 = video(6, 6, 6, scores=True, seed=5)
    vh = VideoTokens(v32.tokens.to(dtype), v32.grid, global_scores=v32.global_scores)
    out = methods.get(name, retention=0.2)(vh).validate()
    assert out.tokens.dtype == dtype and out.num_tokens == round(0.2 * 6 * 36)
    assert torch.isfinite(out.tokens.float()).all()


@pytest.mark.parametrize("name, bad, exc", [
    ("fastvid", {"d": 1.5}, ValueError), ("fastvid", {"p": 0}, ValueError),
    ("fastvid", {"c": 2.5}, TypeError), ("fastvid", {"beta": -0.1}, ValueError),
    ("fastvid", {"beta": 1.5}, ValueError),  # beta is a convex weight (found by mutation testing)
    ("fastvid", {"tau": 2.0}, ValueError), ("prunevid", {"tau": 1.2}, ValueError),
    ("prunevid", {"temporal_segment_ratio": 0.0}, ValueError), ("prunevid", {"k": 0}, ValueError),
    ("ottvid", {"eps": 0.0}, ValueError), ("ottvid", {"gamma": 1.5}, ValueError),
    ("ottvid", {"max_iter": 0}, ValueError), ("ottvid", {"tau_b": 0}, ValueError),
    ("ottvid", {"theta": -1}, ValueError), ("ottvid", {"retention": 0.0}, ValueError),
    ("prunevid", {"cluster_ratio": 0.5}, ValueError),
])
def test_bad_parameters_raise(name, bad, exc):
    with pytest.raises(exc):
        methods.get(name, **bad)


def test_registry_metadata():
    for name, paper in [("fastvid", "arXiv:2503.11187"), ("prunevid", "arXiv:2412.16117"), ("ottvid", "arXiv:2605.11803")]:
        assert name in methods.available()
        cls = type(methods.get(name))
        assert cls.paper == paper and cls.description and "\n" not in cls.description
    assert methods.get("fastvid").params() == {
        "retention": 0.1, "c": 8, "tau": 0.9, "d": 0.4, "p": 4, "beta": 0.6, "k": 4}
    assert methods.get("ottvid").params() == {
        "retention": 0.1, "gamma": 0.3, "tau_m": 0.3, "tau_b": 0.3, "theta": 0.3, "eps": 0.01, "max_iter": 200}


# ---------------------------------------------------------------- FastVID
def test_fastvid_anchor_frames_count_from_clip_end():
    assert anchor_frames([(0, 10)], 4) == [1, 5, 9]
    assert anchor_frames([(0, 3), (3, 8)], 4) == [2, 3, 7]
    assert anchor_frames([(0, 1)], 4) == [0]


def test_fastvid_keeps_top_score_tokens_unchanged():
    v = video(8, 8, 8, scores=True, seed=7)
    scores = v.global_scores.clone()
    top = torch.tensor([5, 17, 42])          # planted: highest scores in every frame
    scores[:, top] = 10.0 + torch.arange(3.0)
    v = VideoTokens(v.tokens, v.grid, global_scores=scores)
    out = methods.get("fastvid", retention=0.25)(v)
    flat = v.tokens.reshape(-1, v.dim)
    for f in range(8):
        for n in top.tolist():
            pos = f * 64 + n
            row = int(out.assignment[pos])
            assert int(out.source_index[row]) == pos, "salient token must be kept at its position"
            assert torch.equal(out.tokens[row], flat[pos]) and out.mass[row] == 1
    assert out.info["scores"] == "global_scores"


def test_fastvid_merges_static_background_and_keeps_changing_region():
    g = torch.Generator().manual_seed(11)
    F, h, w, d = 16, 8, 8, 32
    # a smooth static background: one colour plus small per-position texture
    bg = torch.randn(1, 1, d, generator=g) + 0.3 * torch.randn(1, h * w, d, generator=g)
    x = bg.expand(F, -1, -1) + 0.01 * torch.randn(F, h * w, d, generator=g)
    moving = torch.tensor([9, 10, 17, 18])
    x[:, moving] = 3.0 * torch.randn(F, 4, d, generator=g)   # a region that changes every frame
    v = VideoTokens(x, (h, w))
    m = methods.get("fastvid", retention=0.15, c=1, tau=0.0)
    out = m(v).validate()
    assert out.info["segments"] == [(0, F)]
    assert out.info["scores"].startswith("fallback")
    kept = set(out.source_index.tolist())
    for f in range(F):
        for n in moving.tolist():
            assert f * 64 + n in kept                       # the changing region survives in every frame
            assert out.mass[out.assignment[f * 64 + n]] == 1
    # the background collapses onto density-peak anchors of the anchor frames 3, 7, 11, 15
    merged = out.mass > 1
    assert set(out.frame_index[merged].tolist()) <= {3, 7, 11, 15}
    n_ctx, n_sal = out.info["num_context"], out.info["num_salient"]
    assert float(out.mass[merged].sum()) >= F * 64 - n_sal - n_ctx   # all but lone anchors merged
    bg_rows = out.assignment.view(F, 64)[:, 0]
    assert len(set(bg_rows.tolist())) == 1                  # a static position joins one anchor


# ---------------------------------------------------------------- PruneVid
def test_prunevid_windows_follow_scenes():
    g = torch.Generator().manual_seed(2)
    scenes = torch.randn(3, 32, generator=g)
    means = scenes.repeat_interleave(4, 0) + 0.05 * torch.randn(12, 32, generator=g)
    assert temporal_windows(means, ratio=0.25, k=3) == [(0, 4), (4, 8), (8, 12)]
    assert temporal_windows(means[:1]) == [(0, 1)]


def test_prunevid_averages_static_positions_over_the_window():
    g = torch.Generator().manual_seed(4)
    F, h, w, d = 4, 4, 4, 16
    x = torch.randn(1, h * w, d, generator=g).repeat(F, 1, 1) + 0.01 * torch.randn(F, h * w, d, generator=g)
    dynamic = torch.tensor([0, 5, 10, 15])
    x[:, dynamic] = torch.randn(F, 4, d, generator=g)
    v = VideoTokens(x, (h, w))
    # one window of 4 frames; 12 static positions (mass 4) + 16 dynamic tokens = 28 kept
    out = methods.get("prunevid", retention=28 / 64)(v).validate()
    assert out.info["windows"] == [(0, 4)] and out.info["num_static_positions"] == 12
    static_rows = out.mass == 4
    assert int(static_rows.sum()) == 12 and int((out.mass == 1).sum()) == 16
    static_pos = out.source_index[static_rows]
    assert bool((static_pos < 16).all())                       # placed on the window's first frame
    assert torch.allclose(out.tokens[static_rows], x[:, static_pos].mean(0), atol=1e-6)
    # every frame's copy of a static position points to the same output
    a = out.assignment.view(F, 16)
    assert bool((a == a[0]).all(0)[~torch.isin(torch.arange(16), dynamic)].all())


def test_prunevid_static_positions_are_clustered_when_the_budget_is_small():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 36, 8, generator=g).repeat(6, 1, 1)
    out = methods.get("prunevid", retention=0.05, temporal_segment_ratio=0.2)(VideoTokens(x, (6, 6))).validate()
    assert out.num_tokens == round(0.05 * 6 * 36)
    assert torch.allclose(out.mass.sum(), torch.tensor(216.0))
    # each output is the mean of the inputs it stands for (nothing dropped)
    assert out.info["dropped"] == 0
    flat = x.reshape(-1, 8)
    means = torch.zeros_like(out.tokens).index_add_(0, out.assignment, flat) / out.mass.unsqueeze(1)
    assert torch.allclose(out.tokens, means, atol=1e-5)


# ---------------------------------------------------------------- OTT-Vid
def test_ottvid_gives_more_budget_to_the_less_redundant_pair():
    g = torch.Generator().manual_seed(8)
    f0 = torch.randn(49, 16, generator=g)
    f2 = torch.randn(49, 16, generator=g)
    x = torch.stack([f0, f0 + 0.01 * torch.randn(49, 16, generator=g), f2])   # (0, 1) redundant, (1, 2) not
    out = methods.get("ottvid", retention=0.2, gamma=0.5)(VideoTokens(x, (7, 7))).validate()
    merges = out.info["pair_budgets"]
    assert merges[0] > merges[1]                     # the redundant pair is merged more
    per_frame = torch.bincount(out.frame_index, minlength=3)
    assert per_frame[2] > per_frame[1]               # the novel frame keeps more tokens
    assert sum(merges) == 3 * out.info["spatial_per_frame"] - out.num_tokens


def test_ottvid_spatial_count_and_single_frame():
    m = methods.get("ottvid", retention=0.1)
    assert m.spatial_count(32, (14, 14)) == int(196 * 0.1 ** 0.7)
    assert m.spatial_count(1, (14, 14)) == m.num_kept(1, (14, 14))   # one frame: no temporal stage
    out = m(video(1, 14, 14, scores=True)).validate()
    assert "sinkhorn_converged" not in out.info


def test_coverage_select_prefers_salient_region():
    g = torch.Generator().manual_seed(9)
    x = torch.nn.functional.normalize(torch.randn(1, 20, 8, generator=g), dim=-1)
    sim = x @ x.transpose(1, 2)
    w = torch.zeros(1, 20)
    w[0, 7] = 1.0                                # only token 7 needs covering
    assert 7 in coverage_select(sim, w, 1)[0].tolist()
    picks = coverage_select(sim, torch.full((1, 20), 0.05), 20)
    assert picks[0].tolist() == list(range(20))


def test_loo_mass_gives_less_mass_to_irreplaceable_tokens():
    sim_sel = torch.tensor([[[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.1, 0.95]]])
    w = torch.full((1, 4), 0.25)
    m = loo_mass(sim_sel, w, 0.3)
    assert torch.allclose(m.sum(-1), torch.ones(1))
    assert m[0, 2] < m[0, 0] and m[0, 2] < m[0, 1]   # token 2 alone covers tokens 2 and 3


def test_pair_budgets_follow_negative_softmax_and_caps():
    b = pair_budgets(10, torch.tensor([0.1, 0.1, 0.1]), torch.tensor([9, 9, 9]), 0.3)
    assert sorted(b.tolist()) == [3, 3, 4] and int(b.sum()) == 10
    b = pair_budgets(10, torch.tensor([0.0, 1.0]), torch.tensor([4, 9]), 0.3)
    assert b.tolist() == [4, 6]                        # the easy pair is capped, the excess moves


# ---------------------------------------------------------------- shared helpers
def test_split_budget_exact_and_capped():
    out = split_budget(7, torch.tensor([1.0, 1.0, 2.0]), torch.tensor([5, 1, 5]))
    assert out.tolist() == [2, 1, 4] and int(out.sum()) == 7   # group 1's excess follows the weights
    assert split_budget(0, torch.ones(3), torch.ones(3, dtype=torch.long)).tolist() == [0, 0, 0]
    assert split_budget(2, torch.zeros(3), torch.tensor([1, 1, 1])).tolist() == [1, 1, 0]
    with pytest.raises(ValueError):
        split_budget(4, torch.ones(2), torch.tensor([1, 1]))


def test_dpc_knn_picks_one_peak_per_cluster():
    g = torch.Generator().manual_seed(10)
    centers = 10 * torch.randn(3, 4, generator=g)
    pts = centers.repeat_interleave(5, 0) + 0.1 * torch.randn(15, 4, generator=g)
    score = dpc_knn_scores(pairwise_dist(pts[None]), torch.ones(1, 15, dtype=torch.bool), 3)
    top3 = score[0].topk(3).indices
    assert sorted((top3 // 5).tolist()) == [0, 1, 2]
    masked = dpc_knn_scores(pairwise_dist(pts[None]), torch.arange(15)[None] < 10, 3)
    assert bool(torch.isinf(masked[0, 10:]).all()) and bool(torch.isfinite(masked[0, :10]).all())


def test_pairwise_dist_between_two_sets_matches_torch_cdist():
    # found by mutation testing: the two-set form (y given) was called by no test
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    ref = torch.cdist(x, y) / 7 ** 0.5
    torch.testing.assert_close(pairwise_dist(x, y), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(pairwise_dist(x), torch.cdist(x, x) / 7 ** 0.5, rtol=1e-10, atol=1e-7)


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_fastvid_merged_token_is_the_documented_blend(beta):
    # found by mutation testing (the default beta = 0.6 hides the 1/(n+1) term): every merged
    # output token is a * anchor + (1 - a) * mean(members), a = max(1/(n+1), beta), n its mass,
    # recomputed in float64 from the output's own assignment and source positions
    g = torch.Generator().manual_seed(11)
    x = torch.randn(1, 1, 16, generator=g) + 0.5 * torch.randn(8, 36, 16, generator=g)
    out = methods.get("fastvid", retention=0.2, c=1, tau=0.0, beta=beta)(VideoTokens(x, (6, 6)))
    flat = x.reshape(-1, 16).double()
    merged = 0
    for row in range(out.num_tokens):
        members = (out.assignment == row).nonzero().squeeze(1)
        n = members.numel()
        if n < 2:
            continue
        merged += 1
        a = max(1.0 / (n + 1), beta)
        ref = a * flat[out.source_index[row]] + (1 - a) * flat[members].mean(0)
        torch.testing.assert_close(out.tokens[row].double(), ref, rtol=1e-5, atol=1e-5)
    assert merged >= 3
