"""FLOPs counts: the AOT paper's Table 1, hand-checked exact counts, and the CLI."""

import json
import math

import pytest
from typer.testing import CliRunner

from anchor_ot import flops
from anchor_ot.cli import app

OV7 = flops.get_model("llava-onevision-7b")

# AOT paper (arXiv 2603.01400) Table 1, LLaVA-OV-7B, 32 frames: prefill TFLOPs by retention.
TABLE1 = {1.0: 40.8, 0.25: 8.7, 0.20: 7.0, 0.15: 5.2, 0.10: 3.4}


@pytest.mark.parametrize("budget", ["total", "per-frame"])
@pytest.mark.parametrize("retention,paper", sorted(TABLE1.items()))
def test_paper_formula_reproduces_table1_within_2_percent(retention, paper, budget):
    n = flops.visual_tokens(OV7, 32, retention, budget)
    got = flops.prefill_flops(OV7, n, formula="paper") / 1e12
    assert abs(got - paper) / paper < 0.02, (retention, budget, n, got)


def test_per_frame_budget_matches_table1_tokens_and_rounding():
    # ceil(r * 196) per frame: 49 / 40 / 30 / 20 tokens; every value rounds to the table's.
    assert [flops.visual_tokens(OV7, 32, r, "per-frame") // 32 for r in (0.25, 0.2, 0.15, 0.1)] == [49, 40, 30, 20]
    for r, paper in TABLE1.items():
        got = flops.prefill_flops(OV7, flops.visual_tokens(OV7, 32, r, "per-frame"), formula="paper") / 1e12
        assert round(got, 1) == paper


def test_paper_formula_llava_video_table2_full_tokens():
    # Table 2: LLaVA-Video-7B, 64 frames x 169 tokens = 80.2 TFLOPs.
    lv = flops.get_model("llava-video-7b")
    got = flops.prefill_flops(lv, lv.full_tokens(64), formula="paper") / 1e12
    assert round(got, 1) == 80.2


def test_paper_formula_by_hand():
    # T=28, d=3584, m=18944, n=10: T*(4nd^2 + 2n^2d + 2ndm)
    n, d, m = 10, 3584, 18944
    assert flops.prefill_flops(OV7, n, formula="paper") == 28 * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)
    R = 7
    expected = 28 * R * ((4 * d * d + 2 * d * m) + 2 * (d * n + d * (R + 1) / 2))
    assert flops.decode_flops(OV7, n, R, formula="paper") == pytest.approx(expected, rel=1e-15)


def _tiny(**kw):
    base = dict(name="tiny", layers=2, hidden=8, ffn=16, heads=4, kv_heads=2, head_dim=2, vocab=10, group_tokens=4)
    base.update(kw)
    return flops.ModelSpec(**base)


def test_exact_prefill_by_hand():
    s = _tiny()
    n = 3
    # per layer: Q,O: 2*n*8*8 each; K,V: 2*n*8*4 each; SwiGLU 3*2*n*8*16;
    # causal pairs 6: QK^T and AV 2*(4*2)*6 each; lm_head 2*8*10 once.
    per_layer = 2 * (2 * n * 8 * 8) + 2 * (2 * n * 8 * 4) + 3 * 2 * n * 8 * 16 + 2 * (2 * 8 * 6)
    assert flops.prefill_flops(s, n, formula="exact") == 2 * per_layer + 2 * 8 * 10
    full_square = per_layer - 2 * (2 * 8 * 6) + 2 * (2 * 8 * 9)
    assert flops.prefill_flops(s, n, formula="exact", causal=False) == 2 * full_square + 2 * 8 * 10


