"""anchor-ot: training-free visual token reduction for video LLMs.

>>> import torch, anchor_ot
>>> video = anchor_ot.VideoTokens(torch.randn(8, 196, 64), grid=(14, 14))
>>> reduced = anchor_ot.AOT(retention=0.1)(video)
>>> reduced.num_tokens == anchor_ot.AOT(retention=0.1).num_kept(8, (14, 14))
True
"""

from anchor_ot import methods
from anchor_ot.methods import Reducer
from anchor_ot.methods.aot import AOT
from anchor_ot.ot import SinkhornResult, sinkhorn
from anchor_ot.types import ReducedVideo, VideoTokens
from anchor_ot.version import __version__

__all__ = ["AOT", "Reducer", "ReducedVideo", "SinkhornResult", "VideoTokens", "generate", "methods", "sinkhorn",
           "__version__"]


def __getattr__(name):
    # Lazy: importing anchor_ot must not import transformers (see anchor_ot.adapters).
    if name == "generate":
        from anchor_ot.adapters import generate

        return generate
    raise AttributeError(f"module 'anchor_ot' has no attribute {name!r}")
