"""Make the index's torchvision 0.28.0 (a CUDA build) import beside torch 2.13.0+cpu.

Why: the only CPU torch on this machine's disk is 2.13.0+cpu; the torchvision wheel that
pins it (0.28.0) is built for CUDA, so its compiled ops do not load. torchvision then runs
in pure-Python mode, which is all transformers' video processors need, except that
``torchvision/_meta_registrations.py`` registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` without checking that the ops exist, and the import fails with
"operator torchvision::nms does not exist". Every other registration in that file is
already guarded by ``torchvision.extension._has_ops()``.

What: rewrites those two decorators in the installed file to a guarded form (register the
fake kernel only when the compiled ops are present). Idempotent (a marker comment), prints
what it did, and touches nothing when the ops load (a CPU build of torchvision).

Usage: ``python scripts/envs/torchvision_cpu.py`` inside the environment (run by
``scripts/envs/vllm.sh``). Standard library only; torchvision is not imported before the
patch.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

MARKER = "# anchor-ot: guarded register_fake (scripts/envs/torchvision_cpu.py)"
OPS = ("torchvision::nms", "torchvision::qnms")
HELPER = f'''
{MARKER}
def _anchor_ot_register_fake(name):
    def wrap(fn):
        if torchvision.extension._has_ops():
            return torch.library.register_fake(name)(fn)
        return fn
    return wrap
'''


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        print("torchvision is not installed: nothing to do")
        return 0
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "_meta_registrations.py"
    text = path.read_text()
    if MARKER in text:
        print(f"{path}: already guarded")
        return 0
    anchor = "import torchvision.extension  # noqa: F401\n"
    if anchor not in text or not all(f'@torch.library.register_fake("{op}")' in text for op in OPS):
        print(f"{path}: layout not recognised (torchvision version changed?); not patched", file=sys.stderr)
        return 1
    text = text.replace(anchor, anchor + HELPER, 1)
    for op in OPS:
        text = text.replace(f'@torch.library.register_fake("{op}")', f'@_anchor_ot_register_fake("{op}")')
    path.write_text(text)
    print(f"{path}: guarded the fake kernels of {', '.join(OPS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
