"""``anchor-ot vllm-args``: print the ``vllm serve`` flags that turn on a reducer."""

from __future__ import annotations

import shlex

import typer

from anchor_ot.cli._app import app
from anchor_ot.cli.ask_cmd import parse_params


@app.command("vllm-args")
def vllm_args(
    model: str = typer.Argument(..., help="Model id or local folder (its config.json names the architecture)."),
    method: str = typer.Option("aot", help="Reduction method (see `anchor-ot methods`)."),
    retention: float = typer.Option(0.1, help="Fraction of video tokens kept, in (0, 1]."),
    param: list[str] = typer.Option([], "--param", help="Method parameter key=value (repeatable); also "
                                    "scores=attention|none, local_layer=N, global_layer=N."),
) -> None:
    """Print the flags for `vllm serve MODEL` (shell-quoted), e.g.

    vllm serve MODEL $(anchor-ot vllm-args MODEL --method aot --retention 0.1)
    """
    from anchor_ot.integrations.vllm import serve_flags

    try:
        flags = serve_flags(model, method, retention, **parse_params(param))
    except (TypeError, ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(" ".join(shlex.quote(f) for f in flags))