def test_exact_decode_by_hand_and_text_tokens_count():
    s = _tiny()
    n, R = 3, 2
    linear = 2 * 8 * 8 * 2 + 2 * 8 * 4 * 2 + 3 * 2 * 8 * 16
    attn = 2 * 2 * 8 * ((n + 1) + (n + 2))  # contexts n+1, n+2
    expected = 2 * (R * linear + attn) + R * 2 * 8 * 10
    assert flops.decode_flops(s, n, R, formula="exact") == expected
    # text tokens are part of the sequence: (2 visual + 1 text) == 3 visual
    assert flops.decode_flops(s, 2, R, text_tokens=1, formula="exact") == expected
    assert flops.prefill_flops(s, 2, text_tokens=1, formula="exact") == flops.prefill_flops(s, 3, formula="exact")
    assert flops.decode_flops(s, n, 0, formula="exact") == 0.0


def test_exact_exceeds_paper_and_gqa_matters():
    n = OV7.full_tokens(32)
    exact = flops.prefill_flops(OV7, n, formula="exact")
    paper = flops.prefill_flops(OV7, n, formula="paper")
    assert 2.0 < exact / paper < 2.5
    mha = flops.ModelSpec(**{**OV7.__dict__, "kv_heads": OV7.heads})
    assert flops.prefill_flops(mha, n, formula="exact") > exact


def test_token_counts_and_frame_size():
    q = flops.get_model("qwen2.5-vl-7b")
    assert q.full_tokens(32) == 16 * 256 and q.tokens_per_frame == 128
    assert q.full_tokens(31) == 16 * 256  # odd count padded to a whole 2-frame group
    assert q.with_frame_size(360, 640).group_tokens == 13 * 23
    assert flops.get_model("qwen3-vl-8b").with_frame_size(448, 448).group_tokens == 14 * 14
    with pytest.raises(ValueError, match="fixed"):
        OV7.with_frame_size(384, 384)
    assert flops.visual_tokens(OV7, 32, 0.1) == round(0.1 * 6272)
    assert flops.visual_tokens(OV7, 1, 1e-6) == 1


def test_bad_input_raises():
    with pytest.raises(ValueError, match="known models"):
        flops.get_model("llava-13b")
    with pytest.raises(ValueError, match="formula"):
        flops.prefill_flops(OV7, 10, formula="approx")
    with pytest.raises(ValueError):
        flops.visual_tokens(OV7, 32, 0.0)
    with pytest.raises(ValueError):
        flops.prefill_flops(OV7, 0)
    with pytest.raises(TypeError):
        flops.prefill_flops(OV7, 10.5)


runner = CliRunner()


def test_cli_json_fields_and_values():
    res = runner.invoke(app, ["flops", "--model", "llava-onevision-7b", "--frames", "32", "--retention", "0.1",
                              "--formula", "paper", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for key in ("prefill_tflops", "decode_tflops", "visual_tokens", "formula", "model", "full_prefill_tflops",
                "prefill_ratio"):
        assert key in out
    assert out["visual_tokens"] == 627 and out["formula"] == "paper" and out["model"] == "llava-onevision-7b"
    assert abs(out["prefill_tflops"] - 3.4) / 3.4 < 0.02
    assert out["full_prefill_tflops"] == pytest.approx(40.77, abs=0.01)
    assert math.isclose(out["prefill_ratio"], out["prefill_tflops"] / out["full_prefill_tflops"])


def test_cli_text_and_generated_tokens():
    res = runner.invoke(app, ["flops", "--model", "qwen3-vl-2b", "--text-tokens", "40", "--generated-tokens", "0",
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    spec = flops.get_model("qwen3-vl-2b")
    assert out["decode_tflops"] == 0.0
    assert out["prefill_tflops"] * 1e12 == pytest.approx(flops.prefill_flops(spec, 3136, 40, "exact"))


def test_cli_plain_text_and_unknown_model():
    res = runner.invoke(app, ["flops", "--retention", "0.25"])
    assert res.exit_code == 0 and "1568 of 6272" in res.output
    res = runner.invoke(app, ["flops", "--model", "gpt-5"])
    assert res.exit_code != 0
    assert "llava-onevision-7b" in res.output and "qwen3-vl-8b" in res.output
