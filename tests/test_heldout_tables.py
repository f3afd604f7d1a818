"""benchmarks/heldout_tables.py: seed noise, margins and verdict against numbers worked out by hand."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("heldout_tables", ROOT / "benchmarks" / "heldout_tables.py")
ht = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ht)

FIELDS = ["video", "method", "retention", "reconstruction", "coverage", "readout", "readout_cls", "temporal",
          "reduce_ms", "tokens_kept", "tokens_in", "error"]


def write(folder: Path, rows: list[tuple]) -> Path:
    """rows: (video, method, retention, coverage, readout, temporal)."""
    folder.mkdir()
    with open(folder / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        w.writeheader()
        for v, m, r, cov, read, temp in rows:
            w.writerow({"video": v, "method": m, "retention": r, "reconstruction": 0.5, "coverage": cov,
                        "readout": read, "readout_cls": 0.9, "temporal": temp, "reduce_ms": 1.0,
                        "tokens_kept": 10, "tokens_in": 100, "error": ""})
    return folder


def build(tmp_path: Path, aot_cov: float = 0.965):
    # two clips, one retention (0.1). Random's clip means over the seeds: coverage 0.90, 0.91, 0.92
    # -> mean 0.91, sample sd 0.01; readout 0.80, 0.80, 0.83 -> mean 0.81, sd sqrt(0.0003).
    final = write(tmp_path / "final", [
        ("a", "random", 0.1, 0.89, 0.79, 0.2), ("b", "random", 0.1, 0.91, 0.81, 0.4),
        ("a", "aot+", 0.1, aot_cov, 0.92, 0.5), ("b", "aot+", 0.1, aot_cov, 0.92, 0.5),
        ("a", "prunevid", 0.1, 0.93, 0.85, 0.1), ("b", "prunevid", 0.1, 0.93, 0.85, 0.1),
        ("a", "divprune", 0.1, 0.92, 0.86, 0.1), ("b", "divprune", 0.1, 0.92, 0.86, 0.1),
    ])
    s1 = write(tmp_path / "s1", [("a", "random", 0.1, 0.90, 0.80, 0.3), ("b", "random", 0.1, 0.92, 0.80, 0.3)])
    s2 = write(tmp_path / "s2", [("a", "random", 0.1, 0.91, 0.82, 0.4), ("b", "random", 0.1, 0.93, 0.84, 0.4)])
    return final, [s1, s2]


def test_margins_and_verdict_match_hand_computation(tmp_path):
    final, seeds = build(tmp_path)
    text = ht.tables(ht.read(final), [ht.read(s) for s in seeds])
    # coverage: (0.965 - 0.91) / 0.01 = +5.5 over random, (0.965 - 0.93) / 0.01 = +3.5 over prunevid
    assert "| aot+ vs random (sd) | +5.5 |" in text
    assert "| aot+ vs best peer (sd) | +3.5 (prunevid) |" in text
    assert "| random, seed sd | 0.01000 |" in text
    # readout: sd = sqrt(((0.80-0.81)^2 * 2 + 0.02^2) / 2) = 0.017321; best peer divprune 0.86
    assert "| random, seed sd | 0.01732 |" in text
    assert f"| aot+ vs random (sd) | {(0.92 - 0.81) / 0.0173205:+.1f} |" in text
    assert f"| aot+ vs best peer (sd) | {(0.92 - 0.86) / 0.0173205:+.1f} (divprune) |" in text
    assert "- coverage at 0.1: aot+ 0.9650, random 0.9100 (sd 0.01000) -> +5.5 sd; best peer prunevid 0.9300 " \
           "-> +3.5 sd: MET" in text
    # temporal: seed means 0.3, 0.3, 0.4 -> mean 0.333, sd 0.0577; aot+ 0.5 -> +2.9 sd, not below random
    assert "- temporal at 0.1: aot+ 0.500, random 0.333 (sd 0.058) -> +2.9 sd: MET" in text
    assert "Goal on these clips: MET." in text


def test_verdict_fails_when_the_peer_margin_is_short(tmp_path):
    final, seeds = build(tmp_path, aot_cov=0.955)  # +2.5 sd over prunevid
    text = ht.tables(ht.read(final), [ht.read(s) for s in seeds])
    assert "best peer prunevid 0.9300 -> +2.5 sd: NOT MET" in text
    assert "Goal on these clips: NOT MET." in text


def test_override_replaces_rows_and_rejects_unknown_ones(tmp_path):
    final, _ = build(tmp_path)
    new = write(tmp_path / "new", [("a", "aot+", 0.1, 0.5, 0.5, 0.5)])
    rows = ht.merge(ht.read(final), [ht.read(new)])
    assert [r["coverage"] for r in rows if r["method"] == "aot+"] == [0.5, 0.965]
    bad = write(tmp_path / "bad", [("c", "aot+", 0.1, 0.5, 0.5, 0.5)])
    with pytest.raises(ValueError, match="no counterpart"):
        ht.merge(ht.read(final), [ht.read(bad)])
