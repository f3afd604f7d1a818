"""Qwen3-VL and Qwen2.5-VL under vLLM with anchor-ot reduction (imported by vLLM's model registry).

vLLM already prunes Qwen videos (EVS / VidCom2) through a "multimodal pruning" path: the
processor reserves a count known before the encoder, the model's
``_postprocess_video_embeds_evs`` keeps that many embeddings and appends each one's
M-RoPE (t, h, w) position in extra channels, and the runner rebuilds the request's
positions from them (``recompute_mrope_positions``, which we override so that the positions
equal :func:`anchor_ot.generate`'s; see its docstring). The plugin reuses that path (it is
switched on by ``video_pruning_rate`` > 0, which :func:`engine_args` sets) and replaces
only what is kept:

* processor: a video reserves ``reducer.num_kept(T, (h/2, w/2))`` placeholders (T =
  temporal patches) instead of EVS's count;
* model: the ViT runs with score hooks on two blocks, each video is reduced on its own
  grid; kept tokens carry their own positions (merged tokens their anchor's); Qwen3-VL
  deepstack levels follow the same keep/merge map; Qwen3-VL's per-frame timestamps and
  vision start/end tokens are rebuilt around the kept tokens of each frame as vLLM does
  for EVS (the same layout as :func:`anchor_ot.generate`).
"""

from __future__ import annotations

import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement
from vllm.multimodal.video_prune.evs import compute_mrope_for_media

from anchor_ot.adapters.base import ScoreHooks
from anchor_ot.families import qwen_vl as fam
from anchor_ot.families.base import EncodedVideo, keep_flags, reduce_video
from anchor_ot.integrations.vllm._compat import check_version
from anchor_ot.integrations.vllm._scores import qwen_vit_received
from anchor_ot.integrations.vllm.settings import ModelSettingsMixin, from_config_cached
from anchor_ot.types import VideoTokens


def _reducer_for(info):
    return from_config_cached(info.get_hf_config())[1]


def _num_kept(info, grid_thw, family) -> int:
    merge = int(info.get_hf_config().vision_config.spatial_merge_size)
    frames, grid = fam.llm_grid(grid_thw.tolist() if hasattr(grid_thw, "tolist") else grid_thw, merge)
    return family.num_placeholders(_reducer_for(info), frames, grid)


def _resize_runs(ids: list[int], token: int, counts: list[int]) -> list[int]:
    """Give the i-th maximal run of ``token`` in ``ids`` the length ``counts[i]``."""
    out, i, v = [], 0, 0
    while i < len(ids):
        if ids[i] != token:
            out.append(ids[i])
            i += 1
            continue
        j = i
        while j < len(ids) and ids[j] == token:
            j += 1
        if v >= len(counts):
            raise ValueError(f"the prompt holds more video placeholder runs than the {len(counts)} video(s) given")
        out.extend([token] * counts[v])
        v += 1
        i = j
    if v != len(counts):
        raise ValueError(f"the prompt holds {v} video placeholder run(s) for {len(counts)} video(s)")
    return out


