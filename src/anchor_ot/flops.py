"""FLOPs of the language model of a video LLM, before and after token reduction.

Two counts are offered, because the field does not agree on one (see ``docs/flops.md``):

``formula="paper"``
    AOT (arXiv 2603.01400, Sec. 4, eq. 17-18), which follows FastV / PDrop / DyCoke.
    Per layer, ``n`` tokens, hidden size ``d``, FFN width ``m``::

        prefill:  4 n d^2 + 2 n^2 d + 2 n d m                         (eq. 17)
        decode:   R * ((4 d^2 + 2 d m) + 2 (d n + d (R + 1) / 2))      (eq. 18)

    summed over the ``T`` layers. This counts one FLOP per multiply-add, full
    multi-head attention (Q, K, V, O all ``d x d``), the full ``n x n`` attention
    square, two FFN matrices, and no lm_head. The paper counts visual tokens only.

``formula="exact"``
    What the Qwen2 / Qwen2.5 / Qwen3 decoders actually multiply, with a
    multiply-add counted as 2 FLOPs:

    - Q and O projections: ``2 n d (H h)`` each (``H`` heads of width ``h``);
    - K and V projections: ``2 n d (H_kv h)`` each (grouped-query attention);
    - SwiGLU FFN, three matrices (gate, up, down): ``3 * 2 n d m``;
    - attention products ``Q K^T`` and ``A V``: ``2 H h`` per (query, key) pair each.
      With ``causal=True`` (default) only the pairs a causal kernel needs are counted,
      ``n (n + 1) / 2``; ``causal=False`` counts the full ``n^2`` square;
    - lm_head ``2 d V``: once per prefill (the last position only; that is all
      ``generate`` needs) and once per generated token;
    - text tokens are part of ``n`` when given.

    Not counted (O(n d) or O(H n^2) elementwise work, under 1% here): norms, biases, rotary embeddings,
    softmax, SiLU and the residual adds; the embedding lookup (no FLOPs).
    For LLaVA-OneVision-7B at 32 frames the exact prefill is about 2.2x the paper's.

Retention maps to a number of visual tokens with :func:`visual_tokens`. Our reducers
keep ``round(r * F * N)`` tokens (``budget="total"``); the paper's Table 1 is matched
best by ``ceil(r * N)`` tokens per frame (``budget="per-frame"``: 49 / 40 / 30 / 20 of
196 at 25 / 20 / 15 / 10 %). Both reproduce the table within 2%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from anchor_ot._validation import check_choice, check_int, check_retention

__all__ = [
    "ModelSpec",
    "MODELS",
    "get_model",
    "available_models",
    "visual_tokens",
    "prefill_flops",
    "decode_flops",
    "flops_report",
]

FORMULAS = ("paper", "exact")
BUDGETS = ("total", "per-frame")


@dataclass(frozen=True)
class ModelSpec:
    """The language model of a video LLM, and the visual tokens it reads per frame.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"llava-onevision-7b"``.
    layers : int
        Decoder layers ``T`` (``num_hidden_layers``).
    hidden : int
        Hidden size ``d`` (``hidden_size``).
    ffn : int
        FFN (SwiGLU intermediate) width ``m`` (``intermediate_size``).
    heads : int
        Query heads ``H`` (``num_attention_heads``).
    kv_heads : int
        Key/value heads ``H_kv`` (``num_key_value_heads``).
    head_dim : int
        Width of one head ``h`` (``head_dim``, or ``hidden / heads`` where absent).
    vocab : int
        Vocabulary size ``V`` (``vocab_size``); used for the lm_head in the exact count.
    group_tokens : int
        Visual tokens the LLM reads per temporal group of frames (after pooling or
        patch merging), newline/separator tokens excluded.
    frames_per_group : int
        Frames per temporal group: 1 for LLaVA, 2 for Qwen (``temporal_patch_size``).
    pixels_per_token : int or None
        Side in pixels of the square one visual token covers (Qwen: patch x merge,
        28 for Qwen2.5-VL, 32 for Qwen3-VL); ``None`` where the frame size is fixed.
    source : str
        Where the numbers come from.
    """

    name: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    group_tokens: int
    frames_per_group: int = 1
    pixels_per_token: int | None = None
    source: str = ""

    @property
    def tokens_per_frame(self) -> float:
        """Visual tokens per sampled frame (may be fractional for Qwen's 2-frame groups)."""
        return self.group_tokens / self.frames_per_group

    def groups(self, frames: int) -> int:
        """Temporal groups for ``frames`` sampled frames (Qwen pads an odd count)."""
        return -(-frames // self.frames_per_group)

    def full_tokens(self, frames: int) -> int:
        """Visual tokens the LLM reads for ``frames`` frames without reduction."""
        return self.groups(frames) * self.group_tokens

    def with_frame_size(self, height: int, width: int) -> "ModelSpec":
        """Spec for frames resized to about ``height x width`` pixels (Qwen models only).

        Each side is rounded to the nearest multiple of ``pixels_per_token`` (at least
        one), as Qwen's ``smart_resize`` does before its pixel-count clamp; the clamp
        (``min_pixels``/``max_pixels`` of the processor) is not applied.

        Raises
        ------
        ValueError
            If the model reads a fixed number of tokens per frame (LLaVA), or a size is < 1.
        """
        if self.pixels_per_token is None:
            raise ValueError(
                f"{self.name} reads a fixed {self.group_tokens} tokens per frame; "
                "frame size only applies to Qwen models (use tokens_per_frame to override)"
            )
        h = check_int("height", height, low=1)
        w = check_int("width", width, low=1)
        p = self.pixels_per_token
        rows, cols = max(1, round(h / p)), max(1, round(w / p))
        return replace(self, group_tokens=rows * cols)

    def with_tokens_per_frame(self, tokens: int) -> "ModelSpec":
        """Spec reading ``tokens`` visual tokens per temporal group instead of the default."""
        return replace(self, group_tokens=check_int("tokens_per_frame", tokens, low=1))


_QWEN2_7B = dict(layers=28, hidden=3584, ffn=18944, heads=28, kv_heads=4, head_dim=128, vocab=152064)
_QWEN2_72B = dict(layers=80, hidden=8192, ffn=29568, heads=64, kv_heads=8, head_dim=128, vocab=152064)
_OV = ("LLaVA-OneVision: SigLIP 27x27 bilinearly pooled to 14x14 = 196 tokens per frame "
       "(+1 newline per video, not counted); ")
_LV = ("LLaVA-Video: 2x2 average pooling to 13x13 = 169 tokens per frame as in the AOT paper "
       "(the original inference adds one newline per row, 13 per frame, not counted); ")
_Q25 = ("Qwen2.5-VL: patch 14, 2x2 merge, 2 frames per group; default 448x448 frames -> 16x16 = 256 "
        "tokens per 2 frames (128 per frame); ")
_Q3 = ("Qwen3-VL: patch 16, 2x2 merge, 2 frames per group; default 448x448 frames -> 14x14 = 196 "
       "tokens per 2 frames (98 per frame); ")

MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("llava-onevision-0.5b", layers=24, hidden=896, ffn=4864, heads=14, kv_heads=2,
                  head_dim=64, vocab=151936, group_tokens=196,
                  source=_OV + "LM Qwen2-0.5B config.json (24 layers, 896, 4864, 14/2 heads)"),
        ModelSpec("llava-onevision-7b", **_QWEN2_7B, group_tokens=196,
                  source=_OV + "LM Qwen2-7B config.json (28 layers, 3584, 18944, 28/4 heads)"),
        ModelSpec("llava-onevision-72b", **_QWEN2_72B, group_tokens=196,
                  source=_OV + "LM Qwen2-72B config.json (80 layers, 8192, 29568, 64/8 heads)"),
        ModelSpec("llava-video-7b", **_QWEN2_7B, group_tokens=169,
                  source=_LV + "LM Qwen2-7B config.json"),
        ModelSpec("llava-video-72b", **_QWEN2_72B, group_tokens=169,
                  source=_LV + "LM Qwen2-72B config.json"),
        ModelSpec("qwen2.5-vl-3b", layers=36, hidden=2048, ffn=11008, heads=16, kv_heads=2,
                  head_dim=128, vocab=151936, group_tokens=256, frames_per_group=2, pixels_per_token=28,
                  source=_Q25 + "Qwen/Qwen2.5-VL-3B-Instruct config.json (36 layers, 2048, 11008, 16/2 heads)"),
        ModelSpec("qwen2.5-vl-7b", **_QWEN2_7B, group_tokens=256, frames_per_group=2, pixels_per_token=28,
                  source=_Q25 + "Qwen/Qwen2.5-VL-7B-Instruct config.json (28 layers, 3584, 18944, 28/4 heads)"),
        ModelSpec("qwen2.5-vl-72b", **_QWEN2_72B, group_tokens=256, frames_per_group=2, pixels_per_token=28,
                  source=_Q25 + "Qwen/Qwen2.5-VL-72B-Instruct config.json (80 layers, 8192, 29568, 64/8 heads)"),
        ModelSpec("qwen3-vl-2b", layers=28, hidden=2048, ffn=6144, heads=16, kv_heads=8, head_dim=128,
                  vocab=151936, group_tokens=196, frames_per_group=2, pixels_per_token=32,
                  source=_Q3 + "Qwen/Qwen3-VL-2B-Instruct text_config (28 layers, 2048, 6144, 16/8 heads, "
                  "head_dim 128)"),
        ModelSpec("qwen3-vl-8b", layers=36, hidden=4096, ffn=12288, heads=32, kv_heads=8, head_dim=128,
                  vocab=151936, group_tokens=196, frames_per_group=2, pixels_per_token=32,
                  source=_Q3 + "Qwen/Qwen3-VL-8B-Instruct text_config (36 layers, 4096, 12288, 32/8 heads, "
                  "head_dim 128)"),
    )
}


