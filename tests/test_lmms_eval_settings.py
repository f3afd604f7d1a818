"""The lmms-eval plugin's ``model_args`` parsing (pure Python: runs without lmms-eval installed).

The plugin's end-to-end tests live in ``tests_lmms_eval/`` and need their own environment
(``scripts/envs/lmms_eval.sh``); this file checks in the main run that bad ``model_args`` give one
clear error naming the model id, and that everything not ours reaches the wrapper untouched.
"""

from __future__ import annotations

import pytest

from anchor_ot import methods
from anchor_ot.integrations.lmms_eval import MODEL_IDS
from anchor_ot.integrations.lmms_eval.reduction import parse_settings

MID = "anchor_ot_qwen2_5_vl"


def test_settings_and_wrapper_args_are_split():
    # values as lmms-eval's simple_parse_args_string produces them (int/float/bool/str)
    kwargs = {"pretrained": "/ckpt", "max_num_frames": 32, "batch_size": 2, "device": "cpu", "method": "aot:hard",
              "retention": 0.25, "param.clip_length": 8, "scores": "none", "global_layer": -2,
              "anchor_ot_log": "/tmp/x.jsonl"}
    settings, rest = parse_settings(MID, kwargs)
    assert rest == {"pretrained": "/ckpt", "max_num_frames": 32, "batch_size": 2, "device": "cpu"}
    assert settings.method == "aot:hard" and settings.retention == 0.25 and settings.params == {"clip_length": 8}
    assert settings.scores == "none" and settings.global_layer == -2 and settings.local_layer is None
    assert str(settings.log_path) == "/tmp/x.jsonl"
    expected = methods.get("aot:hard", retention=0.25, clip_length=8)
    assert settings.reducer == expected
    assert settings.reducer.num_kept(32, (14, 14)) == expected.num_kept(32, (14, 14))


def test_retention_one_is_accepted_as_int():
    settings, _ = parse_settings(MID, {"retention": 1})  # lmms-eval parses "1" as int
    assert settings.retention == 1.0 and settings.method == "aot"


@pytest.mark.parametrize("kwargs, error, match", [
    ({}, ValueError, "needs retention="),
    ({"retention": 0}, ValueError, "fraction of tokens kept"),
    ({"retention": 1.5}, ValueError, r"in \(0, 1\]"),
    ({"retention": "abc"}, TypeError, "retention must be a number"),
    ({"retention": 0.1, "method": "nope"}, ValueError, "unknown method 'nope'"),
    ({"retention": 0.1, "method": "aot:nope"}, ValueError, "no variant 'nope'"),
    ({"retention": 0.1, "param.no_such_knob": 3}, ValueError, "no_such_knob"),
    ({"retention": 0.1, "param.": 3}, ValueError, "empty method parameter name"),
    ({"retention": 0.1, "scores": "cls"}, ValueError, "scores must be one of"),
    ({"retention": 0.1, "local_layer": "five"}, TypeError, "local_layer must be an int"),
])
def test_bad_model_args_name_the_model_and_the_fix(kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        parse_settings(MID, kwargs)
    assert MID in str(info.value)


def test_every_model_id_points_into_the_integration_package():
    assert set(MODEL_IDS) == {"anchor_ot_llava_onevision", "anchor_ot_qwen2_5_vl", "anchor_ot_qwen3_vl"}
    for simple, chat in MODEL_IDS.values():
        for path in filter(None, (simple, chat)):
            assert path.startswith("anchor_ot.integrations.lmms_eval.")
