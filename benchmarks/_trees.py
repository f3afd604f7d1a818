"""Import ``anchor_ot`` modules from a given ``src`` tree, for A/B benchmarks across checkouts.

Used by ``ab_reduce.py`` and ``ab_sinkhorn_aot.py``: each call drops every loaded ``anchor_ot``
module and imports the named ones afresh from ``src``, so two trees' modules can live side by side
in one process (the objects returned keep their own module globals).
"""

from __future__ import annotations

import importlib
import os
import sys


def import_tree(src: str, *names: str) -> tuple:
    """The modules ``names`` (e.g. ``"anchor_ot.ot"``) imported from the folder ``src``.

    Raises ``SystemExit`` when ``anchor_ot`` resolves to another location (``src`` lacks it).
    """
    src = os.path.abspath(src)
    for k in [k for k in sys.modules if k == "anchor_ot" or k.startswith("anchor_ot.")]:
        del sys.modules[k]
    sys.path.insert(0, src)
    try:
        mods = tuple(importlib.import_module(n) for n in names)
    finally:
        sys.path.remove(src)
    for m in mods:
        if not os.path.abspath(m.__file__).startswith(src):
            raise SystemExit(f"anchor_ot was not imported from {src} (got {m.__file__})")
    return mods
