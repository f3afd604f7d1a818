"""The anchor-ot settings of one vLLM engine and how they travel.

They ride in ``hf_overrides`` under the key ``"anchor_ot"`` (vLLM sets an unknown
dict-valued override as an attribute of the model's Hugging Face config, which the
processor and the model both read), next to ``"architectures"``, which selects our model
subclass. vLLM itself never reads the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from anchor_ot import methods
from anchor_ot._validation import check_choice, check_retention
from anchor_ot.methods.base import Reducer

__all__ = ["CONFIG_KEY", "Settings", "ModelSettingsMixin"]

CONFIG_KEY = "anchor_ot"
SCORE_CHOICES = ("attention", "none")


@dataclass(frozen=True)
class Settings:
    """Method, retention and score options of one engine.

    Attributes
    ----------
    method : str
        A registered method name (``anchor_ot.methods.available()``), optionally
        ``"method:variant"``.
    retention : float
        Fraction of video tokens kept, in (0, 1].
    params : dict
        Extra keyword arguments of the method.
    scores : {"attention", "none"}
        ``"attention"``: received-attention scores of one vision layer each for the
        ``global`` / ``local`` scores, recomputed by forward hooks (vLLM's fused attention
        returns no weights); ``"none"``: no scores (methods fall back to their
        attention-free score).
    local_layer, global_layer : int or None
        Vision-encoder layers of the scores (``None``: the family default).
    """

    method: str
    retention: float
    params: dict = field(default_factory=dict)
    scores: str = "attention"
    local_layer: int | None = None
    global_layer: int | None = None

    def __post_init__(self):
        if not isinstance(self.method, str):
            raise TypeError(f"method must be a string (one of {', '.join(methods.available())}), got {self.method!r}")
        object.__setattr__(self, "retention", check_retention(self.retention))
        if not isinstance(self.params, Mapping):
            raise TypeError(f"params must be a dict of method parameters, got {type(self.params).__name__}")
        object.__setattr__(self, "params", dict(self.params))
        check_choice("scores", self.scores, SCORE_CHOICES)
        for name in ("local_layer", "global_layer"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise TypeError(f"{name} must be an int or None, got {v!r}")
        self.reducer()  # unknown method / bad parameter: fail now, with the registry's message

    def reducer(self) -> Reducer:
        """The reducer these settings describe (``ValueError`` for unknown names or parameters)."""
        return methods.get(self.method, retention=self.retention, **self.params)

    def to_dict(self) -> dict:
        """JSON-able form, the value of ``hf_overrides["anchor_ot"]``."""
        return asdict(self)

    @classmethod
    def from_config(cls, hf_config) -> Settings:
        """Read the settings a model's Hugging Face config carries.

        Raises
        ------
        ValueError
            If the config carries none (the architecture was selected without the
            settings) or they are invalid.
        """
        raw = getattr(hf_config, CONFIG_KEY, None)
        if raw is None:
            raise ValueError("this anchor-ot architecture needs its settings in hf_overrides['anchor_ot']; build "
                             "the engine arguments with anchor_ot.integrations.vllm.engine_args(...) "
                             "(or `anchor-ot vllm-args` for `vllm serve`)")
        if isinstance(raw, Settings):
            return raw
        if not isinstance(raw, Mapping):
            raise TypeError(f"hf_overrides['anchor_ot'] must be a dict, got {type(raw).__name__}")
        known = {"method", "retention", "params", "scores", "local_layer", "global_layer"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown anchor-ot setting(s) {sorted(unknown)}; known: {sorted(known)}")
        if "method" not in raw or "retention" not in raw:
            raise ValueError("hf_overrides['anchor_ot'] needs 'method' and 'retention'")
        return cls(**raw)


_REDUCERS: dict[str, tuple[Settings, Reducer]] = {}


def from_config_cached(hf_config) -> tuple[Settings, Reducer]:
    """:meth:`Settings.from_config` and its reducer, built once per distinct settings.

    The processor and the model call this for every video, so an engine whose config
    settings are replaced (tests do, to run every method in one engine) follows them.
    """
    raw = getattr(hf_config, CONFIG_KEY, None)
    key = repr(sorted(raw.items())) if isinstance(raw, Mapping) else repr(raw)
    hit = _REDUCERS.get(key)
    if hit is None:
        settings = Settings.from_config(hf_config)
        hit = (settings, settings.reducer())
        if len(_REDUCERS) > 64:
            _REDUCERS.clear()
        _REDUCERS[key] = hit
    return hit


class ModelSettingsMixin:
    """The engine's settings and reducer, read from the model's Hugging Face config (``self.config``).

    Shared by every anchor-ot model subclass; the values are cached per distinct settings by
    :func:`from_config_cached`.
    """

    @property
    def anchor_settings(self) -> Settings:
        return from_config_cached(self.config)[0]

    @property
    def anchor_reducer(self) -> Reducer:
        return from_config_cached(self.config)[1]