def available_models() -> list[str]:
    """Names of every model spec, in registry order."""
    return list(MODELS)


def get_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``.

    Raises
    ------
    ValueError
        If no model has that name; the message lists the known ones.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def visual_tokens(spec: ModelSpec, frames: int, retention: float = 1.0, budget: str = "total") -> int:
    """Visual tokens the LLM reads for ``frames`` frames at ``retention``.

    Parameters
    ----------
    spec : ModelSpec
    frames : int
        Sampled frames F >= 1.
    retention : float, default 1.0
        Fraction of visual tokens kept, in (0, 1].
    budget : {"total", "per-frame"}
        ``"total"``: ``round(r * n_full)`` clamped to ``[1, n_full]``, the count our
        reducers keep (:func:`anchor_ot.methods.base.default_budget`).
        ``"per-frame"``: ``ceil(r * n_group)`` per temporal group, the count that
        matches the AOT paper's Table 1 best (see module docstring).

    Returns
    -------
    int
    """
    frames = check_int("frames", frames, low=1)
    r = check_retention(retention)
    budget = check_choice("budget", budget, BUDGETS)
    full = spec.full_tokens(frames)
    if budget == "total":
        return int(min(full, max(1, round(r * full))))
    per_group = min(spec.group_tokens, max(1, math.ceil(r * spec.group_tokens - 1e-9)))
    return spec.groups(frames) * per_group


