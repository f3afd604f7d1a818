"""What a reduced token set still carries: fidelity of a :class:`ReducedVideo`.

Every metric compares the reducer's output with the original :class:`VideoTokens`,
needs no language model, and is computed in float32 whatever the input dtype
(fp16 / bf16 / fp32 / fp64). All are cosine based, so they do not depend on the
scale of the tokens. Notation: ``x_i`` the ``F * N`` input tokens (flat index
``i = f * N + n``), ``y_k`` the ``K`` output tokens, ``a(i)`` the output token
that absorbed ``x_i`` (``reduced.assignment``), ``s_k`` its mass (how many input
tokens it stands for), ``cos(u, v) = u . v / (|u| |v|)`` (a zero vector has cosine
0 with everything).

- :func:`reconstruction`: how well each token is represented by the token it was merged into.
- :func:`coverage`: how well each token is represented by the best output token.
- :func:`attention_readout`: how well attention over the outputs reproduces attention
  over all inputs (proportional attention, ToMe).
- :func:`temporal_localization`: whether frames between the sampled ones are matched to
  the right time.
- :func:`evaluate`: all that apply, as a dict.

Higher is better for every metric; each equals 1 for the identity reduction
(retention 1.0, every token kept unchanged).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as Fn

from anchor_ot._validation import check_int, check_number
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["reconstruction", "coverage", "attention_readout", "readout_reference", "temporal_localization", "evaluate"]

_CHUNK = 1024  # rows per block in the (rows x K) similarity products: bounded memory


def _check_pair(video: VideoTokens, reduced: ReducedVideo) -> None:
    if not isinstance(video, VideoTokens):
        raise TypeError(f"video must be a VideoTokens, got {type(video).__name__}")
    if not isinstance(reduced, ReducedVideo):
        raise TypeError(f"reduced must be a ReducedVideo, got {type(reduced).__name__}")
    if reduced.num_frames != video.num_frames or tuple(reduced.grid) != tuple(video.grid):
        raise ValueError(
            f"reduced was made from {reduced.num_frames} frames on a {reduced.grid} grid, but video has "
            f"{video.num_frames} frames on a {video.grid} grid: pass the video the reducer was called on"
        )
    if reduced.tokens.dim() != 2 or reduced.tokens.shape[1] != video.dim:
        raise ValueError(
            f"reduced tokens must be (K, {video.dim}) to match the video's d = {video.dim}, "
            f"got {tuple(reduced.tokens.shape)}"
        )
    reduced.validate()


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, in float32 (zero rows stay zero)."""
    return Fn.normalize(x.to(torch.float32), dim=-1, eps=1e-12)


def _flat(video: VideoTokens) -> torch.Tensor:
    return video.tokens.reshape(-1, video.dim)


def reconstruction(video: VideoTokens, reduced: ReducedVideo, weights: torch.Tensor | None = None) -> float:
    r"""Score-weighted mean cosine between each input token and the output token it was assigned to.

    .. math:: \mathrm{rec} = \frac{\sum_i w_i \cos(x_i, y_{a(i)})}{\sum_i w_i}

    Parameters
    ----------
    video : VideoTokens
        The input of the reducer, tokens (F, N, d).
    reduced : ReducedVideo
        The reducer's output for ``video``.
    weights : torch.Tensor, shape (F, N), optional
        Non-negative importance ``w_i``. Default: ``video.global_scores`` when present
        (important tokens should be represented well), else uniform.

    Returns
    -------
    float
        In [-1, 1]; 1 when every token is parallel to the token that absorbed it
        (e.g. nothing merged). Higher is better. Dropping a token (assigning it to a
        kept token it was not merged into) lowers it as much as merging it badly.

    Raises
    ------
    TypeError
        If ``video``/``reduced`` have the wrong type.
    ValueError
        If ``reduced`` does not belong to ``video`` (frames, grid or d differ), or the
        weights are not (F, N), negative, non-finite or all zero.
    """
    _check_pair(video, reduced)
    F, N = video.num_frames, video.tokens_per_frame
    w = weights if weights is not None else video.global_scores
    if w is None:
        w = torch.ones(F * N, dtype=torch.float32, device=video.tokens.device)
    else:
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != (F, N):
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"weights must be a tensor of shape (F, N) = ({F}, {N}), got {shape}")
        w = w.reshape(-1).to(torch.float32)
        if not torch.isfinite(w).all() or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
    x = _unit(_flat(video))
    y = _unit(reduced.tokens)
    cos = (x * y[reduced.assignment]).sum(-1)
    return float((w * cos).sum() / w.sum())


