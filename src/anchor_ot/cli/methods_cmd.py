"""``anchor-ot methods``: list the registered reducers."""

from anchor_ot import methods
from anchor_ot.cli._app import app


@app.command("methods")
def list_methods() -> None:
    """List every method: name, one-line description, paper id."""
    rows = methods.describe()
    width = max(len(n) for n, _, _ in rows)
    for name, desc, paper in rows:
        print(f"{name:<{width}}  {desc}  [{paper}]")
