"""Value tests of ``anchor_ot.families``: what a model family is, shared by the transformers adapters
and the vLLM plugin (written against the survivors of a mutation sample of ``families/``).

Real transformers vision configs built in memory; each test names the bug it is there to catch.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import Qwen2_5_VLConfig, SiglipVisionConfig  # noqa: E402

from anchor_ot import families, methods  # noqa: E402
from anchor_ot.families import llava_onevision as lo  # noqa: E402
from anchor_ot.families import qwen_vl as qv  # noqa: E402
from anchor_ot.families.base import EncodedVideo, reduce_video  # noqa: E402
from anchor_ot.methods.base import Reducer  # noqa: E402
from anchor_ot.types import VideoTokens  # noqa: E402


def test_qwen25_default_global_layer_is_the_last_full_attention_block():
    """Bugs caught: the config's ``fullatt_block_indexes`` not read (misspelt or from another object),
    and the fallback for a config without them (-2, the second-to-last block) changed."""
    vc = Qwen2_5_VLConfig(vision_config=dict(depth=8, fullatt_block_indexes=[1, 5])).vision_config
    assert families.get("qwen2_5_vl").score_layers(vc, 8) == {"global": 5, "local": 5}
    vc.fullatt_block_indexes = []
    assert families.get("qwen2_5_vl").score_layers(vc, 8) == {"global": 6, "local": 5}
    assert families.get("qwen2_5_vl").score_layers(vc, 4) == {"global": 2, "local": 3}  # local 5 clipped


def test_qwen_llm_grid_needs_both_sides_divisible():
    """Bug caught: accepting a grid when only one side is indivisible by the merge size."""
    assert qv.llm_grid((4, 12, 8), 2) == (4, (6, 4))
    for bad in ((4, 12, 13), (4, 13, 12)):
        with pytest.raises(ValueError, match=rf"video grid \({bad[0]}, {bad[1]}, {bad[2]}\) is not divisible by "
                                             r"the merge size 2"):
            qv.llm_grid(bad, 2)


def test_llava_pool_scores_drops_a_leading_token_and_pools_each_frame():
    """Per-frame bilinear pooling (against ``F.interpolate`` frame by frame) for an odd frame count,
    a leading [CLS]-style score dropped, and the message naming the expected count.

    Bugs caught: frames pooled in pairs (an odd count then fails), the leading token kept, the wrong
    count in the error message."""
    vc = SiglipVisionConfig(image_size=84, patch_size=14)  # 6 x 6 patches -> 3 x 3 LLM grid
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(3, 36, generator=g)
    want = torch.cat([torch.nn.functional.interpolate(scores[f].view(1, 1, 6, 6), size=(3, 3), mode="bilinear")
                      .reshape(1, 9) for f in range(3)])
    assert torch.equal(lo.pool_scores(scores, vc), want)
    with_cls = torch.cat([torch.full((3, 1), 9.0), scores], dim=1)
    assert torch.equal(lo.pool_scores(with_cls, vc), want)
    with pytest.raises(ValueError, match="expected 36 patch scores per frame, got 35"):
        lo.pool_scores(scores[:, :35], vc)


@pytest.mark.parametrize("name,extra", [("llava_onevision", 1), ("qwen2_5_vl", 0), ("qwen3_vl", 0)])
def test_num_placeholders_is_num_kept_plus_the_extra_tokens(name, extra):
    """The prompt an engine reserves before encoding. Bug caught: a count not taken from the reducer."""
    reducer = methods.get("aot", retention=0.25)
    assert families.get(name).num_placeholders(reducer, 8, (14, 14)) == reducer.num_kept(8, (14, 14)) + extra


class _Liar(Reducer):
    """A reducer that bypasses ``Reducer.__call__``'s own check and returns one token too many."""

    name = "test-liar"

    def __call__(self, video):
        return methods.get("random", retention=self.retention)(video)

    def num_kept(self, num_frames, grid):
        return super().num_kept(num_frames, grid) - 1

    def reduce(self, video, num_kept):  # pragma: no cover - not reached
        raise NotImplementedError