def _best_cosine(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """max_k cos(q, k) for every row of ``queries`` (both already unit rows), in blocks."""
    return torch.cat([(q @ keys.T).amax(dim=1) for q in queries.split(_CHUNK)])


def coverage(video: VideoTokens, reduced: ReducedVideo) -> float:
    r"""Mean over input tokens of the best cosine to any output token.

    .. math:: \mathrm{cov} = \frac{1}{FN} \sum_i \max_k \cos(x_i, y_k)

    Unlike :func:`reconstruction` this ignores the assignment: it asks whether the
    reduced set contains *something* like every input token.

    Parameters
    ----------
    video : VideoTokens
    reduced : ReducedVideo

    Returns
    -------
    float
        In [-1, 1]; 1 when every input token has a parallel output token. Higher is
        better. Always >= the unweighted reconstruction.

    Raises
    ------
    TypeError, ValueError
        As :func:`reconstruction`.
    """
    _check_pair(video, reduced)
    return float(_best_cosine(_unit(_flat(video)), _unit(reduced.tokens)).mean())


def _readout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
             scale: float) -> torch.Tensor:
    logits = (q @ k.T) * scale
    if bias is not None:
        logits = logits + bias
    return torch.softmax(logits, dim=-1) @ v


def attention_readout(video: VideoTokens, reduced: ReducedVideo, queries: torch.Tensor | None = None,
                      cls: torch.Tensor | None = None, temperature: float | None = None,
                      normalize: bool = False, reference: torch.Tensor | None = None) -> float:
    r"""Cosine between attention readouts over all input tokens and over the output tokens.

    For a query ``q`` the readout over the input tokens is the attended vector

    .. math:: o(q) = \mathrm{softmax}_i(q \cdot x_i / \tau)\, X,

    and over the output tokens, with proportional attention (ToMe, arXiv 2210.09461,
    Sec. 3: a token standing for ``s_k`` inputs gets ``log s_k`` added to its logit),

    .. math:: \hat o(q) = \mathrm{softmax}_k(q \cdot y_k / \tau + \log s_k)\, Y.

    Keys and values are the tokens themselves (no projections). The score is the
    mean over queries of ``cos(o(q), \hat o(q))``: it compares the attended
    *outputs* (readout vectors), not the attention distributions, which live on
    different sets. If the reducer only merges exact duplicates (or keeps all
    tokens), ``\hat o = o`` and the score is 1.

    Parameters
    ----------
    video : VideoTokens
    reduced : ReducedVideo
    queries : torch.Tensor, shape (M, d), optional
        Query vectors. Default: the F * N input tokens.
    cls : torch.Tensor, shape (F, d), optional
        Per-frame [CLS] vectors of the encoder, appended to the queries.
    temperature : float, optional
        ``\tau`` > 0. Default ``sqrt(d)`` (scaled dot-product attention).
    normalize : bool, default False
        L2-normalize queries, keys and values first (then logits are cosines over
        ``\tau``; pick a small ``\tau`` such as 0.1, since ``sqrt(d)`` makes the
        softmax nearly uniform).
    reference : torch.Tensor, shape (M, d), optional
        The full-token readouts from :func:`readout_reference` (same video and
        options), to skip recomputing them for every reducer.

    Returns
    -------
    float
        Mean cosine in [-1, 1]; higher is better; 1 for the identity reduction.

    Raises
    ------
    TypeError, ValueError
        As :func:`reconstruction`; also if ``queries`` is not (M, d) or ``cls`` not
        (F, d), or ``temperature`` is not a positive number.

    Notes
    -----
    Queries are processed in blocks of 1024 rows, so memory is O(1024 * F * N)
    whatever the number of queries (about 26 MB for F = 32, N = 196).
    """
    _check_pair(video, reduced)
    x, q_all, tau = _readout_inputs(video, queries, cls, temperature, normalize)
    if reference is not None:
        if not isinstance(reference, torch.Tensor) or tuple(reference.shape) != tuple(q_all.shape):
            raise ValueError(f"reference must be the (M, d) = {tuple(q_all.shape)} tensor returned by "
                             "readout_reference for the same video and options")
    y = reduced.tokens.to(torch.float32)
    if normalize:
        y = _unit(y)
    log_mass = torch.log(reduced.mass.to(torch.float32).to(y.device))
    scores = []
    for i, q in enumerate(q_all.split(_CHUNK)):
        full = (_readout(q, x, x, None, 1.0 / tau) if reference is None
                else reference[i * _CHUNK:i * _CHUNK + q.shape[0]])
        red = _readout(q, y, y, log_mass, 1.0 / tau)
        scores.append(Fn.cosine_similarity(full, red, dim=-1, eps=1e-12))
    return float(torch.cat(scores).mean())


