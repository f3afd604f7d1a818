"""``evs``: Efficient Video Sampling, the temporal pruning vLLM ships for Qwen2.5/3-VL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from anchor_ot.methods import register
from anchor_ot.methods._frames import consecutive_cosine, rows_of_kept, work_dtype
from anchor_ot.methods.base import Reducer, assemble
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["EVS", "evs_scores", "vllm_keep_fraction"]


def vllm_keep_fraction(retention: float) -> float:
    """The kept fraction exactly as vLLM computes it from its pruning rate ``q = 1 - retention``.

    vLLM takes ``--video-pruning-rate q`` and keeps ``int(total * (1 - q))`` tokens.
    ``1 - (1 - r)`` is not always ``r`` in floating point (``1 - (1 - 0.1) =
    0.09999999999999998``), and ``int`` truncates, so counts can differ by one from
    ``int(total * r)``. Going through ``q`` reproduces vLLM's count for the rate a
    user would pass there (``q = 1 - r``).
    """
    q = 1.0 - retention
    return 1.0 - q


@register
@dataclass(repr=False)
class EVS(Reducer):
    """EVS (Bagrov et al., arXiv 2510.14624) as vLLM implements it (``video_prune/evs.py``).

    The first frame is kept whole; every other token is scored by how much it
    changed since the same grid position of the previous frame,
    ``1 - cos(x[f, n], x[f-1, n])``, and the ``K - N`` most changed tokens of the
    whole video are kept (one global ranking, not per frame). Tokens are dropped,
    never merged; the kept ones leave unchanged, in temporal-raster order.

    Parameters
    ----------
    retention : float, default 0.1
        Fraction of tokens kept, in (0, 1]; vLLM's pruning rate is ``q = 1 - retention``.

    Notes
    -----
    Budget, as vLLM's ``compute_retained_tokens_count``: ``K = max(N, int(F * N * (1 - q)))``
    with ``q = 1 - retention`` (see :func:`vllm_keep_fraction`). ``int``, not
    ``round``: K can be one below ``round(retention * F * N)``; and K never goes below
    one whole frame, so a 1-frame video is returned whole at any retention.

    Same maths as vLLM: the first frame's score is a constant above any
    dissimilarity (vLLM uses 255); ties in the global ranking go to the lower flat
    index (vLLM sorts with ``stable=True``, descending). In vLLM a "frame" is one
    temporal group of Qwen's merged tokens (two video frames); here it is whatever
    the caller's frame axis holds.

    Differences (ours, none change which tokens are kept):

    - Cosines in float32 (float64 for float64 input); vLLM computes in the
      embedding dtype (often bf16), so near-ties may rank differently there.
      Norms are clamped at 1e-12 (torch's ``cosine_similarity`` clamps at 1e-8).
    - ``assignment`` (vLLM has none): a dropped token is assigned to the kept token
      at the same grid position in the nearest earlier frame, the token it was
      judged redundant with (frame 0 is always kept, so one exists). ``mass``
      counts how many input tokens each kept token stands for.
    """

    name: ClassVar[str] = "evs"
    description: ClassVar[str] = "EVS (vLLM built-in): first frame whole + the tokens most changed since the previous frame"
    paper: ClassVar[str] = "arXiv:2510.14624"

    def num_kept(self, num_frames: int, grid: tuple[int, int]) -> int:
        """``K = max(N, int(F * N * (1 - q)))``, ``q = 1 - retention``, as vLLM computes it."""
        self._check_shape(num_frames, grid)
        n = grid[0] * grid[1]
        total = num_frames * n
        return min(total, max(n, int(total * vllm_keep_fraction(self.retention))))

    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:
        """Keep frame 0 and the most changed tokens; see the class notes."""
        x = video.tokens
        Fr, N, d = x.shape
        dev = x.device
        xf = x.to(work_dtype(x.dtype))
        change = evs_scores(xf.detach())
        order = torch.argsort(change.reshape(-1), descending=True, stable=True)
        keep_flat = torch.zeros(Fr * N, dtype=torch.bool, device=dev)
        keep_flat[order[:num_kept]] = True
        keep = keep_flat.view(Fr, N)
        # owner: latest kept frame at or before f at the same position (a running max)
        frame = torch.arange(Fr, device=dev).unsqueeze(1).expand(Fr, N)
        last = torch.where(keep, frame, torch.full_like(frame, -1)).cummax(0).values
        target = (last * N + torch.arange(N, device=dev)).reshape(-1)
        src = torch.nonzero(keep_flat).squeeze(1)
        assignment = rows_of_kept(keep_flat)[target]
        info = {"first_frame_kept": True}
        return assemble(x.reshape(Fr * N, d)[src], src, assignment, Fr, video.grid, info)


def evs_scores(x: torch.Tensor) -> torch.Tensor:
    """EVS token scores: ``1 - cos`` to the same position of the previous frame.

    Parameters
    ----------
    x : torch.Tensor, shape (F, N, d), float32 or float64

    Returns
    -------
    torch.Tensor, shape (F, N)
        Frame 0 scores 255 (above any dissimilarity, which lies in [0, 2]), as in
        vLLM, so the first frame always ranks first.
    """
    first = torch.full((1, x.shape[1]), 255.0, dtype=x.dtype, device=x.device)
    return torch.cat([first, 1.0 - consecutive_cosine(x)], 0)
