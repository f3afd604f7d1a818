"""Fidelity metrics: identity, hand examples, an independent oracle, monotonicity, errors, dtypes."""

import math

import pytest
import torch

from anchor_ot import metrics
from anchor_ot.methods.base import assemble
from anchor_ot.types import VideoTokens


def identity(video: VideoTokens):
    F, N, d = video.tokens.shape
    idx = torch.arange(F * N)
    return assemble(video.tokens.reshape(-1, d), idx, idx, F, video.grid).validate()


def keep_and_assign(video: VideoTokens, keep: torch.Tensor, tokens=None):
    """Keep the flat positions ``keep``; every other token goes to its most similar kept token."""
    F, N, d = video.tokens.shape
    x = torch.nn.functional.normalize(video.tokens.reshape(-1, d).float(), dim=-1)
    assignment = (x @ x[keep].T).argmax(dim=1)
    assignment[keep] = torch.arange(len(keep))
    out = video.tokens.reshape(-1, d)[keep] if tokens is None else tokens
    return assemble(out, keep, assignment, F, video.grid).validate()


def structured_video(F=6, h=6, w=6, d=32, seed=0):
    """Tokens that vary smoothly over (frame, row, col): random Fourier features."""
    g = torch.Generator().manual_seed(seed)
    f, r, c = torch.meshgrid(torch.arange(F), torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([f / F, r / h, c / w], dim=-1).reshape(F, h * w, 3).float()
    W = torch.randn(3, d, generator=g) * 3.0
    b = torch.rand(d, generator=g) * 2 * math.pi
    return VideoTokens(torch.sin(pos @ W + b), grid=(h, w))


# -- identity ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_identity_scores_one(dtype):
    g = torch.Generator().manual_seed(1)
    v = VideoTokens(torch.randn(3, 12, 16, generator=g).to(dtype), grid=(3, 4),
                    global_scores=torch.rand(3, 12, generator=g))
    red = identity(v)
    cls = torch.randn(3, 16, generator=g).to(dtype)
    out = metrics.evaluate(v, red, cls=cls)
    for name in ("reconstruction", "coverage", "readout", "readout_cls"):
        assert out[name] == pytest.approx(1.0, abs=1e-5), name
    assert metrics.attention_readout(v, red, normalize=True, temperature=0.1) == pytest.approx(1.0, abs=1e-5)


# -- hand examples ----------------------------------------------------------------------------
def test_reconstruction_and_coverage_by_hand():
    v = VideoTokens(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), grid=(1, 2))
    dropped = keep_and_assign(v, torch.tensor([0]))  # token 1 (orthogonal) absorbed by token 0
    assert metrics.reconstruction(v, dropped) == pytest.approx(0.5)
    assert metrics.reconstruction(v, dropped, weights=torch.tensor([[3.0, 1.0]])) == pytest.approx(0.75)
    assert metrics.coverage(v, dropped) == pytest.approx(0.5)
    scored = VideoTokens(v.tokens, grid=(1, 2), global_scores=torch.tensor([[1.0, 3.0]]))
    assert metrics.reconstruction(scored, dropped) == pytest.approx(0.25)  # default weights = global_scores
    merged = keep_and_assign(v, torch.tensor([0]), tokens=torch.tensor([[0.5, 0.5]]))
    assert metrics.reconstruction(v, merged) == pytest.approx(1 / math.sqrt(2))
    assert metrics.coverage(v, merged) == pytest.approx(1 / math.sqrt(2))
    # one output token: the reduced readout is that token, whatever the query
    x = v.tokens[0]
    full = torch.softmax(x @ x.T / math.sqrt(2), dim=-1) @ x
    expected = torch.nn.functional.cosine_similarity(full, torch.tensor([[0.5, 0.5]]), dim=-1).mean()
    assert metrics.attention_readout(v, merged) == pytest.approx(float(expected), abs=1e-6)


def test_readout_matches_a_direct_float64_computation():
    g = torch.Generator().manual_seed(2)
    v = VideoTokens(torch.randn(2, 9, 8, generator=g) * 2, grid=(3, 3))
    keep = torch.tensor([0, 4, 7, 9, 13, 17])
    x = v.tokens.reshape(-1, 8).double()
    red = keep_and_assign(v, keep, tokens=(torch.randn(6, 8, generator=g) + x[keep].float()))
    queries = torch.randn(5, 8, generator=g)
    y, s = red.tokens.double(), red.mass.double()
    tau = 0.7
    scores = []
    for q in queries.double():
        a = torch.exp(x @ q / tau)
        o = (a[:, None] * x).sum(0) / a.sum()
        b = s * torch.exp(y @ q / tau)  # proportional attention: mass times exp(logit)
        o_hat = (b[:, None] * y).sum(0) / b.sum()
        scores.append(float(o @ o_hat / (o.norm() * o_hat.norm())))
    got = metrics.attention_readout(v, red, queries=queries, temperature=tau)
    assert got == pytest.approx(sum(scores) / len(scores), abs=1e-6)
    assert got < 0.999  # the check can fail: this reduction does lose information


