"""Shared machinery of the Hugging Face adapters.

One call of :func:`anchor_ot.generate` does, for every supported family:

1. encode the video(s) through the model's own vision path while one forward hook per
   requested score recomputes the attention of a single encoder layer and keeps only the
   attention each token *receives* (:func:`received_attention`);
2. cut every video with the reducer on the grid the language model sees;
3. drop the placeholder tokens of the removed video tokens from ``input_ids`` /
   ``attention_mask`` and left-pad the rows again (:func:`compact_rows`);
4. call ``model.generate`` with the reduced features as ``mm_encoder_outputs`` (the
   transformers 5.x argument for pre-encoded media) and, for the Qwen families, the
   full sequence's M-RoPE positions at the kept indices.

The adapter modules (:mod:`.llava_onevision`, :mod:`.qwen_vl`) only say where the vision
tower, the placeholder token and the features are in a transformers model; what a family
is (score layers, LLM grid, newline row, deepstack) lives in :mod:`anchor_ot.families`,
shared with the vLLM plugin. Adapters add themselves to :data:`_ADAPTERS` on import.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from anchor_ot import families
from anchor_ot._validation import check_choice
from anchor_ot.families.base import EncodedVideo, keep_flags, reduce_side_features, resolve_layer  # noqa: F401 (re-exported)
from anchor_ot.methods.base import Reducer
from anchor_ot.types import ReducedVideo

__all__ = [
    "EncodedVideo",
    "ScoreHooks",
    "received_attention",
    "received_attention_packed",
    "reduce_side_features",
    "compact_rows",
    "SCORE_CHOICES",
]

SCORE_CHOICES = ("attention", "none")

# Upper bound on the attention probabilities materialized at once by the score hooks
# (elements, fp32): 2**25 = 128 MiB. The hooks work through frames/windows in chunks below it.
_ATTN_CHUNK_ELEMENTS = 2**25


# -- prompt token ids shared by every family --------------------------------------------


def video_token_id(model) -> int:
    """Id of the video placeholder token in the prompt."""
    return int(model.config.video_token_id)


def pad_token_id(model) -> int:
    """Id written into the left padding of the rebuilt prompt (masked out; 0 if the model has none)."""
    pad = getattr(model.generation_config, "pad_token_id", None)
    if pad is None:
        pad = getattr(model.config.text_config, "pad_token_id", None)
    if isinstance(pad, (list, tuple)):
        pad = pad[0]
    return 0 if pad is None else int(pad)


# -- importance scores -----------------------------------------------------------------


def received_attention(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention each token receives, averaged over heads and queries.

    Parameters
    ----------
    q, k : torch.Tensor, shape (C, H, L, head_dim)
        Queries and keys of C independent sequences (frames or windows) after any
        rotary embedding, as the attention layer uses them.
    scale : float
        Softmax temperature of the layer (``head_dim ** -0.5`` for SigLIP and Qwen ViTs).

    Returns
    -------
    torch.Tensor, shape (C, L), float32
        ``s[c, j] = mean_{h, i} softmax_j(q_i . k_j * scale)``; each row sums to 1.

    Notes
    -----
    AOT (arXiv 2603.01400, Sec. 3.2, eq. 6-7) scores tokens by the attention of [CLS];
    SigLIP and the Qwen ViTs have no [CLS], so, like the authors' released code for
    LLaVA-OneVision, we use the attention a token receives from all queries. The
    released code sums over queries; we take the mean (a per-frame constant factor, so
    rankings within a frame are unchanged). Computed in fp32 in blocks of at most 2**20
    probabilities (whole sequences or blocks of query rows), so memory stays small and the
    block stays in cache.
    """
    C, H, L, _ = q.shape
    # Cache blocking: at most 2**20 logits (4 MiB fp32) at once, whole sequences when they fit,
    # else blocks of query rows of one sequence, so the logits, their exp and the column sums are
    # read from cache rather than memory (1.7x faster than one 2**25 chunk at SigLIP's L = 729,
    # benchmarks/prefill_speed.py); memory stays below the _ATTN_CHUNK_ELEMENTS bound.
    block = min(_ATTN_CHUNK_ELEMENTS, 2**20)
    per_seq = H * L * L
    step = max(1, block // max(1, per_seq))
    rows = L if per_seq <= block else max(1, block // max(1, H * L))
    acc = torch.zeros(C, H, 1, L, dtype=torch.float32, device=q.device)
    for s in range(0, C, step):
        qs = q[s:s + step].float() * scale  # the temperature on q (L x hd), not on the L x L logits
        kt = k[s:s + step].float().transpose(-1, -2)  # (c, H, hd, L)
        for r0 in range(0, L, rows):
            logits = torch.matmul(qs[:, :, r0:r0 + rows], kt)  # (c, H, r, L)
            probs = logits.sub_(logits.amax(-1, keepdim=True)).exp_()  # unnormalized softmax, in place
            inv = probs.sum(-1, keepdim=True).reciprocal_()  # 1 / row sums
            # sum_i probs_ij / z_i as a row-vector product: no pass dividing the block
            acc[s:s + step] += torch.matmul(inv.transpose(-1, -2), probs)
    # mean over heads and queries; equals softmax(...).mean((1, 2)) up to float summation order
    return acc.sum(dim=(1, 2)).div_(H * L)


def received_attention_packed(q: torch.Tensor, k: torch.Tensor, scale: float,
                              cu_seqlens: torch.Tensor) -> torch.Tensor:
    """:func:`received_attention` for packed variable-length sequences (Qwen ViTs).

    Parameters
    ----------
    q, k : torch.Tensor, shape (S, H, head_dim)
        Packed queries and keys (after the vision rotary embedding).
    scale : float
        Softmax temperature.
    cu_seqlens : torch.Tensor, shape (C + 1,)
        Cumulative boundaries of the C sequences (frames for full-attention blocks,
        windows for windowed blocks), as the attention module receives them.

    Returns
    -------
    torch.Tensor, shape (S,), float32
        For each token, the mean over heads and over the queries of its own sequence of
        the attention it receives.

    Notes
    -----
    Sequences of equal length are processed together as one batch (a Qwen ViT has at
    most a handful of distinct window sizes), so there is no loop over windows.
    """
    bounds = cu_seqlens.to(torch.long)
    starts, lengths = bounds[:-1], bounds[1:] - bounds[:-1]
    out = torch.empty(q.shape[0], dtype=torch.float32, device=q.device)
    for length in torch.unique(lengths).tolist():
        if length == 0:
            continue
        sel = starts[lengths == length]
        idx = sel[:, None] + torch.arange(length, device=q.device)  # (C_l, length)
        qs = q[idx].permute(0, 2, 1, 3)  # (C_l, H, length, hd)
        ks = k[idx].permute(0, 2, 1, 3)
        out[idx.reshape(-1)] = received_attention(qs, ks, scale).reshape(-1)
    return out


class ScoreHooks:
    """Forward hooks that record the received-attention scores of chosen layers.

    Parameters
    ----------
    modules : Mapping[str, torch.nn.Module]
        Score name (``"global"``, ``"local"``) -> the attention module to watch.
    compute : Callable[[torch.nn.Module, tuple, dict], torch.Tensor]
        Recomputes the received attention from the module's inputs.

    Notes
    -----
    A context manager: hooks are registered on entry and removed on exit, also when the
    encoder raises (``try``/``finally`` semantics of ``__exit__``). Only the received
    vector is kept, never the attention matrix of the layer, so memory stays at one
    chunk of probabilities (see :func:`received_attention`) instead of the L x L
    matrices of every layer that ``output_attentions=True`` (eager) would return.

    Projections are not recomputed: when ``compute`` has a ``projections`` attribute
    (names of submodules of the watched module, e.g. ``("q_proj", "k_proj")``), a forward
    hook on each of those submodules keeps a reference to the output the layer itself
    computed, and ``compute`` finds them as ``module._anchor_ot_projections`` (a dict,
    name -> output) during the call; without them it recomputes. The references live
    only while the layer runs, as the layer's own q and k do.
    """

    def __init__(self, modules: Mapping[str, torch.nn.Module],
                 compute: Callable[[torch.nn.Module, tuple, dict], torch.Tensor]):
        self.modules = dict(modules)
        self.compute = compute
        self.scores: dict[str, list[torch.Tensor]] = {name: [] for name in self.modules}
        self.seconds = 0.0  # wall time spent inside the hooks
        self._handles: list = []
        self._captured: dict[int, dict[str, torch.Tensor]] = {}  # id(watched module) -> projection outputs

    def __enter__(self) -> "ScoreHooks":
        try:
            for name, module in self.modules.items():
                for child in getattr(self.compute, "projections", ()):
                    sub = getattr(module, child, None)
                    if isinstance(sub, torch.nn.Module):
                        self._handles.append(sub.register_forward_hook(self._make_capture(module, child)))
                self._handles.append(module.register_forward_hook(self._make_hook(name), with_kwargs=True))
        except BaseException:
            self._remove()
            raise
        return self

    def _make_capture(self, owner: torch.nn.Module, child: str):
        def capture(module, args, output):
            if isinstance(output, torch.Tensor):
                self._captured.setdefault(id(owner), {})[child] = output.detach()
        return capture

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()
        self._captured.clear()

    def _make_hook(self, name: str):
        def hook(module, args, kwargs, output):
            start = time.perf_counter()
            captured = self._captured.pop(id(module), None)
            if captured:
                module._anchor_ot_projections = captured
            try:
                with torch.no_grad():
                    self.scores[name].append(self.compute(module, args, kwargs))
            finally:
                if captured:
                    del module._anchor_ot_projections
            self.seconds += time.perf_counter() - start
        return hook

    def result(self, name: str) -> torch.Tensor:
        """The scores recorded for ``name`` (concatenated over calls along dim 0)."""
        parts = self.scores[name]
        if not parts:
            raise RuntimeError(f"the {name} score hook never ran: the chosen layer was not called by the encoder")
        return torch.cat(parts, dim=0)


# -- reduction bookkeeping ---------------------------------------------------------------


def compact_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor,
                 pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop tokens from a padded batch and left-pad the rows again.

    Parameters
    ----------
    input_ids : torch.LongTensor, shape (B, L)
    attention_mask : torch.LongTensor, shape (B, L)
        1 for real tokens, 0 for padding.
    keep : torch.BoolTensor, shape (B, L)
        Tokens to keep (padding is dropped whatever ``keep`` says).
    pad_token_id : int
        Id written into the new padding.

    Returns
    -------
    new_ids : torch.LongTensor, shape (B, L')
        Kept tokens of each row, in order, right-aligned (left padding); ``L'`` is the
        longest kept row.
    new_mask : torch.LongTensor, shape (B, L')
    source : torch.LongTensor, shape (B, L')
        Column of the original row each new column came from (0 at padding), to gather
        per-token tensors such as position ids.
    """
    real = keep & attention_mask.bool()
    counts = real.sum(dim=1)
    B, L = input_ids.shape
    width = int(counts.max()) if B else 0
    # destination column of each kept token: right-aligned by its rank among kept tokens
    rank = real.long().cumsum(dim=1) - 1
    dest = rank + (width - counts)[:, None]
    rows = torch.arange(B, device=input_ids.device)[:, None].expand(B, L)
    new_ids = torch.full((B, width), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
    new_mask = torch.zeros((B, width), dtype=attention_mask.dtype, device=input_ids.device)
    source = torch.zeros((B, width), dtype=torch.long, device=input_ids.device)
    cols = torch.arange(L, device=input_ids.device)[None].expand(B, L)
    new_ids[rows[real], dest[real]] = input_ids[real]
    new_mask[rows[real], dest[real]] = 1
    source[rows[real], dest[real]] = cols[real]
    return new_ids, new_mask, source


def keep_mask(input_ids: torch.Tensor, token_id: int, per_video_keep: list[torch.Tensor]) -> torch.Tensor:
    """Mark which tokens of the full prompt survive.

    Parameters
    ----------
    input_ids : torch.LongTensor, shape (B, L)
    token_id : int
        The video placeholder id.
    per_video_keep : list of torch.BoolTensor
        For each video, in the order the model scatters features (row-major over the
        batch, left to right), a flag per placeholder of that video.

    Returns
    -------
    torch.BoolTensor, shape (B, L)
        True for text/image tokens and the kept video placeholders.

    Raises
    ------
    ValueError
        If the prompt does not hold exactly as many placeholders as the videos need.
    """
    is_video = input_ids == token_id
    flags = torch.cat(per_video_keep) if per_video_keep else torch.zeros(0, dtype=torch.bool)
    n = int(is_video.sum())
    if n != flags.numel():
        raise ValueError(
            f"the prompt holds {n} video placeholder tokens but the video inputs need {flags.numel()}; "
            "pass the processor's output unchanged (input_ids and pixel_values_videos of the same call)"
        )
    keep = torch.ones_like(is_video)
    keep[is_video] = flags.to(keep.device)
    return keep


def placeholder_flags(encoded: EncodedVideo, reduced: ReducedVideo) -> torch.Tensor:
    """Per-placeholder keep flags of one video: kept grid tokens, then the extra tokens."""
    extra = 0 if encoded.extra is None else encoded.extra.shape[0]
    return keep_flags(reduced, extra)


# -- the public entry point --------------------------------------------------------------


def _check_inputs(inputs) -> dict:
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be the processor's output (a dict-like BatchFeature), got {type(inputs).__name__}")
    inputs = dict(inputs)
    ids = inputs.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ValueError("inputs must hold input_ids of shape (batch, length); pass the processor's output "
                         "(return_tensors='pt')")
    mask = inputs.get("attention_mask")
    if mask is not None and (not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(ids.shape)):
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(ids.shape)}, "
                         f"got {getattr(mask, 'shape', mask)}")
    return inputs


@dataclass
class Prepared:
    """What :func:`prepare` hands to ``model.generate`` plus the bookkeeping behind it.

    Attributes
    ----------
    kwargs : dict
        Keyword arguments for ``model.generate`` / ``model.forward``: reduced
        ``input_ids``, ``attention_mask``, ``mm_encoder_outputs`` and, for Qwen,
        ``position_ids`` (4, B, L'), plus every untouched input (images).
    reduced : list[ReducedVideo]
        The reducer's output per video, in batch order.
    encoded : list[EncodedVideo]
        The unreduced videos (tokens and scores on the LLM grid).
    keep : torch.BoolTensor, shape (B, L)
        Which tokens of the original prompt survive.
    source : torch.LongTensor, shape (B, L')
        Original column of each column of the reduced prompt.
    full_position_ids : torch.Tensor or None
        Qwen: the full prompt's ``get_rope_index`` positions, shape (3, B, L).
    """

    kwargs: dict
    reduced: list
    encoded: list
    keep: torch.Tensor
    source: torch.Tensor
    full_position_ids: torch.Tensor | None = None


# family name -> adapter module (each adapter module adds itself on import, see adapters/__init__)
_ADAPTERS: dict[str, object] = {}


def register_adapter(family_name: str, module) -> None:
    """Make ``module`` the transformers adapter of the family ``family_name``."""
    families.get(family_name)  # must be a known family
    _ADAPTERS[family_name] = module


def _adapter_for(model):
    family = families.for_class(type(model))  # TypeError naming the supported classes
    if family.name not in _ADAPTERS:
        raise TypeError(f"{type(model).__name__} ({family.name}) has no transformers adapter")
    return _ADAPTERS[family.name]


def prepare(model, inputs, reducer: Reducer, *, scores: str = "attention",
            local_layer: int | None = None, global_layer: int | None = None,
            encoded: list[EncodedVideo] | None = None) -> Prepared | None:
    """Encode, score and reduce the videos of ``inputs``; build the reduced model inputs.

    Parameters are those of :func:`generate`, plus ``encoded``: the ``encoded`` list of
    an earlier :class:`Prepared` for the same ``inputs``, to try several reducers
    without running the vision encoder again. Returns ``None`` when ``inputs`` hold no
    video (nothing to reduce).
    """
    adapter = _adapter_for(model)
    if not isinstance(reducer, Reducer):
        raise TypeError(f"reducer must be an anchor_ot.methods.Reducer (e.g. methods.get('aot', retention=0.1)), "
                        f"got {type(reducer).__name__}")
    check_choice("scores", scores, SCORE_CHOICES)
    inputs = _check_inputs(inputs)
    if inputs.get("pixel_values_videos") is None:
        return None
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(ids)
    if encoded is None:
        with torch.no_grad():
            encoded = adapter.encode(model, inputs, scores=scores, local_layer=local_layer,
                                     global_layer=global_layer)
    reduced = [reducer(e.video) for e in encoded]
    flags = [placeholder_flags(e, r) for e, r in zip(encoded, reduced)]
    keep = keep_mask(ids, adapter.video_token_id(model), flags)
    pad = adapter.pad_token_id(model)
    new_ids, new_mask, source = compact_rows(ids, mask, keep, pad)
    kwargs = {k: v for k, v in inputs.items() if k not in adapter.CONSUMED_KEYS}
    kwargs.update(input_ids=new_ids, attention_mask=new_mask,
                  mm_encoder_outputs={"video": adapter.encoder_output(model, encoded, reduced)})
    full_pos = adapter.position_ids(model, inputs, mask, keep, new_mask, source, kwargs)
    return Prepared(kwargs=kwargs, reduced=reduced, encoded=encoded, keep=keep, source=source,
                    full_position_ids=full_pos)


def generate(model, inputs, reducer: Reducer, *, scores: str = "attention", local_layer: int | None = None,
             global_layer: int | None = None, **generate_kwargs) -> torch.Tensor:
    """Generate with a Hugging Face video LLM from a reduced set of video tokens.

    Parameters
    ----------
    model : LlavaOnevisionForConditionalGeneration, Qwen2_5_VLForConditionalGeneration or Qwen3VLForConditionalGeneration
        The model, as loaded with ``from_pretrained``.
    inputs : Mapping[str, torch.Tensor]
        What the model's own processor returns for the prompt (``input_ids``,
        ``attention_mask``, ``pixel_values_videos``, ``video_grid_thw``, ...), already
        on the model's device. Images and text-only prompts pass through unchanged.
    reducer : anchor_ot.methods.Reducer
        Any registered method, e.g. ``anchor_ot.methods.get("aot", retention=0.1)``; it
        is applied to each video separately on the grid the LLM sees (LLaVA-OneVision:
        the pooled 14 x 14 grid per frame; Qwen: (h/2, w/2) per temporal patch).
    scores : {"attention", "none"}, default "attention"
        ``"attention"``: ``global_scores``/``local_scores`` are the attention each token
        receives in one vision-encoder layer each (see :func:`received_attention`),
        recorded by forward hooks that exist only during the call. ``"none"``: no
        scores (for methods that do not use them; cheaper).
    local_layer, global_layer : int, optional
        Encoder layers (0-based, negative from the end) of the local and global scores.
        Defaults: LLaVA-OneVision 5 and -2 (the layer its features come from), like the
        AOT authors' code; Qwen2.5-VL 5 (windowed) and the last full-attention block;
        Qwen3-VL 5 and -2. Clipped to the encoder depth for the defaults only.
    **generate_kwargs
        Passed to ``model.generate`` (``max_new_tokens``, ``do_sample``, ...).

    Returns
    -------
    torch.LongTensor, shape (B * num_return_sequences, L + T)
        The *original* prompt ids (the full ``inputs["input_ids"]``) followed by the T new
        tokens, so that callers that trim by the prompt length keep working.

    Raises
    ------
    TypeError
        If the model class is not supported (the message names the supported classes),
        or ``reducer`` is not a :class:`~anchor_ot.methods.Reducer`.
    ValueError
        If ``inputs`` are inconsistent (placeholder count vs. video inputs, missing
        ``video_grid_thw``, mask shape), a layer index is out of range, or the reducer
        cannot meet its budget.
    """
    prepared = prepare(model, inputs, reducer, scores=scores, local_layer=local_layer, global_layer=global_layer)
    if prepared is None:
        return model.generate(**dict(inputs), **generate_kwargs)
    original = inputs["input_ids"]
    out = model.generate(**prepared.kwargs, **generate_kwargs)
    new_tokens = out[:, prepared.kwargs["input_ids"].shape[1]:]
    repeat = out.shape[0] // original.shape[0]
    prompt = original.repeat_interleave(repeat, dim=0) if repeat > 1 else original
    return torch.cat([prompt.to(new_tokens.device), new_tokens], dim=1)
