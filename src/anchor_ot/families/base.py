"""Engine-independent pieces shared by every family and every engine.

:class:`Family` describes a model family; :class:`EncodedVideo` is one video as its
language model would receive it, before reduction; :func:`reduce_video` is the one
reduction step every engine runs (reducer on the LLM grid, the same keep/merge map for
side features such as Qwen3-VL deepstack levels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from anchor_ot.methods.base import Reducer
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["Family", "EncodedVideo", "resolve_layer", "reduce_side_features", "reduce_video", "keep_flags"]


def resolve_layer(name: str, index: int, depth: int) -> int:
    """Map a possibly negative encoder layer index to ``[0, depth)`` or raise ``ValueError``."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"{name} must be an int (encoder layer index, negative counts from the end), got {index!r}")
    if not -depth <= index < depth:
        raise ValueError(f"{name}={index} is out of range for a vision encoder with {depth} layers "
                         f"(use -{depth}..{depth - 1})")
    return index % depth


@dataclass(frozen=True)
class Family:
    """What an engine needs to know about one model family.

    Attributes
    ----------
    name : str
        Registry name (``"llava_onevision"``, ``"qwen2_5_vl"``, ``"qwen3_vl"``).
    architectures : tuple[str, ...]
        ``config.architectures`` / transformers class names of the family.
    default_local_layer : int
        Vision-encoder layer of the ``local`` scores (clipped to the encoder depth).
    default_global_layer : Callable[[object], int]
        Vision config -> layer of the ``global`` scores.
    extra_tokens : int
        Placeholders after the grid tokens that are always kept (LLaVA-OneVision's
        ``image_newline``: 1).
    deepstack : bool
        The encoder returns deepstack levels that follow the keep/merge map (Qwen3-VL).
    """

    name: str
    architectures: tuple[str, ...]
    default_local_layer: int
    default_global_layer: Callable[[object], int]
    extra_tokens: int = 0
    deepstack: bool = False

    def score_layers(self, vision_config, depth: int, local_layer: int | None = None,
                     global_layer: int | None = None) -> dict[str, int]:
        """Indices in ``[0, depth)`` of the ``global`` and ``local`` score layers.

        ``None`` takes the family default (the local default is clipped to ``depth - 1``
        for small encoders); explicit indices are checked (``ValueError`` if out of range).
        """
        g = self.default_global_layer(vision_config) if global_layer is None else global_layer
        loc = min(self.default_local_layer, depth - 1) if local_layer is None else local_layer
        return {"global": resolve_layer("global_layer", g, depth), "local": resolve_layer("local_layer", loc, depth)}

    def num_placeholders(self, reducer: Reducer, frames: int, grid: tuple[int, int]) -> int:
        """Placeholder tokens one reduced video occupies: ``reducer.num_kept(frames, grid)`` + extra.

        Known before the encoder runs (an engine reserves the prompt from it).

        Raises
        ------
        ValueError
            If the reducer cannot meet its budget on that shape.
        """
        return int(reducer.num_kept(frames, grid)) + self.extra_tokens


@dataclass
class EncodedVideo:
    """One video as the language model would receive it, before reduction.

    Attributes
    ----------
    video : VideoTokens
        Tokens (F, N, d) on the LLM grid, with the scores the hooks produced.
    extra : torch.Tensor or None
        Tokens that follow the grid tokens in the placeholder run and are always kept
        (LLaVA-OneVision: the ``image_newline`` row, shape (1, d)).
    side_features : list[torch.Tensor]
        Other per-token features that must follow the keep/merge map, each (F * N, d_l)
        in the same flat order (Qwen3-VL deepstack levels).
    score_seconds : float
        Wall time the score hooks spent during the encoder call that produced this
        video (the whole call, shared by all videos of the batch).
    """

    video: VideoTokens
    extra: torch.Tensor | None = None
    side_features: list[torch.Tensor] = field(default_factory=list)
    score_seconds: float = 0.0

    @property
    def num_placeholders(self) -> int:
        """Placeholder tokens this video occupies in the full prompt."""
        extra = 0 if self.extra is None else self.extra.shape[0]
        return self.video.num_frames * self.video.tokens_per_frame + extra


