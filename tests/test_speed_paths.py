"""The fast paths of issue 12 agree with the plain forms they replace.

Each speed-up has a second code path (the form it replaced, kept where autograd or a
direct call needs it); these tests compare the two on the same input, and against
independent textbook oracles, so a divergence fails here rather than only in a
benchmark. No timing assertions.
"""

from __future__ import annotations

import math

import pytest
import torch

from anchor_ot import methods
from anchor_ot.adapters import llava_onevision
from anchor_ot.adapters.base import ScoreHooks, received_attention
from anchor_ot.methods.aot import _clip_runs, _anchor_cos
from anchor_ot.ot import cosine_cost, sinkhorn
from anchor_ot.types import VideoTokens


def structured_video(F=9, grid=(8, 12), d=40, seed=0, requires_grad=False) -> VideoTokens:
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    t = torch.linspace(0, 1, F)[:, None, None]
    fields = [torch.sin(2 * math.pi * (a * yy + b * xx + c * t) + p)
              for a, b, c, p in torch.rand(6, 4, generator=g).mul(torch.tensor([3.0, 3.0, 2.0, 6.28])).tolist()]
    basis = torch.stack(fields, -1).reshape(F, h * w, -1)
    x = basis @ torch.randn(6, d, generator=g) + 0.3 * torch.randn(F, h * w, d, generator=g)
    return VideoTokens(x.requires_grad_(requires_grad), grid,
                       global_scores=torch.rand(F, h * w, generator=g) + 1e-3,
                       local_scores=torch.rand(F, h * w, generator=g) + 1e-3)


def test_clip_runs_cover_every_later_frame_once():
    clips = [(0, 4), (4, 8), (8, 9), (9, 11), (11, 13), (13, 16), (16, 17)]
    runs = _clip_runs(clips)
    assert runs == [(0, 2, 4), (9, 2, 2), (13, 1, 3)]
    later = [f for s0, nr, ln in runs for c in range(nr) for f in range(s0 + c * ln + 1, s0 + (c + 1) * ln)]
    assert later == [f for s, e in clips for f in range(s + 1, e)]


@pytest.mark.parametrize("name", ["aot", "aot:hard", "aot:ot-mass", "aot:cosine-merging", "aot-dyn"])
@pytest.mark.parametrize("clip_length", [4, 3])
def test_aot_in_place_path_equals_autograd_path(name, clip_length):
    """Without autograd AOT updates its anchors in place (baddbmm_ into the anchor copy, merged
    clip anchors written into a view); with tokens that require grad it takes out-of-place ops.
    Both must give the same output (float order is the same; tolerance for safety)."""
    params = {} if name == "aot-dyn" else {"clip_length": clip_length}
    red = methods.get(name, retention=0.1, **params)
    plain = red(structured_video(F=11))
    graph = red(structured_video(F=11, requires_grad=True))
    assert torch.equal(plain.source_index, graph.source_index)
    assert torch.equal(plain.assignment, graph.assignment)
    torch.testing.assert_close(plain.tokens, graph.tokens.detach(), rtol=1e-6, atol=1e-6)



