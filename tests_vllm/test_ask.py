"""`anchor-ot ask` end to end on tiny checkpoints: real file, real decoder, real processor, real model."""

from __future__ import annotations

import re

import pytest
from conftest import PIXELS
from test_server import mp4

import tiny_models
from anchor_ot import families, methods

FRAMES = 8


@pytest.mark.parametrize("family", ["llava_onevision", "qwen3_vl", "qwen2_5_vl"])
def test_ask_through_the_real_processor(checkpoints, tmp_path, family):
    from typer.testing import CliRunner

    from anchor_ot.cli import app

    frames, _ = tiny_models.video(FRAMES, PIXELS[family], 0)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(mp4(frames))
    result = CliRunner().invoke(app, ["ask", str(clip), "what is in the video ?", "--model", str(checkpoints[family]),
                                      "--method", "aot", "--retention", "0.25", "--frames", str(FRAMES),
                                      "--max-new-tokens", "3", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    before, after = map(int, re.search(r"video tokens: (\d+) -> (\d+)", result.output).groups())
    extra = families.get(family).extra_tokens
    if family == "llava_onevision":
        t, grid = FRAMES, (4, 4)
    else:
        t, grid = FRAMES // 2, (PIXELS[family] // (16 if family == "qwen3_vl" else 14) // 2,) * 2
    assert before == t * grid[0] * grid[1] + extra
    assert after == methods.get("aot", retention=0.25).num_kept(t, grid) + extra
    assert "answer:" in result.output
