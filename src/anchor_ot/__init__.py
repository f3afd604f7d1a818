from anchor_ot.version import __version__

__all__ = ["__version__", "generate"]


def __getattr__(name):
    # Lazy: importing anchor_ot must not import transformers.
    if name == "generate":
        from anchor_ot.adapters import generate

        return generate
    raise AttributeError(f"module 'anchor_ot' has no attribute {name!r}")
