"""One contract matrix over every registered method x retentions x shapes x dtypes.

The method list comes from ``methods.available()`` at collection time, so a method
registered later is covered without editing this file. A (method, shape,
retention) cell whose method cannot reach the budget must be listed in
``INFEASIBLE`` (with the reason) and must then raise ``ValueError`` from
``num_kept``.
"""

from __future__ import annotations

import re

import pytest
import torch

from anchor_ot import methods
from anchor_ot.testing import structured_video
from anchor_ot.types import ReducedVideo, VideoTokens

# 0.005 is below one token per frame on the 7- and 32-frame shapes (K < F), where per-frame methods
# without an extension must refuse the budget: the INFEASIBLE cells below.
RETENTIONS = (0.005, 0.05, 0.1, 0.25, 0.5, 1.0)
# (F, grid): every F in {1, 2, 7, 32} and every grid in {14x14, 13x13, 27x27, 8x12}, not the whole
# cross product (F=32 with 14x14 and 27x27 run once each, at retention 0.1, in test_large_shapes).
SHAPES = (
    (1, (14, 14)),
    (1, (8, 12)),
    (2, (13, 13)),
    (2, (27, 27)),
    (7, (8, 12)),
    (7, (13, 13)),
    (32, (8, 12)),
)
DTYPES = (torch.float32, torch.bfloat16)
BF16_RETENTIONS = (0.1, 1.0)  # bf16 runs a subset: the fp32 -> bf16 path does not depend on r
DIM = 32

# Known infeasible cells: (method, F, grid, retention) -> why; None in a field matches any value.
# Each listed cell must raise ValueError (from num_kept and from the call, naming the feasible
# retention) instead of reducing; every other cell must reduce. pool reaches K < F by pooling runs
# of frames and dycoke by its documented extension (extend=True, the default); the others select
# over the whole video or have one token per clip as their floor.
_ONE_PER_FRAME = "visionzip keeps at least one token per frame: K = round(r F N) < F"
INFEASIBLE: dict[tuple[str, int | None, tuple[int, int] | None, float | None], str] = {
    ("visionzip", 7, (8, 12), 0.005): _ONE_PER_FRAME,    # K = 3
    ("visionzip", 7, (13, 13), 0.005): _ONE_PER_FRAME,   # K = 6
    ("visionzip", 32, (8, 12), 0.005): _ONE_PER_FRAME,   # K = 15
}


def infeasible(name: str, num_frames: int, grid: tuple[int, int], retention: float) -> bool:
    cell = (name, num_frames, grid, retention)
    return any(all(k is None or k == c for k, c in zip(key, cell)) for key in INFEASIBLE)


def make_video(num_frames: int, grid: tuple[int, int], dtype: torch.dtype = torch.float32,
               dim: int = DIM, seed: int = 0) -> VideoTokens:
    """Tokens with structure (``anchor_ot.testing.structured_video``), positive scores."""
    return structured_video(num_frames, grid, dim, dtype, seed=seed)


def _cells():
    for name in methods.available():
        for num_frames, grid in SHAPES:
            for r in RETENTIONS:
                for dtype in DTYPES:
                    if dtype == torch.bfloat16 and r not in BF16_RETENTIONS:
                        continue
                    yield pytest.param(name, num_frames, grid, r, dtype,
                                       id=f"{name}-F{num_frames}-{grid[0]}x{grid[1]}-r{r}-{str(dtype)[6:]}")


def check_contract(red: methods.Reducer, video: VideoTokens, twice: bool = True) -> ReducedVideo:
    F, N = video.num_frames, video.tokens_per_frame
    k = red.num_kept(F, video.grid)  # stated before seeing the tokens
    out = red(video)
    assert out.num_tokens == k
    out.validate()
    si = out.source_index
    assert bool((si[1:] > si[:-1]).all())
    assert float(out.mass.sum()) == F * N
    assert out.tokens.dtype == video.tokens.dtype
    assert out.tokens.shape == (k, video.dim)
    assert torch.isfinite(out.tokens.float()).all()
    assert torch.equal(out.mass, torch.bincount(out.assignment, minlength=k).float())
    if not twice:
        return out
    # deterministic: a second call gives the same bytes
    again = red(video)
    assert torch.equal(out.tokens, again.tokens)
    assert torch.equal(out.source_index, again.source_index)
    assert torch.equal(out.assignment, again.assignment)
    return out


