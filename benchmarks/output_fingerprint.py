"""Save, or compare against, the outputs of every method and variant on fixed-seed inputs.

A guard for speed work: optimizations must not change results. ``save`` writes the
outputs (tokens, source index, assignment, mass, frame index) of every registered
method and every variant, on structured fixed-seed videos (the smooth drifting
fields of ``tests/test_methods_matrix.py``) in fp32 and bf16, with and without
attention scores, plus Sinkhorn plans on a few cost batches; ``compare`` recomputes
them and reports the largest relative difference per entry. Integer outputs must be
identical; float outputs within ``--rtol`` (default 1e-6, relative to the entry's
largest magnitude); fp16/bf16 outputs may also differ by one unit in their last place
(the fp32 working values moved by less than ``rtol``, which can flip a rounding).
Sinkhorn marginal errors are compared relative to the unit mass, not to themselves.

Run::

    PYTHONPATH=src python benchmarks/output_fingerprint.py save /tmp/before.pt
    PYTHONPATH=src python benchmarks/output_fingerprint.py compare /tmp/before.pt
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from anchor_ot import methods
from anchor_ot.ot import cosine_cost, sinkhorn
from anchor_ot.testing import structured_video
from anchor_ot.types import VideoTokens

CASES = ((7, (13, 13), 48), (32, (14, 14), 96), (9, (8, 12), 40))
RETENTIONS = (0.05, 0.1, 0.25)


def make_video(num_frames, grid, dim, dtype=torch.float32, scores=True, seed=0) -> VideoTokens:
    return structured_video(num_frames, grid, dim, dtype, scores, seed)


def method_names() -> list[str]:
    names = []
    for n in methods.available():
        names.append(n)
        names += [f"{n}:{v}" for v in methods._REGISTRY[n].variants]
    return names


def collect() -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for F, grid, dim in CASES:
        for dtype in (torch.float32, torch.bfloat16):
            for scores in (True, False):
                video = make_video(F, grid, dim, dtype, scores)
                for name in method_names():
                    for r in RETENTIONS:
                        key = f"{name}|F{F}|{grid[0]}x{grid[1]}|d{dim}|{str(dtype)[6:]}|scores={scores}|r{r}"
                        try:
                            red = methods.get(name, retention=r)(video)
                        except ValueError as e:  # infeasible cell: record that it raised
                            out[key + "|raised"] = torch.tensor([len(str(e))])
                            continue
                        for field in ("tokens", "source_index", "assignment", "mass", "frame_index"):
                            out[f"{key}|{field}"] = getattr(red, field).detach().clone()
    g = torch.Generator().manual_seed(1)
    for eps in (0.1, 0.05, 0.01):
        x = make_video(32, (14, 14), 64).tokens
        cost = cosine_cost(x[:, :30], x[:, 30:])
        for dtype in (torch.float32, torch.float16, torch.float64):
            for method in ("auto", "scaling", "log"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = sinkhorn(cost.to(dtype), eps=eps, max_iter=500, tol=1e-4, method=method)
                key = f"sinkhorn|eps{eps}|{str(dtype)[6:]}|{method}"
                out[key + "|plan"] = res.plan
                out[key + "|n_iter"] = torch.tensor([res.n_iter])
                out[key + "|err"] = res.marginal_error
    # padded marginals (zero rows/columns), as AOT's intra step builds them
    cost = torch.rand(8, 12, 40, generator=g)
    a = torch.rand(8, 12, generator=g)
    a[:, -3:] = 0
    a = a / a.sum(-1, keepdim=True)
    b = torch.rand(8, 40, generator=g)
    b[:, :5] = 0
    b = b / b.sum(-1, keepdim=True)
    for eps in (0.1, 0.02):
        res = sinkhorn(cost, a, b, eps=eps, max_iter=500, tol=1e-5, warn=False)
        out[f"sinkhorn-padded|eps{eps}|plan"] = res.plan
        out[f"sinkhorn-padded|eps{eps}|n_iter"] = torch.tensor([res.n_iter])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("save", "compare"))
    ap.add_argument("path")
    ap.add_argument("--rtol", type=float, default=1e-6)
    args = ap.parse_args()
    torch.set_num_threads(1)
    now = collect()
    if args.mode == "save":
        torch.save(now, args.path)
        print(f"saved {len(now)} entries to {args.path}")
        return
    before = torch.load(args.path)
    bad = []
    worst = 0.0
    flips = 0
    for key in sorted(set(before) | set(now)):
        if key not in before or key not in now:
            # new methods/variants (other branches) are not a regression
            if key not in now:
                bad.append(f"{key}: missing now")
            continue
        x, y = before[key], now[key]
        if x.shape != y.shape or x.dtype != y.dtype:
            bad.append(f"{key}: shape/dtype {tuple(x.shape)} {x.dtype} -> {tuple(y.shape)} {y.dtype}")
            continue
        if not x.is_floating_point():
            if not torch.equal(x, y):
                bad.append(f"{key}: integer output changed ({int((x != y).sum())} entries)")
            continue
        x64, y64 = x.double(), y.double()
        if torch.isnan(x64).any() or torch.isnan(y64).any():
            if not torch.equal(torch.isnan(x64), torch.isnan(y64)):
                bad.append(f"{key}: NaN pattern changed")
            continue
        scale = max(float(x64.abs().max()) if x64.numel() else 0.0, 1e-30)
        if key.endswith("|err"):
            # a marginal error is a difference of near-equal sums (~1e-5 of a unit mass): compare it
            # to the mass (1), not to itself, or float-order noise of the plan looks like a change
            scale = max(scale, 1.0)
        diff = (x64 - y64).abs()
        if x.dtype in (torch.float16, torch.bfloat16):
            # outputs rounded to half precision: a change of the fp32 working values far below
            # rtol can still flip the rounding by one unit in the last place of the half type
            ulp_ok = diff <= torch.finfo(x.dtype).eps * torch.maximum(x64.abs(), y64.abs())
            flips += int(((diff > args.rtol * scale) & ulp_ok).sum())
            diff = torch.where(ulp_ok, torch.zeros_like(diff), diff)
        rel = float(diff.max()) / scale if x64.numel() else 0.0
        worst = max(worst, rel)
        if rel > args.rtol:
            bad.append(f"{key}: max relative difference {rel:.2e}")
    print(f"compared {len(before)} entries; largest float relative difference {worst:.2e} "
          f"(fp32/fp64 outputs; half-precision outputs: {flips} elements one unit in the last place apart, "
          f"the rest within the same bound)")
    for line in bad:
        print("DIFF", line)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
