"""``anchor-ot ask``: argument handling, model-loading errors and frame sampling (real PyAV)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from anchor_ot import methods
from anchor_ot.cli import app
from anchor_ot.cli.ask_cmd import load, parse_params, sample_frames
from anchor_ot.methods.base import Reducer, assemble

runner = CliRunner()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A real 10-frame MPEG-4 file; frame i is filled with gray level 20 * i."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            img = np.full((48, 64, 3), 20 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_sample_frames_even_spacing(clip):
    frames, indices, fps = sample_frames(clip, 4)
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
    assert indices == [0, 3, 6, 9]
    assert fps == pytest.approx(5.0)
    # decoded content follows the frame index (lossy codec: within a few gray levels)
    assert np.abs(frames.reshape(4, -1).mean(1) - 20 * np.array(indices)).max() < 6
    all_frames, all_idx, _ = sample_frames(clip, 50)  # more than the video has: every frame once
    assert all_idx == list(range(10)) and all_frames.shape[0] == 10


def test_parse_params():
    assert parse_params(["k=3", "eps=0.1", "flag=true", "mode=fast"]) == {"k": 3, "eps": 0.1, "flag": True,
                                                                           "mode": "fast"}
    with pytest.raises(ValueError, match="key=value"):
        parse_params(["oops"])


@methods.register
@dataclass
class _KeepFirst(Reducer):
    """Keeps the first K tokens (registered for these CLI tests only)."""

    name: ClassVar[str] = "test-cli-keep-first"

    def reduce(self, video, num_kept):
        F, N, d = video.tokens.shape
        idx = torch.arange(num_kept)
        assignment = torch.arange(F * N).clamp(max=num_kept - 1)
        return assemble(video.tokens.reshape(-1, d)[:num_kept], idx, assignment, F, video.grid)


def test_load_unknown_model_offline_raises_clear_error(monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="could not load model .*local Hugging Face cache"):
        load("anchor-ot-tests/no-such-model", "cpu", "auto")


def test_unknown_model_offline_gives_clear_error(clip, monkeypatch):
    pytest.importorskip("transformers")
    name = _KeepFirst.name
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["ask", str(clip), "what happens?", "--model", "anchor-ot-tests/no-such-model",
                                 "--method", name, "--retention", "0.5"])
    assert result.exit_code == 1
    assert "could not load model 'anchor-ot-tests/no-such-model'" in result.output
    assert "HF_HUB_OFFLINE" in result.output


def test_bad_arguments(clip):
    result = runner.invoke(app, ["ask", str(clip), "q", "--model", "x", "--retention", "1.5"])
    assert result.exit_code == 2 and "retention" in result.output
    result = runner.invoke(app, ["ask", str(clip), "q", "--model", "x", "--method", "no-such-method"])
    assert result.exit_code == 2 and "unknown method" in result.output
    result = runner.invoke(app, ["ask", "missing.mp4", "q", "--model", "x", "--retention", "0.5",
                                 "--method", "no-such-method"])
    assert result.exit_code == 2
