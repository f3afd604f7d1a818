"""The typer application every subcommand module registers with."""

import typer

app = typer.Typer(
    name="anchor-ot",
    help="Cut the visual tokens of video LLMs: AOT and its peers, exact budgets, measured.",
    no_args_is_help=True,
    add_completion=False,
)
