"""``anchor_ot.testing.structured_video``: deterministic, structured, with the documented shapes."""

import torch

from anchor_ot.testing import structured_video


def test_same_seed_same_tensors_other_seed_differs():
    a = structured_video(5, (4, 6), 12, seed=3)
    b = structured_video(5, (4, 6), 12, seed=3)
    c = structured_video(5, (4, 6), 12, seed=4)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.global_scores, b.global_scores)
    assert not torch.equal(a.tokens, c.tokens)


def test_shapes_dtype_scores_and_structure():
    v = structured_video(8, (7, 9), 16, dtype=torch.bfloat16)
    assert v.tokens.shape == (8, 63, 16) and v.tokens.dtype == torch.bfloat16 and v.grid == (7, 9)
    assert v.global_scores.shape == v.local_scores.shape == (8, 63)
    assert float(v.global_scores.min()) >= 1e-3 and float(v.local_scores.min()) >= 1e-3
    assert structured_video(8, (7, 9), 16, scores=False).global_scores is None
    # Structure, not i.i.d. noise: horizontal neighbours are closer than random token pairs.
    x = structured_video(8, (14, 14), 16).tokens.reshape(8, 14, 14, 16)
    neighbour = (x[:, :, 1:] - x[:, :, :-1]).norm(dim=-1).mean()
    flat = x.reshape(-1, 16)
    shuffled = (flat - flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))]).norm(dim=-1).mean()
    assert neighbour < 0.8 * shuffled
