"""``anchor-ot ask``: argument handling and model-loading errors (frames come from anchor_ot.video)."""

from __future__ import annotations

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from anchor_ot.cli import app
from anchor_ot.cli.ask_cmd import load, parse_params

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


def test_parse_params():
    assert parse_params(["k=3", "eps=0.1", "flag=true", "mode=fast"]) == {"k": 3, "eps": 0.1, "flag": True,
                                                                           "mode": "fast"}
    with pytest.raises(ValueError, match="key=value"):
        parse_params(["oops"])


def test_load_unknown_model_offline_raises_clear_error(monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="could not load model .*local Hugging Face cache"):
        load("anchor-ot-tests/no-such-model", "cpu", "auto")


def test_unknown_model_offline_gives_clear_error(clip, monkeypatch):
    pytest.importorskip("transformers")
    name = "aot"
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