def test_reduce_video_returns_the_reduction_and_rejects_a_wrong_count():
    """Bugs caught: the announced count not computed (every call fails), side features not reduced with
    the same map, and a reducer that breaks its own budget passing unnoticed."""
    g = torch.Generator().manual_seed(1)
    video = VideoTokens(torch.randn(2, 16, 4, generator=g), (4, 4))
    side = [torch.randn(32, 3, generator=g)]
    reducer = methods.get("random", retention=0.25)
    reduced, reduced_side = reduce_video(reducer, EncodedVideo(video=video, side_features=side))
    assert reduced.num_tokens == reducer.num_kept(2, (4, 4)) == 8
    assert torch.equal(reduced_side[0], side[0][reduced.source_index])  # copies keep their own features
    with pytest.raises(RuntimeError, match=r"_Liar returned 8 tokens but announced 7 for 2 frames of \(4, 4\)"):
        reduce_video(_Liar(retention=0.25), EncodedVideo(video=video))


# --- written against the survivors of the full run of families/ (tag ``full``, stop 18) -------------


def test_resolve_layer_accepts_exactly_minus_depth_to_depth_minus_one_and_names_the_range():
    """Both ends of ``[-depth, depth)`` (-depth is layer 0, depth is out), bools and floats refused.

    Bugs caught: an off-by-one at either end (``-depth`` refused, ``depth`` wrapped to layer 0), the
    type check that lets ``True`` / ``1.0`` through, and messages that do not name the argument, the
    value, the depth and the valid range."""
    from anchor_ot.families.base import resolve_layer

    assert [resolve_layer("g", i, 4) for i in (-4, -1, 0, 3)] == [0, 3, 0, 3]
    for bad in (4, -5):
        with pytest.raises(ValueError) as info:
            resolve_layer("g", bad, 4)
        assert str(info.value) == f"g={bad} is out of range for a vision encoder with 4 layers (use -4..3)"
    for bad in (True, 1.0, "1"):
        with pytest.raises(TypeError) as info:
            resolve_layer("g", bad, 4)
        assert str(info.value) == f"g must be an int (encoder layer index, negative counts from the end), got {bad!r}"


@pytest.mark.parametrize("arg", ["local_layer", "global_layer"])
def test_score_layers_messages_name_the_argument(arg):
    """An explicit layer out of range or of the wrong type: the message names which of the two
    arguments was wrong. Bug caught: a misspelt or swapped name (the user cannot tell which to fix)."""
    vc = SiglipVisionConfig(image_size=84, patch_size=14, num_hidden_layers=6)
    fam = families.get("llava_onevision")
    with pytest.raises(ValueError) as info:
        fam.score_layers(vc, 6, **{arg: 6})
    assert str(info.value) == f"{arg}=6 is out of range for a vision encoder with 6 layers (use -6..5)"
    with pytest.raises(TypeError, match=rf"^{arg} must be an int "):
        fam.score_layers(vc, 6, **{arg: 2.0})


def _mixed_reduction():
    """A reduction of a 2 x 16-token video to 8 tokens by hand: rows 0, 2, 4, 6 copied from their
    source token, rows 1, 3, 5, 7 the mean of the tokens assigned to them (as a merging method does)."""
    from anchor_ot.methods.base import assemble

    g = torch.Generator().manual_seed(2)
    video = VideoTokens(torch.randn(2, 16, 4, generator=g), (4, 4))
    flat = video.tokens.reshape(-1, 4)
    idx = torch.tensor([1, 4, 7, 11, 18, 20, 25, 30])
    assignment = (torch.searchsorted(idx, torch.arange(32), right=True) - 1).clamp(min=0)
    rows = flat[idx].clone()
    for j in (1, 3, 5, 7):
        rows[j] = flat[assignment == j].mean(0)
    return video, assemble(rows, idx, assignment, 2, (4, 4))


