"""Short alias of :mod:`anchor_ot.integrations.vllm`: ``anchor_ot.vllm.engine_args("aot", retention=0.1)``.

Importing it does not import vLLM.
"""

from anchor_ot.integrations.vllm import ARCHITECTURES, Settings, engine_args, hf_overrides, register, serve_flags

__all__ = ["ARCHITECTURES", "Settings", "engine_args", "hf_overrides", "register", "serve_flags"]
