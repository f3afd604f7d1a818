"""lmms-eval plugin: evaluate any anchor-ot method on video benchmarks with the stock harness.

Registered through the entry-point group ``lmms_eval.models`` (lmms-eval >= 0.7 reads it when
``lmms_eval.models`` is imported; see :func:`manifests`). Model ids:

==============================  ==========================================  ======================
model id                        built on lmms-eval's                         checkpoint class
==============================  ==========================================  ======================
``anchor_ot_llava_onevision``   ``llava_hf`` (simple; batch size 1)          LlavaOnevision...
``anchor_ot_qwen2_5_vl``        ``qwen2_5_vl`` (chat and simple; batched)     Qwen2_5_VL...
``anchor_ot_qwen3_vl``          ``qwen3_vl`` (chat and simple; batched)       Qwen3VL...
==============================  ==========================================  ======================

Each class subclasses lmms-eval's own wrapper and changes one thing: the wrapper's
``self.model.generate(...)`` goes through :func:`anchor_ot.adapters.prepare` (encode, score,
reduce, shorten the prompt) and then the model's own ``generate``. Everything else (video
decoding, frame sampling, prompts, batching, answer decoding) is the wrapper's, so at
retention 1.0 the answers equal the wrapper's.

Usage::

    lmms-eval --model anchor_ot_qwen2_5_vl \\
        --model_args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,method=aot,retention=0.1,param.aggregation=hard \\
        --tasks videomme --batch_size 1 --output_path ./logs --log_samples

See ``docs/lmms_eval.md``.
"""

from __future__ import annotations

#: model id -> (simple class path, chat class path or None)
MODEL_IDS = {
    "anchor_ot_llava_onevision": ("anchor_ot.integrations.lmms_eval.llava_onevision.AnchorOTLlavaOneVision", None),
    "anchor_ot_qwen2_5_vl": ("anchor_ot.integrations.lmms_eval.qwen_vl.AnchorOTQwen2_5_VL",
                             "anchor_ot.integrations.lmms_eval.qwen_vl.AnchorOTQwen2_5_VLChat"),
    "anchor_ot_qwen3_vl": ("anchor_ot.integrations.lmms_eval.qwen_vl.AnchorOTQwen3_VL",
                           "anchor_ot.integrations.lmms_eval.qwen_vl.AnchorOTQwen3_VLChat"),
}

__all__ = ["MODEL_IDS", "manifests"]


def manifests():
    """The ``lmms_eval.models`` entry point: one ``ModelManifest`` per model id.

    lmms-eval calls this while ``lmms_eval.models`` initializes its registry; the model
    classes themselves are imported only when a run selects one of the ids. A model id with
    a chat class resolves to it by default; ``--force_simple`` picks the simple one.
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=mid, simple_class_path=simple, chat_class_path=chat)
            for mid, (simple, chat) in MODEL_IDS.items()]