@pytest.mark.parametrize("retention,clip_length", [(0.1, 4), (0.05, 3), (0.5, 4), (0.02, 2)])
def test_aot_rows_come_in_raster_order_so_assemble_may_skip_its_check(retention, clip_length):
    """AOT passes ``ordered=True`` to ``assemble`` (no order check, no sort): its kept slots must
    then already be in strictly increasing source order, and the result must equal the one
    ``assemble`` builds when it checks and sorts (also where anchors per frame are adjusted)."""
    from anchor_ot.methods.base import assemble

    video = structured_video(F=10)
    red = methods.get("aot", retention=retention, clip_length=clip_length)(video)
    assert bool((red.source_index[1:] > red.source_index[:-1]).all())
    # shuffled rows through the checking path give the same video back
    perm = torch.randperm(red.tokens.shape[0], generator=torch.Generator().manual_seed(0))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    again = assemble(red.tokens[perm], red.source_index[perm], inv[red.assignment], 10, video.grid)
    assert torch.equal(again.tokens, red.tokens)
    assert torch.equal(again.source_index, red.source_index)
    assert torch.equal(again.assignment, red.assignment)
    assert torch.equal(again.mass, red.mass)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_anchor_gather_from_chunks_equals_gather_then_convert(dtype):
    """AOT gathers its anchors, token norms and anchors x tokens products from each frame chunk
    while it is in cache (fp16/bf16: after the chunk's conversion to fp32; fp32: in place, the
    1-thread CPU path). It must give exactly the anchors, products and norms of the plain form
    (convert the whole video, gather, one bmm, one norm); 7 frames of 64 x 6000 make chunks
    of 2 (1 thread) or 5 (2 threads) frames, the last one partial."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(7, 64, 6000, generator=g).to(dtype)
    idx = torch.sort(torch.rand(7, 64, generator=g).argsort(1)[:, :9], 1).values
    flat = (torch.arange(7)[:, None] * 64 + idx).reshape(-1)
    Xa_ref = X.reshape(-1, 6000).index_select(0, flat).reshape(7, 9, 6000).to(torch.float32)
    Xf = X.to(torch.float32)
    cos_ref, norms_ref = torch.bmm(Xa_ref, Xf.transpose(1, 2)), torch.linalg.vector_norm(Xf, dim=-1)
    Xa, cos, norms = _anchor_cos(X, idx, torch.float32)
    assert torch.equal(Xa, Xa_ref)
    assert torch.equal(cos, cos_ref)
    assert torch.equal(norms, norms_ref)
    # and the products are the textbook ones (fp64 oracle)
    torch.testing.assert_close(cos.double(), Xa_ref.double() @ X.double().transpose(1, 2), rtol=1e-5, atol=1e-3)

def textbook_sinkhorn(C, eps, iters):
    """Plain scaling iterations on the min-shifted cost (uniform marginals), a fixed count."""
    B, m, n = C.shape
    K = torch.exp(-(C - C.amin(dim=(1, 2), keepdim=True)) / eps).double()
    a, b = torch.full((B, m), 1 / m, dtype=torch.float64), torch.full((B, n), 1 / n, dtype=torch.float64)
    v = torch.ones(B, n, dtype=torch.float64)
    for _ in range(iters):
        u = a / (K * v[:, None, :]).sum(-1)
        v = b / (K * u[:, :, None]).sum(-2)
    return u[:, :, None] * K * v[:, None, :]


@pytest.mark.parametrize("eps", [0.1, 0.03])
def test_sinkhorn_row_vector_products_match_textbook_iterations(eps):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 40, 16, generator=g)
    x[:, 20:] += 2 * x[:, :1]  # two groups: a cost with structure, tens of iterations
    C = cosine_cost(x[:, :12], x[:, 12:])
    res = sinkhorn(C, eps=eps, max_iter=500, tol=1e-5)
    assert res.method == "scaling" and res.n_iter > 3
    ref = textbook_sinkhorn(C, eps, res.n_iter)
    torch.testing.assert_close(res.plan.double(), ref, rtol=1e-4, atol=1e-9)


def naive_received(q, k, scale):
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1).mean(dim=(1, 2))


def test_received_attention_matches_softmax_mean():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 3, 50, 8, generator=g), torch.randn(5, 3, 50, 8, generator=g)
    got = received_attention(q, k, 8 ** -0.5)
    torch.testing.assert_close(got, naive_received(q, k, 8 ** -0.5), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got.sum(-1), torch.ones(5))


def test_siglip_hook_reuses_the_layers_projections():
    """The score hook reads q and k from the layer's own projections (no recompute) and gets the
    same scores as recomputing them; the captured tensors are dropped after each call."""
    from transformers import SiglipVisionConfig
    from transformers.models.siglip.modeling_siglip import SiglipAttention

    torch.manual_seed(0)
    cfg = SiglipVisionConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64)
    cfg._attn_implementation = "sdpa"
    attn = SiglipAttention(cfg).eval()
    x = torch.randn(3, 20, 32)
    calls = []
    orig = attn.q_proj.forward
    attn.q_proj.forward = lambda t: calls.append(1) or orig(t)
    with torch.no_grad(), ScoreHooks({"global": attn}, llava_onevision._siglip_received) as hooks:
        attn(hidden_states=x)
    assert len(calls) == 1  # the layer's own call only: the hook did not project again
    assert not hasattr(attn, "_anchor_ot_projections") and not hooks._captured
    with torch.no_grad():
        recomputed = llava_onevision._siglip_received(attn, (), {"hidden_states": x})
    assert len(calls) == 2  # called directly (no capture), it projects itself
    torch.testing.assert_close(hooks.result("global"), recomputed, rtol=1e-5, atol=1e-7)
    q = attn.q_proj(x).view(3, 20, 4, 8).transpose(1, 2)
    k = attn.k_proj(x).view(3, 20, 4, 8).transpose(1, 2)
    torch.testing.assert_close(hooks.result("global"), naive_received(q, k, attn.scale).detach(), rtol=1e-5, atol=1e-7)
