"""AOT with dynamic segmentation: clips follow scene changes; budget and contract hold."""

import pytest
import torch

from anchor_ot import methods
from anchor_ot.methods.aot_dyn import AOTDyn
from anchor_ot.types import VideoTokens


def _two_scenes(F=12, cut=5, h=6, w=6, d=24):
    g = torch.Generator().manual_seed(0)
    scenes = torch.randn(2, h * w, d, generator=g)
    X = torch.stack([scenes[int(f >= cut)] for f in range(F)]) + 0.02 * torch.randn(F, h * w, d, generator=g)
    return VideoTokens(X, (h, w))


def test_clip_boundary_at_planted_scene_change():
    v = _two_scenes()
    out = AOTDyn(retention=0.2, c=2)(v).validate()
    bounds = out.info["clip_bounds"]
    assert [5, 12] in bounds or any(s == 5 for s, _ in bounds)
    assert bounds[0][0] == 0 and bounds[-1][1] == 12
    # exactly two clips: the scene cut and nothing else (c=2 asks for one extra cut at most,
    # which is the scene cut itself)
    assert bounds == [[0, 5], [5, 12]]
    # no output token of the second scene's frames is absorbed into the first scene's clip
    absorber_frame = out.frame_index[out.assignment.reshape(12, 36)]
    assert bool((absorber_frame[5:] >= 5).all())


@pytest.mark.parametrize("F", [1, 3, 8, 20])
@pytest.mark.parametrize("r", [0.02, 0.1, 0.5, 1.0])
def test_exact_budget(F, r):
    v = _two_scenes(F=F, cut=max(1, F // 2))
    red = methods.get("aot-dyn", retention=r)
    out = red(v).validate()
    assert out.num_tokens == red.num_kept(F, (6, 6)) == max(round(r * F * 36), F)


def test_bad_parameters():
    with pytest.raises(ValueError):
        AOTDyn(tau=2.0)
    with pytest.raises(ValueError):
        AOTDyn(c=0)