def test_proportional_attention_makes_duplicate_merging_lossless():
    # frames of 6 tokens: u1 u1 u1 u2 u3 u3 (different u per frame); keep one of each with its mass
    g = torch.Generator().manual_seed(3)
    frames, keep = [], []
    for f in range(2):
        u = torch.randn(3, 8, generator=g) * 0.5  # diffuse attention, so masses matter
        frames.append(u[[0, 0, 0, 1, 2, 2]])
        keep += [6 * f, 6 * f + 3, 6 * f + 4]
    v = VideoTokens(torch.stack(frames), grid=(2, 3))
    red = keep_and_assign(v, torch.tensor(keep))
    assert red.mass.tolist() == [3, 1, 2, 3, 1, 2]
    assert metrics.attention_readout(v, red) == pytest.approx(1.0, abs=1e-5)
    assert metrics.reconstruction(v, red) == pytest.approx(1.0, abs=1e-5)
    assert metrics.coverage(v, red) == pytest.approx(1.0, abs=1e-5)
    # without the log(mass) bias the same reduction would not read out the same thing
    x, y = v.tokens.reshape(-1, 8), red.tokens
    o = torch.softmax(x @ x.T / math.sqrt(8), -1) @ x
    o_plain = torch.softmax(x @ y.T / math.sqrt(8), -1) @ y
    assert float(torch.nn.functional.cosine_similarity(o, o_plain, dim=-1).mean()) < 0.999


# -- monotone in the budget -------------------------------------------------------------------
def test_metrics_drop_when_fewer_tokens_are_kept():
    v = structured_video()
    total = v.num_frames * v.tokens_per_frame
    results = []
    for step in (1, 2, 4, 8, 16):  # nested subsets: every step-th token in temporal-raster order
        red = keep_and_assign(v, torch.arange(0, total, step))
        results.append(metrics.evaluate(v, red))
    cov = [r["coverage"] for r in results]
    rec = [r["reconstruction"] for r in results]
    rd = [r["readout"] for r in results]
    assert cov[0] == pytest.approx(1.0, abs=1e-6) and rd[0] == pytest.approx(1.0, abs=1e-5)
    assert all(a > b for a, b in zip(cov, cov[1:])), cov
    assert all(a > b for a, b in zip(rec, rec[1:])), rec
    assert rd[1] > rd[-1] and rd[-1] < 0.999, rd
    for r in results:
        assert all(-1.0 <= val <= 1.0 + 1e-6 for val in r.values())
        assert r["coverage"] >= r["reconstruction"] - 1e-6


def test_realistic_size_readout_blocks_bound_memory_and_match_float64():
    # F=8, N=196, d=384 (DINOv2-S size per frame) and 2048 extra queries: the unblocked logits
    # would be one 2048 x 1568 float32 matrix (12.8 MB); blocks of _CHUNK = 1024 queries cap every
    # allocation at 1024 x 1568 x 4 bytes, measured with torch.profiler's memory records
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(4)
    v = VideoTokens(torch.randn(8, 196, 384, generator=g).to(torch.bfloat16), grid=(14, 14))
    keep = torch.randperm(8 * 196, generator=g)[:157].sort().values
    red = keep_and_assign(v, keep)
    q = torch.randn(2048, 384, generator=g)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        got = metrics.attention_readout(v, red, queries=q)
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert largest == 1024 * 8 * 196 * 4  # one block of logits (1024 rows, as documented), nothing bigger
    # value: the same readout, unblocked, in float64 (eq. in attention_readout's docstring)
    x = v.tokens.reshape(-1, 384).double()
    y = red.tokens.double()
    qd, tau = q.double(), math.sqrt(384)
    full = torch.softmax(qd @ x.T / tau, -1) @ x
    mine = torch.softmax(qd @ y.T / tau + torch.log(red.mass.double()), -1) @ y
    assert got == pytest.approx(float(torch.nn.functional.cosine_similarity(full, mine, dim=-1).mean()), abs=1e-5)


# -- temporal localization --------------------------------------------------------------------
def _orthogonal_frames(F=4):
    eye = torch.eye(2 * F)
    return VideoTokens(eye.reshape(F, 2, 2 * F), grid=(1, 2))


