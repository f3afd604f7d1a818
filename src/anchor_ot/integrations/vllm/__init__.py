"""anchor-ot inside vLLM: serve reduced video LLMs without forking vLLM.

A ``vllm.general_plugins`` entry point (``anchor_ot = anchor_ot.integrations.vllm:register``)
registers one model subclass per family under a new architecture name. An engine uses it
when its ``hf_overrides`` name that architecture and carry the settings:

>>> from anchor_ot.integrations import vllm as aot_vllm
>>> args = aot_vllm.engine_args("aot", retention=0.1)          # doctest: +SKIP
>>> llm = vllm.LLM("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", **args)  # doctest: +SKIP

From the shell, ``anchor-ot vllm-args MODEL --method aot --retention 0.1`` prints the
``vllm serve`` flags. See docs/vllm.md for what is overridden and the tested versions.
Importing this module does not import vLLM.
"""

from __future__ import annotations

import json

from anchor_ot.integrations.vllm.settings import CONFIG_KEY, Settings

__all__ = ["ARCHITECTURES", "register", "engine_args", "hf_overrides", "serve_flags", "Settings"]

# base architecture -> (our architecture, "module:Class" for lazy import by vLLM)
ARCHITECTURES = {
    "LlavaOnevisionForConditionalGeneration": (
        "AnchorOTLlavaOnevisionForConditionalGeneration",
        "anchor_ot.integrations.vllm.llava_onevision:AnchorOTLlavaOnevisionForConditionalGeneration"),
    "Qwen3VLForConditionalGeneration": (
        "AnchorOTQwen3VLForConditionalGeneration",
        "anchor_ot.integrations.vllm.qwen_vl:AnchorOTQwen3VLForConditionalGeneration"),
    "Qwen2_5_VLForConditionalGeneration": (
        "AnchorOTQwen2_5_VLForConditionalGeneration",
        "anchor_ot.integrations.vllm.qwen_vl:AnchorOTQwen2_5_VLForConditionalGeneration"),
}
# families whose vLLM class positions kept tokens through vLLM's multimodal-pruning plumbing
_USES_PRUNING_PLUMBING = {"Qwen3VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"}

_registered = False


def register() -> None:
    """Register the anchor-ot architectures with vLLM's ``ModelRegistry`` (idempotent).

    Called by vLLM in every process through the ``vllm.general_plugins`` entry point;
    the model modules are imported lazily by vLLM when an engine selects them.
    """
    global _registered
    if _registered:
        return
    from vllm import ModelRegistry

    from anchor_ot.integrations.vllm._compat import fix_cpu_runner_pruning_flag

    for ours, target in ARCHITECTURES.values():
        if ours not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(ours, target)
    fix_cpu_runner_pruning_flag()
    _registered = True


def architecture_for(base: str) -> str:
    """Our architecture name for a model's ``config.architectures[0]`` (``TypeError`` if unsupported)."""
    if base in (v[0] for v in ARCHITECTURES.values()):
        return base
    if base not in ARCHITECTURES:
        raise TypeError(f"{base} is not supported by anchor-ot's vLLM plugin; supported: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[base][0]


def _pruning_rate(retention: float) -> float:
    # any rate in (0, 1) switches vLLM's pruning plumbing on (per-request M-RoPE recomputation); the
    # count and the kept tokens are anchor-ot's. 1 - retention keeps vLLM's logs meaningful.
    return min(max(1.0 - retention, 1e-6), 1.0 - 1e-6)


def hf_overrides(architecture: str, method: str, retention: float, **params) -> dict:
    """The ``hf_overrides`` dict for a model whose ``config.architectures[0]`` is ``architecture``."""
    settings = _settings(method, retention, params)
    return {"architectures": [architecture_for(architecture)], CONFIG_KEY: settings.to_dict()}


def _settings(method, retention, params) -> Settings:
    keys = ("scores", "local_layer", "global_layer")
    extra = {k: params.pop(k) for k in keys if k in params}
    return Settings(method=method, retention=retention, params=params, **extra)


def _model_architecture(model: str) -> str:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model)
    archs = getattr(cfg, "architectures", None) or []
    if not archs:
        raise TypeError(f"{model}: its config names no architecture")
    return archs[0]


def engine_args(method: str, retention: float, *, model: str | None = None, **params) -> dict:
    """Keyword arguments for ``vllm.LLM(...)`` / ``AsyncEngineArgs`` that turn reduction on.

    Parameters
    ----------
    method : str
        A registered method (``anchor_ot.methods.available()``), e.g. ``"aot"``.
    retention : float
        Fraction of video tokens kept, in (0, 1].
    model : str, optional
        The model path or hub id. With it, ``hf_overrides`` is a dict naming our
        architecture for that model's family; without it, a callable that picks the
        architecture from the loaded config (Python API only).
    **params
        Method parameters, plus ``scores`` (``"attention"``/``"none"``), ``local_layer``,
        ``global_layer``.

    Returns
    -------
    dict
        ``hf_overrides`` and ``video_pruning_rate`` (which only switches on vLLM's
        M-RoPE recomputation for pruned Qwen videos; the count is anchor-ot's).

    Raises
    ------
    ValueError, TypeError
        Unknown method or parameter, retention outside (0, 1], unsupported architecture.
    """
    settings = _settings(method, retention, dict(params))
    if model is not None:
        overrides = {"architectures": [architecture_for(_model_architecture(model))], CONFIG_KEY: settings.to_dict()}
    else:
        overrides = _Overrides(settings.to_dict())
    return {"hf_overrides": overrides, "video_pruning_rate": _pruning_rate(settings.retention)}


class _Overrides:
    """Picklable ``hf_overrides`` callable: our architecture for the config's family + the settings."""

    def __init__(self, settings: dict):
        self.settings = settings

    def __call__(self, hf_config):
        archs = list(getattr(hf_config, "architectures", None) or [])
        if not archs:
            raise TypeError("the model config names no architecture; pass model= to engine_args")
        hf_config.architectures = [architecture_for(archs[0])]
        setattr(hf_config, CONFIG_KEY, dict(self.settings))
        return hf_config

    def __repr__(self) -> str:
        return f"anchor_ot_overrides({self.settings})"


def serve_flags(model: str, method: str, retention: float, **params) -> list[str]:
    """``vllm serve MODEL`` flags for the same settings (for the shell)."""
    args = engine_args(method, retention, model=model, **params)
    return ["--hf-overrides", json.dumps(args["hf_overrides"], separators=(",", ":")),
            "--video-pruning-rate", repr(args["video_pruning_rate"])]
