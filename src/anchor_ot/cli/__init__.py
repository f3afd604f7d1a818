"""The ``anchor-ot`` command line: one small module per subcommand."""

from anchor_ot.cli._app import app
from anchor_ot.cli import compress_cmd, methods_cmd  # noqa: F401  (register subcommands)
from anchor_ot.cli import flops_cmd  # noqa: F401  (registers `anchor-ot flops`)
from anchor_ot.cli import bench_cmd  # noqa: F401  (registers `anchor-ot bench`)
from anchor_ot.cli import ask_cmd  # noqa: F401  (registers `anchor-ot ask`)
from anchor_ot.cli import vllm_cmd  # noqa: F401  (registers `anchor-ot vllm-args`)

__all__ = ["app", "main"]


def main() -> None:
    """Entry point for ``python -m anchor_ot``."""
    app()