@pytest.mark.parametrize(("name", "num_frames", "grid", "retention", "dtype"), list(_cells()))
def test_contract(name, num_frames, grid, retention, dtype):
    red = methods.get(name, retention=retention)
    video = make_video(num_frames, grid, dtype)
    if infeasible(name, num_frames, grid, retention):
        with pytest.raises(ValueError, match="retention"):
            red.num_kept(num_frames, grid)
        with pytest.raises(ValueError, match="retention"):
            red(video)
        return
    out = check_contract(red, video)
    if retention == 1.0:  # keeping everything must return the input exactly
        N = grid[0] * grid[1]
        assert out.num_tokens == num_frames * N
        assert torch.equal(out.tokens, video.tokens.reshape(num_frames * N, -1))
        assert torch.equal(out.assignment, torch.arange(num_frames * N))


def test_infeasible_entries_are_live():
    """Every INFEASIBLE entry names a registered method and matches at least one cell of the matrix."""
    cells = {(n, f, g, r) for n in methods.available() for f, g in SHAPES for r in RETENTIONS}
    for key in INFEASIBLE:
        assert key[0] in methods.available(), key
        assert any(all(k is None or k == c for k, c in zip(key, cell)) for cell in cells), key


@pytest.mark.parametrize("name", methods.available())
@pytest.mark.parametrize("grid", [(14, 14), (27, 27)], ids=["14x14", "27x27"])
def test_large_shapes(name, grid):
    """F = 32 frames of LLaVA-OV's pooled (14x14) and unpooled (27x27) grids, retention 0.1, once."""
    red = methods.get(name, retention=0.1)
    if infeasible(name, 32, grid, 0.1):
        with pytest.raises(ValueError):
            red.num_kept(32, grid)
        return
    check_contract(red, make_video(32, grid, dim=16), twice=False)


@pytest.mark.parametrize("name", methods.available())
@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.1, float("nan"), float("inf")])
def test_bad_retention_raises_at_construction(name, bad):
    with pytest.raises(ValueError, match="retention"):
        methods.get(name, retention=bad)


@pytest.mark.parametrize("name", methods.available())
@pytest.mark.parametrize("bad", ["0.5", None, True, [0.5]])
def test_wrong_retention_type_raises(name, bad):
    with pytest.raises(TypeError):
        methods.get(name, retention=bad)


@pytest.mark.parametrize("name", methods.available())
def test_wrong_input_type_raises(name):
    red = methods.get(name, retention=0.5)
    with pytest.raises(TypeError, match="VideoTokens"):
        red(torch.randn(2, 196, 8))


@pytest.mark.parametrize("name", methods.available())
def test_unknown_parameter_raises(name):
    with pytest.raises(ValueError, match="known parameters"):
        methods.get(name, retention=0.5, no_such_knob=1)


@pytest.mark.parametrize("name", methods.available())
def test_bad_shape_raises_in_num_kept(name):
    red = methods.get(name, retention=0.5)
    with pytest.raises(ValueError):
        red.num_kept(0, (14, 14))
    with pytest.raises(ValueError):
        red.num_kept(4, (14, 0))


@pytest.mark.parametrize("name", methods.available())
def test_metadata(name):
    cls = type(methods.get(name, retention=0.5))
    assert cls.name == name
    assert cls.description and "\n" not in cls.description
    assert re.fullmatch(r"-|arXiv:\d{4}\.\d{4,5}", cls.paper), cls.paper
    assert cls.__doc__ and "Parameters" in cls.__doc__


@pytest.mark.parametrize("name", methods.available())
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64], ids=["fp16", "fp64"])
@pytest.mark.parametrize("retention", [0.25, 1.0])
def test_other_dtypes(name, dtype, retention):
    """fp16 and fp64 inputs come back in their own dtype; at retention 1.0 bit for bit."""
    video = make_video(2, (8, 12), dtype)
    red = methods.get(name, retention=retention)
    if infeasible(name, 2, (8, 12), retention):
        with pytest.raises(ValueError):
            red.num_kept(2, (8, 12))
        return
    out = check_contract(red, video)
    if retention == 1.0:
        assert torch.equal(out.tokens, video.tokens.reshape(2 * 96, -1))


@pytest.mark.parametrize("name", methods.available())
def test_tokens_that_require_grad(name):
    """Encoder outputs may carry autograd history: reducing them works and keeps the graph."""
    video = make_video(2, (8, 12))
    tokens = video.tokens.clone().requires_grad_(True)
    video = VideoTokens(tokens, video.grid, video.global_scores, video.local_scores)
    out = methods.get(name, retention=0.25)(video)
    out.tokens.sum().backward()
    assert tokens.grad is not None and torch.isfinite(tokens.grad).all()