def test_temporal_localization_by_hand():
    v = _orthogonal_frames()
    between = torch.stack([v.tokens[0], v.tokens[2], v.tokens[3], v.tokens[3], v.tokens[1]])
    pos = torch.tensor([0.3, 1.6, 2.5, 3.0, 1.2])  # 2.5: midpoint, frame 3 counts as nearest
    assert metrics.temporal_localization(identity(v), between, pos) == 1.0
    # a between-frame that looks like the wrong time is a miss
    wrong = torch.stack([v.tokens[0], v.tokens[0]])
    assert metrics.temporal_localization(identity(v), wrong, torch.tensor([0.4, 3.0])) == 0.5
    # frame 1 merged away entirely: it can no longer be found (1 miss of 5)
    keep = torch.tensor([0, 1, 4, 5, 6, 7])
    red = keep_and_assign(v, keep)
    assert (red.frame_index == 1).sum() == 0
    assert metrics.temporal_localization(red, between, pos) == pytest.approx(0.8)
    out = metrics.evaluate(v, red, between=(between, pos))
    assert out["temporal"] == pytest.approx(0.8)


def test_temporal_localization_accepts_other_token_counts_and_dtypes():
    v = _orthogonal_frames()
    between = torch.cat([v.tokens[[2]], v.tokens[[2]]], dim=1).to(torch.float16)  # M = 4 tokens
    assert metrics.temporal_localization(identity(v), between, [2.1]) == 1.0


# -- errors -----------------------------------------------------------------------------------
def test_errors():
    v = structured_video(F=2, h=2, w=3, d=8)
    red = identity(v)
    other = structured_video(F=3, h=2, w=3, d=8)
    with pytest.raises(ValueError, match="frames"):
        metrics.coverage(other, red)
    with pytest.raises(ValueError, match="d = 4"):
        metrics.coverage(VideoTokens(torch.randn(2, 6, 4), grid=(2, 3)), red)
    with pytest.raises(TypeError):
        metrics.coverage(v.tokens, red)
    with pytest.raises(ValueError, match="weights"):
        metrics.reconstruction(v, red, weights=torch.ones(2, 5))
    with pytest.raises(ValueError, match="non-negative"):
        metrics.reconstruction(v, red, weights=-torch.ones(2, 6))
    with pytest.raises(ValueError, match="cls"):
        metrics.attention_readout(v, red, cls=torch.randn(3, 8))
    with pytest.raises(ValueError, match="queries"):
        metrics.attention_readout(v, red, queries=torch.randn(4, 7))
    with pytest.raises(ValueError, match="temperature"):
        metrics.attention_readout(v, red, temperature=0.0)
    with pytest.raises(ValueError, match="between_tokens"):
        metrics.temporal_localization(red, torch.randn(2, 3, 5), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="between_positions"):
        metrics.temporal_localization(red, torch.randn(2, 3, 8), torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"\[0, F - 1\]"):
        metrics.temporal_localization(red, torch.randn(1, 3, 8), torch.tensor([1.5]))
    with pytest.raises(TypeError, match="between"):
        metrics.evaluate(v, red, between=torch.randn(1, 3, 8))


# -- every registered method ------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::anchor_ot.ot.SinkhornNotConverged")  # AOT at eps 0.1 on toy tokens
@pytest.mark.parametrize("name", __import__("anchor_ot.methods", fromlist=["available"]).available())
def test_registered_methods_identity_at_full_retention_and_loss_below(name):
    from anchor_ot import methods

    v = structured_video(F=8, h=6, w=6, d=32)
    full = metrics.evaluate(v, methods.get(name, retention=1.0)(v))
    for key, val in full.items():
        assert val == pytest.approx(1.0, abs=1e-5), (name, key)
    high = metrics.evaluate(v, methods.get(name, retention=0.5)(v))
    low = metrics.evaluate(v, methods.get(name, retention=0.1)(v))
    assert low["coverage"] < high["coverage"] < 1.0
    assert all(-1.0 <= val <= 1.0 for val in (*high.values(), *low.values()))


def test_evaluate_cache_reuses_full_readouts_exactly():
    import anchor_ot.metrics as M
    from anchor_ot import methods
    from anchor_ot.types import VideoTokens

    g = torch.Generator().manual_seed(7)
    video = VideoTokens(torch.randn(3, 16, 8, generator=g), (4, 4), global_scores=torch.rand(3, 16, generator=g))
    cls = torch.randn(3, 8, generator=g)
    cache: dict = {}
    for name in ("aot", "pool", "random"):
        reduced = methods.get(name, retention=0.25)(video)
        plain = M.evaluate(video, reduced, cls=cls)
        cached = M.evaluate(video, reduced, cls=cls, cache=cache)
        assert cached == plain
    assert set(cache) == {"video", "readout", "readout_cls"}
    assert cache["readout"].shape == (48, 8) and cache["readout_cls"].shape == (3, 8)
    other = VideoTokens(torch.randn(3, 16, 8, generator=g), (4, 4))
    with pytest.raises(ValueError, match="another video"):
        M.evaluate(other, methods.get("pool", retention=0.25)(other), cache=cache)
    with pytest.raises(ValueError, match="reference"):
        M.attention_readout(video, reduced, reference=torch.zeros(5, 8))
