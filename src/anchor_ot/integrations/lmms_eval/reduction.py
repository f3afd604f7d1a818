"""What every anchor-ot lmms-eval model shares: its ``model_args``, the reducing ``generate``,
and the per-sample log.

The model classes (:mod:`.llava_onevision`, :mod:`.qwen_vl`) are lmms-eval's own wrappers with
:class:`ReductionMixin` in front. The mixin

1. takes its own keys out of ``model_args`` and builds the reducer *before* the wrapper loads
   any weights, so a bad method, parameter or retention fails before anything else
   (:func:`parse_settings`), and checks the checkpoint's ``model_type`` from its config;
2. lets the wrapper load the model, then serves the wrapper a thin view of the model
   (:class:`ReducingModel`) whose ``generate`` runs :func:`anchor_ot.adapters.prepare` and the
   model's own ``generate`` on the shortened prompt, timing each step;
3. notes which documents the wrapper reads for each batch (by watching ``task_dict``), so each
   log row carries lmms-eval's ``task`` and ``doc_id``;
4. writes one JSON line per sample beside lmms-eval's results, and a summary at the end.

Wrappers that catch every exception around ``generate`` (lmms-eval's ``llava_hf`` does, and
then answers ``""``) would hide a failed reduction; the mixin re-raises the first failure when
the wrapper returns, so a run never reports a score computed from silently empty answers.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from anchor_ot._validation import check_choice, check_retention
from anchor_ot.methods.base import Reducer

__all__ = ["Settings", "parse_settings", "ReducingModel", "ReductionRunner", "ReductionMixin", "PARAM_PREFIX"]

PARAM_PREFIX = "param."
SCORE_CHOICES = ("attention", "none")


@dataclass
class Settings:
    """The anchor-ot part of ``model_args``.

    Attributes
    ----------
    method : str
        Registered method name, optionally ``"name:variant"`` (``anchor-ot methods`` lists them).
    retention : float
        Fraction of video tokens kept, in (0, 1].
    params : dict
        Method parameters from ``param.<name>=<value>`` keys (values as lmms-eval parsed them:
        int, float, bool or str).
    scores : {"attention", "none"}
        Importance scores computed for the method (see :func:`anchor_ot.generate`).
    local_layer, global_layer : int or None
        Vision-encoder layers of the scores (``None``: the family default).
    log_path : pathlib.Path or None
        Where the per-sample JSON lines go (``None``: beside lmms-eval's results when the
        CLI was given ``--output_path``, else only in memory).
    reducer : Reducer
        The reducer built from ``method``, ``retention`` and ``params``.
    """

    method: str
    retention: float
    params: dict
    scores: str
    local_layer: int | None
    global_layer: int | None
    log_path: Path | None
    reducer: Reducer

    def describe(self) -> dict:
        return {"method": self.method, "retention": self.retention, "params": dict(self.params),
                "scores": self.scores, "local_layer": self.local_layer, "global_layer": self.global_layer}


def _layer(model_id: str, name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{model_id}: {name} must be an int (vision-encoder layer, negative counts from the end), "
                        f"got {value!r}")
    return int(value)


def parse_settings(model_id: str, kwargs: dict) -> tuple[Settings, dict]:
    """Split lmms-eval's parsed ``model_args`` into anchor-ot settings and the wrapper's own.

    Parameters
    ----------
    model_id : str
        The lmms-eval model id (for error messages).
    kwargs : dict
        Keyword arguments lmms-eval passes to the model class (``model_args`` parsed by
        ``lmms_eval.utils.simple_parse_args_string``, plus ``batch_size``/``device``).

    Returns
    -------
    settings : Settings
    rest : dict
        Every other key, for the wrapper (``pretrained``, frame count, dtype, ...).

    Raises
    ------
    ValueError
        ``retention`` missing or outside (0, 1], unknown method, variant or parameter, an
        invalid parameter value, an empty ``param.`` name, or an unknown ``scores`` choice.
    TypeError
        A value of the wrong type (e.g. ``retention=abc``).
    """
    from anchor_ot import methods

    rest = dict(kwargs)
    method = rest.pop("method", "aot")
    if "retention" not in rest:
        raise ValueError(f"{model_id} needs retention=<fraction of video tokens kept, in (0, 1]> in --model_args, "
                         "e.g. retention=0.1 (retention=1.0 keeps every token: the unreduced baseline)")
    try:
        retention = check_retention(rest.pop("retention"))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{model_id}: {exc}") from None
    params = {}
    for key in [k for k in rest if k.startswith(PARAM_PREFIX)]:
        name = key[len(PARAM_PREFIX):]
        if not name:
            raise ValueError(f"{model_id}: empty method parameter name in {key!r}; write param.<name>=<value>")
        params[name] = rest.pop(key)
    scores = rest.pop("scores", "attention")
    try:
        check_choice("scores", scores, SCORE_CHOICES)
    except ValueError as exc:
        raise ValueError(f"{model_id}: {exc}") from None
    local_layer = _layer(model_id, "local_layer", rest.pop("local_layer", None))
    global_layer = _layer(model_id, "global_layer", rest.pop("global_layer", None))
    log = rest.pop("anchor_ot_log", None)
    if not isinstance(method, str):
        raise TypeError(f"{model_id}: method must be a method name (see `anchor-ot methods`), got {method!r}")
    try:
        reducer = methods.get(method, retention=retention, **params)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{model_id}: {exc}") from None
    settings = Settings(method=method, retention=retention, params=params, scores=scores, local_layer=local_layer,
                        global_layer=global_layer, log_path=None if log in (None, "") else Path(str(log)),
                        reducer=reducer)
    return settings, rest


# -- timing ------------------------------------------------------------------------------


def _sync(device) -> None:
    if isinstance(device, torch.device) and device.type == "cuda":
        torch.cuda.synchronize(device)


class _ForwardTimer:
    """Wall time of the first ``forward`` of ``module`` inside the ``with`` block (CUDA-synchronized)."""

    def __init__(self, module: torch.nn.Module | None, device):
        self.module, self.device = module, device
        self.seconds: float | None = None
        self._t0: float | None = None
        self._handles: list = []

    def __enter__(self) -> "_ForwardTimer":
        if self.module is None:
            return self

        def pre(module, args):
            if self.seconds is None and self._t0 is None:
                _sync(self.device)
                self._t0 = time.perf_counter()

        def post(module, args, output):
            if self.seconds is None and self._t0 is not None:
                _sync(self.device)
                self.seconds = time.perf_counter() - self._t0

        self._handles = [self.module.register_forward_pre_hook(pre), self.module.register_forward_hook(post)]
        return self

    def __exit__(self, *exc) -> None:
        while self._handles:
            self._handles.pop().remove()


def _vision_encoder(model):
    base = getattr(model, "model", model)
    return getattr(base, "vision_tower", None) or getattr(base, "visual", None)


def _language_model(model):
    base = getattr(model, "model", model)
    return getattr(base, "language_model", None)


# -- the reducing generate -----------------------------------------------------------------


class ReducingModel:
    """A view of a Hugging Face model whose ``generate`` reduces video tokens first.

    Every other attribute and call goes to the model itself, so the wrapper's other uses
    (``.dtype``, ``.config``, ``.device``, a plain forward) are unchanged.
    """

    __slots__ = ("_anchor_model", "_anchor_runner")

    def __init__(self, model, runner: "ReductionRunner"):
        object.__setattr__(self, "_anchor_model", model)
        object.__setattr__(self, "_anchor_runner", runner)

    def __getattr__(self, name):
        return getattr(self._anchor_model, name)

    def __call__(self, *args, **kwargs):
        return self._anchor_model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        if args:
            raise TypeError("pass the processor's output to generate as keyword arguments (**inputs)")
        return self._anchor_runner.generate(self._anchor_model, **kwargs)


@dataclass
class ReductionRunner:
    """Runs one reduced ``generate`` per batch and keeps one record per sample.

    Attributes
    ----------
    model_id : str
    settings : Settings
    records : list[dict]
        One dict per sample, in the order the wrapper generated them (fields: see
        ``docs/lmms_eval.md``).
    pending : list[tuple[str, str, int]]
        ``(task, split, doc_id)`` of the documents the wrapper read since the last batch.
    error : BaseException or None
        The first failure, re-raised by :class:`ReductionMixin` when the wrapper returns.
    """

    model_id: str
    settings: Settings
    records: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    error: BaseException | None = None
    batches: int = 0
    _written: int = 0

    def _docs(self, batch: int) -> list:
        docs = self.pending[-batch:] if len(self.pending) >= batch else [(None, None, None)] * batch
        self.pending.clear()
        return docs

    def generate(self, model, **kwargs) -> torch.Tensor:
        """Reduce the videos in the inputs, then ``model.generate``; return prompt ids + new tokens.

        Tensor keyword arguments are the processor's output; the others are generation
        settings. Returns the *original* prompt ids followed by the new tokens, as
        ``model.generate`` would, so the wrapper trims and decodes as usual.
        """
        if self.error is not None:
            raise RuntimeError(f"{self.model_id}: an earlier batch failed; see the first error") from self.error
        try:
            return self._generate(model, kwargs)
        except Exception as exc:
            self.error = exc
            raise

    def _generate(self, model, kwargs: dict) -> torch.Tensor:
        from anchor_ot.adapters import prepare

        s = self.settings
        inputs = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        gen = {k: v for k, v in kwargs.items() if k not in inputs}
        ids = inputs["input_ids"]
        B = ids.shape[0]
        docs = self._docs(B)
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        device = ids.device
        video_id = int(model.config.video_token_id)

        _sync(device)
        t0 = time.perf_counter()
        with _ForwardTimer(_vision_encoder(model), device) as enc:
            prepared = prepare(model, inputs, s.reducer, scores=s.scores, local_layer=s.local_layer,
                               global_layer=s.global_layer)
        _sync(device)
        t1 = time.perf_counter()
        run = prepared.kwargs if prepared is not None else inputs
        with _ForwardTimer(_language_model(model), device) as prefill:
            out = model.generate(**run, **gen)
        _sync(device)
        t2 = time.perf_counter()

        new_tokens = out[:, run["input_ids"].shape[1]:]
        repeat = out.shape[0] // B
        prompt = ids.repeat_interleave(repeat, dim=0) if repeat > 1 else ids
        result = torch.cat([prompt.to(new_tokens.device), new_tokens], dim=1)

        self._record(prepared, ids, mask, run, docs, video_id, B,
                     times={"encode_s": enc.seconds or 0.0, "prepare_s": t1 - t0, "prefill_s": prefill.seconds,
                            "generate_s": t2 - t1},
                     new_tokens=new_tokens, repeat=repeat, eos=gen.get("eos_token_id"),
                     pad=gen.get("pad_token_id"))
        self.batches += 1
        return result

    def _record(self, prepared, ids, mask, run, docs, video_id, B, times, new_tokens, repeat, eos, pad) -> None:
        before_video = (ids == video_id).sum(dim=1).tolist()
        after_video = (run["input_ids"] == video_id).sum(dim=1).tolist()
        before_prompt = mask.sum(dim=1).tolist()
        run_mask = run.get("attention_mask")
        after_prompt = (run_mask.sum(dim=1) if run_mask is not None else torch.full((B,), run["input_ids"].shape[1]))
        after_prompt = after_prompt.tolist()
        # videos are scattered row-major: give each row its videos by placeholder counts
        per_row: list[list[int]] = [[] for _ in range(B)]
        if prepared is not None:
            row, used = 0, 0
            for v, enc in enumerate(prepared.encoded):
                while row < B and used >= before_video[row]:
                    row, used = row + 1, 0
                if row < B:
                    per_row[row].append(v)
                    used += enc.num_placeholders
        encode_s = times["encode_s"]
        reduce_s = max(0.0, times["prepare_s"] - encode_s)
        score_s = prepared.encoded[0].score_seconds if prepared is not None and prepared.encoded else 0.0
        # generated tokens per sample, not counting EOS/padding after an early stop
        stop = torch.tensor(sorted({t for t in (eos, pad) if isinstance(t, int)}), dtype=new_tokens.dtype,
                            device=new_tokens.device)
        generated = (~torch.isin(new_tokens, stop)).sum(dim=1).view(B, repeat).sum(dim=1).tolist()
        for b in range(B):
            task, split, doc_id = docs[b]
            videos = per_row[b]
            kept = sum(prepared.reduced[v].num_tokens for v in videos) if videos else 0
            total = sum(prepared.encoded[v].video.num_frames * prepared.encoded[v].video.tokens_per_frame
                        for v in videos) if videos else 0
            self.records.append({
                "model": self.model_id, **self.settings.describe(),
                "task": task, "split": split, "doc_id": doc_id,
                "batch": self.batches, "batch_size": B,
                "videos": len(videos),
                "frames": [prepared.encoded[v].video.num_frames for v in videos] if videos else [],
                "grid": [list(prepared.encoded[v].video.grid) for v in videos] if videos else [],
                "video_tokens_before": int(before_video[b]), "video_tokens_after": int(after_video[b]),
                "kept": int(kept), "total": int(total),
                "prompt_tokens_before": int(before_prompt[b]), "prompt_tokens_after": int(after_prompt[b]),
                "new_tokens": int(generated[b]),
                "encode_s": encode_s, "score_s": score_s, "reduce_s": reduce_s,
                "prefill_s": times["prefill_s"], "generate_s": times["generate_s"],
            })

    # -- output ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Append the records not yet written to ``settings.log_path`` (if set)."""
        path = self.settings.log_path
        if path is None or self._written >= len(self.records):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            for rec in self.records[self._written:]:
                fh.write(json.dumps(rec) + "\n")
        self._written = len(self.records)

    def summary(self) -> dict:
        """Totals over every sample so far: achieved retention, mean counts, summed times."""
        recs = [r for r in self.records if r["videos"]]
        total = sum(r["total"] for r in recs)
        kept = sum(r["kept"] for r in recs)
        batches = {r["batch"]: r for r in self.records}.values()
        return {
            "model": self.model_id, **self.settings.describe(),
            "samples": len(self.records), "samples_with_video": len(recs),
            "kept": kept, "total": total, "achieved_retention": kept / total if total else None,
            "mean_video_tokens_before": sum(r["video_tokens_before"] for r in recs) / len(recs) if recs else None,
            "mean_video_tokens_after": sum(r["video_tokens_after"] for r in recs) / len(recs) if recs else None,
            "encode_s": sum(b["encode_s"] for b in batches),
            "reduce_s": sum(b["reduce_s"] for b in batches),
            "prefill_s": sum(b["prefill_s"] or 0.0 for b in batches),
            "generate_s": sum(b["generate_s"] for b in batches),
            "log": None if self.settings.log_path is None else str(self.settings.log_path),
        }


