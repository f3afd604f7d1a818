"""Temporal segmentation of a video into clips of consecutive frames.

Two rules, both pure functions returning clips as ``(start, end)`` pairs
(``end`` exclusive) that tile ``range(F)`` in order:

- :func:`uniform_segments`: fixed-length clips (AOT arXiv 2603.01400, Sec. 3.3).
- :func:`dynamic_segments`: FastVID's dynamic temporal segmentation "DySeg"
  (FastVID, arXiv 2503.11187, Sec. 3.2): cut between two adjacent frames where
  the cosine similarity of their global features is below ``tau``, and at the
  ``c - 1`` adjacent pairs with the lowest similarity.

:func:`segment_ids` turns clips into a per-frame clip index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anchor_ot._validation import check_int, check_number

__all__ = ["dynamic_segments", "uniform_segments", "segment_ids", "transition_similarity"]


def _check_features(frame_features: object) -> torch.Tensor:
    if not isinstance(frame_features, torch.Tensor):
        raise TypeError(
            "frame_features must be a torch.Tensor of shape (F, d) or (B, F, d), "
            f"got {type(frame_features).__name__}; e.g. pass video.tokens.mean(1)"
        )
    if frame_features.dim() not in (2, 3):
        raise ValueError(
            f"frame_features must have shape (F, d) or (B, F, d), got {tuple(frame_features.shape)}"
        )
    if not frame_features.is_floating_point():
        raise TypeError(f"frame_features must be a floating tensor, got {frame_features.dtype}")
    if frame_features.shape[-2] < 1 or frame_features.shape[-1] < 1:
        raise ValueError(f"frame_features must have F >= 1 frames and d >= 1 channels, got {tuple(frame_features.shape)}")
    if not torch.isfinite(frame_features).all():
        raise ValueError("frame_features contain NaN or inf")
    return frame_features


def transition_similarity(frame_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each frame to the next one.

    Parameters
    ----------
    frame_features : torch.Tensor, shape (F, d) or (B, F, d), floating
        One global feature per frame. Computed in float32 (float64 kept).

    Returns
    -------
    torch.Tensor, shape (F - 1,) or (B, F - 1)
        ``cos(x_i, x_{i+1})``; a zero vector has similarity 0 to anything.
    """
    x = _check_features(frame_features)
    x = x.float() if x.dtype != torch.float64 else x
    x = F.normalize(x, dim=-1)
    return (x[..., :-1, :] * x[..., 1:, :]).sum(-1)


def dynamic_segments(frame_features: torch.Tensor, tau: float = 0.9, c: int = 8):
    """FastVID's dynamic temporal segmentation (DySeg).

    A clip boundary is placed between frames ``i`` and ``i + 1`` when
    ``s_i = cos(x_i, x_{i+1}) < tau`` **or** ``s_i`` is among the ``c - 1``
    lowest transition similarities of the video (FastVID arXiv 2503.11187,
    Sec. 3.2, eq. 2-3). The first rule splits at every scene change; the second
    guarantees at least ``c`` clips so that long static shots are still cut.

    Parameters
    ----------
    frame_features : torch.Tensor, shape (F, d) or (B, F, d), floating
        One global feature per frame (FastVID uses the SigLIP attention-pooling
        head output; the frame's mean token or a [CLS] vector are common
        stand-ins). Half precision is computed in float32.
    tau : float, default 0.9
        Similarity threshold in [-1, 1] (FastVID's LLaVA-OneVision default 0.9;
        AOT's released call uses 0.8).
    c : int, default 8
        Minimum number of clips, >= 1: the ``c - 1`` lowest transitions are cut.

    Returns
    -------
    list[tuple[int, int]]
        Clips ``(start, end)``, ``end`` exclusive, in order, tiling ``range(F)``.
        For a batched (B, F, d) input, a list of B such lists.

    Raises
    ------
    TypeError
        If ``frame_features`` is not a floating tensor or a parameter has the wrong type.
    ValueError
        If the shape is not (F, d) / (B, F, d), values are not finite, ``tau``
        is outside [-1, 1] or ``c < 1``.

    Notes
    -----
    Deviation for short videos: the official code calls ``topk(k=c - 1)`` on the
    ``F - 1`` transitions and fails when ``F < c``; here ``min(c - 1, F - 1)``
    lowest transitions are cut, so a video with ``F <= c`` frames is cut between
    every pair of frames (one clip per frame) and ``F = 1`` gives one clip.
    Ties among equal similarities are broken by frame order (stable sort), so
    the result is deterministic.
    """
    tau = check_number("tau", tau, low=-1.0, high=1.0)
    c = check_int("c", c, low=1)
    x = _check_features(frame_features)
    batched = x.dim() == 3
    if not batched:
        x = x.unsqueeze(0)
    B, num_frames, _ = x.shape
    if num_frames == 1:
        out = [[(0, 1)] for _ in range(B)]
        return out if batched else out[0]
    sims = transition_similarity(x)  # (B, F-1)
    cut = sims < tau
    n_low = min(c - 1, num_frames - 1)
    if n_low > 0:
        order = torch.sort(sims, dim=-1, stable=True).indices[:, :n_low]
        cut.scatter_(1, order, True)
    out = []
    for row in cut.tolist():
        starts = [0] + [i + 1 for i, flag in enumerate(row) if flag]
        ends = starts[1:] + [num_frames]
        out.append(list(zip(starts, ends)))
    return out if batched else out[0]


def uniform_segments(num_frames: int, clip_length: int) -> list[tuple[int, int]]:
    """Consecutive clips of ``clip_length`` frames; the last one may be shorter.

    Parameters
    ----------
    num_frames : int
        F >= 1.
    clip_length : int
        Frames per clip, >= 1 (AOT uses 4 for 32 frames, 8 for 64; Sec. 7).

    Returns
    -------
    list[tuple[int, int]]
        ``[(0, L), (L, 2L), ..., (kL, F)]``, ``end`` exclusive.

    Raises
    ------
    TypeError, ValueError
        If an argument is not an int >= 1.
    """
    num_frames = check_int("num_frames", num_frames, low=1)
    clip_length = check_int("clip_length", clip_length, low=1)
    return [(s, min(s + clip_length, num_frames)) for s in range(0, num_frames, clip_length)]


def segment_ids(segments: list[tuple[int, int]], num_frames: int | None = None) -> torch.Tensor:
    """Clip index of every frame.

    Parameters
    ----------
    segments : list of (start, end)
        Clips tiling ``range(F)`` in order, as returned by the functions above.
    num_frames : int, optional
        F, to check the tiling against.

    Returns
    -------
    torch.LongTensor, shape (F,)

    Raises
    ------
    ValueError
        If the clips do not tile ``range(F)`` contiguously.
    """
    if not segments:
        raise ValueError("segments must contain at least one (start, end) clip")
    pos = 0
    lengths = []
    for seg in segments:
        if len(seg) != 2 or seg[0] != pos or seg[1] <= seg[0]:
            raise ValueError(f"segments must tile the frames contiguously from 0; got {segments!r}")
        lengths.append(seg[1] - seg[0])
        pos = seg[1]
    if num_frames is not None and pos != num_frames:
        raise ValueError(f"segments cover {pos} frames, expected {num_frames}")
    return torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
