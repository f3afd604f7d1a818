"""Tiny random checkpoints of the three families, saved like hub checkpoints (offline).

Each folder holds ``config.json`` + ``model.safetensors`` of the real transformers class,
a real fast tokenizer built in memory (word-level, no download) with a chat template, and
the family's real processor classes (``save_pretrained``), so that vLLM, ``AutoProcessor``
and ``anchor-ot ask`` load them as they load real models. Weights are re-initialized with
fan-in scaling: the default std 0.02 makes greedy decoding repeat one token, which would
hide differences between engines.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from anchor_ot.testing import fan_in_init

SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>", "<image>", "<video>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>", "<|endoftext|>"]
WORDS = SPECIAL + ["user", "assistant", "system", "what", "is", "in", "the", "video", "?", "happens", "next",
                   "describe", "seconds>", "who", "where", "image", "and"] + [f"w{i}" for i in range(90)]
VOCAB = {w: i for i, w in enumerate(WORDS)}

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] in ('video', 'video_url') %}{VIDEO} {% elif c['type'] in ('image', 'image_url') %}{IMAGE} "
    "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endif %}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")

# head_dim 32: the smallest head size vLLM's CPU attention kernels accept
TEXT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=8192, bos_token_id=None, tie_word_embeddings=False)


def make_tokenizer() -> PreTrainedTokenizerFast:
    tk = Tokenizer(models.WordLevel(VOCAB, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<|im_end|>",
                                   additional_special_tokens=SPECIAL[1:], padding_side="left")


def _text(**extra):
    return dict(vocab_size=len(VOCAB), pad_token_id=VOCAB["<pad>"], eos_token_id=VOCAB["<|im_end|>"], **TEXT, **extra)


def _save(model, processor, folder: pathlib.Path, rename=None) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    if rename is not None:
        path = folder / "model.safetensors"
        tensors = load_file(path)
        save_file({rename(k): v.contiguous() for k, v in tensors.items()}, path, metadata={"format": "pt"})
    cfg = json.loads((folder / "config.json").read_text())
    cfg["torch_dtype"] = cfg["dtype"] = "float32"
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    return folder


def llava_onevision(folder: pathlib.Path, image_size: int = 112) -> pathlib.Path:
    """LLaVA-OneVision: SigLIP 112 px / patch 14 (8 x 8 patches, 4 x 4 LLM grid), Qwen2 text."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    cfg = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", **_text()),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=3, num_attention_heads=4, image_size=image_size, patch_size=14),
        image_token_id=VOCAB["<image>"], video_token_id=VOCAB["<video>"], vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_grid_pinpoints=[[image_size, image_size]],
        tie_word_embeddings=False)
    model = fan_in_init(LlavaOnevisionForConditionalGeneration(cfg), 0)
    size = {"height": image_size, "width": image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[image_size, image_size]]),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=make_tokenizer(), num_image_tokens=(image_size // 14) ** 2, vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE.replace("{VIDEO}", "<video>").replace("{IMAGE}", "<image>"))
    # transformers 5.x saves SigLIP without the `vision_model.` level that hub checkpoints (and vLLM) use
    return _save(model, processor, folder, rename=_siglip_level)


def _siglip_level(key: str) -> str:
    for prefix in ("model.vision_tower.", "vision_tower."):
        if key.startswith(prefix) and not key.startswith(prefix + "vision_model."):
            return prefix + "vision_model." + key[len(prefix):]
    return key


def _qwen_tokens():
    return dict(image_token_id=VOCAB["<|image_pad|>"], video_token_id=VOCAB["<|video_pad|>"],
                vision_start_token_id=VOCAB["<|vision_start|>"], vision_end_token_id=VOCAB["<|vision_end|>"])


_QWEN_TEMPLATE = CHAT_TEMPLATE.replace("{VIDEO}", "<|vision_start|><|video_pad|><|vision_end|>").replace(
    "{IMAGE}", "<|vision_start|><|image_pad|><|vision_end|>")


def qwen3_vl(folder: pathlib.Path, pixels: int = 128) -> pathlib.Path:
    """Qwen3-VL: patch 16, 2 x 2 merge, 128 x 128 frames -> 4 x 4 LLM grid per temporal patch."""
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    cfg = Qwen3VLConfig(
        text_config=_text(head_dim=32, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                         "mrope_section": [4, 6, 6], "mrope_interleaved": True}),
        vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=128,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0, 1]),
        tie_word_embeddings=False, **_qwen_tokens())
    model = fan_in_init(Qwen3VLForConditionalGeneration(cfg), 2)
    # Qwen3-VL's video processor bounds the pixels of the whole clip (frames x h x w)
    area = {"shortest_edge": 32 * 32, "longest_edge": 64 * pixels * pixels}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=area, patch_size=16, merge_size=2),
        video_processor=Qwen3VLVideoProcessor(size=area, patch_size=16, merge_size=2, temporal_patch_size=2,
                                              do_sample_frames=False),
        tokenizer=make_tokenizer(), chat_template=_QWEN_TEMPLATE)
    return _save(model, processor, folder)


def qwen2_5_vl(folder: pathlib.Path, pixels: int = 112) -> pathlib.Path:
    """Qwen2.5-VL: patch 14, 2 x 2 merge, 112 x 112 frames -> 4 x 4 LLM grid per temporal patch."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    cfg = Qwen2_5_VLConfig(
        text_config=_text(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                           "mrope_section": [4, 6, 6]}),
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=128,
                           patch_size=14, window_size=56, fullatt_block_indexes=[1, 3], tokens_per_second=2),
        tie_word_embeddings=False, **_qwen_tokens())
    model = fan_in_init(Qwen2_5_VLForConditionalGeneration(cfg), 1)
    area = {"shortest_edge": pixels * pixels, "longest_edge": pixels * pixels}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=area, patch_size=14, merge_size=2),
        video_processor=Qwen2VLVideoProcessor(size=area, patch_size=14, merge_size=2, temporal_patch_size=2,
                                              do_sample_frames=False),
        tokenizer=make_tokenizer(), chat_template=_QWEN_TEMPLATE)
    return _save(model, processor, folder)


BUILDERS = {"llava_onevision": llava_onevision, "qwen3_vl": qwen3_vl, "qwen2_5_vl": qwen2_5_vl}


def video(frames: int = 16, size: int = 112, seed: int = 0, fps: float = 2.0):
    """A smooth random video (frames, H, W, 3) uint8 plus the metadata dict vLLM wants for numpy videos."""
    g = np.random.default_rng(seed)
    base = g.integers(0, 256, size=(4, 4, 3)).astype(np.float32)
    drift = g.normal(0, 30, size=(frames, 4, 4, 3)).cumsum(0)
    small = np.clip(base + drift, 0, 255)
    arr = np.kron(small, np.ones((1, size // 4, size // 4, 1))).astype(np.uint8)
    arr = arr + g.integers(0, 20, size=arr.shape).astype(np.uint8)
    meta = {"total_num_frames": frames, "fps": fps, "duration": frames / fps, "video_backend": "numpy",
            "frames_indices": list(range(frames)), "do_sample_frames": False}
    return arr, meta