# -- watching which documents the wrapper reads --------------------------------------------


class _Recorder:
    """Read-through view of ``task_dict`` (or one task / split of it) that notes doc ids read."""

    __slots__ = ("_inner", "_path", "_pending")

    def __init__(self, inner, path: tuple, pending: list):
        self._inner, self._path, self._pending = inner, path, pending

    def __getitem__(self, key):
        value = self._inner[key]
        if len(self._path) == 2:  # task, split known: key is the doc id
            self._pending.append((*self._path, key))
            return value
        return _Recorder(value, (*self._path, key), self._pending)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __len__(self):
        return len(self._inner)

    def __iter__(self):
        return iter(self._inner)

    def __contains__(self, key):
        return key in self._inner


def default_log_path(pretrained: str) -> Path | None:
    """``<--output_path>/<model name as lmms-eval sanitizes it>/<time>_anchor_ot.jsonl`` when run from
    lmms-eval's CLI with ``--output_path`` (the folder lmms-eval writes its results to), else ``None``."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--output_path", default=None)
    known, _ = parser.parse_known_args(sys.argv[1:])
    if not known.output_path:
        return None
    from lmms_eval.utils import get_datetime_str, sanitize_model_name

    stamp = get_datetime_str().replace(":", "-")
    return Path(known.output_path) / sanitize_model_name(str(pretrained)) / f"{stamp}_anchor_ot.jsonl"


class ReductionMixin:
    """Put in front of an lmms-eval Hugging Face wrapper class to reduce video tokens.

    Class attributes set by each model class: ``MODEL_ID`` (the lmms-eval id),
    ``MODEL_TYPES`` (accepted ``config.model_type`` values) and ``SUPPORTS_BATCH`` (whether
    the wrapper batches samples). Everything in ``model_args`` that is not anchor-ot's goes to
    the wrapper unchanged.
    """

    MODEL_ID: str = ""
    MODEL_TYPES: tuple = ()
    SUPPORTS_BATCH: bool = True
    DEFAULT_PRETRAINED: str = ""

    def __init__(self, **kwargs) -> None:
        settings, rest = parse_settings(self.MODEL_ID, kwargs)
        pretrained = rest.get("pretrained", self.DEFAULT_PRETRAINED)
        batch = rest.get("batch_size", 1)
        if not self.SUPPORTS_BATCH and str(batch) not in ("1", "None"):
            raise ValueError(f"{self.MODEL_ID}: lmms-eval's wrapper for this family handles one sample at a time; "
                             f"use --batch_size 1 (got {batch})")
        self._check_checkpoint(pretrained, rest)
        self._check_budget(settings, rest)
        if settings.log_path is None:
            settings.log_path = default_log_path(pretrained)
        super().__init__(**rest)
        from anchor_ot.adapters import SUPPORTED_CLASSES

        model = super().model
        names = {c.__name__ for c in type(model).__mro__}
        if not names & set(SUPPORTED_CLASSES):
            raise ValueError(f"{self.MODEL_ID}: loaded {type(model).__name__}, which anchor-ot cannot reduce; "
                             f"supported: {', '.join(SUPPORTED_CLASSES)}")
        self._anchor_runner = ReductionRunner(self.MODEL_ID, settings)
        try:
            from loguru import logger

            where = settings.log_path or "memory only (no --output_path; set anchor_ot_log=PATH to write a file)"
            logger.info(f"{self.MODEL_ID}: {settings.method} at retention {settings.retention:g} "
                        f"(params {settings.params or 'default'}); per-sample log: {where}")
        except ImportError:  # pragma: no cover - loguru ships with lmms-eval
            pass

    def _check_checkpoint(self, pretrained: str, rest: dict) -> None:
        from transformers import AutoConfig

        kw = {k: rest[k] for k in ("revision", "trust_remote_code") if k in rest}
        try:
            config = AutoConfig.from_pretrained(pretrained, **kw)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.MODEL_ID}: cannot read the config of {pretrained!r}: {exc}") from None
        model_type = getattr(config, "model_type", None)
        if model_type not in self.MODEL_TYPES:
            from anchor_ot.integrations.lmms_eval import MODEL_IDS

            raise ValueError(f"{self.MODEL_ID} evaluates {'/'.join(self.MODEL_TYPES)} checkpoints; {pretrained!r} is "
                             f"model_type {model_type!r}. Model ids: {', '.join(MODEL_IDS)}")
        self._anchor_config = config

    def _check_budget(self, settings: Settings, rest: dict) -> None:
        """Family hook: check the reducer can meet its budget where the shape is known up front."""

    @property
    def model(self):
        model = super().model
        runner = self.__dict__.get("_anchor_runner")
        return model if runner is None else ReducingModel(model, runner)

    @property
    def anchor_ot_records(self) -> list:
        """The per-sample records of this run (also written to the log file)."""
        return self._anchor_runner.records

    def generate_until(self, requests):
        runner = self._anchor_runner
        original = self.task_dict
        self.task_dict = _Recorder(original, (), runner.pending)
        try:
            out = super().generate_until(requests)
        finally:
            self.task_dict = original
            runner.flush()
        if runner.error is not None:
            raise RuntimeError(f"{self.MODEL_ID}: reduction failed, no results are reported: "
                               f"{type(runner.error).__name__}: {runner.error}") from runner.error
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError(f"{self.MODEL_ID} reduces video tokens in generate_until only; "
                                  "loglikelihood tasks are not supported")

    def clean(self):
        runner = self.__dict__.get("_anchor_runner")
        if runner is not None:
            runner.flush()
            summary = runner.summary()
            if runner.settings.log_path is not None and runner.records:
                path = runner.settings.log_path.with_name(runner.settings.log_path.stem + "_summary.json")
                path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            try:
                from loguru import logger

                logger.info(f"{self.MODEL_ID}: {summary['samples']} samples, achieved retention "
                            f"{summary['achieved_retention']}, reduce {summary['reduce_s']:.3f} s, "
                            f"prefill {summary['prefill_s']:.3f} s")
            except ImportError:  # pragma: no cover
                pass
        return super().clean()