def _check_counts(visual: int, text: int) -> int:
    visual = check_int("visual_tokens", visual, low=0)
    text = check_int("text_tokens", text, low=0)
    if visual + text < 1:
        raise ValueError("visual_tokens + text_tokens must be >= 1")
    return visual + text


def prefill_flops(spec: ModelSpec, visual_tokens: int, text_tokens: int = 0, formula: str = "exact",
                  causal: bool = True) -> float:
    """FLOPs of the LLM prefill over ``visual_tokens + text_tokens`` tokens.

    Parameters
    ----------
    spec : ModelSpec
    visual_tokens : int
        Visual tokens after reduction (see :func:`visual_tokens`).
    text_tokens : int, default 0
        Prompt tokens; part of ``n`` in both formulas (the paper's table uses 0).
    formula : {"exact", "paper"}, default "exact"
        See the module docstring. ``"paper"`` is AOT eq. 17.
    causal : bool, default True
        Exact count only: count the ``n (n + 1) / 2`` (query, key) pairs of causal
        attention (True) or the full ``n^2`` square (False). The paper always counts
        the full square.

    Returns
    -------
    float
        FLOPs (not TFLOPs).

    Raises
    ------
    TypeError, ValueError
        On a bad count or an unknown formula.
    """
    n = _check_counts(visual_tokens, text_tokens)
    formula = check_choice("formula", formula, FORMULAS)
    T, d, m = spec.layers, spec.hidden, spec.ffn
    if formula == "paper":
        return float(T * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m))
    q_width, kv_width = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    linear = 2 * n * d * (2 * q_width + 2 * kv_width) + 3 * 2 * n * d * m
    pairs = n * (n + 1) // 2 if causal else n * n
    attention = 2 * (2 * q_width * pairs)  # Q K^T and A V
    lm_head = 2 * d * spec.vocab
    return float(T * (linear + attention) + lm_head)


