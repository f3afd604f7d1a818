"""engine_args / serve flags / settings: clear errors before any engine starts; register() is idempotent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from anchor_ot.integrations import vllm as aot_vllm
from anchor_ot.integrations.vllm import _compat
from anchor_ot.integrations.vllm.settings import Settings


def test_engine_args_for_each_family(checkpoints):
    for family, path in checkpoints.items():
        args = aot_vllm.engine_args("aot", retention=0.1, model=str(path), windows=(3, 3))
        arch = json.loads((Path(path) / "config.json").read_text())["architectures"][0]
        assert args["hf_overrides"]["architectures"] == [aot_vllm.ARCHITECTURES[arch][0]]
        assert args["hf_overrides"]["anchor_ot"]["params"] == {"windows": (3, 3)}
        assert 0 < args["video_pruning_rate"] < 1


@pytest.mark.parametrize("bad, exc, match", [
    (dict(method="nope", retention=0.1), ValueError, "unknown method 'nope'"),
    (dict(method="aot", retention=0.0), ValueError, r"\(0, 1\]"),
    (dict(method="aot", retention=1.5), ValueError, r"\(0, 1\]"),
    (dict(method="aot", retention=0.1, bogus=3), ValueError, "known parameters"),
    (dict(method="aot", retention=0.1, scores="maybe"), ValueError, "scores"),
])
def test_bad_settings_raise_before_the_engine(bad, exc, match):
    with pytest.raises(exc, match=match):
        aot_vllm.engine_args(**bad)


def test_unsupported_architecture_is_named(tmp_path):
    with pytest.raises(TypeError, match="LlavaForConditionalGeneration is not supported"):
        aot_vllm.hf_overrides("LlavaForConditionalGeneration", "aot", 0.1)


def test_callable_overrides_pick_the_family():
    class Cfg:
        architectures = ["Qwen3VLForConditionalGeneration"]

    cfg = aot_vllm.engine_args("pool", retention=0.5)["hf_overrides"](Cfg())
    assert cfg.architectures == ["AnchorOTQwen3VLForConditionalGeneration"]
    assert Settings.from_config(cfg).method == "pool"


def test_settings_from_config_errors():
    class Empty:
        pass

    with pytest.raises(ValueError, match="engine_args"):
        Settings.from_config(Empty())
    cfg = Empty()
    cfg.anchor_ot = {"method": "aot", "retention": 0.1, "colour": "red"}
    with pytest.raises(ValueError, match="unknown anchor-ot setting"):
        Settings.from_config(cfg)


def test_register_is_idempotent_and_registers_every_architecture():
    from vllm import ModelRegistry

    aot_vllm.register()
    aot_vllm.register()
    supported = ModelRegistry.get_supported_archs()
    assert all(ours in supported for ours, _ in aot_vllm.ARCHITECTURES.values())


def test_untested_vllm_version_fails_clearly(monkeypatch):
    import vllm

    monkeypatch.setattr(vllm, "__version__", "1.0.0")
    monkeypatch.delenv(_compat.ALLOW_ENV, raising=False)
    with pytest.raises(RuntimeError, match="tested with vLLM 0.32.x, found 1.0.0"):
        _compat.check_version()
    monkeypatch.setenv(_compat.ALLOW_ENV, "1")
    _compat.check_version()  # only a warning


def test_vllm_args_cli_prints_serve_flags(checkpoints):
    out = subprocess.run([str(Path(sys.executable).parent / "anchor-ot"), "vllm-args", str(checkpoints["qwen3_vl"]),
                          "--method", "aot", "--retention", "0.25", "--param", "scores=none"],
                         check=True, capture_output=True, text=True).stdout
    assert "--hf-overrides" in out and "AnchorOTQwen3VLForConditionalGeneration" in out
    assert '"scores":"none"' in out and "--video-pruning-rate 0.75" in out


def test_importing_the_integration_does_not_import_vllm():
    code = "import sys, anchor_ot.integrations.vllm; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"


def test_short_alias():
    import anchor_ot.vllm

    assert anchor_ot.vllm.engine_args is aot_vllm.engine_args
