"""``anchor_ot_llava_onevision``: lmms-eval's ``llava_hf`` wrapper with video-token reduction.

lmms-eval 0.7.3 has two wrappers for Hugging Face LLaVA checkpoints: ``llava_hf`` (simple:
decord decoding of ``max_frames_num`` uniformly spaced frames, the prompt ``<video>\\n`` +
question through the tokenizer's chat template) and ``llava_hf_chat``. We build on the simple
one only: the chat wrapper passes ``images=[]`` to the processor for video-only samples, which
transformers 5.x rejects (IndexError), so it cannot run a video benchmark as released. The
simple wrapper asserts batch size 1; so does this model. (lmms-eval's ``llava_onevision`` id is
a different wrapper that needs the original LLaVA-NeXT package.)
"""

from __future__ import annotations

import math

from lmms_eval.models.simple.llava_hf import LlavaHf

from anchor_ot.integrations.lmms_eval.reduction import ReductionMixin, Settings

__all__ = ["AnchorOTLlavaOneVision"]


class AnchorOTLlavaOneVision(ReductionMixin, LlavaHf):
    """LLaVA-OneVision (and LLaVA-Video checkpoints in that class) with anchor-ot reduction.

    ``model_args``: ``pretrained``, ``max_frames_num`` (default 32), ``dtype``,
    ``attn_implementation``, ``device_map`` (give one, e.g. ``cuda:0``: the wrapper's default
    ``""`` is rejected by transformers 5.x) and the rest of ``llava_hf``'s, plus
    ``method``, ``retention``, ``param.<name>``, ``scores``, ``local_layer``, ``global_layer``,
    ``anchor_ot_log``.
    """

    is_simple = True
    MODEL_ID = "anchor_ot_llava_onevision"
    MODEL_TYPES = ("llava_onevision",)
    SUPPORTS_BATCH = False
    DEFAULT_PRETRAINED = "llava-hf/llava-onevision-qwen2-7b-ov-hf"

    def _check_budget(self, settings: Settings, rest: dict) -> None:
        # every video has max_frames_num frames on the pooled ceil(side / 2)^2 grid: check now
        vision = self._anchor_config.vision_config
        side = math.ceil((vision.image_size // vision.patch_size) / 2)
        frames = rest.get("max_frames_num", 32)
        try:
            settings.reducer.num_kept(int(frames), (side, side))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.MODEL_ID}: {settings.method} cannot reduce {frames} frames of {side}x{side} "
                             f"tokens at retention {settings.retention:g}: {exc}") from None
