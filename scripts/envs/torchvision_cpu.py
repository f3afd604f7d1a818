"""Make the index's torchvision 0.28.0 (a CUDA build) importable beside CPU-only torch 2.13.0.

torchvision/_meta_registrations.py registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` without checking that the compiled operators were loaded. With a CPU torch
the compiled extension does not load, the ops are missing, and ``import torchvision`` fails with
"operator torchvision::nms does not exist". This script wraps those two registrations in a check
for the operator, so torchvision imports in its pure-Python mode (transforms, video processors).

Idempotent: running it again on a patched file changes nothing. Usage: ``python torchvision_cpu.py``
inside the target environment.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys

MARK = "# anchor-ot: guarded for CPU torch"


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision is not installed; nothing to do")
        return 0
    path = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    if MARK in text:
        print(f"{path}: already guarded")
        return 0
    pattern = re.compile(r'^(@torch\.library\.register_fake\("torchvision::(q?nms)"\))$', re.M)
    found = pattern.findall(text)
    if not found:
        print(f"{path}: no unguarded nms/qnms registration found; nothing to do")
        return 0

    def guard(match: re.Match) -> str:
        op = match.group(2)
        return (
            f"@(torch.library.register_fake(\"torchvision::{op}\") "
            f"if hasattr(torch.ops.torchvision, \"{op}\") else (lambda f: f))  {MARK}"
        )

    path.write_text(pattern.sub(guard, text))
    print(f"{path}: guarded {', '.join(op for _, op in found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
