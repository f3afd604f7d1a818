"""Integrations of anchor-ot with evaluation and serving engines.

Each engine has its own subpackage, imported only when that engine loads it (none of them is a
dependency of anchor-ot itself):

- :mod:`anchor_ot.integrations.lmms_eval`: model ids for the lmms-eval harness
  (entry-point group ``lmms_eval.models``).
"""