class _AnchorQwenModelMixin(ModelSettingsMixin):
    """Video path shared by both Qwen families: hooks around the ViT, reduction, positions."""

    anchor_family = None  # set by the subclasses

    def _anchor_init(self, vllm_config) -> None:
        check_version()
        from_config_cached(vllm_config.model_config.hf_config)  # bad settings: fail at engine start
        mm = vllm_config.model_config.multimodal_config
        if mm is None or not mm.is_multimodal_pruning_enabled():
            raise ValueError("anchor-ot's Qwen architectures need vLLM's pruning path: set video_pruning_rate > 0 "
                             "(anchor_ot.integrations.vllm.engine_args does; with `vllm serve` pass the flags "
                             "`anchor-ot vllm-args` prints)")
        self._anchor_pending_scores: list[dict] = []

    def _anchor_score_modules(self) -> dict:
        if self.anchor_settings.scores != "attention":
            return {}
        blocks = self.visual.blocks
        idx = self.anchor_family.score_layers(self.config.vision_config, len(blocks), self.anchor_settings.local_layer,
                                              self.anchor_settings.global_layer)
        return {name: blocks[i].attn for name, i in idx.items()}

    def _anchor_window_index(self, grid_thw):
        return None

    def _process_video_input(self, video_input):
        # precomputed video embeddings skip the ViT: no attention to score, methods use their fallback
        modules = self._anchor_score_modules() if video_input["type"] != "video_embeds" else {}
        with torch.no_grad(), ScoreHooks(modules, qwen_vit_received) as hooks:
            out = super()._process_video_input(video_input)
        grid_thw = video_input["video_grid_thw"]
        merge = self.visual.spatial_merge_size
        window = self._anchor_window_index(grid_thw) if modules else None
        merged = {name: fam.merge_scores(hooks.result(name), merge, window) for name in modules}
        sizes = [int(t) * (int(h) // merge) * (int(w) // merge) for t, h, w in grid_thw.tolist()]
        per_video = [dict(zip(merged, parts)) for parts in zip(*(merged[k].split(sizes) for k in merged))]
        self._anchor_pending_scores = per_video if merged else [{} for _ in sizes]
        return out

    def _anchor_reduce(self, emb: torch.Tensor, size, scores: dict, main_dim: int):
        """Reduce one video's (T * N, main_dim [+ levels * main_dim]) embeddings; returns (kept rows, keep mask)."""
        merge = self.visual.spatial_merge_size
        frames, grid = fam.llm_grid(size, merge)
        main = emb[:, :main_dim]
        levels = list(emb[:, main_dim:].split(main_dim, dim=-1)) if emb.shape[1] > main_dim else []
        video = VideoTokens(main.reshape(frames, grid[0] * grid[1], main_dim), grid,
                            global_scores=_frames(scores.get("global"), frames),
                            local_scores=_frames(scores.get("local"), frames))
        reduced, side = reduce_video(self.anchor_reducer, EncodedVideo(video, side_features=levels))
        kept = torch.cat([reduced.tokens, *side], dim=-1) if side else reduced.tokens
        return kept, keep_flags(reduced).to(emb.device)

    def recompute_mrope_positions(self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens):
        """vLLM's position rebuild after pruning, with two corrections so that positions equal
        :func:`anchor_ot.generate`'s (the full prompt's positions at the kept tokens, never renumbered).

        vLLM (``vllm.multimodal.video_prune.evs.recompute_mrope_positions``, called by the runner
        once the video embeddings exist) already gives each kept token its own (t, h, w) position
        (the extra channels :meth:`_postprocess_video_embeds_evs` appends) and restarts the text
        after a video where the *full* video ends, as transformers' ``get_rope_index`` does (Qwen3-VL:
        the full video's last vision-end position + 1; Qwen2.5-VL: the start + the extra channel,
        which our :meth:`_postprocess_video_embeds_evs` sets to max(h, w) / merge). Corrected:

        1. It takes the first ``<|vision_start|>`` at or after the computed tokens as the start of
           the next media item. The Qwen chat templates wrap a video in an outer
           ``<|vision_start|> ... <|vision_end|>`` (transformers expands only ``<|video_pad|>``),
           and Qwen3-VL's per-frame timestamps come before each frame's own
           ``<|vision_start|>``; the outer token is then taken for the video's start, which puts
           the whole video and all text after it some 50 positions too far. Here it sees only
           the ``<|vision_start|>`` tokens directly followed by an image or video placeholder
           (the others are hidden from it, as token id -1, in its copy of the ids).
        2. Its decode offset is ``max(position) + 1 - N`` (N = prompt length); transformers'
           ``generate`` continues from the *last* prompt position + 1
           (``_update_model_kwargs_for_generation``). They differ when a Qwen2.5-VL video's
           temporal positions (``tokens_per_second`` x seconds per temporal patch) run past the
           text that follows it; the offset returned here is ``position[N - 1] + 1 - N``.
        """
        device = multimodal_embeddings[0].device if len(multimodal_embeddings) else mrope_positions.device
        ids = torch.as_tensor(input_ids, device=device).to(torch.long)
        cfg = self.config
        media_next = torch.zeros_like(ids, dtype=torch.bool)
        media_next[:-1] = (ids[1:] == cfg.image_token_id) | (ids[1:] == cfg.video_token_id)
        ids = ids.masked_fill((ids == cfg.vision_start_token_id) & ~media_next, -1)
        embeds, positions, _ = super().recompute_mrope_positions(
            input_ids=ids, multimodal_embeddings=multimodal_embeddings, mrope_positions=mrope_positions,
            num_computed_tokens=num_computed_tokens)
        n = ids.numel()
        return embeds, positions, int(positions[0, n - 1]) + 1 - n


def _frames(scores, frames):
    return None if scores is None else scores.reshape(frames, -1)


# -- Qwen3-VL ----------------------------------------------------------------------------


class AnchorOTQwen3VLProcessingInfo(Qwen3VLProcessingInfo):
    """Reserves ``reducer.num_kept`` placeholders per video (all in the first frame's group, as EVS)."""


class AnchorOTQwen3VLProcessor(Qwen3VLMultiModalProcessor):
    """vLLM's Qwen3-VL processor with anchor-ot's count in place of EVS's."""

    def _anchor_video_ids(self, grid_thw, timestamps) -> list[int]:
        cfg = self.info.get_hf_config()
        frames = int(grid_thw[0])
        kept = _num_kept(self.info, grid_thw, fam.QWEN3_VL)
        return list(Qwen3VLMultiModalProcessor.get_video_repl(
            tokens_per_frame=[kept] + [0] * (frames - 1), timestamps=timestamps, tokenizer=self.info.get_tokenizer(),
            vision_start_token_id=cfg.vision_start_token_id, vision_end_token_id=cfg.vision_end_token_id,
            video_token_id=cfg.video_token_id, select_token_id=False).full)

    def _call_hf_processor(self, prompt, mm_data, mm_kwargs, tok_kwargs):
        out = super()._call_hf_processor(prompt, mm_data, mm_kwargs, tok_kwargs)
        grids = out.get("video_grid_thw")
        if grids is None or len(grids) == 0:
            return out
        cfg = self.info.get_hf_config()
        counts = [_num_kept(self.info, g, fam.QWEN3_VL) for g in grids]
        ids = out["input_ids"]
        rows = ids.tolist() if hasattr(ids, "tolist") else ids
        fixed = [_resize_runs(list(r), cfg.video_token_id, counts) for r in rows]
        out["input_ids"] = torch.tensor(fixed) if isinstance(ids, torch.Tensor) else fixed
        return out

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        updates = list(super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs))

        def video_replacement(item_idx: int):
            item = out_mm_kwargs["video"][item_idx]
            return self._anchor_video_ids(item["video_grid_thw"].data, item["timestamps"].data)

        return [PromptReplacement(modality="video", target=u.target, replacement=video_replacement)
                if u.modality == "video" else u for u in updates]


@MULTIMODAL_REGISTRY.register_processor(AnchorOTQwen3VLProcessor, info=AnchorOTQwen3VLProcessingInfo,
                                        dummy_inputs=Qwen3VLDummyInputsBuilder)
class AnchorOTQwen3VLForConditionalGeneration(_AnchorQwenModelMixin, Qwen3VLForConditionalGeneration):
    """vLLM's Qwen3-VL whose pruning step is an anchor-ot reducer."""

    anchor_family = fam.QWEN3_VL

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        self._anchor_init(vllm_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)

    def _postprocess_video_embeds_evs(self, video_embeds_split, video_input):
        grids = video_input["video_grid_thw"].tolist()
        scores = self._anchor_pending_scores or [{} for _ in grids]
        self._anchor_pending_scores = []
        out = []
        for emb, size, timestamps, sc in zip(video_embeds_split, grids, video_input.timestamps, scores):
            kept, mask = self._anchor_reduce(emb, size, sc, self.visual_dim)
            frames = int(size[0])
            per_frame = mask.reshape(frames, -1).sum(dim=1).tolist()
            out.append(self._create_final_video_embeddings(
                video_embeddings=kept, num_tokens_per_frame=per_frame, timestamps=timestamps,
                video_grid_thw=size, retention_mask=mask))
        return tuple(out)


# -- Qwen2.5-VL --------------------------------------------------------------------------


class AnchorOTQwen2_5_VLProcessingInfo(Qwen2_5_VLProcessingInfo):
    """Qwen2.5-VL processing info (unchanged; the count is set in the processor)."""


class AnchorOTQwen2_5_VLProcessor(Qwen2_5_VLMultiModalProcessor):
    """vLLM's Qwen2.5-VL processor with anchor-ot's count in place of EVS's."""

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        updates = list(super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs))
        token = self.info.get_hf_config().video_token_id

        def video_replacement(item_idx: int):
            grid = out_mm_kwargs["video"][item_idx]["video_grid_thw"].data
            return [token] * _num_kept(self.info, grid, fam.QWEN2_5_VL)

        return [PromptReplacement(modality="video", target=u.target, replacement=video_replacement)
                if u.modality == "video" else u for u in updates]