def test_keep_flags_default_is_the_grid_tokens_only():
    """``keep_flags(reduced)`` (the vLLM plugin's call, no extra tokens): one flag per grid token,
    set exactly at ``source_index``; ``extra`` appends that many always-kept flags.

    Bug caught: a default of one extra token (the Qwen placeholder run would be one token too long)."""
    from anchor_ot.families.base import keep_flags

    _, reduced = _mixed_reduction()
    flags = keep_flags(reduced)
    assert flags.dtype == torch.bool and flags.shape == (32,)
    assert torch.equal(flags.nonzero().flatten(), reduced.source_index)
    flags2 = keep_flags(reduced, 2)
    assert flags2.shape == (34,) and torch.equal(flags2[:32], flags) and bool(flags2[32:].all())


def test_reduce_side_features_message_names_both_counts():
    """Bug caught: the message reporting the feature width (3) or a non-existent axis instead of
    the row count (31) against the video's token count (32)."""
    from anchor_ot.families.base import reduce_side_features

    _, reduced = _mixed_reduction()
    with pytest.raises(ValueError) as info:
        reduce_side_features(reduced, torch.zeros(31, 3))
    assert str(info.value) == "side features have 31 rows, the video has 32 tokens"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduce_side_features_keeps_a_half_precision_dtype(dtype):
    """Half-precision side features (Qwen3-VL deepstack levels in bf16): the output has their dtype;
    merged rows are the float32 mean of their members rounded once, copied rows are exact.

    Bug caught: the float32 means not cast back, so ``torch.where`` promotes the whole output
    (copied rows included) to float32 and the language model gets a wrong-dtype embedding."""
    from anchor_ot.families.base import reduce_side_features

    video, reduced = _mixed_reduction()
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(32, 5, generator=g).to(dtype)
    means = torch.stack([feats[reduced.assignment == j].float().mean(0) for j in range(reduced.num_tokens)])
    out = reduce_side_features(reduced, feats)  # every row treated as merged
    assert out.dtype == dtype
    torch.testing.assert_close(out, means.to(dtype), rtol=0, atol=0)
    out = reduce_side_features(reduced, feats, video.tokens)
    copied = torch.tensor([True, False] * 4)
    assert out.dtype == dtype
    assert torch.equal(out[copied], feats[reduced.source_index[copied]])
    torch.testing.assert_close(out[~copied], means[~copied].to(dtype), rtol=0, atol=0)


def test_reduce_side_features_follows_the_features_device():
    """Side features on another device than the reduction (deepstack levels on the GPU, the
    bookkeeping on the CPU): every tensor combined with them is moved to their device. The
    ``meta`` device stands in for the GPU (no data; its ``index_add_``, division and ``torch.where``
    refuse CPU operands as CUDA's do).

    Bugs caught: the assignment, the accumulator, the mass or the selection mask left on the CPU
    (``index_add_`` / division / ``torch.where`` across devices raise)."""
    from anchor_ot.families.base import reduce_side_features

    _, reduced = _mixed_reduction()
    out = reduce_side_features(reduced, torch.zeros(32, 5, dtype=torch.bfloat16, device="meta"))
    assert (out.device.type, tuple(out.shape), out.dtype) == ("meta", (reduced.num_tokens, 5), torch.bfloat16)


def test_qwen25_default_global_layer_is_the_last_of_several_full_attention_blocks():
    """Qwen2.5-VL's real layout (full attention at 7, 15, 23, 31 of 32 blocks) -> 31, and a vision
    config whose class does not define the attribute (a remote-code config; transformers'
    ``Qwen2_5_VLVisionConfig`` always has it) -> the fallback -2 (block 30).

    Bugs caught: the second entry taken for the last (the same with two entries), and a
    ``getattr`` without default (AttributeError on such a config)."""
    vc = Qwen2_5_VLConfig(vision_config=dict(depth=32, fullatt_block_indexes=[7, 15, 23, 31])).vision_config
    fam = families.get("qwen2_5_vl")
    assert fam.score_layers(vc, 32) == {"global": 31, "local": 5}
    bare = transformers.PretrainedConfig()  # a config class that does not define the attribute
    assert not hasattr(bare, "fullatt_block_indexes")
    assert fam.score_layers(bare, 32) == {"global": 30, "local": 5}
