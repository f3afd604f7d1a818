"""Value tests of the transformers adapters' less travelled paths (written against mutation survivors).

Same tiny real transformers models as ``test_adapters.py`` (built in memory, nothing downloaded);
each test names the bug it is there to catch.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from test_adapters import (  # noqa: E402
    KeepTopScores,
    llava_inputs,
    llava_model,
    qwen25_model,
    qwen3_model,
    qwen_inputs,
)

import anchor_ot  # noqa: E402

torch.set_num_threads(1)


def _first_prefill_embeds(model, call):
    """Run ``call()`` and return (its output, the ``inputs_embeds`` of the first language-model forward)."""
    seen = []
    handle = model.model.language_model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["inputs_embeds"].clone()), with_kwargs=True)
    try:
        out = call()
    finally:
        handle.remove()
    return out, seen[0]


@pytest.mark.parametrize("build,make_inputs", [(llava_model, llava_inputs), (qwen25_model, qwen_inputs),
                                               (qwen3_model, qwen_inputs)],
                         ids=["llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def test_expanded_generation_gives_every_row_its_own_video(build, make_inputs):
    """Beam search / ``num_return_sequences`` with a batch of two videos: generate repeats each prompt
    row, and transformers repeats the pre-encoded features per *item* of ``pooler_output``. At full
    retention the prefill embeddings must equal plain generate's row for row.

    Bug caught: packing all videos into one pooler item (LLaVA-OV before the fix) makes transformers
    repeat the group [A, B] -> [A, B, A, B] while the rows are [A, A, B, B]: rows 1 and 2 read the
    other video's features (the tiny model's tokens may still agree, so the embeddings are compared).
    """
    model = build()
    inputs = make_inputs(model, 2)
    gen = dict(max_new_tokens=2, do_sample=False, num_beams=2, num_return_sequences=2)
    plain, plain_emb = _first_prefill_embeds(model, lambda: model.generate(**inputs, **gen))
    ours, ours_emb = _first_prefill_embeds(
        model, lambda: anchor_ot.generate(model, inputs, KeepTopScores(retention=1.0), **gen))
    assert ours_emb.shape == plain_emb.shape and ours_emb.shape[0] == 4
    torch.testing.assert_close(ours_emb, plain_emb, atol=1e-6, rtol=0)
    # the prompt rows returned are the original ones, each repeated for its two sequences
    assert torch.equal(ours[:, :inputs["input_ids"].shape[1]], inputs["input_ids"].repeat_interleave(2, dim=0))
    assert torch.equal(ours, plain)