def decode_flops(spec: ModelSpec, visual_tokens: int, generated_tokens: int, text_tokens: int = 0,
                 formula: str = "exact") -> float:
    """FLOPs of generating ``generated_tokens`` (R) tokens after the prefill.

    Parameters
    ----------
    spec : ModelSpec
    visual_tokens, text_tokens : int
        The prefill length ``n = visual + text`` held in the KV cache.
    generated_tokens : int
        R >= 0.
    formula : {"exact", "paper"}, default "exact"
        ``"paper"``: AOT eq. 18, ``T R ((4 d^2 + 2 d m) + 2 (d n + d (R + 1) / 2))``.
        ``"exact"``: R one-token forward passes; pass ``j = 1..R`` attends to
        ``n + j`` positions (its own included), with the projections, SwiGLU and
        lm_head of one token each, 2 FLOPs per multiply-add.

    Returns
    -------
    float
        FLOPs.
    """
    n = _check_counts(visual_tokens, text_tokens)
    R = check_int("generated_tokens", generated_tokens, low=0)
    formula = check_choice("formula", formula, FORMULAS)
    T, d, m = spec.layers, spec.hidden, spec.ffn
    if formula == "paper":
        return float(T * R * ((4 * d * d + 2 * d * m) + 2 * (d * n + d * (R + 1) / 2)))
    q_width, kv_width = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    linear = 2 * d * (2 * q_width + 2 * kv_width) + 3 * 2 * d * m
    context = R * n + R * (R + 1) // 2  # sum over j of (n + j)
    attention = 2 * (2 * q_width * context)
    return float(T * (R * linear + attention) + R * 2 * d * spec.vocab)


def flops_report(model: str | ModelSpec, frames: int = 32, retention: float = 1.0, formula: str = "exact",
                 text_tokens: int = 0, generated_tokens: int = 100, budget: str = "total",
                 tokens_per_frame: int | None = None) -> dict:
    """Prefill and decode TFLOPs at ``retention`` next to the full-token reference.

    Parameters
    ----------
    model : str or ModelSpec
        A name from :func:`available_models` or a spec.
    frames : int, default 32
    retention : float, default 1.0
    formula : {"paper", "exact"}, default "exact"
    text_tokens : int, default 0
    generated_tokens : int, default 100
        R (the paper uses 100).
    budget : {"total", "per-frame"}, default "total"
        See :func:`visual_tokens`.
    tokens_per_frame : int, optional
        Override the visual tokens per temporal group (e.g. for another Qwen resolution).

    Returns
    -------
    dict
        ``model``, ``formula``, ``frames``, ``retention``, ``budget``, ``visual_tokens``,
        ``full_visual_tokens``, ``text_tokens``, ``generated_tokens``, ``prefill_tflops``,
        ``decode_tflops``, ``total_tflops``, ``full_prefill_tflops``, ``full_total_tflops``,
        ``prefill_ratio`` (reduced / full prefill) and ``total_ratio``.
    """
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    if tokens_per_frame is not None:
        spec = spec.with_tokens_per_frame(tokens_per_frame)
    n = visual_tokens(spec, frames, retention, budget)
    full = spec.full_tokens(frames)
    pre = prefill_flops(spec, n, text_tokens, formula)
    dec = decode_flops(spec, n, generated_tokens, text_tokens, formula)
    full_pre = prefill_flops(spec, full, text_tokens, formula)
    full_dec = decode_flops(spec, full, generated_tokens, text_tokens, formula)
    return {
        "model": spec.name,
        "formula": formula,
        "frames": frames,
        "retention": float(retention),
        "budget": budget,
        "visual_tokens": n,
        "full_visual_tokens": full,
        "text_tokens": text_tokens,
        "generated_tokens": generated_tokens,
        "prefill_tflops": pre / 1e12,
        "decode_tflops": dec / 1e12,
        "total_tflops": (pre + dec) / 1e12,
        "full_prefill_tflops": full_pre / 1e12,
        "full_total_tflops": (full_pre + full_dec) / 1e12,
        "prefill_ratio": pre / full_pre,
        "total_ratio": (pre + dec) / (full_pre + full_dec),
    }