def _readout_inputs(video, queries, cls, temperature, normalize):
    d = video.dim
    tau = math.sqrt(d) if temperature is None else check_number("temperature", temperature, low=0, low_open=True)
    parts = []
    if queries is not None:
        parts.append(_check_vectors("queries", queries, None, d))
    if cls is not None:
        parts.append(_check_vectors("cls", cls, video.num_frames, d))
    x = _flat(video).to(torch.float32)
    q_all = torch.cat([p.to(torch.float32) for p in parts]) if parts else x
    if queries is None and cls is not None:
        q_all = torch.cat([x, q_all])
    if normalize:
        x, q_all = _unit(x), _unit(q_all)
    return x, q_all, tau


def readout_reference(video: VideoTokens, queries: torch.Tensor | None = None, cls: torch.Tensor | None = None,
                      temperature: float | None = None, normalize: bool = False) -> torch.Tensor:
    r"""The full-token readouts :math:`o(q)` of :func:`attention_readout`, computed once.

    Pass the result as ``reference=`` to :func:`attention_readout` for every reducer
    run on the same video with the same options: half of the metric's cost is this
    part, which does not depend on the reducer.

    Parameters
    ----------
    video, queries, cls, temperature, normalize
        As :func:`attention_readout`.

    Returns
    -------
    torch.Tensor, shape (M, d), float32
        One readout per query (M = F * N input tokens, plus F with ``cls``).
    """
    if not isinstance(video, VideoTokens):
        raise TypeError(f"video must be a VideoTokens, got {type(video).__name__}")
    x, q_all, tau = _readout_inputs(video, queries, cls, temperature, normalize)
    return torch.cat([_readout(q, x, x, None, 1.0 / tau) for q in q_all.split(_CHUNK)])


def _check_vectors(name: str, t: object, rows: int | None, d: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"{name} must be a floating torch.Tensor")
    want = f"({rows if rows is not None else 'M'}, {d})"
    if t.dim() != 2 or t.shape[1] != d or (rows is not None and t.shape[0] != rows) or t.shape[0] == 0:
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


