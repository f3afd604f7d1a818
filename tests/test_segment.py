"""DySeg (FastVID's dynamic temporal segmentation) and uniform clips."""

import math

import pytest
import torch

from anchor_ot.segment import dynamic_segments, segment_ids, transition_similarity, uniform_segments


def rotating(angles):
    """Unit frame features in a plane, turning by the given steps (cos(step) = similarity)."""
    theta = torch.cat([torch.zeros(1), torch.tensor(angles, dtype=torch.float64).cumsum(0)])
    feats = torch.zeros(len(theta), 8, dtype=torch.float64)
    feats[:, 0], feats[:, 1] = theta.cos(), theta.sin()
    return feats


def test_cuts_at_planted_scene_change():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    feats = torch.stack([a] * 6 + [b] * 6) + 0.01 * torch.randn(12, 64, generator=g)
    assert dynamic_segments(feats, tau=0.9, c=1) == [(0, 6), (6, 12)]


def test_cuts_exactly_the_c_minus_1_lowest_transitions_when_all_are_similar():
    steps = [0.1] * 11
    steps[3], steps[8] = 0.3, 0.25          # cos(0.3) = 0.955 > tau: only the c - 1 rule cuts
    feats = rotating(steps)
    sims = transition_similarity(feats)
    assert bool((sims > 0.9).all())
    assert dynamic_segments(feats, tau=0.9, c=3) == [(0, 4), (4, 9), (9, 12)]
    assert dynamic_segments(feats, tau=0.9, c=2) == [(0, 4), (4, 12)]
    assert dynamic_segments(feats, tau=0.9, c=1) == [(0, 12)]


def test_threshold_and_lowest_points_are_united():
    steps = [0.1] * 9
    steps[2], steps[6] = 1.0, 0.5            # cos(1.0) = 0.54 < tau; cos(0.5) = 0.88 < tau
    feats = rotating(steps)
    # c = 2: the single lowest point (2) is also below tau; 6 is cut by the threshold
    assert dynamic_segments(feats, tau=0.9, c=2) == [(0, 3), (3, 7), (7, 10)]
    # c = 4: the 3 lowest are 2, 6 and one more: 4 clips, both earlier cuts kept
    segs = dynamic_segments(feats, tau=0.9, c=4)
    starts = [s for s, _ in segs]
    assert len(segs) == 4 and 3 in starts and 7 in starts


def test_short_videos_do_not_fail():
    feats = torch.randn(5, 16)
    assert dynamic_segments(feats, tau=-1.0, c=8) == [(i, i + 1) for i in range(5)]
    assert dynamic_segments(torch.randn(1, 16), c=8) == [(0, 1)]
    assert dynamic_segments(torch.randn(2, 16), tau=-1.0, c=8) == [(0, 1), (1, 2)]


def test_ties_are_deterministic():
    feats = torch.ones(6, 4)
    assert dynamic_segments(feats, tau=0.5, c=3) == [(0, 1), (1, 2), (2, 6)]


def test_batched_matches_single_and_half_precision():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 20, 32, generator=g).cumsum(1)
    batched = dynamic_segments(feats, tau=0.95, c=4)
    assert batched == [dynamic_segments(f, tau=0.95, c=4) for f in feats]
    assert dynamic_segments(feats[0].half(), tau=0.95, c=4) == batched[0]
    for segs in batched:
        assert segs[0][0] == 0 and segs[-1][1] == 20
        assert all(s1[1] == s2[0] for s1, s2 in zip(segs, segs[1:]))
        assert len(segs) >= 4


def test_zero_frame_feature_has_similarity_zero():
    feats = torch.zeros(3, 4)
    feats[0, 0] = feats[2, 0] = 1.0
    sims = transition_similarity(feats)
    assert torch.equal(sims, torch.zeros(2))


@pytest.mark.parametrize("bad, exc", [
    (torch.randn(4), ValueError),
    (torch.randn(2, 3, 4, 5), ValueError),
    (torch.ones(4, 3, dtype=torch.long), TypeError),
    ([[1.0, 2.0]], TypeError),
    (torch.tensor([[float("nan"), 1.0]]), ValueError),
])
def test_bad_features_raise(bad, exc):
    with pytest.raises(exc):
        dynamic_segments(bad)


def test_bad_parameters_raise():
    feats = torch.randn(4, 3)
    with pytest.raises(ValueError, match="tau"):
        dynamic_segments(feats, tau=1.5)
    with pytest.raises(ValueError, match="c"):
        dynamic_segments(feats, c=0)
    with pytest.raises(TypeError):
        dynamic_segments(feats, c=2.0)


def test_uniform_segments():
    assert uniform_segments(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert uniform_segments(8, 4) == [(0, 4), (4, 8)]
    assert uniform_segments(3, 8) == [(0, 3)]
    with pytest.raises(ValueError):
        uniform_segments(0, 4)
    with pytest.raises(ValueError):
        uniform_segments(4, 0)
    with pytest.raises(TypeError):
        uniform_segments(4.0, 2)


def test_segment_ids():
    assert segment_ids([(0, 2), (2, 5)], 5).tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError):
        segment_ids([(0, 2), (3, 5)])
    with pytest.raises(ValueError):
        segment_ids([(0, 2)], 5)
    with pytest.raises(ValueError):
        segment_ids([])


def test_rotating_helper_similarity():
    sims = transition_similarity(rotating([0.2, 0.4]))
    assert torch.allclose(sims, torch.tensor([math.cos(0.2), math.cos(0.4)], dtype=torch.float64))
