"""The fidelity metrics against float64 numpy written from their docstrings, on reductions whose
assignment is not the nearest kept token, plus every error message word for word. Written
against the mutants that survived the mutation run of ``metrics.py`` (docs/testing.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anchor_ot import metrics
from anchor_ot.methods.base import assemble
from anchor_ot.types import ReducedVideo, VideoTokens


def reduction(video: VideoTokens, keep: list[int], seed: int, zero_row: int | None = None):
    """Keep the flat positions ``keep`` with new random tokens; every other input token goes to a
    random kept row (not its most similar one), so every metric sees a wrong-on-purpose merge."""
    F, N, d = video.tokens.shape
    g = torch.Generator().manual_seed(seed)
    K = len(keep)
    assignment = torch.randint(0, K, (F * N,), generator=g)
    assignment[torch.tensor(keep)] = torch.arange(K)
    tokens = torch.randn(K, d, generator=g, dtype=torch.float64).to(video.tokens.dtype)
    if zero_row is not None:
        tokens[zero_row] = 0
    return assemble(tokens, torch.tensor(keep), assignment, F, video.grid).validate()


def random_video(F=3, grid=(2, 4), d=6, seed=0, scores=True) -> VideoTokens:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(F, grid[0] * grid[1], d, generator=g, dtype=torch.float64)
    x[0, 1] = 0  # a zero token: cosine 0 with everything
    s = torch.rand(F, grid[0] * grid[1], generator=g, dtype=torch.float64) if scores else None
    return VideoTokens(x, grid, global_scores=s)


# -- numpy float64 references (the formulas of the docstrings) ---------------------------------

def unit(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    return np.where(n > 0, a / np.where(n > 0, n, 1.0), 0.0)


def np_reconstruction(video, red, w) -> float:
    x = unit(video.tokens.reshape(-1, video.dim).double().numpy())
    y = unit(red.tokens.double().numpy())
    cos = np.einsum("id,id->i", x, y[red.assignment.numpy()])
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    return float((w * cos).sum() / w.sum())


def np_coverage(video, red) -> float:
    x = unit(video.tokens.reshape(-1, video.dim).double().numpy())
    y = unit(red.tokens.double().numpy())
    return float((x @ y.T).max(axis=1).mean())


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_readouts(video, q, tau, normalize):
    x = video.tokens.reshape(-1, video.dim).double().numpy()
    q = q.double().numpy()
    if normalize:
        x, q = unit(x), unit(q)
    return softmax(q @ x.T / tau) @ x


def np_readout(video, red, q, tau, normalize=False) -> float:
    full = np_readouts(video, q, tau, normalize)
    y = red.tokens.double().numpy()
    q = q.double().numpy()
    if normalize:
        y, q = unit(y), unit(q)
    mine = softmax(q @ y.T / tau + np.log(red.mass.double().numpy())) @ y
    cos = (full * mine).sum(1) / (np.linalg.norm(full, axis=1) * np.linalg.norm(mine, axis=1))
    return float(cos.mean())


def np_temporal(red, z, pos) -> float:
    y = unit(red.tokens.double().numpy())
    z = unit(z.double().numpy())
    frame_of = red.frame_index.numpy()
    F = red.num_frames
    hits = []
    for zb, p in zip(z, np.asarray(pos, dtype=np.float64)):
        sims = zb @ y.T  # (M, K)
        match = [sims[:, frame_of == f].max(axis=1).mean() if (frame_of == f).any() else -np.inf
                 for f in range(F)]
        pred = int(np.argmax(match))  # first maximum
        nearest = min(abs(p - f) for f in range(F))
        hits.append(abs(p - pred) <= nearest + 1e-9)
    return float(np.mean(hits))


# -- reconstruction ------------------------------------------------------------------------------

def test_reconstruction_matches_numpy_with_default_explicit_and_uniform_weights():
    v = random_video()
    red = reduction(v, [0, 3, 9, 12, 20, 23], seed=1, zero_row=2)
    assert metrics.reconstruction(v, red) == pytest.approx(np_reconstruction(v, red, v.global_scores), abs=1e-6)
    w = torch.rand(3, 8, generator=torch.Generator().manual_seed(2))
    w[1] = 0  # zero weights are allowed
    assert metrics.reconstruction(v, red, weights=w) == pytest.approx(np_reconstruction(v, red, w), abs=1e-6)
    plain = VideoTokens(v.tokens, v.grid)
    assert metrics.reconstruction(plain, red) == pytest.approx(np_reconstruction(v, red, np.ones(24)), abs=1e-6)
    one = torch.zeros(3, 8)
    one[2, 5] = 0.5  # a single positive weight: the cosine of that token
    assert metrics.reconstruction(v, red, weights=one) == pytest.approx(
        np_reconstruction(v, red, one.numpy()), abs=1e-6)


@pytest.mark.parametrize(("weights", "exc", "message"), [
    ([[1.0] * 8] * 3, ValueError, r"weights must be a tensor of shape \(F, N\) = \(3, 8\), got list"),
    (torch.ones(24), ValueError, r"weights must be a tensor of shape \(F, N\) = \(3, 8\), got \(24,\)"),
    (torch.ones(3, 7), ValueError, r"weights must be a tensor of shape \(F, N\) = \(3, 8\), got \(3, 7\)"),
    (torch.zeros(3, 8), ValueError, "weights must be finite, non-negative and not all zero"),
    (torch.full((3, 8), float("nan")), ValueError, "weights must be finite, non-negative and not all zero"),
    (torch.full((3, 8), float("inf")), ValueError, "weights must be finite, non-negative and not all zero"),
    (torch.ones(3, 8) - 2 * torch.eye(3, 8), ValueError, "weights must be finite, non-negative and not all zero"),
])
def test_reconstruction_weight_errors_word_for_word(weights, exc, message):
    v = random_video()
    red = reduction(v, [0, 9, 20], seed=1)
    with pytest.raises(exc, match=f"^{message}$"):
        metrics.reconstruction(v, red, weights=weights)


def test_pair_errors_word_for_word():
    v = random_video()
    red = reduction(v, [0, 9, 20], seed=1)
    with pytest.raises(TypeError, match="^video must be a VideoTokens, got Tensor$"):
        metrics.coverage(v.tokens, red)
    with pytest.raises(TypeError, match="^reduced must be a ReducedVideo, got dict$"):
        metrics.coverage(v, {})
    other_grid = VideoTokens(v.tokens.reshape(3, 8, 6), (4, 2))
    msg = (r"^reduced was made from 3 frames on a \(2, 4\) grid, but video has 3 frames on a \(4, 2\) grid: "
           r"pass the video the reducer was called on$")
    with pytest.raises(ValueError, match=msg):
        metrics.reconstruction(other_grid, red)
    fewer = VideoTokens(v.tokens[:2], v.grid)
    with pytest.raises(ValueError, match=r"^reduced was made from 3 frames on a \(2, 4\) grid, but video has 2 "):
        metrics.coverage(fewer, red)
    narrow = VideoTokens(v.tokens[..., :5], v.grid)
    with pytest.raises(ValueError, match=r"^reduced tokens must be \(K, 5\) to match the video's d = 5, got \(3, 6\)$"):
        metrics.coverage(narrow, red)
    cube = ReducedVideo(tokens=red.tokens[:, :, None], source_index=red.source_index, frame_index=red.frame_index,
                        mass=red.mass, assignment=red.assignment, num_frames=3, grid=(2, 4))
    with pytest.raises(ValueError, match=r"^reduced tokens must be \(K, 6\) to match the video's d = 6, got \(3, 6, 1\)$"):
        metrics.coverage(v, cube)
    broken = ReducedVideo(tokens=red.tokens, source_index=red.source_index, frame_index=red.frame_index,
                          mass=red.mass + 1, assignment=red.assignment, num_frames=3, grid=(2, 4))
    with pytest.raises(ValueError, match="^mass must equal"):
        metrics.coverage(v, broken)  # the reduced video's own invariants are checked


# -- coverage -------------------------------------------------------------------------------------

def test_coverage_matches_numpy_across_query_blocks():
    # 2 x 24 x 24 = 1152 input tokens: two blocks of the (rows x K) similarity products
    g = torch.Generator().manual_seed(3)
    v = VideoTokens(torch.randn(2, 576, 5, generator=g), (24, 24))
    keep = sorted(torch.randperm(1152, generator=g)[:40].tolist())
    red = reduction(v, keep, seed=4, zero_row=7)
    assert metrics.coverage(v, red) == pytest.approx(np_coverage(v, red), abs=1e-6)
    assert metrics.reconstruction(v, red) == pytest.approx(np_reconstruction(v, red, np.ones(1152)), abs=1e-6)


# -- attention readout ----------------------------------------------------------------------------

def test_readout_defaults_match_numpy():
    v = random_video(d=6)
    red = reduction(v, [0, 3, 9, 12, 20, 23], seed=5)
    q = v.tokens.reshape(-1, 6)
    assert metrics.attention_readout(v, red) == pytest.approx(np_readout(v, red, q, math.sqrt(6)), abs=1e-6)


def test_readout_normalized_matches_numpy():
    g = torch.Generator().manual_seed(6)
    v = VideoTokens(torch.randn(2, 9, 4, generator=g) * 3, (3, 3))
    red = reduction(v, [1, 4, 8, 10, 17], seed=7)
    q = v.tokens.reshape(-1, 4)
    got = metrics.attention_readout(v, red, normalize=True, temperature=0.1)
    assert got == pytest.approx(np_readout(v, red, q, 0.1, normalize=True), abs=1e-6)
    assert got != pytest.approx(np_readout(v, red, q, 0.1, normalize=False), abs=1e-3)


def test_readout_with_cls_appends_the_cls_queries():
    g = torch.Generator().manual_seed(8)
    v = VideoTokens(torch.randn(2, 9, 4, generator=g), (3, 3))
    red = reduction(v, [1, 4, 8, 10, 17], seed=9)
    cls = torch.randn(2, 4, generator=g)
    queries = torch.randn(3, 4, generator=g)
    x = v.tokens.reshape(-1, 4)
    tau = 0.5
    assert metrics.attention_readout(v, red, cls=cls, temperature=tau) == pytest.approx(
        np_readout(v, red, torch.cat([x, cls]), tau), abs=1e-6)
    assert metrics.attention_readout(v, red, queries=queries, cls=cls, temperature=tau) == pytest.approx(
        np_readout(v, red, torch.cat([queries, cls]), tau), abs=1e-6)
    assert metrics.attention_readout(v, red, queries=queries, temperature=tau) == pytest.approx(
        np_readout(v, red, queries, tau), abs=1e-6)


def test_readout_reference_matches_numpy_and_serves_every_block():
    # 1500 queries: two blocks of 1024 rows; the reference rows of each block must be its own
    g = torch.Generator().manual_seed(10)
    v = VideoTokens(torch.randn(2, 6, 3, generator=g), (2, 3))
    red = reduction(v, [0, 5, 7, 11], seed=11)
    q = torch.randn(1500, 3, generator=g)
    ref = metrics.readout_reference(v, queries=q, temperature=0.3)
    assert ref.shape == (1500, 3) and ref.dtype == torch.float32
    np.testing.assert_allclose(ref.double().numpy(), np_readouts(v, q, 0.3, False), atol=1e-5)
    plain = metrics.attention_readout(v, red, queries=q, temperature=0.3)
    assert metrics.attention_readout(v, red, queries=q, temperature=0.3, reference=ref) == plain
    assert plain == pytest.approx(np_readout(v, red, q, 0.3), abs=1e-6)
    cls = torch.randn(2, 3, generator=g)
    ref_n = metrics.readout_reference(v, cls=cls, normalize=True, temperature=0.2)
    np.testing.assert_allclose(ref_n.double().numpy(),
                               np_readouts(v, torch.cat([v.tokens.reshape(-1, 3), cls]), 0.2, True), atol=1e-5)
    ref_d = metrics.readout_reference(v)  # default queries and temperature sqrt(d)
    np.testing.assert_allclose(ref_d.double().numpy(), np_readouts(v, v.tokens.reshape(-1, 3), math.sqrt(3), False),
                               atol=1e-5)


@pytest.mark.parametrize(("kwargs", "exc", "message"), [
    ({"temperature": 0.0}, ValueError, r"temperature must be in \(0, inf\), got 0\.0"),
    ({"temperature": -1}, ValueError, r"temperature must be in \(0, inf\), got -1"),
    ({"temperature": "1"}, TypeError, "temperature must be a number, got str"),
    ({"queries": torch.ones(4, 8, dtype=torch.long)}, TypeError, r"queries must be a floating torch\.Tensor"),
    ({"queries": [[0.0] * 8]}, TypeError, r"queries must be a floating torch\.Tensor"),
    ({"queries": torch.ones(4, 7)}, ValueError, r"queries must have shape \(M, 8\), got \(4, 7\)"),
    ({"queries": torch.ones(0, 8)}, ValueError, r"queries must have shape \(M, 8\), got \(0, 8\)"),
    ({"queries": torch.ones(8)}, ValueError, r"queries must have shape \(M, 8\), got \(8,\)"),
    ({"queries": torch.full((2, 8), float("inf"))}, ValueError, "queries contains NaN or inf"),
    ({"cls": torch.ones(2, 8)}, ValueError, r"cls must have shape \(3, 8\), got \(2, 8\)"),
    ({"cls": torch.full((3, 8), float("nan"))}, ValueError, "cls contains NaN or inf"),
    ({"cls": torch.ones(3, 8, dtype=torch.int32)}, TypeError, r"cls must be a floating torch\.Tensor"),
    ({"reference": torch.zeros(5, 8)}, ValueError, r"reference must be the \(M, d\) = \(6, 8\) tensor returned by "
     r"readout_reference for the same video and options"),
    ({"reference": [[0.0] * 8] * 6}, ValueError, r"reference must be the \(M, d\) = \(6, 8\) tensor returned by "
     r"readout_reference for the same video and options"),
])
def test_readout_errors_word_for_word(kwargs, exc, message):
    g = torch.Generator().manual_seed(12)
    v = VideoTokens(torch.randn(3, 2, 8, generator=g), (1, 2))
    red = reduction(v, [0, 3, 5], seed=13)
    with pytest.raises(exc, match=f"^{message}$"):
        metrics.attention_readout(v, red, **kwargs)
    if "reference" not in kwargs:
        with pytest.raises(exc, match=f"^{message}$"):
            metrics.readout_reference(v, **kwargs)


def test_readout_reference_rejects_a_tensor():
    with pytest.raises(TypeError, match="^video must be a VideoTokens, got Tensor$"):
        metrics.readout_reference(torch.ones(2, 3, 4))


def test_readout_accepts_a_small_temperature_and_a_one_row_query():
    g = torch.Generator().manual_seed(14)
    v = VideoTokens(torch.randn(2, 4, 3, generator=g), (2, 2))
    red = reduction(v, [0, 6], seed=15)
    q = torch.randn(1, 3, generator=g)
    assert metrics.attention_readout(v, red, queries=q, temperature=1e-3) == pytest.approx(
        np_readout(v, red, q, 1e-3), abs=1e-5)


# -- temporal localization ------------------------------------------------------------------------

def test_temporal_localization_matches_a_loop_reference():
    g = torch.Generator().manual_seed(16)
    v = VideoTokens(torch.randn(5, 6, 4, generator=g), (2, 3))
    keep = [0, 2, 7, 8, 9, 13, 26, 29]  # frame 3 keeps nothing: it cannot be predicted
    red = reduction(v, keep, seed=17)
    assert 3 not in red.frame_index.tolist()
    # between-frames near sampled frames, noisy, at the ends, exact frames and midpoints
    src = torch.tensor([0, 1, 1, 2, 3, 4, 4, 0, 2, 3, 1, 4])
    z = v.tokens[src] + 0.3 * torch.randn(12, 6, 4, generator=g)
    pos = torch.tensor([0.0, 1.0, 0.5, 2.2, 3.0, 4.0, 3.5, 0.4, 1.5, 2.5, 1.49, 3.51])
    got = metrics.temporal_localization(red, z, pos)
    want = np_temporal(red, z, pos)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0 < want < 1  # some hits, some misses
    z2 = torch.randn(7, 3, 4, generator=g)  # M = 3 tokens per between-frame, random content
    pos2 = torch.tensor([0.0, 0.7, 1.2, 2.0, 2.6, 3.3, 4.0])
    assert metrics.temporal_localization(red, z2, pos2) == pytest.approx(np_temporal(red, z2, pos2), abs=1e-12)


@pytest.mark.parametrize(("M", "per_block"), [(2048, 1), (1024, 2)])
def test_temporal_localization_blocks_hold_at_most_4m_similarities_and_match_the_reference(M, per_block):
    # K = 2048 outputs: M = 2048 tokens per between-frame make 4M similarities per between-frame (one
    # per block), M = 1024 make 2M (two per block); the (b, M, K) float32 product of a full block is
    # the largest allocation, so it measures the block size
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(18)
    v = VideoTokens(torch.randn(4, 1024, 4, generator=g), (32, 32))
    keep = sorted(torch.randperm(4096, generator=g)[:2048].tolist())
    red = reduction(v, keep, seed=19)
    z = torch.randn(3, M, 4, generator=g)
    pos = torch.tensor([0.2, 1.6, 3.0])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        got = metrics.temporal_localization(red, z, pos)
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert largest == per_block * M * 2048 * 4 == 1 << 24  # (1 << 22) float32 similarities per block
    assert got == pytest.approx(np_temporal(red, z, pos), abs=1e-12)


@pytest.mark.parametrize(("tokens", "pos", "exc", "message"), [
    (torch.ones(2, 3, 8, dtype=torch.long), [0.5, 0.5], TypeError,
     r"between_tokens must be a floating torch\.Tensor of shape \(B, M, d\)"),
    ([[[0.0] * 8]], [0.5], TypeError, r"between_tokens must be a floating torch\.Tensor of shape \(B, M, d\)"),
    (torch.ones(2, 3, 5), [0.5, 0.5], ValueError, r"between_tokens must have shape \(B, M, 8\) with B, M >= 1, got \(2, 3, 5\)"),
    (torch.ones(0, 3, 8), [], ValueError, r"between_tokens must have shape \(B, M, 8\) with B, M >= 1, got \(0, 3, 8\)"),
    (torch.ones(2, 0, 8), [0.5, 0.5], ValueError, r"between_tokens must have shape \(B, M, 8\) with B, M >= 1, got \(2, 0, 8\)"),
    (torch.ones(3, 8), [0.5, 0.5, 0.5], ValueError, r"between_tokens must have shape \(B, M, 8\) with B, M >= 1, got \(3, 8\)"),
    (torch.ones(2, 3, 8), [0.5], ValueError, r"between_positions must have shape \(B,\) = \(2,\), got \(1,\)"),
    (torch.ones(2, 3, 8), [[0.5, 0.5]], ValueError, r"between_positions must have shape \(B,\) = \(2,\), got \(1, 2\)"),
    (torch.ones(1, 3, 8), [-0.01], ValueError, r"between_positions must lie in \[0, F - 1\] = \[0, 1\] \(sampled-frame units\)"),
    (torch.ones(1, 3, 8), [1.01], ValueError, r"between_positions must lie in \[0, F - 1\] = \[0, 1\] \(sampled-frame units\)"),
    (torch.ones(1, 3, 8), [float("nan")], ValueError, r"between_positions must lie in \[0, F - 1\] = \[0, 1\] \(sampled-frame units\)"),
    (torch.full((1, 3, 8), float("nan")), [0.5], ValueError, "between_tokens contains NaN or inf"),
])
def test_temporal_errors_word_for_word(tokens, pos, exc, message):
    g = torch.Generator().manual_seed(20)
    v = VideoTokens(torch.randn(2, 2, 8, generator=g), (1, 2))
    red = reduction(v, [0, 3], seed=21)
    with pytest.raises(exc, match=f"^{message}$"):
        metrics.temporal_localization(red, tokens, torch.tensor(pos) if pos else torch.zeros(0))
    with pytest.raises(TypeError, match="^reduced must be a ReducedVideo, got VideoTokens$"):
        metrics.temporal_localization(v, torch.ones(1, 3, 8), torch.tensor([0.5]))


def test_temporal_positions_at_the_ends_and_one_token_frames_are_valid():
    g = torch.Generator().manual_seed(22)
    v = VideoTokens(torch.randn(2, 2, 8, generator=g), (1, 2))
    red = reduction(v, [0, 3], seed=23)
    z = v.tokens.clone()
    assert metrics.temporal_localization(red, z, [0.0, 1.0]) == np_temporal(red, z, [0.0, 1.0])
    one = v.tokens[:, :1]  # M = 1 token per between-frame
    assert metrics.temporal_localization(red, one, [0.0, 1.0]) == np_temporal(red, one, [0.0, 1.0])


def test_temporal_positions_are_compared_in_float64():
    # a between-frame that looks like frame 2, 3e-8 before the midpoint 1.5: frame 1 is nearer, a
    # miss. In float32 the position would round to 1.5 exactly, where frame 2 counts as a hit.
    x = torch.eye(3)[:, None, :]  # one token per frame, orthogonal frames
    v = VideoTokens(x, (1, 1))
    ident = assemble(x.reshape(3, 3), torch.arange(3), torch.arange(3), 3, (1, 1)).validate()
    pos = torch.tensor([1.5 - 3e-8], dtype=torch.float64)
    assert float(pos.float()) == 1.5
    assert metrics.temporal_localization(ident, x[[2]], pos) == 0.0
    assert metrics.temporal_localization(ident, x[[2]], torch.tensor([1.5])) == 1.0
    assert v.num_frames == 3


# -- evaluate -------------------------------------------------------------------------------------

def test_evaluate_matches_the_references_and_takes_a_list_pair():
    g = torch.Generator().manual_seed(24)
    v = random_video(F=3, grid=(2, 4), d=6, seed=25)
    red = reduction(v, [0, 3, 9, 12, 20, 23], seed=26)
    cls = torch.randn(3, 6, generator=g, dtype=torch.float64)
    z = torch.randn(4, 5, 6, generator=g)
    pos = torch.tensor([0.0, 0.6, 1.5, 2.0])
    w = torch.rand(3, 8, generator=g)
    out = metrics.evaluate(v, red, cls=cls, between=[z, pos], weights=w)
    assert set(out) == {"reconstruction", "coverage", "readout", "readout_cls", "temporal"}
    tau = math.sqrt(6)
    assert out["reconstruction"] == pytest.approx(np_reconstruction(v, red, w), abs=1e-6)
    assert out["coverage"] == pytest.approx(np_coverage(v, red), abs=1e-6)
    assert out["readout"] == pytest.approx(np_readout(v, red, v.tokens.reshape(-1, 6), tau), abs=1e-6)
    assert out["readout_cls"] == pytest.approx(np_readout(v, red, cls, tau), abs=1e-6)
    assert out["temporal"] == pytest.approx(np_temporal(red, z, pos), abs=1e-12)
    assert metrics.evaluate(v, red, cls=cls, between=(z, pos), weights=w, cache={}) == out


@pytest.mark.parametrize(("kwargs", "exc", "message"), [
    ({"cache": []}, TypeError, r"cache must be a dict \(one per video\), got list"),
    ({"between": (torch.ones(1, 2, 6), torch.tensor([0.5]), None)}, TypeError,
     r"between must be a pair \(tokens \(B, M, d\), positions \(B,\)\)"),
    ({"between": torch.ones(1, 2, 6)}, TypeError, r"between must be a pair \(tokens \(B, M, d\), positions \(B,\)\)"),
    ({"cls": torch.ones(2, 6)}, ValueError, r"cls must have shape \(3, 6\), got \(2, 6\)"),
])
def test_evaluate_errors_word_for_word(kwargs, exc, message):
    v = random_video(seed=27)
    red = reduction(v, [0, 9, 20], seed=28)
    with pytest.raises(exc, match=f"^{message}$"):
        metrics.evaluate(v, red, **kwargs)


def test_evaluate_cache_of_another_video_word_for_word():
    v = random_video(seed=29)
    red = reduction(v, [0, 9, 20], seed=30)
    cache: dict = {}
    metrics.evaluate(v, red, cache=cache)
    same_values = VideoTokens(v.tokens.clone(), v.grid)  # equal values, another object
    with pytest.raises(ValueError, match="^this cache was filled for another video: use one empty dict per video$"):
        metrics.evaluate(same_values, red, cache=cache)
    assert cache["video"] is v


def test_readout_compares_with_the_reference_rows_it_is_given():
    # the reference is read, not recomputed: a reference of the right shape decides the score
    g = torch.Generator().manual_seed(31)
    v = VideoTokens(torch.randn(2, 3, 4, generator=g), (1, 3))
    red = reduction(v, [0, 4], seed=32)
    fake = torch.randn(6, 4, generator=g)
    y, s = red.tokens.double().numpy(), red.mass.double().numpy()
    x = v.tokens.reshape(-1, 4).double().numpy()
    mine = softmax(x @ y.T / 2.0 + np.log(s)) @ y
    f = fake.double().numpy()
    want = float(((f * mine).sum(1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(mine, axis=1))).mean())
    assert metrics.attention_readout(v, red, reference=fake) == pytest.approx(want, abs=1e-6)


def test_readout_of_tiny_tokens_matches_numpy():
    # tokens of norm ~1e-10: the readout vectors are that small too, and the cosine between them
    # must not be damped by a cosine epsilon larger than their norms
    g = torch.Generator().manual_seed(33)
    v = VideoTokens(torch.randn(2, 4, 3, generator=g, dtype=torch.float64) * 1e-10, (2, 2))
    red = reduction(v, [0, 5], seed=34)
    red = assemble(red.tokens * 1e-10, red.source_index, red.assignment, 2, (2, 2)).validate()
    q = v.tokens.reshape(-1, 3)
    got = metrics.attention_readout(v, red)
    assert got == pytest.approx(np_readout(v, red, q, math.sqrt(3)), abs=1e-5)
    assert abs(got) > 0.05


def test_reconstruction_sums_half_precision_weights_in_float32():
    # 24 fp16 weights of 40000: their sum (960000) overflows fp16 (max 65504) but not float32
    v = random_video()
    red = reduction(v, [0, 3, 9, 12, 20, 23], seed=35)
    w = torch.full((3, 8), 40000.0, dtype=torch.float16)
    assert metrics.reconstruction(v, red, weights=w) == pytest.approx(np_reconstruction(v, red, np.ones(24)), abs=1e-6)