def reduce_side_features(reduced: ReducedVideo, features: torch.Tensor,
                         tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a reducer's keep/merge map to other features of the same tokens.

    Parameters
    ----------
    reduced : ReducedVideo
        The reducer's output for a video of F * N tokens.
    features : torch.Tensor, shape (F * N, d_l)
        Features of the same tokens in flat order ``f * N + n`` (e.g. a Qwen3-VL
        deepstack level).
    tokens : torch.Tensor, shape (F, N, d) or (F * N, d), optional
        The reducer's input tokens. Output rows that are unchanged copies of the input
        token at their ``source_index`` are *selected* tokens: their side features are
        gathered at ``source_index`` (exact). Without ``tokens`` every row is treated as
        merged.

    Returns
    -------
    torch.Tensor, shape (K, d_l), dtype of ``features``
        Selected rows: ``features[source_index]``. Merged rows: the mean of the rows
        assigned to them (``reduced.assignment``), i.e. the mass-weighted mean of the
        input tokens each output token stands for.

    Notes
    -----
    A merging reducer may combine its main tokens with other weights (e.g. AOT's
    transport plan); the side features then follow the hard assignment instead. This is
    our choice (the AOT paper does not treat deepstack features).
    """
    if features.shape[0] != reduced.assignment.shape[0]:
        raise ValueError(f"side features have {features.shape[0]} rows, the video has "
                         f"{reduced.assignment.shape[0]} tokens")
    src = reduced.source_index.to(features.device)
    gathered = features.index_select(0, src)
    if tokens is not None:
        flat = tokens.reshape(-1, tokens.shape[-1])
        selected = (reduced.tokens.to(flat.device) == flat.index_select(0, src.to(flat.device))).all(dim=-1)
        if bool(selected.all()):
            return gathered
    else:
        selected = torch.zeros(reduced.num_tokens, dtype=torch.bool)
    assign = reduced.assignment.to(features.device)
    total = torch.zeros(reduced.num_tokens, features.shape[1], dtype=torch.float32, device=features.device)
    total.index_add_(0, assign, features.float())
    merged = (total / reduced.mass.to(features.device)[:, None]).to(features.dtype)
    return torch.where(selected.to(features.device)[:, None], gathered, merged)


def reduce_video(reducer: Reducer, encoded: EncodedVideo) -> tuple[ReducedVideo, list[torch.Tensor]]:
    """The reduction step every engine runs on one video.

    Returns the reducer's output and the side features (deepstack levels) reduced with
    the same keep/merge map (:func:`reduce_side_features`), each (K, d_l).

    Raises
    ------
    RuntimeError
        If the reducer does not return exactly ``reducer.num_kept(F, grid)`` tokens
        (the count the engine reserved before encoding).
    """
    video = encoded.video
    reduced = reducer(video)
    expected = reducer.num_kept(video.num_frames, video.grid)
    if reduced.num_tokens != expected:
        raise RuntimeError(f"{type(reducer).__name__} returned {reduced.num_tokens} tokens but announced {expected} "
                           f"for {video.num_frames} frames of {video.grid}; this is a bug in the method")
    side = [reduce_side_features(reduced, s, video.tokens) for s in encoded.side_features]
    return reduced, side


def keep_flags(reduced: ReducedVideo, extra: int = 0) -> torch.Tensor:
    """Per-placeholder keep flags of one video: the kept grid tokens, then ``extra`` always-kept tokens.

    Returns
    -------
    torch.BoolTensor, shape (F * N + extra,)
    """
    total = reduced.assignment.shape[0]
    flags = torch.zeros(total + extra, dtype=torch.bool)
    flags[reduced.source_index.cpu()] = True
    flags[total:] = True
    return flags
