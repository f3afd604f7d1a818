"""AOT with dynamic temporal segmentation ("AOT w Dyn", arXiv 2603.01400 Sec. 8, Tables 6-7).

Clips come from FastVID's DySeg (arXiv 2503.11187, Sec. 3.2; :func:`anchor_ot.segment.dynamic_segments`)
instead of fixed-length clips: cut where adjacent frames' global features have cosine
``< tau`` and at the ``c - 1`` lowest transitions. Everything else is :class:`~anchor_ot.methods.aot.AOT`.
"""

from __future__ import annotations

from dataclasses import dataclass

from anchor_ot._validation import check_int, check_number
from anchor_ot.methods import register
from anchor_ot.methods.aot import AOT
from anchor_ot.segment import dynamic_segments
from anchor_ot.types import VideoTokens

__all__ = ["AOTDyn"]


@register
@dataclass(repr=False)
class AOTDyn(AOT):
    """AOT with FastVID's dynamic segmentation of frames into clips.

    Parameters
    ----------
    tau : float, default 0.8
        DySeg similarity threshold (the value in the AOT release's call; FastVID's own
        LLaVA-OneVision default is 0.9).
    c : int, default 8
        DySeg minimum number of clips (``c - 1`` lowest transitions are cut).
    **AOT parameters
        All of :class:`~anchor_ot.methods.aot.AOT`'s, except ``clip_length``, which is unused.

    Notes
    -----
    - The frame feature for DySeg is the mean token of the frame (FastVID uses
      the SigLIP attention-pooling head output, which a token tensor does not carry).
    - Budget: the number of clips depends on the data (up to one per frame), so
      the at-least-one-token-per-clip floor is ``F`` here:
      ``num_kept = max(round(retention * F * N), F)``; it is stated from the
      shape alone, as for every reducer.
    - ``info["clip_bounds"]`` lists the clips used.
    """

    tau: float = 0.8
    c: int = 8

    name = "aot-dyn"
    description = "AOT with FastVID's dynamic temporal segmentation (DySeg) into clips (paper's 'AOT w Dyn')"
    paper = "arXiv:2603.01400"
    variants = {}

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tau = check_number("tau", self.tau, low=-1.0, high=1.0)
        self.c = check_int("c", self.c, low=1)

    def min_clips(self, num_frames: int) -> int:
        """Worst case: every frame its own clip."""
        return num_frames if self.inter else len(self.clips_for_shape(num_frames))

    def clips_for(self, video: VideoTokens) -> list[tuple[int, int]]:
        if not self.inter:
            return self.clips_for_shape(video.num_frames)
        return dynamic_segments(video.tokens.mean(1), tau=self.tau, c=self.c)
