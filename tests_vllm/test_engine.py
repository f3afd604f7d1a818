"""The plugin inside a real vLLM engine, for every family: counts, equality, mixed batches, errors."""

from __future__ import annotations

import pytest
from conftest import FAMILIES, FRAMES, IMAGE_MEDIA, PIXELS, PROMPT_MEDIA, chat, close, make_llm

import tiny_models
from anchor_ot import families, methods
from anchor_ot.families import qwen_vl
from anchor_ot.integrations.vllm.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def greedy(n=6):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=n, temperature=0.0)


def llm_grid(family: str, frames: int) -> tuple[int, tuple[int, int]]:
    """(frames the reducer sees, grid) for a tiny video: an oracle independent of the plugin."""
    if family == "llava_onevision":
        side = -(-(PIXELS[family] // 14) // 2)
        return frames, (side, side)
    patch = 16 if family == "qwen3_vl" else 14
    return frames // 2, (PIXELS[family] // patch // 2,) * 2


def video_request(family: str, seed: int, frames: int = FRAMES, text: str = "what is in the video ?"):
    return {"prompt": chat(text, PROMPT_MEDIA[family]),
            "multi_modal_data": {"video": tiny_models.video(frames, PIXELS[family], seed)}}


def image_request(family: str):
    from PIL import Image

    arr, _ = tiny_models.video(1, PIXELS[family], 7)
    return {"prompt": chat("describe the image", IMAGE_MEDIA[family]),
            "multi_modal_data": {"image": Image.fromarray(arr[0])}}


def text_request():
    return {"prompt": chat("who is where and what happens next ?")}


def set_settings(llm, **settings) -> None:
    """Point a running plugin engine at other settings (processor and model read them per video)."""
    value = Settings(**settings).to_dict()
    llm.llm_engine.model_config.hf_config.anchor_ot = value
    llm.apply_model(lambda model: setattr(model.config, "anchor_ot", value))


@pytest.fixture(scope="module", params=FAMILIES)
def engines(request, checkpoints):
    family = request.param
    path = checkpoints[family]
    base = make_llm(path)
    # prefix and processor caches off: the tests swap settings on the same videos
    plugin = make_llm(path, plugin=dict(method="aot", retention=0.25), enable_prefix_caching=False,
                      mm_processor_cache_gb=0)
    yield family, base, plugin
    close(plugin)
    close(base)


def run(llm, requests, n=6):
    return [(len(o.prompt_token_ids), list(o.outputs[0].token_ids)) for o in llm.generate(requests, greedy(n),
                                                                                         use_tqdm=False)]


def one_by_one(llm, requests, n=6):
    # vLLM 0.32's own LLaVA-OneVision fails on two videos of different lengths in one encoder batch
    # (it returns 3-D embeddings on that path); the engine without plugin gets one request at a time
    return [r for req in requests for r in run(llm, [req], n)]


def mixed(family):
    return [video_request(family, 0), video_request(family, 1, frames=8, text="describe the video"),
            image_request(family), text_request()]


def test_retention_one_equals_engine_without_plugin(engines):
    family, base, plugin = engines
    set_settings(plugin, method="aot", retention=1.0)
    assert run(plugin, mixed(family)) == one_by_one(base, mixed(family))


@pytest.mark.parametrize("retention", [0.25, 0.1])
def test_prompt_is_text_plus_num_kept_and_others_untouched(engines, retention):
    family, base, plugin = engines
    set_settings(plugin, method="aot", retention=retention)
    reducer = methods.get("aot", retention=retention)
    full, reduced = one_by_one(base, mixed(family)), run(plugin, mixed(family))
    extra = families.get(family).extra_tokens
    for (n_full, _), (n_red, _), frames in zip(full, reduced, (FRAMES, 8)):
        t, grid = llm_grid(family, frames)
        text = n_full - (t * grid[0] * grid[1] + extra)
        assert n_red == text + reducer.num_kept(t, grid) + extra
    assert reduced[2:] == full[2:]  # the image and the text-only request are not touched


@pytest.mark.parametrize("method", methods.available())
def test_every_method_keeps_its_exact_count(engines, method):
    family, base, plugin = engines
    t, grid = llm_grid(family, FRAMES)
    (n_full, _), = run(base, [video_request(family, 3)], n=1)
    text = n_full - t * grid[0] * grid[1] - families.get(family).extra_tokens
    for retention in (0.5, 0.25):
        set_settings(plugin, method=method, retention=retention)
        reducer = methods.get(method, retention=retention)
        try:
            kept = reducer.num_kept(t, grid)
        except ValueError as exc:  # the method cannot meet this budget on this shape: that request fails alone
            with pytest.raises(ValueError, match=str(exc)[:40].replace("(", r"\(").replace(")", r"\)")):
                run(plugin, [video_request(family, 3)], n=1)
            continue
        (n, tokens), = run(plugin, [video_request(family, 3)], n=2)
        assert n == text + kept + families.get(family).extra_tokens
        assert len(tokens) == 2
    set_settings(plugin, method="aot", retention=0.25)
    assert run(plugin, [text_request()]) == run(base, [text_request()])  # the engine still serves


def test_scores_none_fallback_runs(engines):
    family, base, plugin = engines
    set_settings(plugin, method="aot", retention=0.25, scores="none")
    (n, tokens), = run(plugin, [video_request(family, 0)])
    t, grid = llm_grid(family, FRAMES)
    assert len(tokens) == 6
    set_settings(plugin, method="aot", retention=0.25)
    (n2, tokens2), = run(plugin, [video_request(family, 0)])
    assert n == n2  # same budget with or without attention scores


def test_infeasible_budget_fails_that_request_only(engines):
    family, base, plugin = engines
    # DyCoke without its extension keeps reference frames whole: retention 0.1 is below its floor
    set_settings(plugin, method="dycoke", retention=0.1, params={"extend": False})
    with pytest.raises(ValueError, match="dycoke without the extension"):
        run(plugin, [video_request(family, 0)])
    assert run(plugin, [text_request()]) == run(base, [text_request()])  # text still served meanwhile
    set_settings(plugin, method="aot", retention=0.25)
    (n, tokens), = run(plugin, [video_request(family, 0)])
    assert len(tokens) == 6  # and videos again once the settings are feasible


def test_qwen_grid_oracle_matches_family():
    assert qwen_vl.llm_grid((8, 8, 8), 2) == (8, (4, 4))
