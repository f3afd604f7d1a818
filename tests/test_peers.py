"""Behaviour of the peer methods on tokens with planted structure (pool, random, divprune,
visionzip, dycoke): each test plants a property the method must find and checks it exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F_

from anchor_ot import methods
from anchor_ot.methods._frames import nearest_kept, spread_counts
from anchor_ot.methods.divprune import max_min_select
from anchor_ot.methods.dycoke import DyCoke, reference_frames
from anchor_ot.methods.pool import grid_partition
from anchor_ot.types import VideoTokens


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def retention_for(k: int, num_frames: int, grid: tuple[int, int]) -> float:
    """A retention whose budget round(r * F * N) is exactly k."""
    return k / (num_frames * grid[0] * grid[1])


# -- shared helpers ------------------------------------------------------------------------

def test_spread_counts_exact_and_even():
    for total, parts in [(0, 3), (7, 3), (19, 32), (627, 32), (5, 1), (64, 8)]:
        c = spread_counts(total, parts)
        assert int(c.sum()) == total
        assert int(c.max()) - int(c.min()) <= (1 if total % parts else 0)
    assert spread_counts(2, 4).tolist() == [0, 1, 0, 1]  # spread, not bunched at the start


def test_nearest_kept_matches_brute_force():
    x = torch.randn(3, 20, 6, generator=gen(1)) * torch.rand(3, 20, 1, generator=gen(2))  # mixed norms
    keep = torch.rand(3, 20, generator=gen(3)) < 0.3
    keep[2] = False  # a frame that keeps nothing falls back to the whole video
    keep[0, 0] = True
    target = nearest_kept(x, keep).view(3, 20)
    xn = F_.normalize(x, dim=-1)
    kept_flat = torch.nonzero(keep.reshape(-1)).squeeze(1)
    for f in range(3):
        for n in range(20):
            if keep[f, n]:
                assert target[f, n] == f * 20 + n
                continue
            cands = [f * 20 + j for j in range(20) if keep[f, j]] or kept_flat.tolist()
            sims = torch.stack([xn[f, n] @ xn.reshape(-1, 6)[c] for c in cands])
            assert int(target[f, n]) == cands[int(sims.argmax())]


# -- pool ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("grid", "block"), [((14, 14), 2), ((27, 27), 3), ((8, 12), 4)])
def test_pool_equals_native_average_pooling_on_aligned_grids(grid, block):
    """Where the budget is a regular lattice, pool is exactly LLaVA's k x k average pooling."""
    h, w = grid
    per_frame = (h // block) * (w // block)
    x = torch.randn(3, h * w, 5, generator=gen(4))
    out = methods.get("pool", retention=retention_for(3 * per_frame, 3, grid))(VideoTokens(x, grid))
    ref = F_.avg_pool2d(x.view(3, h, w, 5).permute(0, 3, 1, 2), block)  # (3, 5, h/b, w/b)
    ref = ref.permute(0, 2, 3, 1).reshape(-1, 5)
    torch.testing.assert_close(out.tokens, ref, rtol=1e-6, atol=1e-6)
    assert torch.all(out.mass == block * block)


def test_pool_returns_the_constants_of_a_piecewise_constant_image():
    grid, k = (13, 13), 7
    labels, centre = grid_partition(grid, k)
    consts = torch.randn(2, k, 4, generator=gen(5))
    x = consts[:, labels]  # (2, N, 4): constant on each region
    out = methods.get("pool", retention=retention_for(2 * k, 2, grid))(VideoTokens(x, grid))
    torch.testing.assert_close(out.tokens.view(2, k, 4), consts[:, torch.argsort(centre)])
    sizes = torch.bincount(labels, minlength=k).float()
    assert torch.equal(out.mass.view(2, k), sizes[torch.argsort(centre)].expand(2, k))


def test_pool_regions_are_balanced_rectangles():
    for grid in [(14, 14), (13, 13), (27, 27), (8, 12)]:
        N = grid[0] * grid[1]
        for k in sorted({1, 2, 3, N // 10, N // 4, N // 2, N - 1, N}):
            labels, centre = grid_partition(grid, k)
            assert torch.equal(torch.unique(labels), torch.arange(k))
            assert torch.equal(labels[centre], torch.arange(k))  # every region contains its centre
            sizes = torch.bincount(labels)
            assert int(sizes.max()) <= 3 * int(sizes.min())
            lab2d = labels.view(grid)
            for r in range(k):  # rectangle: cell count equals bounding-box area
                ys, xs = torch.nonzero(lab2d == r, as_tuple=True)
                assert int(sizes[r]) == (int(ys.max() - ys.min()) + 1) * (int(xs.max() - xs.min()) + 1)


def test_pool_below_one_token_per_frame_pools_runs_of_frames():
    x = torch.randn(7, 6, 4, generator=gen(28))
    out = methods.get("pool", retention=retention_for(3, 7, (2, 3)))(VideoTokens(x, (2, 3))).validate()
    runs = [[0, 1], [2, 3], [4, 5, 6]]  # spread_counts(7, 3) = [2, 2, 3]
    for row, frames in enumerate(runs):
        torch.testing.assert_close(out.tokens[row], x[frames].reshape(-1, 4).mean(0))
        assert int(out.frame_index[row]) == frames[(len(frames) - 1) // 2]
        assert int(out.mass[row]) == 6 * len(frames)
    assert methods.get("pool", retention=0.001).num_kept(32, (14, 14)) == 6


# -- random --------------------------------------------------------------------------------

def test_random_is_seeded():
    v = VideoTokens(torch.randn(4, 196, 8, generator=gen(6)), (14, 14))
    a = methods.get("random", retention=0.1, seed=3)(v)
    b = methods.get("random", retention=0.1, seed=3)(v)
    c = methods.get("random", retention=0.1, seed=4)(v)
    assert torch.equal(a.source_index, b.source_index)
    assert not torch.equal(a.source_index, c.source_index)
    # positions do not depend on token values
    w = VideoTokens(torch.randn(4, 196, 8, generator=gen(7)), (14, 14))
    assert torch.equal(methods.get("random", retention=0.1, seed=3)(w).source_index, a.source_index)


def test_random_keeps_input_tokens_and_assigns_within_frame():
    x = torch.randn(5, 96, 8, generator=gen(8))
    out = methods.get("random", retention=0.1, seed=1)(VideoTokens(x, (8, 12)))
    flat = x.reshape(-1, 8)
    assert torch.equal(out.tokens, flat[out.source_index])
    per_frame = torch.bincount(out.frame_index, minlength=5)
    assert per_frame.tolist() == spread_counts(out.num_tokens, 5).tolist()
    src_frame = out.frame_index[out.assignment]
    assert torch.equal(src_frame, torch.arange(5 * 96) // 96)  # assigned inside its own frame


@pytest.mark.parametrize("bad", [-1, 2**63])
def test_random_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        methods.get("random", seed=bad)
    with pytest.raises(TypeError, match="seed"):
        methods.get("random", seed=1.5)


# -- divprune ------------------------------------------------------------------------------

def naive_divprune(x: torch.Tensor, k: int) -> list[int]:
    """Official-style greedy on the full distance matrix, recomputing the min over picks."""
    xn = F_.normalize(x, dim=-1)
    dist = 1 - xn @ xn.T
    first = int(torch.topk(dist, 2, dim=0, largest=False).values[1].argmax())
    picks = [first]
    for _ in range(1, k):
        score = dist[picks].min(0).values
        score[picks] = -1.0
        picks.append(int(score.argmax()))
    return picks


def test_divprune_matches_naive_greedy_on_both_paths():
    x = torch.randn(300, 12, generator=gen(9))
    xn = F_.normalize(x, dim=-1)
    ref = naive_divprune(x, 40)
    for limit in (10**6, 0):  # stored similarity matrix, then rows recomputed per step
        picks, owner = max_min_select(xn, 40, gram_max_tokens=limit)
        assert picks.tolist() == ref
        assert torch.equal(owner, (xn @ xn[picks].T).argmax(1).where(
            ~torch.isin(torch.arange(300), picks), owner))
        assert torch.equal(owner[picks], torch.arange(40))


def test_divprune_picks_one_token_per_planted_cluster():
    k, grid, frames = 9, (8, 12), 2
    centres = torch.linalg.qr(torch.randn(32, k, generator=gen(10)))[0].T  # k orthonormal directions
    cluster = torch.randint(0, k, (frames, 96), generator=gen(11))
    cluster[0, :k] = torch.arange(k)  # every cluster is present
    x = centres[cluster] + 0.02 * torch.randn(frames, 96, 32, generator=gen(12))
    out = methods.get("divprune", retention=retention_for(k, frames, grid))(VideoTokens(x, grid))
    picked = cluster.reshape(-1)[out.source_index]
    assert sorted(picked.tolist()) == list(range(k))
    # every token is assigned to the selected token of its own cluster
    assert torch.equal(picked[out.assignment], cluster.reshape(-1))


def test_divprune_with_duplicates_keeps_distinct_positions():
    x = torch.randn(1, 4, 8, generator=gen(13)).repeat(1, 24, 1)  # 4 distinct tokens, each 24 times
    out = methods.get("divprune", retention=0.5)(VideoTokens(x, (8, 12)))
    assert out.num_tokens == 48 and len(torch.unique(out.source_index)) == 48


# -- visionzip -----------------------------------------------------------------------------

def _visionzip_case(seed: int = 14):
    grid, frames = (14, 14), 3
    x = torch.randn(frames, 196, 16, generator=gen(seed))
    scores = torch.rand(frames, 196, generator=gen(seed + 1))
    return grid, frames, x, scores


@pytest.mark.parametrize("merge", ["author", "mean"])
def test_visionzip_keeps_top_attention_and_merges_the_rest(merge):
    grid, frames, x, scores = _visionzip_case()
    red = methods.get("visionzip", retention=retention_for(3 * 19, frames, grid), merge=merge)
    dominant, contextual = red.split(frames, grid)
    assert dominant.tolist() == [16, 16, 16] and contextual.tolist() == [3, 3, 3]  # int(19 * 54 / 64) = 16
    out = red(VideoTokens(x, grid, global_scores=scores))
    flat = x.reshape(-1, 16)
    kept = set(out.source_index.tolist())
    for f in range(frames):
        top = torch.topk(scores[f], 16).indices + f * 196
        assert set(top.tolist()) <= kept
        rows = torch.searchsorted(out.source_index, top)
        assert torch.equal(out.tokens[rows], flat[top])  # dominant tokens unchanged
        # targets: every step-th remaining token in raster order, step = (196 - 16) // 3 = 60
        rest = [n for n in range(196) if n + f * 196 not in set(top.tolist())]
        targets = {f * 196 + n for n in rest[::60][:3]}
        assert kept & set(range(f * 196, (f + 1) * 196)) == set(top.tolist()) | targets
    # contextual value, against an oracle built from the returned assignment
    for row, src in enumerate(out.source_index.tolist()):
        members = torch.nonzero(out.assignment == row).squeeze(1)
        others = members[members != src]
        if len(others) == 0:
            continue
        if merge == "author":
            expect = flat[src] + flat[others].mean(0)
        else:
            expect = flat[members].mean(0)
        torch.testing.assert_close(out.tokens[row], expect)
    # merged tokens join their most similar target of the same frame
    xn = F_.normalize(flat, dim=-1)
    tgt = torch.tensor(sorted(kept - set(torch.topk(scores, 16, dim=1).indices.add(
        torch.arange(3)[:, None] * 196).reshape(-1).tolist())))
    for i in torch.nonzero(~torch.isin(torch.arange(588), out.source_index)).squeeze(1).tolist():
        same = tgt[tgt // 196 == i // 196]
        assert int(out.source_index[out.assignment[i]]) == int(same[(xn[same] @ xn[i]).argmax()])


def test_visionzip_without_scores_uses_token_norm():
    grid, frames, x, _ = _visionzip_case(16)
    loud = torch.randperm(196, generator=gen(17))[:16]
    x[:, loud] *= 10.0
    out = methods.get("visionzip", retention=retention_for(3 * 19, frames, grid))(VideoTokens(x, grid))
    assert "norm" in out.info["scores"]
    for f in range(frames):
        assert set((loud + f * 196).tolist()) <= set(out.source_index.tolist())


def test_visionzip_rejects_bad_parameters():
    with pytest.raises(ValueError, match="dominant_fraction"):
        methods.get("visionzip", dominant_fraction=1.0)
    with pytest.raises(ValueError, match="merge"):
        methods.get("visionzip", merge="sum")


# -- dycoke --------------------------------------------------------------------------------

def test_dycoke_reference_structure():
    assert reference_frames(9).tolist() == [-1, 0, 0, 2, -1, 4, 4, 6, -1]
    assert reference_frames(1).tolist() == [-1]
    assert DyCoke.min_retention(32) == 0.25
    assert DyCoke.min_retention(7) == 2 / 7


def test_dycoke_drops_a_frame_identical_to_its_predecessor():
    grid = (14, 14)
    frame = torch.randn(1, 196, 16, generator=gen(18))
    x = torch.cat([frame, frame])  # frame 1 repeats frame 0
    out = methods.get("dycoke", retention=0.5)(VideoTokens(x, grid))
    assert out.frame_index.tolist() == [0] * 196  # every kept token comes from frame 0
    assert torch.equal(out.tokens, frame[0])
    assert torch.equal(out.assignment, torch.arange(196).repeat(2))  # frame 1 -> same position of frame 0
    assert torch.all(out.mass == 2)


def test_dycoke_keeps_what_changed_and_follows_the_chain():
    grid, N = (8, 12), 96
    base = torch.randn(N, 16, generator=gen(19))
    changed = torch.randperm(N, generator=gen(20))[:15].view(3, 5)  # 5 positions changed per pruned frame
    frames = [base.clone() for _ in range(4)]
    frames[1][changed[0]] = torch.randn(5, 16, generator=gen(21))  # vs frame 0
    frames[2][changed[1]] = torch.randn(5, 16, generator=gen(22))  # vs frame 0
    frames[3] = frames[2].clone()
    frames[3][changed[2]] = torch.randn(5, 16, generator=gen(23))  # vs frame 2
    x = torch.stack(frames)
    out = methods.get("dycoke", retention=retention_for(N + 15, 4, grid))(VideoTokens(x, grid))
    kept = set(out.source_index.tolist())
    expect = set(range(N)) | {N + n for n in changed[0].tolist()} | {2 * N + n for n in changed[1].tolist()} \
        | {3 * N + n for n in changed[2].tolist()}
    assert kept == expect
    src = out.source_index[out.assignment]
    for n in range(N):
        if n in changed[1].tolist() and n not in changed[2].tolist():
            assert int(src[3 * N + n]) == 2 * N + n  # frame 3 -> frame 2, where frame 2 kept it
        elif n not in changed.reshape(-1).tolist():
            assert int(src[3 * N + n]) == n  # frame 3 -> frame 2 -> frame 0
            assert int(src[N + n]) == n and int(src[2 * N + n]) == n


@pytest.mark.parametrize("num_frames", [3, 5, 7])
def test_dycoke_odd_frame_counts_drop_no_frame(num_frames):
    grid = (8, 12)
    x = torch.randn(num_frames, 96, 8, generator=gen(24))
    red = methods.get("dycoke", retention=0.6)
    out = red(VideoTokens(x, grid))
    assert not out.info["extended"]
    per_frame = torch.bincount(out.frame_index, minlength=num_frames)
    assert torch.all(per_frame > 0)
    refs = reference_frames(num_frames) < 0
    assert torch.all(per_frame[refs] == 96)  # reference frames (incl. a trailing one) kept whole


def test_dycoke_floor_raises_without_extension_and_extends_with_it():
    grid = (14, 14)
    with pytest.raises(ValueError, match=r"\[0.25, 1\]"):
        methods.get("dycoke", retention=0.1, extend=False).num_kept(32, grid)
    assert methods.get("dycoke", retention=0.25, extend=False).num_kept(32, grid) == 8 * 196
    x = torch.randn(8, 196, 8, generator=gen(25))
    out = methods.get("dycoke", retention=0.1)(VideoTokens(x, grid))
    assert out.info["extended"]
    assert set(out.frame_index.tolist()) <= {0, 4}  # below the floor only references keep tokens
    assert torch.bincount(out.frame_index, minlength=8)[[0, 4]].tolist() == [78, 79]
    with pytest.raises(TypeError, match="extend"):
        methods.get("dycoke", extend="yes")


def test_random_with_fewer_tokens_than_frames_assigns_across_frames():
    x = torch.randn(8, 16, 6, generator=gen(26))
    out = methods.get("random", retention=retention_for(3, 8, (4, 4)))(VideoTokens(x, (4, 4))).validate()
    assert out.num_tokens == 3 and len(set(out.frame_index.tolist())) == 3
    xn = F_.normalize(x.reshape(-1, 6), dim=-1)
    empty = ~torch.isin(torch.arange(8), out.frame_index)
    for i in torch.nonzero(empty.repeat_interleave(16)).squeeze(1).tolist():  # frames keeping nothing
        assert int(out.assignment[i]) == int((xn[out.source_index] @ xn[i]).argmax())


def test_dycoke_extension_below_one_token_per_reference():
    x = torch.randn(32, 4, 6, generator=gen(27))
    out = methods.get("dycoke", retention=retention_for(3, 32, (2, 2)))(VideoTokens(x, (2, 2))).validate()
    assert out.num_tokens == 3 and out.info["extended"]
    assert set(out.frame_index.tolist()) <= set(range(0, 32, 4))


# Found by mutation testing (docs/testing.md): argument checks that no test reached.
@pytest.mark.parametrize("grid", [(0, 4), (4, 0), (2.0, 4)])
def test_num_kept_refuses_a_grid_that_is_not_two_positive_ints(grid):
    with pytest.raises(ValueError, match=r"^grid must be a pair of positive ints \(h, w\), got "):
        methods.get("pool").num_kept(2, grid)


def test_random_seed_accepts_the_largest_int64_and_aot_dyn_tau_its_range():
    assert methods.get("random", seed=2**63 - 1).seed == 2**63 - 1
    with pytest.raises(ValueError, match=r"^tau must be in \[-1\.0, 1\.0\], got -1\.5$"):
        methods.get("aot-dyn", tau=-1.5)