@MULTIMODAL_REGISTRY.register_processor(AnchorOTQwen2_5_VLProcessor, info=AnchorOTQwen2_5_VLProcessingInfo,
                                        dummy_inputs=Qwen2_5_VLDummyInputsBuilder)
class AnchorOTQwen2_5_VLForConditionalGeneration(_AnchorQwenModelMixin, Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL whose pruning step is an anchor-ot reducer."""

    anchor_family = fam.QWEN2_5_VL

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        self._anchor_init(vllm_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)

    def _anchor_window_index(self, grid_thw):
        from transformers.vision_utils import get_vision_window_index

        visual = self.visual
        index, _ = get_vision_window_index(grid_thw.cpu(), spatial_merge_size=visual.spatial_merge_size,
                                           window_size=visual.window_size, patch_size=visual.patch_size)
        return index

    def _postprocess_video_embeds_evs(self, video_embeds_split, video_input):
        grids = video_input["video_grid_thw"].tolist()
        seconds = video_input.get("second_per_grid_ts")
        if seconds is None:
            raise ValueError("second_per_grid_ts is required for Qwen2.5-VL videos (the processor returns it)")
        scores = self._anchor_pending_scores or [{} for _ in grids]
        self._anchor_pending_scores = []
        merge = self.visual.spatial_merge_size
        tps = self.config.vision_config.tokens_per_second
        out = []
        for emb, size, sec, sc in zip(video_embeds_split, grids, seconds.long(), scores):
            kept, mask = self._anchor_reduce(emb, size, sc, emb.shape[1])
            positions = compute_mrope_for_media(size, merge, tokens_per_second=tps,
                                                video_second_per_grid=sec.item()).to(emb.device)
            # channel 3 is how far vLLM advances the text after the video; it puts the grid width
            # there, transformers' get_rope_index advances by max(h, w) / merge (differs for h > w)
            positions[:, 3] = max(int(size[1]), int(size[2])) // merge
            out.append(torch.cat([kept, positions[mask].to(kept.dtype)], dim=1))
        return tuple(out)