def temporal_localization(reduced: ReducedVideo, between_tokens: torch.Tensor,
                          between_positions: torch.Tensor) -> float:
    r"""How often a frame between the sampled frames is matched to the nearest sampled frame.

    Sampled frame ``f`` is represented by the output tokens that sit in it,
    ``S_f = {k : frame_index[k] = f}``. A between-frame ``b`` with tokens ``z_1..z_M``
    scores each sampled frame by the mean, over its tokens, of the best cosine to
    that frame's output tokens,

    .. math:: \mathrm{match}(b, f) = \frac{1}{M} \sum_j \max_{k \in S_f} \cos(z_j, y_k),

    and is predicted to lie at ``\hat f(b) = \arg\max_f \mathrm{match}(b, f)``.
    A frame with no output token of its own (merged away entirely, or dropped) cannot
    be predicted: its match is ``-inf``. Merged tokens count for the frame of their
    anchor (``source_index``), not for every frame they absorbed, so a method that
    merges a clip into its first frame is credited with that frame only.
    The score is the fraction of between-frames whose ``\hat f`` is a nearest sampled
    frame (``|\hat f - p_b|`` minimal; at an exact midpoint both neighbours count).

    Parameters
    ----------
    reduced : ReducedVideo
        Reduction of the F sampled frames.
    between_tokens : torch.Tensor, shape (B, M, d), floating
        Tokens of B frames decoded between the sampled ones, from the same encoder
        (M need not equal N).
    between_positions : torch.Tensor, shape (B,)
        Position of each between-frame in sampled-frame units: 2.25 is a quarter of
        the way from sampled frame 2 to sampled frame 3. Must lie in [0, F - 1].

    Returns
    -------
    float
        Hit rate in [0, 1]; higher is better. Coarse by construction (each frame is
        a hit or a miss); the identity reduction of frames whose content changes
        over time scores 1 when each between-frame looks most like its neighbour.

    Raises
    ------
    TypeError, ValueError
        If shapes disagree (d, B), positions are outside [0, F - 1] or not finite.
    """
    if not isinstance(reduced, ReducedVideo):
        raise TypeError(f"reduced must be a ReducedVideo, got {type(reduced).__name__}")
    reduced.validate()
    d = reduced.tokens.shape[1]
    F = reduced.num_frames
    if not isinstance(between_tokens, torch.Tensor) or not between_tokens.is_floating_point():
        raise TypeError("between_tokens must be a floating torch.Tensor of shape (B, M, d)")
    if between_tokens.dim() != 3 or between_tokens.shape[2] != d or between_tokens.shape[0] == 0 \
            or between_tokens.shape[1] == 0:
        raise ValueError(f"between_tokens must have shape (B, M, {d}) with B, M >= 1, got "
                         f"{tuple(between_tokens.shape)}")
    B = between_tokens.shape[0]
    if not isinstance(between_positions, torch.Tensor):
        between_positions = torch.as_tensor(between_positions)
    if tuple(between_positions.shape) != (B,):
        raise ValueError(f"between_positions must have shape (B,) = ({B},), got {tuple(between_positions.shape)}")
    pos = between_positions.to(torch.float64).cpu()
    if not torch.isfinite(pos).all() or bool((pos < 0).any()) or bool((pos > F - 1).any()):
        raise ValueError(f"between_positions must lie in [0, F - 1] = [0, {F - 1}] (sampled-frame units)")
    if not torch.isfinite(between_tokens).all():
        raise ValueError("between_tokens contains NaN or inf")

    y = _unit(reduced.tokens)
    frame_of = reduced.frame_index.to(y.device)
    z = _unit(between_tokens.to(y.device))
    matches = []
    per_block = max(1, (1 << 22) // (z.shape[1] * y.shape[0]))  # <= 4M similarities (16 MB) per block
    for zb in z.split(per_block):  # (b, M, d)
        sims = zb @ y.T  # (b, M, K)
        best = torch.full((*sims.shape[:2], F), -math.inf, dtype=sims.dtype, device=sims.device)
        best.scatter_reduce_(2, frame_of.expand_as(sims), sims, reduce="amax", include_self=True)
        matches.append(best.mean(dim=1))  # (b, F); -inf for frames with no output token
    pred = torch.cat(matches).argmax(dim=1).cpu().to(torch.float64)
    frames = torch.arange(F, dtype=torch.float64)
    dist = (pos[:, None] - frames[None, :]).abs()
    nearest = dist.min(dim=1).values
    hit = (pos - pred).abs() <= nearest + 1e-9
    return float(hit.to(torch.float64).mean())


def evaluate(video: VideoTokens, reduced: ReducedVideo, cls: torch.Tensor | None = None,
             between: tuple[torch.Tensor, torch.Tensor] | None = None,
             weights: torch.Tensor | None = None, cache: dict | None = None) -> dict[str, float]:
    """Every metric that applies, by name.

    Parameters
    ----------
    video, reduced
        Input and output of a reducer.
    cls : torch.Tensor, shape (F, d), optional
        Per-frame [CLS] vectors; adds ``readout_cls`` (:func:`attention_readout`
        with the [CLS] vectors as the only queries).
    between : (torch.Tensor (B, M, d), torch.Tensor (B,)), optional
        Tokens and positions of between-frames; adds ``temporal``
        (:func:`temporal_localization`).
    weights : torch.Tensor, shape (F, N), optional
        Passed to :func:`reconstruction`.
    cache : dict, optional
        One empty dict per video, passed to every call for that video: the
        full-token readouts (:func:`readout_reference`) are computed on the first
        call and reused, which halves the cost of evaluating many reducers.

    Returns
    -------
    dict[str, float]
        ``reconstruction``, ``coverage``, ``readout`` (queries = input tokens), and
        ``readout_cls`` / ``temporal`` when their inputs are given.

    Raises
    ------
    TypeError, ValueError
        As the individual metrics; ``ValueError`` if ``cache`` was filled for another video.
    """
    if cache is not None:
        if not isinstance(cache, dict):
            raise TypeError(f"cache must be a dict (one per video), got {type(cache).__name__}")
        if cache.setdefault("video", video) is not video:
            raise ValueError("this cache was filled for another video: use one empty dict per video")

    def reference(key, **kw):
        if cache is None:
            return None
        if key not in cache:
            cache[key] = readout_reference(video, **kw)
        return cache[key]

    out = {
        "reconstruction": reconstruction(video, reduced, weights),
        "coverage": coverage(video, reduced),
        "readout": attention_readout(video, reduced, reference=reference("readout")),
    }
    if cls is not None:
        _check_vectors("cls", cls, video.num_frames, video.dim)
        out["readout_cls"] = attention_readout(video, reduced, queries=cls,
                                               reference=reference("readout_cls", queries=cls))
    if between is not None:
        if not isinstance(between, (tuple, list)) or len(between) != 2:
            raise TypeError("between must be a pair (tokens (B, M, d), positions (B,))")
        out["temporal"] = temporal_localization(reduced, between[0], between[1])
    return out
