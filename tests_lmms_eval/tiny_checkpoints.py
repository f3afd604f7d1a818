"""Tiny random checkpoints of the three families, saved like Hub checkpoints (weights, config,
real processor classes, tokenizer, chat template), for lmms-eval end-to-end tests.

Nothing is downloaded. The tokenizer is character-level over printable ASCII, built in memory with ``tokenizers``:
every prompt tokenizes and every generated token decodes to one distinct character, so answer
strings compare token for token. The chat templates are minimal Jinja templates that emit the
same placeholder tokens as the families' own templates. Weights are re-initialized with fan-in
scaling (std 0.02 makes greedy output one repeated token, so answers would not depend on the
video at all).
"""

from __future__ import annotations

from pathlib import Path

from anchor_ot.testing import fan_in_init

SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>", "<image>", "<video>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]

LLAVA_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'video' %}<video>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

FAMILIES = ("llava_onevision", "qwen2_5_vl", "qwen3_vl")


def make_tokenizer(chat_template: str):
    """Character-level tokenizer over printable ASCII plus the special tokens.

    One token per character (others map to ``<unk>``), decoded by concatenation: every generated
    non-special token is one distinct character, so equal answer strings mean equal tokens.
    """
    import string

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["<unk>"] + list(dict.fromkeys(string.printable))
    vocab = {ch: i for i, ch in enumerate(chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<|im_end|>",
                                  unk_token="<unk>", additional_special_tokens=SPECIAL[1:], padding_side="left")
    tok.chat_template = chat_template
    return tok


def _text(tok) -> dict:
    return dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                tie_word_embeddings=False)


def build(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random ``family`` checkpoint to ``folder`` and return its path."""
    from transformers import GenerationConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = None
    if family == "llava_onevision":
        from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                                  LlavaOnevisionImageProcessor, LlavaOnevisionProcessor,
                                  LlavaOnevisionVideoProcessor)

        tok = make_tokenizer(LLAVA_TEMPLATE)
        ids = tok.convert_tokens_to_ids
        cfg = LlavaOnevisionConfig(
            text_config=dict(model_type="qwen2", **_text(tok)),
            vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=3, num_attention_heads=4, image_size=84, patch_size=14),
            image_token_id=ids("<image>"), video_token_id=ids("<video>"), vision_feature_layer=-1,
            vision_feature_select_strategy="full", image_grid_pinpoints=[[84, 84]], tie_word_embeddings=False)
        model = fan_in_init(LlavaOnevisionForConditionalGeneration(cfg), seed)
        size = {"height": 84, "width": 84}
        processor = LlavaOnevisionProcessor(
            image_processor=LlavaOnevisionImageProcessor(size=size, crop_size=size, image_grid_pinpoints=[[84, 84]]),
            video_processor=LlavaOnevisionVideoProcessor(size=size),
            tokenizer=tok, num_image_tokens=36, vision_feature_select_strategy="full",
            chat_template=LLAVA_TEMPLATE)
    elif family in ("qwen2_5_vl", "qwen3_vl"):
        tok = make_tokenizer(QWEN_TEMPLATE)
        ids = tok.convert_tokens_to_ids
        common = dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                      vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
                      tie_word_embeddings=False)
        if family == "qwen2_5_vl":
            from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                                      Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

            cfg = Qwen2_5_VLConfig(
                text_config=dict(**_text(tok), rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                 "mrope_section": [2, 3, 3]}),
                vision_config=dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                                   patch_size=14, window_size=112, fullatt_block_indexes=[1, 3],
                                   tokens_per_second=2),
                **common)
            model = fan_in_init(Qwen2_5_VLForConditionalGeneration(cfg), seed)
            pixels = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
            processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels),
                                            video_processor=Qwen2VLVideoProcessor(**pixels),
                                            tokenizer=tok, chat_template=QWEN_TEMPLATE)
        else:
            from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                                      Qwen3VLProcessor, Qwen3VLVideoProcessor)

            cfg = Qwen3VLConfig(
                text_config=dict(**_text(tok), head_dim=16,
                                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
                vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                                   patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                                   num_position_embeddings=64, deepstack_visual_indexes=[0, 1]),
                **common)
            model = fan_in_init(Qwen3VLForConditionalGeneration(cfg), seed)
            size = {"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 16}
            processor = Qwen3VLProcessor(
                image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, size=size),
                video_processor=Qwen3VLVideoProcessor(size=size), tokenizer=tok, chat_template=QWEN_TEMPLATE)
    else:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    model.generation_config = GenerationConfig(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                               do_sample=False)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
