"""anchor-ot bench on a real clip: real decoding, real DINOv2 encoder, real methods and metrics.

One clip (carphone_pristine.mp4, 176x144), 4 frames at 224 px (8 x 8 = 64 tokens per
frame after pooling): the encoder runs once for the whole module (~10 s here), every
later run must read the token cache.
"""

import csv
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from anchor_ot import bench, methods
from anchor_ot.cli import app
from anchor_ot.video import sample_video

METHODS = ["random", "pool", "visionzip"]
RETENTIONS = [0.25, 0.01]  # visionzip needs K >= F: at 0.01 (K = 3 < 4 frames) it must fail, recorded
SETTINGS = dict(frames=4, image_size=224, repeats=2)


@pytest.fixture(scope="module")
def clip_path():
    return sample_video("carphone_pristine.mp4")


@pytest.fixture(scope="module")
def first_run(clip_path, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("out")
    result = bench.run_benchmark([clip_path], ",".join(METHODS), RETENTIONS, cache=cache, progress=False,
                                 **SETTINGS)
    files = bench.write_results(result, out)
    return result, files, cache, out


def _read_csv(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_between_frames_are_midpoints_with_positions():
    idx, pos = bench.between_frames(np.array([15, 45, 75, 105]))
    assert idx.tolist() == [30, 60, 90]
    assert pos.tolist() == [0.5, 1.5, 2.5]
    idx, pos = bench.between_frames(np.array([0, 1, 5, 8]))  # 0 -> 1 has no frame between
    assert idx.tolist() == [3, 6]
    assert pos == pytest.approx([1.5, 2 + 1 / 3])
    idx, pos = bench.between_frames(np.arange(0, 100, 10), limit=3)
    assert idx.tolist() == [5, 45, 85]


def test_library_run_rows_values_and_files(first_run, clip_path):
    result, files, cache, out = first_run
    assert [c.from_cache for c in result.clips] == [False]  # the encoder ran once
    clip = result.clips[0]
    F, grid = 4, (8, 8)
    assert clip.tokens.num_frames == F and tuple(clip.tokens.grid) == grid
    assert clip.between_tokens.shape == (3, 64, 384)  # midpoints of frames 15, 45, 75, 105
    assert clip.between_positions.tolist() == [0.5, 1.5, 2.5]

    for name in ("results.csv", "results.md", "summary.csv", "settings.json", *(f"{m}.png" for m in bench.METRICS),
                 "reduce_ms.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        assert files[name] == out / name
    header, rows = _read_csv(out / "results.csv")
    assert header == list(bench.COLUMNS)
    assert header[:3] == ["video", "method", "retention"] and "reduce_ms" in header
    assert [(r["video"], r["method"], float(r["retention"])) for r in rows] == [
        (clip_path.name, m, r) for m in METHODS for r in RETENTIONS]
    for r in rows:
        ret = float(r["retention"])
        if r["method"] == "visionzip" and ret == 0.01:
            assert "needs K >= F" in r["error"] and r["error"].startswith("ValueError")
            assert all(r[m] == "" for m in bench.METRICS) and r["reduce_ms"] == ""
            continue
        assert r["error"] == ""
        assert int(r["tokens_kept"]) == methods.get(r["method"], retention=ret).num_kept(F, grid)
        assert int(r["tokens_in"]) == F * 64
        for m in ("reconstruction", "coverage", "readout", "readout_cls"):
            assert -1.0 <= float(r[m]) <= 1.0 + 1e-6, (r["method"], m)
        t3 = 3 * float(r["temporal"])  # hit rate over B = 3 between-frames: a multiple of 1/3
        assert 0 <= t3 <= 3 and math.isclose(t3, round(t3), abs_tol=1e-9)
        assert float(r["reduce_ms"]) > 0
    # fewer tokens kept -> lower coverage for selection baselines
    cov = {(r["method"], float(r["retention"])): float(r["coverage"]) for r in rows if not r["error"]}
    assert cov[("random", 0.01)] < cov[("random", 0.25)]
    assert cov[("pool", 0.01)] < cov[("pool", 0.25)]

    sheader, summary = _read_csv(out / "summary.csv")
    assert [(s["method"], float(s["retention"])) for s in summary] == [(m, r) for m in METHODS for r in RETENTIONS]
    by_key = {(r["method"], r["retention"]): r for r in rows}
    for s in summary:  # one video: the mean over videos is the row itself
        row = by_key[(s["method"], s["retention"])]
        if row["error"]:
            assert s["videos"] == "0" and s["errors"] == "1" and s["readout"] == ""
        else:
            assert s["videos"] == "1" and float(s["readout"]) == pytest.approx(float(row["readout"]))
    md = (out / "results.md").read_text()
    assert md.count("| visionzip | 0.01 |") == 2 and "needs K >= F" in md


def test_cli_reads_cache_and_reproduces_metrics(first_run, clip_path, tmp_path):
    result, _, cache, _ = first_run
    cache_file = result.clips[0].cache_file
    assert cache_file.parent == cache and cache_file.is_file()
    mtime = cache_file.stat().st_mtime_ns
    out = tmp_path / "cli"
    # the space-separated form: --retention 0.25 0.01 (0.01 lands among VIDEOS, read back as a ratio)
    res = CliRunner().invoke(app, ["bench", str(clip_path), "--methods", ",".join(METHODS), "--retention", "0.25",
                                   "0.01", "--frames", "4", "--image-size", "224", "--repeats", "2", "--cache",
                                   str(cache), "--out", str(out), "--no-progress", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert f"{clip_path.name} (cache)" in res.output and "1 failed" in res.output
    assert cache_file.stat().st_mtime_ns == mtime  # not re-encoded, not rewritten
    assert sorted(p.name for p in cache.iterdir()) == [cache_file.name]
    assert not list(out.glob("*.png"))
    _, rows = _read_csv(out / "results.csv")
    lib_rows = {(r["method"], r["retention"]): r for r in result.rows}
    assert len(rows) == len(lib_rows) == 6
    for r in rows:  # same cached tokens, same seed -> identical metrics (timings aside)
        ref = lib_rows[(r["method"], float(r["retention"]))]
        for m in bench.METRICS:
            if ref["error"]:
                assert r[m] == ""
            else:
                assert float(r[m]) == pytest.approx(ref[m], abs=1e-6), (r["method"], m)


@pytest.mark.parametrize("form", [["--retention", "0.25,0.01"], ["--retention", "0.25 0.01"],
                                  ["--retention", "0.25", "--retention", "0.01"]])
def test_cli_retention_forms(first_run, clip_path, tmp_path, form):
    _, _, cache, _ = first_run
    res = CliRunner().invoke(app, ["bench", str(clip_path), "--methods", "pool", *form, "--frames", "4",
                                   "--image-size", "224", "--repeats", "1", "--cache", str(cache),
                                   "--out", str(tmp_path), "--no-progress", "--no-plots"])
    assert res.exit_code == 0, res.output
    _, rows = _read_csv(tmp_path / "results.csv")
    assert [float(r["retention"]) for r in rows] == [0.25, 0.01]


def test_resolve_methods_all_and_lists():
    names = bench.resolve_methods("all")
    assert names[:len(methods.available())] == methods.available()
    assert names[len(methods.available()):] == list(bench.AOT_OPTION_VARIANTS)
    assert {"aot:hard", "aot:cosine-ranking", "aot:hard-cosine", "aot:ot-mass", "aot:no-merging",
            "aot:random-anchors"} <= set(names)
    assert bench.resolve_methods("aot, random,aot") == ["aot", "random"]
    assert bench.resolve_methods(["pool", "aot:hard"]) == ["pool", "aot:hard"]


def test_bad_inputs_library(clip_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bench.run_benchmark([tmp_path / "missing.mp4"], "pool", [0.1], cache=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown method 'nope'.*available: .*aot"):
        bench.run_benchmark([clip_path], "pool,nope", [0.1], cache=tmp_path, progress=False)
    with pytest.raises(ValueError, match="no variant 'nope'"):
        bench.resolve_methods("aot:nope")
    with pytest.raises(ValueError, match=r"retention .* must be in \(0, 1\]"):
        bench.run_benchmark([clip_path], "pool", [0.25, 0.0], cache=tmp_path, progress=False)
    with pytest.raises(ValueError, match="no method given"):
        bench.resolve_methods(" , ")
    with pytest.raises(ValueError, match="frames"):
        bench.run_benchmark([clip_path], "pool", [0.1], frames=0, cache=tmp_path, progress=False)
    assert not list(tmp_path.glob("*.safetensors"))  # every check happens before encoding


@pytest.mark.parametrize("args, message", [
    (["MISSING", "--methods", "pool"], "does not exist"),
    (["CLIP", "--methods", "pool,nope"], "unknown method 'nope'"),
    (["CLIP", "--methods", "pool", "--retention", "0"], "must be in (0,"),
    (["CLIP", "--methods", "pool", "--retention", "abc"], "retention must be a number"),
    (["0.1", "--methods", "pool"], "--retention 0.1"),
])
def test_bad_inputs_cli(clip_path, tmp_path, args, message):
    args = [str(tmp_path / "missing.mp4") if a == "MISSING" else str(clip_path) if a == "CLIP" else a for a in args]
    res = CliRunner().invoke(app, ["bench", *args, "--cache", str(tmp_path), "--out", str(tmp_path / "o"),
                                   "--no-progress"])
    assert res.exit_code == 2, res.output
    flat = " ".join(res.output.replace("│", " ").split())  # typer's error box wraps lines
    assert message in flat, res.output
    assert not (tmp_path / "o").exists()


def test_token_cache_roundtrip_key_and_partial_file(tmp_path):
    """write_cache/read_cache: values and metadata round-trip exactly; another key, a truncated
    file or a missing one read as None (encode again); no temporary file is left behind."""
    file = tmp_path / "sub" / "clip-abc.safetensors"
    tensors = {"tokens": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4).transpose(1, 2),
               "frame_indices": torch.tensor([0, 7], dtype=torch.int64)}
    bench.write_cache(file, tensors, {"key": "abc", "grid": "[3, 1]"})
    assert sorted(p.name for p in file.parent.iterdir()) == [file.name]
    got, meta = bench.read_cache(file, "abc")
    assert meta["grid"] == "[3, 1]" and set(got) == set(tensors)
    for k, x in tensors.items():
        assert got[k].dtype == x.dtype and torch.equal(got[k], x)
    assert bench.read_cache(file, "other") is None
    assert bench.read_cache(tmp_path / "missing.safetensors", "abc") is None
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    assert bench.read_cache(file, "abc") is None
