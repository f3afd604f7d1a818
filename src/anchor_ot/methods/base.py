"""The shared interface of every reducer.

A reducer is a dataclass of validated parameters with a ``retention`` field (the
fraction of tokens *kept*). It states its output size from the input shape alone
(:meth:`Reducer.num_kept`) and then keeps exactly that many tokens
(:meth:`Reducer.__call__`). A method implements only :meth:`Reducer.reduce`
(and :meth:`Reducer.num_kept` where its budget rule differs from the default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch

from anchor_ot._validation import check_retention
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["Reducer", "default_budget", "assemble"]


def default_budget(retention: float, num_frames: int, grid: tuple[int, int], minimum: int = 1) -> int:
    """Kept-token count ``K = round(retention * F * N)``, clamped to ``[minimum, F * N]``.

    Parameters
    ----------
    retention : float
        Fraction of tokens kept, in (0, 1].
    num_frames : int
        F.
    grid : tuple[int, int]
        Per-frame grid (h, w); N = h * w.
    minimum : int, default 1
        Smallest allowed count (e.g. one token per clip).

    Returns
    -------
    int
        K. Python's ``round`` (half to even) is used.
    """
    total = num_frames * grid[0] * grid[1]
    return int(min(total, max(minimum, round(retention * total))))


def assemble(tokens: torch.Tensor, source_index: torch.Tensor, assignment: torch.Tensor,
             num_frames: int, grid: tuple[int, int], info: dict | None = None,
             ordered: bool = False) -> ReducedVideo:
    """Build a :class:`ReducedVideo` from unordered output rows.

    Parameters
    ----------
    tokens : torch.Tensor, shape (K, d)
        Output tokens in any order.
    source_index : torch.LongTensor, shape (K,)
        Flat position ``f * N + n`` of each row; distinct.
    assignment : torch.LongTensor, shape (F * N,)
        For each input token, the row of ``tokens`` that absorbed it.
    num_frames, grid
        Input shape.
    info : dict, optional
        Diagnostics to attach.
    ordered : bool, default False
        The caller guarantees ``source_index`` strictly increasing (rows already in
        temporal-raster order): skips the check (a comparison pass and a host sync).

    Returns
    -------
    ReducedVideo
        Rows sorted by ``source_index``; ``assignment`` renumbered accordingly;
        ``mass = bincount(assignment)`` as float32.
    """
    N = grid[0] * grid[1]
    K = tokens.shape[0]
    if ordered or K < 2 or bool((source_index[1:] > source_index[:-1]).all()):
        # already in temporal-raster order: no copy of the token rows
        src, new_assignment, out_tokens = source_index, assignment, tokens
    else:
        order = torch.argsort(source_index)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(K, device=order.device)
        src, new_assignment, out_tokens = source_index[order], rank[assignment], tokens[order]
    return ReducedVideo(
        tokens=out_tokens,
        source_index=src,
        frame_index=src // N,
        mass=torch.bincount(new_assignment, minlength=K).to(torch.float32),
        assignment=new_assignment,
        num_frames=num_frames,
        grid=tuple(grid),
        info=dict(info or {}),
    )


@dataclass
class Reducer:
    """Base class: a callable token reducer with an exact budget.

    Parameters
    ----------
    retention : float, default 0.1
        Fraction of visual tokens kept, in (0, 1]. 1.0 keeps every token unchanged.

    Notes
    -----
    Subclasses set the class attributes ``name`` (registry key), ``description``
    (one line), ``paper`` (arXiv id or "-") and optionally ``variants`` (named
    parameter presets), implement :meth:`reduce`, and
    validate their own fields in ``__post_init__`` (calling ``super().__post_init__()``).
    """

    retention: float = 0.1

    name: ClassVar[str] = "base"
    description: ClassVar[str] = ""
    paper: ClassVar[str] = "-"
    #: Named parameter presets (e.g. a paper's ablation rows), reachable as ``get("name:variant")``.
    variants: ClassVar[dict[str, dict]] = {}

    def __post_init__(self) -> None:
        self.retention = check_retention(self.retention)

    # -- budget -----------------------------------------------------------------
    def num_kept(self, num_frames: int, grid: tuple[int, int]) -> int:
        """Exact number of output tokens for any input of this shape.

        Parameters
        ----------
        num_frames : int
            F >= 1.
        grid : tuple[int, int]
            Per-frame token grid (h, w).

        Returns
        -------
        int
            K; the reducer's output always has exactly K tokens.

        Raises
        ------
        ValueError
            If the configuration cannot meet the budget; the message gives the feasible range.
        """
        self._check_shape(num_frames, grid)
        return default_budget(self.retention, num_frames, grid)

    @staticmethod
    def _check_shape(num_frames: int, grid: tuple[int, int]) -> None:
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
        if (not isinstance(grid, (tuple, list)) or len(grid) != 2
                or not all(isinstance(g, int) and g >= 1 for g in grid)):
            raise ValueError(f"grid must be a pair of positive ints (h, w), got {grid!r}")

    # -- reduction --------------------------------------------------------------
    def __call__(self, video: VideoTokens) -> ReducedVideo:
        """Reduce ``video`` to exactly ``num_kept(F, grid)`` tokens.

        Raises
        ------
        TypeError
            If ``video`` is not a :class:`~anchor_ot.types.VideoTokens`.
        ValueError
            If the budget cannot be met for this shape (see :meth:`num_kept`).
        """
        if not isinstance(video, VideoTokens):
            raise TypeError(
                f"{type(self).__name__} takes a VideoTokens, got {type(video).__name__}; "
                "wrap your (F, N, d) tensor as VideoTokens(tokens, grid=(h, w))"
            )
        k = self.num_kept(video.num_frames, video.grid)
        out = self.reduce(video, k)
        if out.num_tokens != k:
            raise RuntimeError(f"{type(self).__name__} produced {out.num_tokens} tokens, promised {k}: this is a bug")
        return out

    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:  # pragma: no cover - abstract
        """Method body: return exactly ``num_kept`` tokens."""
        raise NotImplementedError

    def params(self) -> dict:
        """The reducer's parameters as a plain dict (for reports)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in asdict(self).items())
        return f"{type(self).__name__}({args})"
