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
