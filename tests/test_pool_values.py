"""Pool's values against independent references: hand-drawn partitions, a pure-Python partition
written from the docstring (Hamilton apportionment in exact fractions, brute-force centre cells)
and float64 region means from loops. Written against the mutants that survived the mutation
run of ``methods/pool.py`` (docs/testing.md)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from anchor_ot.methods._frames import spread_counts
from anchor_ot.methods.pool import Pool, _apportion, grid_partition
from anchor_ot.types import VideoTokens


# -- hand-drawn partitions ---------------------------------------------------------------------

def test_grid_partition_by_hand_3x5_into_7():
    # a in [ceil(7/5), min(3, 7)] = [2, 3] closest to sqrt(7 * 3 / 5) = 2.05: 2 bands; rows 0-1 and
    # row 2 (r * 2 // 3); cells 10 and 5, quotas 14/3 and 7/3 -> 4 + 2, the 7th region to the band
    # with the larger remainder (2/3): 5 + 2 regions
    labels, centre = grid_partition((3, 5), 7)
    assert labels.view(3, 5).tolist() == [[0, 1, 2, 3, 4],
                                          [0, 1, 2, 3, 4],
                                          [5, 5, 5, 6, 6]]
    # centre: floor-midpoint of the rectangle; even extents tie to the upper row / left column
    assert centre.tolist() == [0, 1, 2, 3, 4, 11, 13]
    assert labels.dtype == centre.dtype == torch.long


def test_grid_partition_by_hand_3x2_into_5_equal_remainders_go_to_the_first_bands():
    # a = ceil(5/2) = 3 = min(3, 5): one row per band, quotas 5/3 each -> 1 + 1 + 1, the two left
    # over go to the bands with the largest remainder, ties to the lower band: 2 + 2 + 1
    labels, centre = grid_partition((3, 2), 5)
    assert labels.view(3, 2).tolist() == [[0, 1], [2, 3], [4, 4]]
    assert centre.tolist() == [0, 1, 2, 3, 4]


def test_grid_partition_by_hand_6x6_into_4_is_the_2x2_lattice():
    labels, centre = grid_partition((6, 6), 4)
    assert labels.view(6, 6).tolist() == [[0, 0, 0, 1, 1, 1]] * 3 + [[2, 2, 2, 3, 3, 3]] * 3
    assert centre.tolist() == [7, 10, 25, 28]  # (1, 1), (1, 4), (4, 1), (4, 4)


def test_grid_partition_band_count_tie_goes_to_fewer_bands():
    # 4 x 16 into 25: sqrt(25 * 4 / 16) = 2.5 exactly, as close to 2 bands as to 3: 2 bands of two
    # rows each, 12.5 regions each by quota, the extra one to the first band (equal remainders)
    lab = grid_partition((4, 16), 25)[0].view(4, 16)
    assert torch.equal(lab[0], lab[1]) and torch.equal(lab[2], lab[3])
    assert len(torch.unique(lab[0])) == 13 and len(torch.unique(lab[2])) == 12
    assert int(lab[0].max()) == 12 and int(lab[2].min()) == 13


@pytest.mark.parametrize("k", [0, 16, -1])
def test_grid_partition_rejects_k_outside_the_grid(k):
    with pytest.raises(ValueError, match=rf"^k must be in \[1, 15\] for a 3x5 grid, got {k}$"):
        grid_partition((3, 5), k)


def test_grid_partition_accepts_the_bounds():
    assert grid_partition((3, 5), 1)[0].tolist() == [0] * 15
    assert grid_partition((3, 5), 1)[1].tolist() == [7]  # (1, 2)
    assert grid_partition((3, 5), 15)[0].tolist() == list(range(15))


def test_apportion_by_hand():
    # largest remainder over bands with at least 1 and at most cap regions each
    assert _apportion(7, [10, 5], 5) == [5, 2]            # quotas 4.67, 2.33: the extra to band 0
    assert _apportion(5, [2, 2, 2], 2) == [2, 2, 1]       # equal remainders: lower bands first
    assert _apportion(4, [10, 1, 1], 10) == [2, 1, 1]     # floors 3, 0, 0 raised to 1: one too many,
    #                                                       taken from the band furthest above quota
    assert _apportion(6, [1, 1, 10], 10) == [1, 1, 4]
    assert _apportion(9, [1, 1, 1, 1, 6, 9], 10) == [1, 1, 1, 1, 2, 3]  # the one furthest above
    assert _apportion(9, [1, 1, 1, 1, 8, 8], 10) == [1, 1, 1, 1, 2, 3]  # equal: the lower band
    assert _apportion(9, [1, 1, 1, 1, 5, 9], 10) == [1, 1, 1, 1, 1, 4]  # a band of 2 can give one
    assert _apportion(6, [30, 1, 1], 3) == [3, 2, 1]      # quota 5.6 capped at 3; the rest spread
    assert _apportion(5, [3, 3, 3, 3], 2) == [2, 1, 1, 1]
    assert _apportion(7, [3, 3, 3, 3], 2) == [2, 2, 2, 1]


# -- an independent partition from the docstring ---------------------------------------------

def _hamilton(k: int, weights: list[int], cap: int) -> list[int]:
    # largest remainder (Hamilton) in exact fractions: the floor of each quota within [1, cap], then
    # one region at a time to the band furthest below its quota that is under the cap (ties: the
    # lower band) until k
    total = sum(weights)
    quota = [Fraction(k * c, total) for c in weights]
    seats = [min(cap, max(1, math.floor(q))) for q in quota]
    while sum(seats) < k:
        below = [i for i in range(len(seats)) if seats[i] < cap]
        best = max(quota[i] - seats[i] for i in below)
        seats[min(i for i in below if quota[i] - seats[i] == best)] += 1
    return seats


def reference_partition(h: int, w: int, k: int) -> tuple[list[int], list[int]]:
    ideal = math.sqrt(k * h / w)
    bands = min(range(math.ceil(k / w), min(h, k) + 1), key=lambda a: (abs(a - ideal), a))
    band_of_row = [r * bands // h for r in range(h)]
    heights = [band_of_row.count(b) for b in range(bands)]
    per_band = _hamilton(k, [hb * w for hb in heights], w)
    labels = []
    for r in range(h):
        b = band_of_row[r]
        labels += [sum(per_band[:b]) + col * per_band[b] // w for col in range(w)]
    centres = []
    for region in range(k):
        cells = [(p // w, p % w) for p in range(h * w) if labels[p] == region]
        rc = (min(r for r, _ in cells) + max(r for r, _ in cells)) / 2
        cc = (min(c for _, c in cells) + max(c for _, c in cells)) / 2
        best = min(cells, key=lambda rcell: ((rcell[0] - rc) ** 2 + (rcell[1] - cc) ** 2, rcell))
        centres.append(best[0] * w + best[1])
    return labels, centres


@pytest.mark.parametrize("grid", [(3, 5), (5, 3), (4, 16), (7, 3), (2, 9), (6, 6), (1, 7), (9, 1)])
def test_grid_partition_matches_the_reference_for_every_k(grid):
    h, w = grid
    for k in range(1, h * w + 1):
        labels, centre = grid_partition(grid, k)
        want_labels, want_centre = reference_partition(h, w, k)
        assert labels.tolist() == want_labels, k
        assert centre.tolist() == want_centre, k


# -- Pool.reduce against float64 loops ---------------------------------------------------------

def reference_pool(x: torch.Tensor, grid: tuple[int, int], K: int):
    """(tokens, source_index, assignment, info) of pool from loops over frames and regions."""
    F, N, d = x.shape
    h, w = grid
    groups = []  # (source position, member flat positions)
    if K >= F:
        counts = spread_counts(K, F).tolist()
        for f in range(F):
            labels, centres = reference_partition(h, w, counts[f])
            for region, c in enumerate(centres):
                groups.append((f * N + c, [f * N + n for n in range(N) if labels[n] == region]))
        info = {"regions_per_frame": (min(counts), max(counts))}
    else:
        sizes = spread_counts(F, K).tolist()
        centre = reference_partition(h, w, 1)[1][0]
        start = 0
        for s in sizes:
            middle = start + (s - 1) // 2
            groups.append((middle * N + centre, list(range(start * N, (start + s) * N))))
            start += s
        info = {"regions_per_frame": (0, 1), "frames_per_token": (min(sizes), max(sizes))}
    groups.sort()
    flat = x.reshape(-1, d).double()
    tokens = torch.stack([flat[m].sum(0) / len(m) for _, m in groups])
    assignment = [0] * (F * N)
    for row, (_, members) in enumerate(groups):
        for p in members:
            assignment[p] = row
    return tokens, [s for s, _ in groups], assignment, info, [len(m) for _, m in groups]


@pytest.mark.parametrize(("F", "grid", "K"), [
    (5, (3, 5), 3), (5, (3, 5), 4), (5, (3, 5), 5), (5, (3, 5), 7), (5, (3, 5), 23), (5, (3, 5), 38),
    (5, (3, 5), 74), (5, (3, 5), 75), (4, (4, 16), 100), (3, (2, 9), 1), (6, (7, 3), 40),
])
def test_pool_reduce_matches_float64_loops(F, grid, K):
    g = torch.Generator().manual_seed(K)
    # float64 tokens near 1 with tiny variations: float32 sums would lose them (float64 work dtype)
    x = 1.0 + 1e-9 * torch.randn(F, grid[0] * grid[1], 3, generator=g, dtype=torch.float64)
    out = Pool(retention=1.0).reduce(VideoTokens(x, grid), K).validate()
    tokens, src, assignment, info, mass = reference_pool(x, grid, K)
    assert out.tokens.dtype == torch.float64
    torch.testing.assert_close(out.tokens, tokens, rtol=0, atol=1e-13)
    assert out.source_index.tolist() == src
    assert out.assignment.tolist() == assignment
    assert out.mass.tolist() == mass
    assert out.info == info
