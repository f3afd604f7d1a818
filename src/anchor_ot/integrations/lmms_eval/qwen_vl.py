"""``anchor_ot_qwen2_5_vl`` and ``anchor_ot_qwen3_vl``: lmms-eval's Qwen wrappers with reduction.

Both lmms-eval wrappers exist as a chat class (the default for these ids) and a simple class
(``--force_simple``); both batch samples (``--batch_size N``, left-padded for N > 1), and the
reduced batch stays left-padded. Frames are sampled by ``qwen_vl_utils`` as in the wrappers
(``max_num_frames``, ``fps``, ``min_pixels``/``max_pixels``); the reducer sees Qwen's temporal
patches (2 frames each) on the merged (h/2, w/2) grid, whose size depends on the video's
resolution, so a budget the method cannot meet is reported when that video comes.
"""

from __future__ import annotations

from lmms_eval.models.chat.qwen2_5_vl import Qwen2_5_VL as Qwen2_5_VLChatBase
from lmms_eval.models.chat.qwen3_vl import Qwen3_VL as Qwen3_VLChatBase
from lmms_eval.models.simple.qwen2_5_vl import Qwen2_5_VL as Qwen2_5_VLBase
from lmms_eval.models.simple.qwen3_vl import Qwen3_VL as Qwen3_VLBase

from anchor_ot.integrations.lmms_eval.reduction import ReductionMixin

__all__ = ["AnchorOTQwen2_5_VL", "AnchorOTQwen2_5_VLChat", "AnchorOTQwen3_VL", "AnchorOTQwen3_VLChat"]


class _Qwen2_5(ReductionMixin):
    MODEL_ID = "anchor_ot_qwen2_5_vl"
    MODEL_TYPES = ("qwen2_5_vl",)
    DEFAULT_PRETRAINED = "Qwen/Qwen2.5-VL-3B-Instruct"


class _Qwen3(ReductionMixin):
    MODEL_ID = "anchor_ot_qwen3_vl"
    MODEL_TYPES = ("qwen3_vl",)
    DEFAULT_PRETRAINED = "Qwen/Qwen3-VL-4B-Instruct"


class AnchorOTQwen2_5_VL(_Qwen2_5, Qwen2_5_VLBase):
    """Qwen2.5-VL with anchor-ot reduction, on lmms-eval's simple ``qwen2_5_vl`` wrapper."""

    is_simple = True


class AnchorOTQwen2_5_VLChat(_Qwen2_5, Qwen2_5_VLChatBase):
    """Qwen2.5-VL with anchor-ot reduction, on lmms-eval's chat ``qwen2_5_vl`` wrapper."""

    is_simple = False


class AnchorOTQwen3_VL(_Qwen3, Qwen3_VLBase):
    """Qwen3-VL (dense) with anchor-ot reduction, on lmms-eval's simple ``qwen3_vl`` wrapper."""

    is_simple = True


class AnchorOTQwen3_VLChat(_Qwen3, Qwen3_VLChatBase):
    """Qwen3-VL (dense) with anchor-ot reduction, on lmms-eval's chat ``qwen3_vl`` wrapper."""

    is_simple = False
