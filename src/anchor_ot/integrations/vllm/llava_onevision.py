"""LLaVA-OneVision under vLLM with anchor-ot reduction (imported by vLLM's model registry).

vLLM has no video pruning for this family, so the plugin:

* :class:`AnchorOTLlavaOnevisionProcessingInfo`: a video reserves
  ``reducer.num_kept(F, (14, 14)) + 1`` placeholders (the newline row is kept) instead of
  ``F * 196 + 1``; profiling still sizes the dummy video with the unreduced count;
* :class:`AnchorOTLlavaOnevisionForConditionalGeneration`: the video path runs SigLIP ->
  projector -> 2 x 2 bilinear pooling as vLLM does, with score hooks on two SigLIP layers,
  then reduces each video on its own 14 x 14 x F grid and returns K + 1 embeddings.
"""

from __future__ import annotations

import torch
from vllm.model_executor.models.llava_onevision import (
    LlavaOnevisionDummyInputsBuilder,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionMultiModalProcessor,
    LlavaOnevisionProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from anchor_ot.adapters.base import ScoreHooks
from anchor_ot.families import llava_onevision as family
from anchor_ot.families.base import EncodedVideo, reduce_video
from anchor_ot.integrations.vllm._compat import check_version
from anchor_ot.integrations.vllm._scores import siglip_received
from anchor_ot.integrations.vllm.settings import ModelSettingsMixin, from_config_cached
from anchor_ot.types import VideoTokens

ARCHITECTURE = "AnchorOTLlavaOnevisionForConditionalGeneration"
_MAX_FRAMES_PER_VIDEO = 16  # vLLM's own cap for the profiling dummy video


class AnchorOTLlavaOnevisionProcessingInfo(LlavaOnevisionProcessingInfo):
    """Reserves the reduced placeholder count for every video."""

    def _anchor_reducer(self):
        return from_config_cached(self.get_hf_config())[1]

    def get_num_video_tokens(self, *, image_width: int, image_height: int, num_frames: int) -> int:
        grid = family.llm_grid(self.get_hf_config().vision_config)
        return family.FAMILY.num_placeholders(self._anchor_reducer(), num_frames, grid)

    def _get_max_video_frames(self, max_tokens: int) -> int:
        # memory profiling: size the dummy video by the *unreduced* count (an upper bound that
        # never asks the reducer for a shape it cannot meet)
        width, height = self.get_image_size_with_most_features()
        per_frame = super()._get_num_frame_tokens(image_width=width, image_height=height)
        return max(0, (max_tokens - 1) // per_frame)


class AnchorOTLlavaOnevisionProcessor(LlavaOnevisionMultiModalProcessor):
    """vLLM's LLaVA-OneVision processor; the count comes from the info class above."""


@MULTIMODAL_REGISTRY.register_processor(AnchorOTLlavaOnevisionProcessor, info=AnchorOTLlavaOnevisionProcessingInfo,
                                        dummy_inputs=LlavaOnevisionDummyInputsBuilder)
class AnchorOTLlavaOnevisionForConditionalGeneration(ModelSettingsMixin, LlavaOnevisionForConditionalGeneration):
    """vLLM's LLaVA-OneVision whose video path returns ``reducer.num_kept(F, grid) + 1`` embeddings per video."""

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        check_version()
        from_config_cached(vllm_config.model_config.hf_config)  # bad settings: fail at engine start
        super().__init__(vllm_config=vllm_config, prefix=prefix)

    def _anchor_score_modules(self) -> dict:
        if self.anchor_settings.scores != "attention":
            return {}
        layers = self.vision_tower.vision_model.encoder.layers
        idx = family.FAMILY.score_layers(self.config.vision_config, len(layers), self.anchor_settings.local_layer,
                                         self.anchor_settings.global_layer)
        return {name: layers[i].self_attn for name, i in idx.items()}

    def _process_video_pixels(self, inputs):
        pixels = inputs["pixel_values_videos"]
        videos = list(pixels)  # a (V, F, C, H, W) tensor or a list of (F_v, C, H, W), one per video
        frames = [int(v.shape[0]) for v in videos]
        flat = torch.cat(videos)
        vcfg = self.config.vision_config
        grid = family.llm_grid(vcfg)
        modules = self._anchor_score_modules()
        with torch.no_grad(), ScoreHooks(modules, siglip_received) as hooks:
            feats = self._video_pixels_to_features(self.vision_tower, flat)  # (sum F, h * w, d)
        scores = {name: family.pool_scores(hooks.result(name), vcfg) for name in modules}
        newline = self.image_newline[None, :]
        out = []
        for tokens, *per in zip(feats.split(frames), *(scores[k].split(frames) for k in scores)):
            named = dict(zip(scores, per))
            video = VideoTokens(tokens, grid, global_scores=named.get("global"), local_scores=named.get("local"))
            reduced, _ = reduce_video(self.anchor_reducer, EncodedVideo(video))
            out.append(torch.cat([reduced.tokens, newline.to(reduced.tokens.dtype)], dim=0))
        return out
